//! The seam between the forward pass and the rest of a cluster.
//!
//! The engine runs the same code in one process and in a cluster; only the two places where a
//! layer needs other ranks go through [`ModelComm`]: the sum of attention partials over every
//! output group, and the routed experts. Both keep the fixed summation order (groups ascending,
//! a token's experts ascending), so any implementation gives bit-identical results.

use crate::error::{ModelError, Result};
use crate::moe::{self, Route};
use crate::numerics::Numerics;
use crate::weights::MoeWeights;
use emesh_common::ModelConfig;

pub trait ModelComm {
    /// The attention output of every token: the sum, from zero, over all output groups in
    /// ascending order, where `partials` are this process's groups (ascending, `[T, d]` each).
    fn reduce_attention(&mut self, layer: usize, partials: Vec<Vec<f32>>, len: usize) -> Result<Vec<f32>>;

    /// The routed part of the MoE output for every token (`[T, d]`, no shared expert): each
    /// token's expert outputs summed in ascending expert id from zero.
    fn routed_experts(
        &mut self,
        cfg: &ModelConfig,
        layer: usize,
        moe: &MoeWeights,
        x: &[f32],
        routes: &[Route],
        nx: Numerics,
    ) -> Result<Vec<f32>>;
}

/// Everything in this process.
pub struct Local;

impl ModelComm for Local {
    fn reduce_attention(&mut self, _layer: usize, partials: Vec<Vec<f32>>, len: usize) -> Result<Vec<f32>> {
        Ok(sum_in_order(&partials, len))
    }

    fn routed_experts(
        &mut self,
        cfg: &ModelConfig,
        layer: usize,
        moe: &MoeWeights,
        x: &[f32],
        routes: &[Route],
        nx: Numerics,
    ) -> Result<Vec<f32>> {
        let outs = moe::run_experts(cfg, moe, x, routes, nx);
        moe::combine_routed(cfg, routes, &outs, nx).map_err(|e| ModelError::Invalid(format!("layer {layer}: {e}")))
    }
}

/// Sums per-group partials in ascending group order, starting from zero.
pub fn sum_in_order(partials: &[Vec<f32>], len: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; len];
    for p in partials {
        for (a, &b) in u.iter_mut().zip(p) {
            *a += b;
        }
    }
    u
}
