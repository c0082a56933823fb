//! Placement for ExpertMesh: which rank holds which tensors, and whether the cluster can hold them.
//!
//! Pure logic, no IO: the same functions answer `emesh plan` for a cluster on paper and place
//! experts at run time, so what the report promises is what the workers load.
//!
//! - [`inventory`]: every checkpoint tensor of a V4 config, with dtype, shape and bytes.
//! - [`plan`] and [`repair`]: the per-rank placement (attention slice, expert slots,
//!   replicas) and the next epoch's placement after ranks die.
//! - [`sizing`]: `emesh plan`'s report: feasible layouts, memory per GPU, roofline throughput,
//!   the smallest cluster; [`v3`] lets it size DeepSeek-V3 for comparison with published data.
//! - [`simulate`]: a seeded failure simulator comparing recovery policies.
//! - [`catalog`]: the official configs built in by name, and any config recognised by `model_type`.

pub mod catalog;
pub mod error;
pub mod hardware;
pub mod inventory;
pub mod memory;
pub mod plan;
pub mod profile;
pub mod repair;
pub mod rng;
pub mod simulate;
pub mod sizing;
mod units;
pub mod v3;

pub use error::PlanError;
pub use hardware::Hardware;
pub use inventory::{DType, Inventory, Shard, TensorInfo, WeightForm};
pub use memory::{BlockBytes, ModelBytes, StaticBytes};
pub use plan::{Layout, Plan, PlanRequest, RankBytes, RankPlan, WorkerSpec};
pub use profile::ModelProfile;
pub use repair::{LoadOrder, Repair};
pub use simulate::{Policy, SimConfig, SimReport};
pub use sizing::{size, Assumptions, SizingReport, SizingRequest};
pub use v3::V3Config;
