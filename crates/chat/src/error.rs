//! The crate's single error type.
//!
//! Request errors carry the JSON path of the offending field so that an HTTP front end can return them
//! verbatim; completion errors say which rule of the output format was broken.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A request or message field is missing, has the wrong type or an unsupported value.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Model output that does not follow the V4 completion format (strict parsing only).
    #[error("malformed completion: {0}")]
    Malformed(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl ChatError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ChatError::Invalid { field: field.into(), reason: reason.into() }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        ChatError::Malformed(reason.into())
    }
}
