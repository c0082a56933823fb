//! Elementwise and small reductions: norms, activations, softmax, Sinkhorn, top-k.
//!
//! Every reduction goes through [`crate::dot`] or a plain left-to-right loop, so its order is
//! fixed.

use crate::dot::sum_sq;

/// `x / sqrt(mean(x^2) + eps)`, optionally times `w`, in place.
pub fn rms_norm(x: &mut [f32], w: Option<&[f32]>, eps: f32) {
    let r = 1.0 / (sum_sq(x) / x.len() as f32 + eps).sqrt();
    match w {
        Some(w) => {
            for (v, &g) in x.iter_mut().zip(w) {
                *v = *v * r * g;
            }
        }
        None => {
            for v in x.iter_mut() {
                *v *= r;
            }
        }
    }
}

/// Applies [`rms_norm`] to every `dim`-wide row of `x`.
pub fn rms_norm_rows(x: &mut [f32], dim: usize, w: Option<&[f32]>, eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        rms_norm(row, w, eps);
    }
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `log(1 + e^x)`, linear above 20 as torch's default threshold.
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut s = 0.0;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in x.iter_mut() {
        *v /= s;
    }
}

/// Projects an `n x n` row-major matrix of logits to a (nearly) doubly stochastic one:
/// row softmax + eps, column normalisation, then `iters - 1` rounds of row and column
/// normalisation, each dividing by `sum + eps`.
pub fn sinkhorn(c: &mut [f32], n: usize, iters: usize, eps: f32) {
    for row in c.chunks_exact_mut(n) {
        softmax(row);
        for v in row.iter_mut() {
            *v += eps;
        }
    }
    let col_norm = |c: &mut [f32]| {
        for k in 0..n {
            let mut s = 0.0;
            for j in 0..n {
                s += c[j * n + k];
            }
            for j in 0..n {
                c[j * n + k] /= s + eps;
            }
        }
    };
    col_norm(c);
    for _ in 1..iters {
        for row in c.chunks_exact_mut(n) {
            let s: f32 = row.iter().fold(0.0, |a, &b| a + b);
            for v in row.iter_mut() {
                *v /= s + eps;
            }
        }
        col_norm(c);
    }
}

/// Indices of the `k` largest values (larger value first, lower index on ties; NaN ranks last),
/// returned in ascending index order.
pub fn topk_indices(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let key = |i: usize| {
        if x[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            x[i]
        }
    };
    let k = k.min(x.len());
    if k < x.len() {
        idx.select_nth_unstable_by(k, |&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        idx.truncate(k);
    }
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinkhorn_is_doubly_stochastic() {
        let mut c: Vec<f32> = (0..16).map(|i| ((i * 7 % 5) as f32) - 2.0).collect();
        sinkhorn(&mut c, 4, 20, 1e-6);
        for k in 0..4 {
            let col: f32 = (0..4).map(|j| c[j * 4 + k]).sum();
            assert!((col - 1.0).abs() < 1e-5, "col {k} sums to {col}");
            let row: f32 = c[k * 4..k * 4 + 4].iter().sum();
            assert!((row - 1.0).abs() < 1e-3, "row {k} sums to {row}");
        }
        assert!(c.iter().all(|&v| v > 0.0));
    }

    #[test]
    fn topk_orders_and_ties() {
        assert_eq!(topk_indices(&[0.1, 0.5, 0.3, 0.5, -1.0], 2), vec![1, 3]);
        assert_eq!(topk_indices(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
        assert_eq!(topk_indices(&[f32::NAN, 0.0, -5.0], 2), vec![1, 2]);
        assert_eq!(topk_indices(&[3.0, 2.0], 5), vec![0, 1]);
    }

    #[test]
    fn norms_and_activations() {
        let mut x = vec![3.0, 4.0];
        rms_norm(&mut x, Some(&[1.0, 2.0]), 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 8.0 / r).abs() < 1e-6);
        assert!((softplus(0.0) - 2f32.ln()).abs() < 1e-7);
        assert_eq!(softplus(50.0), 50.0);
        assert!((silu(1.0) - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-7);
        let mut s = vec![1.0, 2.0, 3.0];
        softmax(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
