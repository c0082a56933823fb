//! The model crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{path}: invalid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{dir}: no checkpoint found (expected model.safetensors.index.json or *.safetensors)")]
    NoCheckpoint { dir: PathBuf },
    #[error("tensor `{name}` is missing from the checkpoint{hint}")]
    Missing { name: String, hint: String },
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor { path: PathBuf, name: String, reason: String },
    #[error(transparent)]
    Config(#[from] emesh_common::ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("memory budget exceeded: {what} needs {need} bytes, budget is {budget} bytes")]
    Budget { what: String, need: u64, budget: u64 },
}

pub type Result<T> = std::result::Result<T, ModelError>;
