//! The MoE sublayer (spec §8): router, routed experts with the SwiGLU clamp, shared expert.
//!
//! Split into [`route`], [`run_experts`] and [`combine_routed`] so that a cluster can run them on
//! different processes (see `crate::parallel`). Routed outputs are
//! summed per token in ascending expert id, then the shared expert is added: the same order
//! wherever the experts ran.

use crate::numerics::Numerics;
use crate::weights::{ExpertWeights, MoeWeights};
use emesh_common::ModelConfig;
use emesh_compute::ops;
use rayon::prelude::*;

/// Routing of one token: `k` expert ids (ascending) and their weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub experts: Vec<u32>,
    pub weights: Vec<f32>,
}

/// Router scores and choices for `n` tokens of normalised input `x`.
pub fn route(cfg: &ModelConfig, w: &MoeWeights, x: &[f32], tokens: &[u32], nx: Numerics) -> Vec<Route> {
    let e = cfg.n_routed_experts;
    let k = cfg.num_experts_per_tok;
    let n = tokens.len();
    let logits = nx.linear(&w.gate, x, n);
    (0..n)
        .map(|t| {
            let s: Vec<f32> = logits[t * e..(t + 1) * e].iter().map(|&l| ops::softplus(l).sqrt()).collect();
            let ids: Vec<u32> = match (&w.tid2eid, &w.bias) {
                (Some(table), _) => {
                    let tok = (tokens[t] as usize).min(cfg.vocab_size - 1);
                    let mut ids = table[tok * k..(tok + 1) * k].to_vec();
                    ids.sort_unstable();
                    ids
                }
                (None, Some(bias)) => {
                    let biased: Vec<f32> = s.iter().zip(bias).map(|(a, b)| a + b).collect();
                    ops::topk_indices(&biased, k).into_iter().map(|i| i as u32).collect()
                }
                (None, None) => ops::topk_indices(&s, k).into_iter().map(|i| i as u32).collect(),
            };
            let mut denom = 0.0;
            for &i in &ids {
                denom += s[i as usize];
            }
            let scale = cfg.routed_scaling_factor as f32;
            let weights = ids.iter().map(|&i| s[i as usize] / denom * scale).collect();
            Route { experts: ids, weights }
        })
        .collect()
}

/// SwiGLU expert on `n` rows: `w2(silu(min(w1 x, L)) * clamp(w3 x, -L, L))`, each row of the
/// hidden activation scaled by `pre_scale[row]` when given (official numerics).
pub fn expert_forward(
    cfg: &ModelConfig,
    w: &ExpertWeights,
    x: &[f32],
    n: usize,
    pre_scale: Option<&[f32]>,
    nx: Numerics,
) -> Vec<f32> {
    let mut g = nx.linear(&w.w1, x, n);
    let u = nx.linear(&w.w3, x, n);
    let lim = cfg.swiglu_limit as f32;
    let inter = w.w1.rows();
    for (i, (gv, &uv)) in g.iter_mut().zip(&u).enumerate() {
        let (a, b) = if lim > 0.0 { (gv.min(lim), uv.clamp(-lim, lim)) } else { (*gv, uv) };
        *gv = ops::silu(a) * b;
        if let Some(s) = pre_scale {
            *gv *= s[i / inter];
        }
    }
    nx.linear(&w.w2, &g, n)
}

/// Output of one expert for the tokens routed to it: `(token index, slot in its route, [d])`.
pub struct ExpertOut {
    pub expert: u32,
    pub tokens: Vec<(usize, usize)>,
    pub y: Vec<f32>,
}

/// Runs every held expert on the tokens routed to it (weights applied per the numerics mode:
/// after `w2` in exact mode by [`combine`], before it in official mode).
pub fn run_experts(cfg: &ModelConfig, w: &MoeWeights, x: &[f32], routes: &[Route], nx: Numerics) -> Vec<ExpertOut> {
    let d = cfg.hidden_size;
    let mut per: Vec<Vec<(usize, usize)>> = vec![Vec::new(); cfg.n_routed_experts];
    for (t, r) in routes.iter().enumerate() {
        for (slot, &e) in r.experts.iter().enumerate() {
            per[e as usize].push((t, slot));
        }
    }
    per.into_par_iter()
        .enumerate()
        .filter(|(e, toks)| !toks.is_empty() && w.experts[*e].is_some())
        .map(|(e, toks)| {
            let ew = w.experts[e].as_ref().expect("filtered to held experts");
            let mut xs = Vec::with_capacity(toks.len() * d);
            for &(t, _) in &toks {
                xs.extend_from_slice(&x[t * d..(t + 1) * d]);
            }
            let pre: Option<Vec<f32>> =
                nx.official().then(|| toks.iter().map(|&(t, s)| routes[t].weights[s]).collect());
            let y = expert_forward(cfg, ew, &xs, toks.len(), pre.as_deref(), nx);
            ExpertOut { expert: e as u32, tokens: toks, y }
        })
        .collect()
}

/// Sums each token's routed outputs in slot (= ascending expert id) order, starting from zero:
/// `w * y` in exact numerics, `y` in official numerics (the weight was applied before `w2`).
/// `outs` must hold every slot of every token.
pub fn combine_routed(
    cfg: &ModelConfig,
    routes: &[Route],
    outs: &[ExpertOut],
    nx: Numerics,
) -> Result<Vec<f32>, String> {
    let d = cfg.hidden_size;
    let k = cfg.num_experts_per_tok;
    let n = routes.len();
    let mut slots: Vec<Option<&[f32]>> = vec![None; n * k];
    for o in outs {
        for (j, &(t, s)) in o.tokens.iter().enumerate() {
            slots[t * k + s] = Some(&o.y[j * d..(j + 1) * d]);
        }
    }
    let mut out = vec![0.0; n * d];
    for t in 0..n {
        let acc = &mut out[t * d..(t + 1) * d];
        for (s, &wt) in routes[t].weights.iter().enumerate() {
            let y =
                slots[t * k + s].ok_or_else(|| format!("no output for token {t} expert {}", routes[t].experts[s]))?;
            if nx.official() {
                for (a, &v) in acc.iter_mut().zip(y) {
                    *a += v;
                }
            } else {
                for (a, &v) in acc.iter_mut().zip(y) {
                    *a += wt * v;
                }
            }
        }
    }
    Ok(out)
}

/// Adds the shared expert's output to the routed sum, in place.
pub fn add_shared(routed: &mut [f32], shared: &[f32]) {
    for (a, &v) in routed.iter_mut().zip(shared) {
        *a += v;
    }
}
