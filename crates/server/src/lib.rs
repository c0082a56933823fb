//! The HTTP front of the coordinator (OpenAI-compatible).
//!
//! Handlers validate (pure functions in [`parse`], fuzzed), tokenize, and hand a job to the engine
//! loop ([`engine_loop`]), which owns the cluster and the batcher, steps while anything is
//! running, and sends each job its tokens as they come. Answers are built token by token in one
//! place (`output`), whether they stream as server-sent events or not. Errors are OpenAI-shaped
//! with the field named; nothing a client sends may panic the server.

mod api;
mod engine;
mod error;
mod generate;
pub mod metrics;
mod output;
pub mod parse;

pub use api::{router, AppState, MAX_BODY_BYTES};
pub use engine::{engine_loop, engine_loop_with, on_step_error, Event, InFlight, Job, Running};
pub use error::ApiError;
pub use output::StopFilter;
