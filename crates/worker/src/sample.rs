//! Drawing the next token on the rank that holds the logits, so only a token (and, when asked,
//! its log-probabilities) crosses the network instead of a whole vocabulary row.
//!
//! The draw is a pure function of the logits row, the parameters, the seed and the token's index
//! in the sequence: the uniform number comes from a counter-based generator (splitmix64 over
//! `(seed, index)`), there is no generator state to carry, and logits are batch-invariant bit for
//! bit. So the same request gives the same tokens alone or in any batch, and a sequence replayed
//! after a failover draws exactly what it would have drawn.

use emesh_model::argmax;
use emesh_wire::pb;
use std::cmp::Ordering;

/// The most alternatives a step may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One step of splitmix64: a bijective mix of a 64-bit counter.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) for token `index` of a sequence seeded with `seed`.
pub fn uniform(seed: u64, index: u64) -> f64 {
    let bits = splitmix64(splitmix64(seed) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Larger logit first, then smaller id: a total order, so ties never depend on the sort.
fn by_logit_desc(row: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
}

/// Draws a token from `row` (one vocabulary row of logits) with `p`; returns it and, when asked,
/// its log-probability and the top alternatives.
pub fn sample(row: &[f32], p: &pb::Sampling) -> (u32, Option<pb::TokenLogprobs>) {
    let token = if row.is_empty() {
        0
    } else if p.temperature.is_nan() || p.temperature <= 0.0 {
        argmax(row)
    } else {
        draw(row, p)
    };
    let lp = p.logprobs.then(|| logprobs(row, token, (p.top_logprobs as usize).min(MAX_TOP_LOGPROBS)));
    (token, lp)
}

fn draw(row: &[f32], p: &pb::Sampling) -> u32 {
    let t = p.temperature as f64;
    let k = p.top_k as usize;
    let top_p = if p.top_p > 0.0 && p.top_p < 1.0 { p.top_p as f64 } else { 1.0 };
    // Candidates in a fixed order: all ids ascending, or the k best / the nucleus by logit.
    let mut ids: Vec<u32> = (0..row.len() as u32).filter(|&i| row[i as usize].is_finite()).collect();
    if ids.is_empty() {
        return argmax(row);
    }
    if k > 0 && k < ids.len() {
        ids.select_nth_unstable_by(k - 1, by_logit_desc(row));
        ids.truncate(k);
    }
    if top_p < 1.0 || k > 0 {
        ids.sort_unstable_by(by_logit_desc(row));
    }
    let max = ids.iter().map(|&i| row[i as usize]).fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut w: Vec<f64> = ids.iter().map(|&i| ((row[i as usize] as f64 - max) / t).exp()).collect();
    if top_p < 1.0 {
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let mut keep = w.len();
        for (n, x) in w.iter().enumerate() {
            acc += x / total;
            if acc >= top_p {
                keep = n + 1;
                break;
            }
        }
        w.truncate(keep);
        ids.truncate(keep);
    }
    let total: f64 = w.iter().sum();
    let target = uniform(p.seed, p.index) * total;
    let mut acc = 0.0;
    for (x, &id) in w.iter().zip(&ids) {
        acc += x;
        if target < acc {
            return id;
        }
    }
    *ids.last().unwrap_or(&0)
}

/// Log-softmax of the raw logits (no temperature) at `token` and at the `top` most likely ids.
pub fn logprobs(row: &[f32], token: u32, top: usize) -> pb::TokenLogprobs {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    let lp = |i: u32| row.get(i as usize).map_or(f32::NEG_INFINITY, |&x| (x as f64 - lse) as f32);
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    let top = top.min(ids.len());
    if top > 0 && top < ids.len() {
        ids.select_nth_unstable_by(top - 1, by_logit_desc(row));
    }
    ids.truncate(top);
    ids.sort_unstable_by(by_logit_desc(row));
    pb::TokenLogprobs { logprob: lp(token), top_logprobs: ids.iter().map(|&i| lp(i)).collect(), top_tokens: ids }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: u32, seed: u64, index: u64) -> pb::Sampling {
        pb::Sampling { temperature, top_p, top_k, seed, index, logprobs: false, top_logprobs: 0 }
    }

    fn row(n: usize, salt: u64) -> Vec<f32> {
        (0..n).map(|i| (uniform(salt, i as u64) * 8.0 - 4.0) as f32).collect()
    }

    #[test]
    fn temperature_zero_is_the_argmax() {
        let r = row(1000, 1);
        for seed in 0..20 {
            assert_eq!(sample(&r, &params(0.0, 0.5, 3, seed, seed)).0, argmax(&r));
        }
    }

    #[test]
    fn the_draw_depends_only_on_seed_and_index() {
        let r = row(500, 2);
        let a: Vec<u32> = (0..64).map(|i| sample(&r, &params(1.0, 1.0, 0, 7, i)).0).collect();
        let b: Vec<u32> = (0..64).map(|i| sample(&r, &params(1.0, 1.0, 0, 7, i)).0).collect();
        let c: Vec<u32> = (0..64).map(|i| sample(&r, &params(1.0, 1.0, 0, 8, i)).0).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 10, "a flat row draws many ids");
    }

    #[test]
    fn top_k_and_top_p_keep_only_the_best() {
        let r = row(300, 3);
        let mut order: Vec<u32> = (0..300).collect();
        order.sort_by(by_logit_desc(&r));
        for i in 0..200 {
            let t = sample(&r, &params(2.0, 1.0, 3, 11, i)).0;
            assert!(order[..3].contains(&t));
        }
        // A peaked row: the nucleus at 0.5 is the single best token.
        let mut peaked = vec![0.0f32; 100];
        peaked[42] = 20.0;
        for i in 0..50 {
            assert_eq!(sample(&peaked, &params(1.0, 0.5, 0, 3, i)).0, 42);
        }
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let r = [0.0f32, (3.0f32).ln()];
        let n = 20000;
        let ones = (0..n).filter(|&i| sample(&r, &params(1.0, 1.0, 0, 5, i)).0 == 1).count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.02, "{f}");
    }

    #[test]
    fn logprobs_are_a_log_softmax() {
        let r = row(50, 4);
        let lp = logprobs(&r, 7, 5);
        let total: f64 = (0..50).map(|i| (logprobs(&r, i, 0).logprob as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(lp.top_tokens.len(), 5);
        assert_eq!(lp.top_tokens[0], argmax(&r));
        assert!(lp.top_logprobs.windows(2).all(|w| w[0] >= w[1]));
        assert!(lp.logprob <= lp.top_logprobs[0]);
        let p = params(0.0, 1.0, 0, 0, 0);
        let (t, l) = sample(&r, &pb::Sampling { logprobs: true, top_logprobs: 99, ..p });
        let l = l.unwrap();
        assert_eq!(l.top_tokens.len(), MAX_TOP_LOGPROBS);
        assert_eq!(l.logprob, l.top_logprobs[0]);
        assert_eq!(t, l.top_tokens[0]);
    }
}
