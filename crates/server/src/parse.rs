//! Request parsing, separate from serving: pure functions from the body bytes to a validated
//! request or a 4xx [`ApiError`] naming the field. Nothing here touches the tokenizer or the
//! engine, so the fuzz target and the mutation test can drive these functions alone.

use crate::error::ApiError;
use axum::http::StatusCode;
use emesh_chat::ThinkingMode;
use serde_json::{Map, Value};

/// Most stop strings a request may carry.
pub const MAX_STOP: usize = 16;
/// Most alternatives `logprobs` / `top_logprobs` may ask for.
pub const MAX_LOGPROBS: u32 = 20;
/// Most choices (`n`) one request may ask for: each is its own engine job, so `n` bounds how
/// much of the batch a single request can take.
pub const MAX_N: usize = 16;

/// Generation parameters shared by both endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct GenParams {
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    /// `Some(n)`: log-probabilities with `n` alternatives.
    pub logprobs: Option<u32>,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices to generate (`1..=MAX_N`); choice `i` samples with seed `seed + i`.
    pub n: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    pub params: GenParams,
    pub prompt: PromptInput,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub params: GenParams,
    /// The V4 prompt the messages render to.
    pub prompt: String,
    pub mode: ThinkingMode,
}

pub type Object = Map<String, Value>;

/// The body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Object, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad("body", "the request body is not valid UTF-8"))?;
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad("body", format!("the request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad("body", "the request body must be a JSON object")),
    }
}

fn field<'a>(m: &'a Object, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn number(m: &Object, key: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match field(m, key) {
        None => Ok(None),
        Some(v) => {
            let x = v.as_f64().ok_or_else(|| ApiError::bad(key, format!("`{key}` must be a number")))?;
            if !(lo..=hi).contains(&x) {
                return Err(ApiError::bad(key, format!("`{key}` must be between {lo} and {hi}, not {x}")));
            }
            Ok(Some(x))
        }
    }
}

fn boolean(m: &Object, key: &str) -> Result<Option<bool>, ApiError> {
    match field(m, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad(key, format!("`{key}` must be true or false"))),
    }
}

fn integer(m: &Object, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match field(m, key) {
        None => Ok(None),
        Some(v) => {
            let x = v.as_i64().ok_or_else(|| ApiError::bad(key, format!("`{key}` must be an integer")))?;
            if !(lo..=hi).contains(&x) {
                return Err(ApiError::bad(key, format!("`{key}` must be between {lo} and {hi}, not {x}")));
            }
            Ok(Some(x))
        }
    }
}

/// Checks `model` against the served name (404 for another).
pub fn check_model(m: &Object, served: &str) -> Result<(), ApiError> {
    if let Some(model) = field(m, "model") {
        let name = model.as_str().ok_or_else(|| ApiError::bad("model", "`model` must be a string"))?;
        if name != served {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("the model `{name}` does not exist (serving `{served}`)"),
                Some("model"),
            ));
        }
    }
    Ok(())
}

/// Token ids, each below `u32::MAX`.
pub fn token_ids(v: &Value, key: &str) -> Result<Vec<u32>, ApiError> {
    let a = v.as_array().ok_or_else(|| ApiError::bad(key, format!("`{key}` must be an array of token ids")))?;
    a.iter()
        .map(|x| x.as_u64().filter(|&t| t < u32::MAX as u64).map(|t| t as u32))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| ApiError::bad(key, format!("`{key}` must be an array of non-negative token ids")))
}

