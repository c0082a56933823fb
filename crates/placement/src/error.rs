//! The crate's single error type. Every message names what is wrong in words an operator can act
//! on: which rank, how many bytes it needs, what its budget is.

use crate::units::gib;
use emesh_common::Rank;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid layout: {0}")]
    Layout(String),
    #[error("invalid input `{field}`: {reason}")]
    Input { field: String, reason: String },
    #[error(
        "{rank} (worker `{worker}`) needs {needed} bytes ({:.2} GiB: attention and shared expert {attention}, replicated {replicated}, \
         experts {experts}, reserve {reserve}) but its budget is {budget} bytes ({:.2} GiB)",
        gib(*needed), gib(*budget)
    )]
    DoesNotFit {
        rank: Rank,
        worker: String,
        needed: u64,
        budget: u64,
        attention: u64,
        replicated: u64,
        experts: u64,
        reserve: u64,
    },
    #[error(
        "the surviving ranks cannot hold the model: layer {layer} expert {expert} ({bytes} bytes) fits on no \
         survivor (most free: {most_free} bytes)"
    )]
    CannotHold { layer: u32, expert: u32, bytes: u64, most_free: u64 },
    #[error("the surviving ranks cannot hold the model: no rank survives")]
    NoSurvivors,
    #[error("unknown {0}")]
    UnknownRank(Rank),
    #[error("unknown hardware `{0}` (known: h100-80g, h200, b200, h800, cpu:<GiB>)")]
    UnknownHardware(String),
    #[error("model config: {0}")]
    Config(String),
}

impl From<emesh_common::ConfigError> for PlanError {
    fn from(e: emesh_common::ConfigError) -> Self {
        PlanError::Config(e.to_string())
    }
}

pub(crate) fn input(field: &str, reason: impl Into<String>) -> PlanError {
    PlanError::Input { field: field.to_string(), reason: reason.into() }
}
