//! Numerics modes.
//!
//! `Exact` is the float32 reference (what the golden fixtures hold). `Official` adds DeepSeek's
//! training-time quantization simulation: FP8 (e4m3, per-64 power-of-two scales) on the no-rope
//! dims of every KV vector, Walsh-Hadamard + FP4 (per-32 scales) on indexer queries and keys,
//! FP8 (per-128) on activations entering FP8/FP4 matmuls (except `wo_a`, which the reference runs
//! dequantized), and the routing weight applied before an expert's `w2`.

use emesh_compute::formats::fp8_qdq;
use emesh_compute::{matmul, Weight};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Numerics {
    #[default]
    Exact,
    Official,
}

impl std::str::FromStr for Numerics {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" | "reference" => Ok(Numerics::Exact),
            "official" => Ok(Numerics::Official),
            _ => Err(format!("unknown numerics `{s}` (expected `exact` or `official`)")),
        }
    }
}

impl Numerics {
    pub fn official(self) -> bool {
        self == Numerics::Official
    }

    /// `y = W x` for `n` rows, with activation quantization when the mode asks for it.
    pub fn linear(self, w: &Weight, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n * w.rows()];
        if self.official() && w.is_quantized() {
            let mut q = x.to_vec();
            for row in q.chunks_exact_mut(w.cols()) {
                fp8_qdq(row, 128);
            }
            matmul(w, &q, n, &mut out);
        } else {
            matmul(w, x, n, &mut out);
        }
        out
    }
}