fn params(m: &Object, chat: bool) -> Result<GenParams, ApiError> {
    let n = integer(m, "n", 1, MAX_N as i64)?.map_or(1, |n| n as usize);
    for key in ["presence_penalty", "frequency_penalty"] {
        if number(m, key, -2.0, 2.0)?.is_some_and(|x| x != 0.0) {
            return Err(ApiError::bad(key, format!("`{key}` is not supported; send 0 or omit it")));
        }
    }
    if number(m, "repetition_penalty", 0.0, 100.0)?.is_some_and(|x| x != 1.0) {
        return Err(ApiError::bad("repetition_penalty", "`repetition_penalty` is not supported; send 1 or omit it"));
    }
    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = integer(m, key, 1, i64::MAX)? {
            max_tokens = Some(n.min(u32::MAX as i64) as usize);
        }
    }
    let temperature = number(m, "temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32;
    let top_p = number(m, "top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32;
    if top_p <= 0.0 {
        return Err(ApiError::bad("top_p", "`top_p` must be greater than 0"));
    }
    let top_k = integer(m, "top_k", -1, u32::MAX as i64)?.map_or(0, |k| k.max(0) as u32);
    let seed = match field(m, "seed") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|x| x as u64))
                .ok_or_else(|| ApiError::bad("seed", "`seed` must be an integer"))?,
        ),
    };
    let stop = match field(m, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("stop", "`stop` must be a string or an array of strings"))?,
        Some(_) => return Err(ApiError::bad("stop", "`stop` must be a string or an array of strings")),
    };
    if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
        return Err(ApiError::bad("stop", format!("`stop` takes at most {MAX_STOP} non-empty strings")));
    }
    let stop_token_ids = match field(m, "stop_token_ids") {
        None => vec![],
        Some(v) => token_ids(v, "stop_token_ids")?,
    };
    let logprobs = if chat {
        let top = integer(m, "top_logprobs", 0, MAX_LOGPROBS as i64)?;
        match boolean(m, "logprobs")? {
            Some(true) => Some(top.unwrap_or(0) as u32),
            _ if top.is_some_and(|t| t > 0) => {
                return Err(ApiError::bad("top_logprobs", "`top_logprobs` needs `logprobs: true`"))
            }
            _ => None,
        }
    } else {
        integer(m, "logprobs", 0, MAX_LOGPROBS as i64)?.map(|n| n as u32)
    };
    let stream = boolean(m, "stream")?.unwrap_or(false);
    let include_usage = match field(m, "stream_options") {
        None => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")
            .map_err(|_| ApiError::bad("stream_options.include_usage", "must be true or false"))?
            .unwrap_or(false),
        Some(_) => return Err(ApiError::bad("stream_options", "`stream_options` must be an object")),
    };
    Ok(GenParams {
        max_tokens,
        temperature,
        top_p,
        top_k,
        seed,
        stop,
        stop_token_ids,
        ignore_eos: boolean(m, "ignore_eos")?.unwrap_or(false),
        logprobs,
        stream,
        include_usage,
        n,
    })
}

/// `POST /v1/completions`.
pub fn parse_completion_request(body: &[u8], served: &str) -> Result<CompletionRequest, ApiError> {
    let m = parse_object(body)?;
    check_model(&m, served)?;
    let params = params(&m, false)?;
    if boolean(&m, "echo")? == Some(true) {
        return Err(ApiError::bad("echo", "`echo` is not supported"));
    }
    if field(&m, "suffix").is_some() {
        return Err(ApiError::bad("suffix", "`suffix` is not supported"));
    }
    if integer(&m, "best_of", 1, 1)
        .map_err(|_| ApiError::bad("best_of", "only best_of = 1 is supported"))?
        .is_some_and(|b| b != 1)
    {
        return Err(ApiError::bad("best_of", "only best_of = 1 is supported"));
    }
    let prompt = match field(&m, "prompt") {
        None => return Err(ApiError::bad("prompt", "`prompt` is required")),
        Some(Value::String(s)) => PromptInput::Text(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            PromptInput::Text(a[0].as_str().unwrap_or_default().to_string())
        }
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => PromptInput::Ids(token_ids(&a[0], "prompt")?),
        Some(v @ Value::Array(_)) => PromptInput::Ids(
            token_ids(v, "prompt")
                .map_err(|_| ApiError::bad("prompt", "`prompt` must be a string or an array of token ids"))?,
        ),
        Some(_) => return Err(ApiError::bad("prompt", "`prompt` must be a string or an array of token ids")),
    };
    if prompt == PromptInput::Ids(vec![]) || prompt == PromptInput::Text(String::new()) {
        return Err(ApiError::bad("prompt", "the prompt is empty"));
    }
    Ok(CompletionRequest { params, prompt })
}

