//! Routes, shared state, the API key check, and the small endpoints (health, readiness, models,
//! tokenize, detokenize, metrics). Generation lives in `generate`.

use crate::engine::Job;
use crate::error::ApiError;
use crate::parse::{self, token_ids};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use emesh_chat::Tokenizer;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// Largest request body read, in bytes (32 MiB): room for a prompt of a whole context of token
/// ids as JSON with long tool schemas, small enough that a client cannot make the server buffer
/// without bound. A larger body is a 413 with an OpenAI-shaped error.
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// A request body, or the OpenAI-shaped error for one axum could not read.
pub fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(ApiError::from)
}

#[derive(Clone)]
pub struct AppState {
    /// The name `/v1/models` lists and requests must use (or omit).
    pub model: String,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub jobs: mpsc::Sender<Job>,
    pub ready: Arc<AtomicBool>,
    /// `Some(reason)`: `/ready` and every generation endpoint answer 503 with it.
    pub degraded: Arc<RwLock<Option<String>>>,
    /// Prompt plus generated tokens may not exceed this.
    pub max_context: usize,
    pub vocab: usize,
    pub eos: u32,
    pub ids: Arc<AtomicU64>,
    /// Required as `Authorization: Bearer KEY` on `/v1/*`, `/tokenize` and `/detokenize`.
    pub api_key: Option<Arc<str>>,
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// Ready, not degraded, no API key, no metrics.
    pub fn new(
        model: String,
        tokenizer: Option<Arc<Tokenizer>>,
        jobs: mpsc::Sender<Job>,
        max_context: usize,
        vocab: usize,
        eos: u32,
    ) -> Self {
        AppState {
            model,
            tokenizer,
            jobs,
            ready: Arc::new(AtomicBool::new(true)),
            degraded: Arc::new(RwLock::new(None)),
            max_context,
            vocab,
            eos,
            ids: Arc::new(AtomicU64::new(0)),
            api_key: None,
            metrics: None,
        }
    }

    /// Marks the service degraded (`Some(reason)`) or healthy again (`None`).
    pub fn set_degraded(&self, reason: Option<String>) {
        metrics::gauge!(emesh_common::metrics::DEGRADED).set(if reason.is_some() { 1.0 } else { 0.0 });
        *self.degraded.write().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// 503 while not ready or degraded.
    pub fn check_serving(&self) -> Result<(), ApiError> {
        if let Some(reason) = self.degraded.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Err(ApiError::unavailable(format!("degraded: {reason}")));
        }
        if !self.ready.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable("the model is not placed and loaded yet"));
        }
        Ok(())
    }

    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(crate::generate::completions))
        .route("/v1/chat/completions", post(crate::generate::chat))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route", None) })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method", None)
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Whether `path` needs the API key (`/health`, `/ready` and `/metrics` stay open).
fn guarded(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/tokenize" || path == "/detokenize"
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        if guarded(req.uri().path()) {
            let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let token = given.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
            if !token.is_some_and(|t| same(t.as_bytes(), key.as_bytes())) {
                let msg = if given.is_none() {
                    "missing API key: send `Authorization: Bearer KEY`"
                } else {
                    "invalid API key"
                };
                return ApiError::new(StatusCode::UNAUTHORIZED, msg, None).into_response();
            }
        }
    }
    next.run(req).await
}

/// Equality that takes as long for every key of the same length (no early exit).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(State(s): State<AppState>) -> Response {
    match s.check_serving() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(h) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "metrics are not enabled on this server", None).into_response(),
    }
}

async fn models(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{
        "id": s.model, "object": "model", "created": crate::generate::now(), "owned_by": "emesh",
        "root": s.model, "max_model_len": s.max_context,
    }]}))
}

fn tokenizer(s: &AppState) -> Result<&Tokenizer, ApiError> {
    s.tokenizer.as_deref().ok_or_else(|| ApiError::bad("model", "this model has no tokenizer"))
}

/// vLLM's `/tokenize`: `{"prompt"}` or `{"messages"}`, with `add_special_tokens` (BOS first;
/// default true for a prompt, false for messages, whose rendering starts with BOS already).
async fn tokenize(State(s): State<AppState>, b: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let m = parse::parse_object(&body(b)?)?;
    parse::check_model(&m, &s.model)?;
    let t = tokenizer(&s)?;
    let add = |default: bool| match m.get("add_special_tokens").filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad("add_special_tokens", "`add_special_tokens` must be true or false")),
    };
    let mut tokens = match (m.get("prompt").filter(|v| !v.is_null()), m.get("messages").filter(|v| !v.is_null())) {
        (Some(Value::String(p)), None) => {
            let mut ids = if add(true)? { vec![t.bos_id()] } else { vec![] };
            ids.extend(t.encode(p).map_err(|e| ApiError::bad("prompt", e.to_string()))?);
            ids
        }
        (Some(_), None) => return Err(ApiError::bad("prompt", "`prompt` must be a string")),
        (None, Some(_)) => {
            let (text, _) = parse::render(&m)?;
            let mut ids = t.encode(&text).map_err(|e| ApiError::bad("messages", e.to_string()))?;
            if add(false)? && ids.first() != Some(&t.bos_id()) {
                ids.insert(0, t.bos_id());
            }
            ids
        }
        (Some(_), Some(_)) => return Err(ApiError::bad("prompt", "send either `prompt` or `messages`, not both")),
        (None, None) => return Err(ApiError::bad("prompt", "`prompt` or `messages` is required")),
    };
    tokens.shrink_to_fit();
    Ok(Json(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": s.max_context})))
}

/// vLLM's `/detokenize`: `{"tokens"}` to `{"prompt"}`.
async fn detokenize(State(s): State<AppState>, b: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let m = parse::parse_object(&body(b)?)?;
    parse::check_model(&m, &s.model)?;
    let t = tokenizer(&s)?;
    let ids = match m.get("tokens").filter(|v| !v.is_null()) {
        None => return Err(ApiError::bad("tokens", "`tokens` is required")),
        Some(v) => token_ids(v, "tokens")?,
    };
    if let Some(&bad) = ids.iter().find(|&&x| x as usize >= s.vocab) {
        return Err(ApiError::bad("tokens", format!("token id {bad} is outside the vocabulary (0..{})", s.vocab)));
    }
    let prompt = t.decode(&ids, false).map_err(|e| ApiError::bad("tokens", e.to_string()))?;
    Ok(Json(json!({ "prompt": prompt })))
}
