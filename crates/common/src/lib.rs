//! Vocabulary shared by every ExpertMesh crate.
//!
//! This crate does no IO beyond reading a config file on request. It holds the id newtypes,
//! the DeepSeek-V4 model configuration (parsed from either the official or the HF spelling),
//! and the registry of environment-variable names, so that every layer speaks the same words.

pub mod config;
pub mod ids;
pub mod metrics;
pub mod names;

pub use config::{AttnKind, ConfigError, ModelConfig, MoeKind, RopeConfig, YarnConfig};
pub use ids::{Epoch, ExpertId, LayerId, Rank};
