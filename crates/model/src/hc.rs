//! Manifold-constrained hyper-connections (mHC): collapse the residual streams into one sublayer
//! input, then expand the sublayer output back with a Sinkhorn-projected stream mix.

use crate::weights::HcWeights;
use emesh_compute::{dot::sum_sq, matmul, ops};

/// Mixing coefficients of one token: `pre[hc]`, `post[hc]`, `comb[hc*hc]` (row j = from stream j).
pub struct HcMix {
    pub post: Vec<f32>,
    pub comb: Vec<f32>,
}

fn mixes(x: &[f32], n: usize, w: &HcWeights, eps: f32) -> Vec<f32> {
    let width = w.fn_.cols();
    let mut mu = vec![0.0; n * w.fn_.rows()];
    matmul(&w.fn_, x, n, &mut mu);
    for (t, m) in mu.chunks_exact_mut(w.fn_.rows()).enumerate() {
        let z = &x[t * width..(t + 1) * width];
        let rho = 1.0 / (sum_sq(z) / width as f32 + eps).sqrt();
        for v in m.iter_mut() {
            *v *= rho;
        }
    }
    mu
}

fn collapse(x: &[f32], pre: &[f32], d: usize, out: &mut [f32]) {
    out.fill(0.0);
    for (j, &p) in pre.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(&x[j * d..(j + 1) * d]) {
            *o += p * v;
        }
    }
}

/// Shape and constants of the hyper-connections.
#[derive(Clone, Copy, Debug)]
pub struct HcDims {
    /// Number of streams.
    pub hc: usize,
    pub d: usize,
    pub iters: usize,
    pub hc_eps: f32,
    pub norm_eps: f32,
}

/// `HcPre`: returns the collapsed inputs `[n, d]` and each token's post/comb mix.
pub fn pre(x: &[f32], n: usize, dims: HcDims, w: &HcWeights) -> (Vec<f32>, Vec<HcMix>) {
    let HcDims { hc, d, iters, hc_eps, norm_eps } = dims;
    let mu = mixes(x, n, w, norm_eps);
    let stride = w.fn_.rows();
    let mut a = vec![0.0; n * d];
    let mut mix = Vec::with_capacity(n);
    for t in 0..n {
        let m = &mu[t * stride..(t + 1) * stride];
        let pre: Vec<f32> = (0..hc).map(|j| ops::sigmoid(m[j] * w.scale[0] + w.base[j]) + hc_eps).collect();
        let post: Vec<f32> = (0..hc).map(|j| 2.0 * ops::sigmoid(m[hc + j] * w.scale[1] + w.base[hc + j])).collect();
        let mut comb: Vec<f32> = (0..hc * hc).map(|i| m[2 * hc + i] * w.scale[2] + w.base[2 * hc + i]).collect();
        ops::sinkhorn(&mut comb, hc, iters, hc_eps);
        collapse(&x[t * hc * d..(t + 1) * hc * d], &pre, d, &mut a[t * d..(t + 1) * d]);
        mix.push(HcMix { post, comb });
    }
    (a, mix)
}

/// `HcPost`: `X'_k = post_k * u + sum_j comb[j][k] * X_j`, in place on `x`.
pub fn post(x: &mut [f32], u: &[f32], mix: &[HcMix], hc: usize, d: usize) {
    let mut tmp = vec![0.0; hc * d];
    for (t, m) in mix.iter().enumerate() {
        let xs = &mut x[t * hc * d..(t + 1) * hc * d];
        let ut = &u[t * d..(t + 1) * d];
        for k in 0..hc {
            let out = &mut tmp[k * d..(k + 1) * d];
            for (o, &v) in out.iter_mut().zip(ut) {
                *o = m.post[k] * v;
            }
            for j in 0..hc {
                let c = m.comb[j * hc + k];
                for (o, &v) in out.iter_mut().zip(&xs[j * d..(j + 1) * d]) {
                    *o += c * v;
                }
            }
        }
        xs.copy_from_slice(&tmp);
    }
}

/// `HcHead`: the final sigmoid-weighted collapse, `[n, d]`.
pub fn head(x: &[f32], n: usize, hc: usize, d: usize, w: &HcWeights, hc_eps: f32, norm_eps: f32) -> Vec<f32> {
    let mu = mixes(x, n, w, norm_eps);
    let mut y = vec![0.0; n * d];
    for t in 0..n {
        let m = &mu[t * hc..(t + 1) * hc];
        let pre: Vec<f32> = (0..hc).map(|j| ops::sigmoid(m[j] * w.scale[0] + w.base[j]) + hc_eps).collect();
        collapse(&x[t * hc * d..(t + 1) * hc * d], &pre, d, &mut y[t * d..(t + 1) * d]);
    }
    y
}
