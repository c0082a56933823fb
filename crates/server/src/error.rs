//! OpenAI-shaped errors: every refusal names the field it is about, so a client can fix it.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError { status, message: message.into(), param: param.map(str::to_string) }
    }

    /// 400 about `param`.
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, Some(param))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message, None)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message, None)
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            StatusCode::INTERNAL_SERVER_ERROR => "internal_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body (also sent as the last event of a stream that fails).
    pub fn body(&self) -> Value {
        let code: Value = if self.status == StatusCode::UNAUTHORIZED {
            json!("invalid_api_key")
        } else {
            json!(self.status.as_u16())
        };
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": code}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status.as_u16(), self.param.as_deref().unwrap_or("-"), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// A body axum could not read (over [`crate::MAX_BODY_BYTES`]: 413; cut short: 400), as an
/// OpenAI error about `body` rather than axum's plain text.
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is larger than the limit of {} bytes", crate::MAX_BODY_BYTES)
        } else {
            format!("the request body could not be read: {}", r.body_text())
        };
        ApiError::new(status, message, Some("body"))
    }
}