/// `POST /v1/chat/completions`: the messages rendered with the V4 encoding.
pub fn parse_chat_request(body: &[u8], served: &str) -> Result<ChatRequest, ApiError> {
    let m = parse_object(body)?;
    check_model(&m, served)?;
    let params = params(&m, true)?;
    let (prompt, mode) = render(&m)?;
    Ok(ChatRequest { params, prompt, mode })
}

/// The V4 prompt of a chat request and the mode its output starts in.
pub fn render(m: &Object) -> Result<(String, ThinkingMode), ApiError> {
    let prompt = emesh_chat::render_chat_request(&Value::Object(m.clone())).map_err(|e| {
        let param = match &e {
            emesh_chat::ChatError::Invalid { field, .. } => field.clone(),
            _ => "messages".to_string(),
        };
        ApiError::bad(&param, e.to_string())
    })?;
    let mode =
        if prompt.ends_with(emesh_chat::tokens::THINK_START) { ThinkingMode::Thinking } else { ThinkingMode::Chat };
    Ok((prompt, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_and_named() {
        let ok =
            parse_completion_request(br#"{"prompt": "hi", "temperature": 0.5, "seed": 3, "stop": "x"}"#, "m").unwrap();
        assert_eq!(ok.params.temperature, 0.5);
        assert_eq!(ok.params.seed, Some(3));
        assert_eq!(ok.params.stop, vec!["x".to_string()]);
        assert_eq!(ok.params.n, 1);
        let many = parse_completion_request(br#"{"prompt": "hi", "n": 16}"#, "m").unwrap();
        assert_eq!(many.params.n, MAX_N);
        let cases: &[(&[u8], &str)] = &[
            (b"{", "body"),
            (br#"{"prompt": "a", "temperature": -1}"#, "temperature"),
            (br#"{"prompt": "a", "temperature": "hot"}"#, "temperature"),
            (br#"{"prompt": "a", "top_p": 0}"#, "top_p"),
            (br#"{"prompt": "a", "top_k": -5}"#, "top_k"),
            (br#"{"prompt": "a", "n": 0}"#, "n"),
            (br#"{"prompt": "a", "n": 17}"#, "n"),
            (br#"{"prompt": "a", "n": 1.5}"#, "n"),
            (br#"{"prompt": "a", "stop": [1]}"#, "stop"),
            (br#"{"prompt": "a", "logprobs": 99}"#, "logprobs"),
            (br#"{"prompt": "a", "max_tokens": 0}"#, "max_tokens"),
            (br#"{"prompt": "a", "max_tokens": 1e300}"#, "max_tokens"),
            (br#"{"prompt": "a", "stream": "yes"}"#, "stream"),
            (br#"{"prompt": [-1]}"#, "prompt"),
            (br#"{"prompt": ""}"#, "prompt"),
        ];
        for (body, param) in cases {
            let e = parse_completion_request(body, "m").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
            assert_eq!(e.param.as_deref(), Some(*param), "{}", String::from_utf8_lossy(body));
        }
        let e = parse_completion_request(br#"{"prompt": "a", "model": "x"}"#, "m").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = parse_chat_request(br#"{"messages": [], "logprobs": false, "top_logprobs": 3}"#, "m").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        let c =
            parse_chat_request(br#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true}"#, "m").unwrap();
        assert_eq!(c.params.logprobs, Some(0));
        assert_eq!(c.mode, ThinkingMode::Thinking);
    }
}
