//! CPU kernels for the ExpertMesh engine.
//!
//! Two rules shape everything here:
//! - **Batch invariance.** A row's result never depends on which other rows share the call: every
//!   matmul output is one dot product computed with the same fixed operation sequence
//!   ([`dot`]), whatever the batch size, tiling or thread count.
//! - **Fixed reduction order.** Every sum has one order, written in the source; nothing is
//!   reassociated (no fast-math, no FMA contraction), so results are bit-identical across runs,
//!   thread counts, layouts and x86-64 machines with or without AVX2.
//!
//! Weights stay in their stored form ([`Weight`]: F32, BF16, FP8 e4m3 with E8M0 block scales,
//! FP4 e2m1 with per-32 scales) and are decoded a row at a time inside the matmul.

pub mod dot;
pub mod formats;
pub mod matrix;
pub mod ops;
pub mod rope;
#[cfg(target_arch = "x86_64")]
pub mod simd;

pub use matrix::{matmul, Weight, WeightError};
pub use rope::RopeTable;

/// Whether the AVX2 kernels are in use on this CPU (results are identical either way).
pub fn simd_enabled() -> bool {
    dot::has_avx2()
}

/// Configures the global compute thread pool once; later calls are no-ops.
pub fn init_threads(threads: Option<usize>) {
    let n = threads
        .or_else(|| std::env::var(emesh_common::names::ENV_THREADS).ok().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}
