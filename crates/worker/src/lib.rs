//! A worker: one rank of the cluster.
//!
//! It holds the shard its [`emesh_placement::RankPlan`] assigns (its heads' slice of attention,
//! its experts, the replicated tensors), keeps the caches of its group's sequences, and runs
//! whole steps with its peers through a [`emesh_comm::Transport`]. The math is the engine's own
//! ([`emesh_model::Engine::forward_with`]); this crate only supplies the cross-rank exchanges
//! ([`cluster_comm::ClusterComm`]).

pub mod cluster_comm;
pub mod core;
pub mod lease;
mod msg;
pub mod sample;
pub mod server;

pub use crate::core::{SeqWork, ShardSource, StepInput, StepOutput, WorkerCore, WorkerError};
pub use lease::Registration;
pub use server::{run, serve, WorkerConfig};
