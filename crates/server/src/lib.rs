//! The HTTP front of the coordinator (OpenAI-compatible).
//!
//! Handlers validate and tokenize, then hand a job to the engine loop ([`engine_loop`]), which
//! owns the cluster and the batcher and steps while anything is running. This first slice
//! serves `/health`, `/ready`, `/v1/models`, and non-streaming `/v1/completions` and
//! `/v1/chat/completions` with greedy decoding; errors are OpenAI-shaped with the field named.

mod api;
mod engine;

pub use api::{router, AppState};
pub use engine::{engine_loop, Job, JobResult};
