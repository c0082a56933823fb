//! Interleaved partial RoPE on the trailing dims of a vector, with DeepSeek's YaRN blend.
//!
//! Pairs are adjacent (`x[2i], x[2i+1]`), GPT-J style, and only the last `rope_dim` values of a
//! vector rotate. YaRN here changes frequencies only: there is no attention scaling (mscale).

use emesh_common::YarnConfig;

#[derive(Clone, Debug)]
pub struct RopeTable {
    pub rope_dim: usize,
    /// Per pair frequency θ'_i (radians per position).
    pub inv_freq: Vec<f64>,
}

impl RopeTable {
    pub fn new(rope_dim: usize, theta: f64, yarn: Option<YarnConfig>) -> Self {
        let half = rope_dim / 2;
        let base: Vec<f64> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f64 / rope_dim as f64)).collect();
        let inv_freq = match yarn {
            None => base,
            Some(y) => {
                let dim = rope_dim as f64;
                let corr = |n: f64| {
                    dim * (y.original_max_position_embeddings / (n * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * theta.ln())
                };
                let lo = corr(y.beta_fast).floor().max(0.0);
                let mut hi = corr(y.beta_slow).ceil().min(dim - 1.0);
                if lo == hi {
                    hi += 0.001;
                }
                base.iter()
                    .enumerate()
                    .map(|(i, &t)| {
                        let ramp = ((i as f64 - lo) / (hi - lo)).clamp(0.0, 1.0);
                        t * (1.0 - ramp) + (t / y.factor) * ramp
                    })
                    .collect()
            }
        };
        RopeTable { rope_dim, inv_freq }
    }

    /// cos/sin for every pair at position `pos` (negative for the inverse rotation).
    pub fn cos_sin(&self, pos: f64) -> (Vec<f32>, Vec<f32>) {
        self.inv_freq
            .iter()
            .map(|&f| {
                let a = pos * f;
                (a.cos() as f32, a.sin() as f32)
            })
            .unzip()
    }

    /// Rotates the last `rope_dim` values of `x` by position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: f64) {
        let off = x.len() - self.rope_dim;
        let tail = &mut x[off..];
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let a = pos * f;
            let (s, c) = (a.sin() as f32, a.cos() as f32);
            let (x0, x1) = (tail[2 * i], tail[2 * i + 1]);
            tail[2 * i] = x0 * c - x1 * s;
            tail[2 * i + 1] = x0 * s + x1 * c;
        }
    }

    /// Rotates every `width`-wide row of `x` by `pos`.
    pub fn apply_rows(&self, x: &mut [f32], width: usize, pos: f64) {
        for row in x.chunks_exact_mut(width) {
            self.apply(row, pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_yarn_table_matches_the_spec() {
        let y = YarnConfig { factor: 16.0, original_max_position_embeddings: 65536.0, beta_fast: 32.0, beta_slow: 1.0 };
        let t = RopeTable::new(64, 160000.0, Some(y));
        let expect = [
            (0, 1.0),
            (1, 0.687656),
            (8, 0.05),
            (15, 3.63554e-3),
            (16, 2.26563e-3),
            (20, 2.96978e-4),
            (24, 1.95313e-5),
            (25, 5.37231e-6),
            (31, 5.68053e-7),
        ];
        for (i, v) in expect {
            assert!((t.inv_freq[i] - v).abs() / v < 2e-5, "pair {i}: {} vs {v}", t.inv_freq[i]);
        }
    }

    #[test]
    fn inverse_rotation_undoes() {
        let t = RopeTable::new(16, 10000.0, None);
        let orig: Vec<f32> = (0..24).map(|i| i as f32 * 0.1 - 1.0).collect();
        let mut x = orig.clone();
        t.apply(&mut x, 37.0);
        assert_eq!(&x[..8], &orig[..8]);
        assert_ne!(&x[8..], &orig[8..]);
        t.apply(&mut x, -37.0);
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
