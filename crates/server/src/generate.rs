//! `/v1/completions` and `/v1/chat/completions`, streaming (server-sent events) or not. Both
//! shapes are built from the same [`Output`], fed token by token from the job's event channel.
//! Dropping the channel (client gone, stop string seen) is what cancels the job in the engine.
//!
//! A request with `n` choices is `n` engine jobs, queued together or not at all, so the batcher
//! runs them side by side and a full queue refuses the whole request. Choice `i` samples with
//! seed `seed + i` (wrapping) when a seed is given, so a seeded response is reproducible and its
//! choice `i` equals the `n = 1` request with seed `seed + i`.

use crate::api::{body, AppState};
use crate::engine::{Event, Job};
use crate::error::ApiError;
use crate::output::{Output, Piece};
use crate::parse::{parse_chat_request, parse_completion_request, GenParams, PromptInput};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use emesh_chat::{StreamDelta, ThinkingMode};
use emesh_coordinator::{Request, SamplingParams};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::task::Poll;
use std::time::Instant;
use tokio::sync::mpsc;

/// Tokens a completion generates when the request does not say (OpenAI's default).
const DEFAULT_COMPLETION_TOKENS: usize = 16;

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// One choice of a generation: its job's events (`None` once it ended, which cancels the job
/// if the engine is still at it) and its output.
struct Choice {
    rx: Option<mpsc::UnboundedReceiver<Event>>,
    out: Output,
}

/// A submitted generation: its choices and what the answer needs to know.
struct Gen {
    choices: Vec<Choice>,
    id: String,
    created: u64,
    model: String,
    params: GenParams,
    prompt_tokens: usize,
}

/// Checks the prompt against the model and builds the job of choice `index`.
fn submit(
    s: &AppState,
    prompt: Vec<u32>,
    p: &GenParams,
    default_max: Option<usize>,
    index: usize,
) -> Result<(Job, mpsc::UnboundedReceiver<Event>), ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::bad("prompt", "the prompt is empty"));
    }
    if let Some(&t) = prompt.iter().find(|&&t| t as usize >= s.vocab) {
        return Err(ApiError::bad("prompt", format!("token id {t} is outside the vocabulary (0..{})", s.vocab)));
    }
    if prompt.len() >= s.max_context {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the prompt has {} tokens; this model's context is {}", prompt.len(), s.max_context),
            Some("prompt"),
        ));
    }
    if let Some(&t) = p.stop_token_ids.iter().find(|&&t| t as usize >= s.vocab) {
        return Err(ApiError::bad("stop_token_ids", format!("token id {t} is outside the vocabulary")));
    }
    let room = s.max_context - prompt.len();
    let max_tokens = p.max_tokens.or(default_max).unwrap_or(room).min(room);
    let sampling = (p.temperature > 0.0 && p.top_k != 1).then(|| SamplingParams {
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        seed: p.seed.map_or_else(random_seed, |seed| seed.wrapping_add(index as u64)),
    });
    let (events, rx) = mpsc::unbounded_channel();
    let req = Request {
        prompt,
        max_tokens,
        stop_token: (!p.ignore_eos).then_some(s.eos),
        stop_tokens: p.stop_token_ids.clone(),
        sampling,
        logprobs: p.logprobs,
    };
    Ok((Job { req, events, arrived: Instant::now() }, rx))
}

