//! Routes, request validation and OpenAI-shaped responses and errors.

use crate::engine::{Job, JobResult};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use emesh_chat::{parse_completion_lenient, ThinkingMode, Tokenizer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub struct AppState {
    /// The name `/v1/models` lists and requests must use (or omit).
    pub model: String,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub jobs: mpsc::Sender<Job>,
    pub ready: Arc<AtomicBool>,
    /// Prompt plus generated tokens may not exceed this.
    pub max_context: usize,
    pub vocab: usize,
    pub eos: u32,
    pub ids: Arc<AtomicU64>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route", None) })
        .with_state(state)
}

/// An OpenAI-shaped error.
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError { status, message: message.into(), param: param.map(str::to_string) }
    }
    fn bad(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, Some(param))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            StatusCode::INTERNAL_SERVER_ERROR => "internal_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status.as_u16()}});
        (self.status, Json(body)).into_response()
    }
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is not placed and loaded yet", None).into_response()
    }
}

async fn models(State(s): State<AppState>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": s.model, "object": "model", "owned_by": "emesh", "max_model_len": s.max_context}]}),
    )
}

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad("body", "the request body is not valid UTF-8"))?;
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad("body", format!("the request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad("body", "the request body must be a JSON object")),
    }
}

/// Fields shared by both endpoints.
struct Common {
    max_tokens: Option<usize>,
    stop_token: Option<u32>,
}

fn common(s: &AppState, m: &serde_json::Map<String, Value>) -> Result<Common, ApiError> {
    if let Some(model) = m.get("model").filter(|v| !v.is_null()) {
        let name = model.as_str().ok_or_else(|| ApiError::bad("model", "`model` must be a string"))?;
        if name != s.model {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("the model `{name}` does not exist (serving `{}`)", s.model),
                Some("model"),
            ));
        }
    }
    if m.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad("stream", "streaming is not supported by this server yet; send `stream: false`"));
    }
    if let Some(t) = m.get("temperature").filter(|v| !v.is_null()) {
        let t = t.as_f64().ok_or_else(|| ApiError::bad("temperature", "`temperature` must be a number"))?;
        if t != 0.0 {
            return Err(ApiError::bad(
                "temperature",
                "only greedy decoding (temperature 0) is supported by this server yet",
            ));
        }
    }
    if let Some(n) = m.get("n").filter(|v| !v.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
    }
    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = m.get(key).filter(|v| !v.is_null()) {
            let n = v
                .as_u64()
                .filter(|&n| n >= 1)
                .ok_or_else(|| ApiError::bad(key, format!("`{key}` must be a positive integer")))?;
            max_tokens = Some(n.min(u32::MAX as u64) as usize);
        }
    }
    let ignore_eos = m.get("ignore_eos").and_then(Value::as_bool).unwrap_or(false);
    Ok(Common { max_tokens, stop_token: (!ignore_eos).then_some(s.eos) })
}

async fn run(s: &AppState, prompt: Vec<u32>, c: &Common) -> Result<JobResult, ApiError> {
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
    let room = s.max_context - prompt.len();
    let max_tokens = c.max_tokens.unwrap_or(16).min(room);
    if !s.ready.load(Ordering::Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is not placed and loaded yet", None));
    }
    let (tx, rx) = oneshot::channel();
    s.jobs
        .try_send(Job { prompt, max_tokens, stop_token: c.stop_token, reply: tx })
        .map_err(|_| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "the request queue is full; retry later", None))?;
    rx.await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine stopped", None))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e, None))
}

fn usage(r: &JobResult) -> Value {
    json!({"prompt_tokens": r.prompt_tokens, "completion_tokens": r.tokens.len(), "total_tokens": r.prompt_tokens + r.tokens.len()})
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn completions(State(s): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let m = parse_body(&body)?;
    let c = common(&s, &m)?;
    let prompt: Vec<u32> = match m.get("prompt") {
        None | Some(Value::Null) => return Err(ApiError::bad("prompt", "`prompt` is required")),
        Some(Value::String(text)) => {
            let t = s
                .tokenizer
                .as_ref()
                .ok_or_else(|| ApiError::bad("prompt", "this model has no tokenizer: send token ids"))?;
            t.encode(text).map_err(|e| ApiError::bad("prompt", e.to_string()))?
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_u64().filter(|&x| x <= u32::MAX as u64).map(|x| x as u32))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| ApiError::bad("prompt", "`prompt` must be a string or an array of token ids"))?,
        Some(_) => return Err(ApiError::bad("prompt", "`prompt` must be a string or an array of token ids")),
    };
    let r = run(&s, prompt, &c).await?;
    let text = match &s.tokenizer {
        Some(t) => t
            .decode(&r.tokens, true)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?,
        None => String::new(),
    };
    let id = s.ids.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({
        "id": format!("cmpl-{id}"), "object": "text_completion", "created": now(), "model": s.model,
        "choices": [{"index": 0, "text": text, "token_ids": r.tokens, "logprobs": null, "finish_reason": r.finish_reason}],
        "usage": usage(&r),
    })))
}

async fn chat(State(s): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let m = parse_body(&body)?;
    let c = common(&s, &m)?;
    let t = s
        .tokenizer
        .clone()
        .ok_or_else(|| ApiError::bad("messages", "this model has no tokenizer, so it cannot serve chat"))?;
    let prompt_text = emesh_chat::render_chat_request(&Value::Object(m.clone())).map_err(|e| {
        let msg = e.to_string();
        let param = msg.split(':').next().unwrap_or("messages").to_string();
        ApiError::bad(&param, msg)
    })?;
    let mode = if prompt_text.ends_with("<think>") { ThinkingMode::Thinking } else { ThinkingMode::Chat };
    let prompt = t.encode(&prompt_text).map_err(|e| ApiError::bad("messages", e.to_string()))?;
    let r = run(&s, prompt, &c).await?;
    let gen: Vec<u32> = r.tokens.iter().copied().filter(|&x| Some(x) != c.stop_token).collect();
    let text =
        t.decode(&gen, false).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    let parsed = parse_completion_lenient(&text, mode);
    let finish = if r.finish_reason == "length" { "length" } else { parsed.finish_reason() };
    let id = s.ids.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({
        "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": now(), "model": s.model,
        "choices": [{"index": 0, "message": parsed.to_openai(), "logprobs": null, "finish_reason": finish}],
        "usage": usage(&r),
    })))
}
