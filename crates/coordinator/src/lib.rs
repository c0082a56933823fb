//! The coordinator: it owns the placement and drives steps on every worker.
//!
//! It never touches model weights or math: it reads the model config, asks the planner
//! ([`emesh_placement`]) where everything goes, tells each worker to load its shard, and then
//! sends every step to every rank (an empty batch still takes part in each exchange),
//! collecting logits from each data-parallel group's first rank.

mod balance;
mod batcher;
mod cluster;
mod driver;
mod failover;
pub mod leader;

pub use balance::LoadSample;
pub use batcher::{
    Batcher, Emitted, FinishReason, Finished, Request, SamplingParams, SchedulerConfig, StepCluster, StepOutcome,
    TokenLogprobs,
};
pub use cluster::{Cluster, ClusterError, ClusterOptions, GroupBatch, SeqOutput, SeqStep};
pub use driver::{Driver, DriverOptions, Stepper};
pub use failover::{Probe, Recovery, HEALTH_TIMEOUT};