/// Queues the `n` jobs of a request: all of them, or none (429) when the queue lacks room.
async fn start(s: &AppState, prompt: Vec<u32>, p: GenParams, chat: Option<ThinkingMode>) -> Result<Gen, ApiError> {
    let default_max = if chat.is_some() { None } else { Some(DEFAULT_COMPLETION_TOKENS) };
    let prompt_tokens = prompt.len();
    let mut jobs = Vec::with_capacity(p.n);
    for i in 0..p.n {
        jobs.push(submit(s, prompt.clone(), &p, default_max, i)?);
    }
    let permits = s.jobs.try_reserve_many(jobs.len()).map_err(|e| match e {
        mpsc::error::TrySendError::Full(()) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "the request queue is full; retry later", None)
        }
        mpsc::error::TrySendError::Closed(()) => ApiError::unavailable("the engine stopped"),
    })?;
    let mut choices = Vec::with_capacity(jobs.len());
    for (permit, (job, rx)) in permits.zip(jobs) {
        permit.send(job);
        choices.push(Choice { rx: Some(rx), out: Output::new(s.tokenizer.clone(), &p, s.eos, chat) });
    }
    let prefix = if chat.is_some() { "chatcmpl" } else { "cmpl" };
    Ok(Gen {
        choices,
        id: format!("{prefix}-{}", s.next_id()),
        created: now(),
        model: s.model.clone(),
        params: p,
        prompt_tokens,
    })
}

/// What one event adds to a choice: its pieces and, at the end, the engine's finish reason.
/// The end drops the choice's receiver, so a choice cut short by a stop string is cancelled.
fn on_event(c: &mut Choice, ev: Option<Event>) -> Result<(Vec<Piece>, Option<&'static str>), ApiError> {
    let step = match ev {
        Some(Event::Token { token, logprobs }) => {
            let pieces = c.out.push(token, logprobs);
            let end = c.out.stopped().then_some("stop");
            Ok((pieces, end))
        }
        Some(Event::Done { reason, .. }) => Ok((c.out.finish(), Some(reason.as_str()))),
        Some(Event::Failed(msg)) => Err(ApiError::internal(msg)),
        Some(Event::Unavailable(msg)) => Err(ApiError::unavailable(msg)),
        None => Err(ApiError::unavailable("the engine stopped")),
    };
    if !matches!(step, Ok((_, None))) {
        c.rx = None;
    }
    step
}

/// Feeds one choice events until its end; returns the engine's finish reason.
async fn run_choice(c: &mut Choice, mut each: impl FnMut(Piece)) -> Result<&'static str, ApiError> {
    loop {
        let ev = match c.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => None,
        };
        let (pieces, end) = on_event(c, ev)?;
        pieces.into_iter().for_each(&mut each);
        if let Some(r) = end {
            return Ok(r);
        }
    }
}

/// The next event of any choice still running (`None` when all ended), taking the choices in
/// turn from `from` so that none waits behind another.
async fn next_event(choices: &mut [Choice], from: usize) -> Option<(usize, Option<Event>)> {
    std::future::poll_fn(|cx| {
        let n = choices.len();
        let mut live = false;
        for k in 0..n {
            let i = (from + k) % n;
            if let Some(rx) = choices[i].rx.as_mut() {
                live = true;
                if let Poll::Ready(ev) = rx.poll_recv(cx) {
                    return Poll::Ready(Some((i, ev)));
                }
            }
        }
        if live {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    })
    .await
}

/// Prompt tokens once, completion tokens of every choice.
fn usage(g: &Gen) -> Value {
    let n: usize = g.choices.iter().map(|c| c.out.tokens.len()).sum();
    json!({"prompt_tokens": g.prompt_tokens, "completion_tokens": n, "total_tokens": g.prompt_tokens + n})
}

pub async fn completions(State(s): State<AppState>, b: Result<Bytes, BytesRejection>) -> Response {
    match async { completion_inner(s, body(b)?).await }.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

pub async fn chat(State(s): State<AppState>, b: Result<Bytes, BytesRejection>) -> Response {
    match async { chat_inner(s, body(b)?).await }.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completion_inner(s: AppState, body: Bytes) -> Result<Response, ApiError> {
    s.check_serving()?;
    let r = parse_completion_request(&body, &s.model)?;
    let prompt = match r.prompt {
        PromptInput::Ids(ids) => ids,
        PromptInput::Text(text) => {
            let t = s
                .tokenizer
                .as_ref()
                .ok_or_else(|| ApiError::bad("prompt", "this model has no tokenizer: send token ids"))?;
            t.encode(&text).map_err(|e| ApiError::bad("prompt", e.to_string()))?
        }
    };
    let mut g = start(&s, prompt, r.params, None).await?;
    if g.params.stream {
        return Ok(sse(g, false));
    }
    let mut choices = Vec::with_capacity(g.choices.len());
    for (i, c) in g.choices.iter_mut().enumerate() {
        let mut text = String::new();
        let reason = run_choice(c, |p| {
            if let Piece::Text(t) = p {
                text.push_str(&t);
            }
        })
        .await?;
        let lp = c.out.completion_logprobs(true);
        choices.push(json!({"index": i, "text": text, "token_ids": c.out.tokens, "logprobs": lp,
                            "finish_reason": c.out.finish_reason(reason)}));
    }
    Ok(Json(json!({
        "id": g.id, "object": "text_completion", "created": g.created, "model": g.model,
        "choices": choices, "usage": usage(&g),
    }))
    .into_response())
}

async fn chat_inner(s: AppState, body: Bytes) -> Result<Response, ApiError> {
    s.check_serving()?;
    let r = parse_chat_request(&body, &s.model)?;
    let t = s
        .tokenizer
        .as_ref()
        .ok_or_else(|| ApiError::bad("messages", "this model has no tokenizer, so it cannot serve chat"))?;
    let prompt = t.encode(&r.prompt).map_err(|e| ApiError::bad("messages", e.to_string()))?;
    let mut g = start(&s, prompt, r.params, Some(r.mode)).await?;
    if g.params.stream {
        return Ok(sse(g, true));
    }
    let mut choices = Vec::with_capacity(g.choices.len());
    for (i, c) in g.choices.iter_mut().enumerate() {
        let reason = run_choice(c, |_| {}).await?;
        let mut message = c.out.message();
        if message["tool_calls"].as_array().is_some_and(|a| a.is_empty()) {
            message.as_object_mut().map(|m| m.remove("tool_calls"));
        }
        choices.push(json!({"index": i, "message": message, "logprobs": c.out.chat_logprobs(true),
                            "finish_reason": c.out.finish_reason(reason)}));
    }
    Ok(Json(json!({
        "id": g.id, "object": "chat.completion", "created": g.created, "model": g.model,
        "choices": choices, "usage": usage(&g),
    }))
    .into_response())
}

fn delta_json(d: &StreamDelta) -> Value {
    match d {
        StreamDelta::Reasoning(s) => json!({"reasoning_content": s}),
        StreamDelta::Content(s) => json!({"content": s}),
        StreamDelta::ToolCallStart { index, id, name } => json!({"tool_calls": [{
            "index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
        StreamDelta::ToolCallArguments { index, arguments } => {
            json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
        }
    }
}

/// One chunk of the stream, about choice `i`.
fn chunk(g: &mut Gen, i: usize, chat: bool, piece: Option<Piece>, finish: Option<&str>) -> Value {
    let out = &mut g.choices[i].out;
    let (object, mut choice) = if chat {
        let delta = match &piece {
            Some(Piece::Delta(d)) => delta_json(d),
            _ => json!({}),
        };
        ("chat.completion.chunk", json!({"index": i, "delta": delta, "logprobs": out.chat_logprobs(false)}))
    } else {
        let text = match piece {
            Some(Piece::Text(t)) => t,
            _ => String::new(),
        };
        ("text_completion", json!({"index": i, "text": text, "logprobs": out.completion_logprobs(false)}))
    };
    choice["finish_reason"] = json!(finish);
    json!({"id": g.id, "object": object, "created": g.created, "model": g.model, "choices": [choice]})
}

fn event(v: &Value) -> Result<Bytes, Infallible> {
    Ok(Bytes::from(format!("data: {v}\n\n")))
}

/// Sends the events of every choice as they come: each choice's deltas in order, then its
/// finish chunk. `Err(())` when the client is gone.
async fn stream_choices(
    g: &mut Gen,
    chat: bool,
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
) -> Result<Result<(), ApiError>, ()> {
    let mut from = 0;
    while let Some((i, ev)) = next_event(&mut g.choices, from).await {
        from = (i + 1) % g.choices.len();
        let (pieces, end) = match on_event(&mut g.choices[i], ev) {
            Ok(step) => step,
            Err(e) => return Ok(Err(e)),
        };
        for p in pieces {
            let c = chunk(g, i, chat, Some(p), None);
            tx.send(event(&c)).await.map_err(|_| ())?;
        }
        if let Some(reason) = end {
            let reason = g.choices[i].out.finish_reason(reason);
            let last = chunk(g, i, chat, None, Some(reason));
            tx.send(event(&last)).await.map_err(|_| ())?;
        }
    }
    Ok(Ok(()))
}

/// The streaming answer: a task turns events into server-sent events; when the client goes away
/// the task ends and drops every choice's receiver, which cancels their jobs.
fn sse(mut g: Gen, chat: bool) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        if chat {
            for i in 0..g.choices.len() {
                let mut first = chunk(&mut g, i, true, None, None);
                first["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
                first["choices"][0]["logprobs"] = Value::Null;
                if tx.send(event(&first)).await.is_err() {
                    return;
                }
            }
        }
        match stream_choices(&mut g, chat, &tx).await {
            Err(()) => return,
            Ok(Ok(())) => {
                if g.params.include_usage {
                    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
                    let u = json!({"id": g.id, "object": object, "created": g.created, "model": g.model,
                                   "choices": [], "usage": usage(&g)});
                    let _ = tx.send(event(&u)).await;
                }
            }
            Ok(Err(e)) => {
                let _ = tx.send(event(&e.body())).await;
            }
        }
        drop(g);
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use emesh_chat::Tokenizer;
    use std::sync::Arc;

    fn tokenizer() -> Arc<Tokenizer> {
        let dir =
            std::env::var(emesh_common::names::ENV_TOKENIZER_DIR).map(std::path::PathBuf::from).unwrap_or_else(|_| {
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../shared/models/deepseek-v4-tokenizer")
            });
        Arc::new(Tokenizer::from_dir(dir).unwrap())
    }

    /// Generated DSML, token by token, becomes the deltas an OpenAI client assembles into a call.
    #[test]
    fn tool_calls_stream_as_openai_deltas() {
        let tok = tokenizer();
        let text = "Let me check.</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.last(), Some(&tok.eos_id()));
        let params = parse_chat_request(br#"{"messages": [{"role": "user", "content": "x"}]}"#, "m").unwrap().params;
        let mut out = Output::new(Some(tok.clone()), &params, tok.eos_id(), Some(ThinkingMode::Thinking));
        let mut pieces = vec![];
        for id in ids {
            pieces.extend(out.push(id, None));
        }
        pieces.extend(out.finish());
        let (mut reasoning, mut content) = (String::new(), String::new());
        let mut calls: Vec<(String, String, String)> = vec![];
        for p in pieces {
            let Piece::Delta(d) = p else { panic!("chat output is deltas") };
            let v = delta_json(&d);
            reasoning += v["reasoning_content"].as_str().unwrap_or("");
            content += v["content"].as_str().unwrap_or("");
            for c in v["tool_calls"].as_array().into_iter().flatten() {
                let i = c["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    assert_eq!(c["type"], "function");
                    let name = c["function"]["name"].as_str().unwrap().to_string();
                    calls.push((c["id"].as_str().unwrap().to_string(), name, String::new()));
                }
                calls[i].2 += c["function"]["arguments"].as_str().unwrap();
            }
        }
        assert_eq!(reasoning, "Let me check.");
        assert_eq!(content, "");
        assert_eq!(calls.len(), 1);
        assert!(calls[0].0.starts_with("call_"));
        assert_eq!(calls[0].1, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].2).unwrap();
        assert_eq!(args, json!({"city": "Paris", "days": 3}));
        assert_eq!(out.finish_reason("stop"), "tool_calls");
        assert_eq!(out.message()["tool_calls"][0]["function"]["name"], "get_weather");
    }
}
