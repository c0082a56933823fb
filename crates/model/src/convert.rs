//! Turning stored tensors into the engine's types, checking shape and dtype on the way.

use crate::checkpoint::{Dtype, RawTensor};
use crate::error::{ModelError, Result};
use emesh_compute::formats::bf16_to_f32;
use emesh_compute::Weight;

fn shape_err(t: &RawTensor, expected: &str) -> ModelError {
    t.err(format!("has {} {:?}, expected {expected}", t.dtype.name(), t.shape))
}

fn le_u16(d: &[u8]) -> Vec<u16> {
    d.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

fn le_f32(d: &[u8]) -> Vec<f32> {
    d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A float vector of exactly `shape` (F32, BF16 or F16 storage).
pub fn floats(t: &RawTensor, shape: &[usize]) -> Result<Vec<f32>> {
    if t.shape != shape {
        return Err(shape_err(t, &format!("shape {shape:?} (F32/BF16)")));
    }
    Ok(match t.dtype {
        Dtype::F32 => le_f32(&t.data),
        Dtype::BF16 => le_u16(&t.data).into_iter().map(bf16_to_f32).collect(),
        Dtype::F16 => le_u16(&t.data).into_iter().map(|b| half::f16::from_bits(b).to_f32()).collect(),
        _ => return Err(shape_err(t, &format!("a float tensor of shape {shape:?}"))),
    })
}

/// A `[rows, cols]` linear weight in its stored form. FP8 (`F8_E4M3`) needs its `.scale`
/// (`F8_E8M0 [ceil(rows/128), ceil(cols/128)]`); packed FP4 (`I8`/`U8 [rows, cols/2]`) needs
/// `F8_E8M0 [rows, cols/32]`.
pub fn linear(t: RawTensor, scale: Option<RawTensor>, rows: usize, cols: usize) -> Result<Weight> {
    let dense = [rows, cols];
    let w = match t.dtype {
        Dtype::F32 if t.shape == dense => Weight::f32(rows, cols, le_f32(&t.data)),
        Dtype::BF16 if t.shape == dense => Weight::bf16(rows, cols, le_u16(&t.data)),
        Dtype::F16 if t.shape == dense => {
            Weight::f32(rows, cols, le_u16(&t.data).into_iter().map(|b| half::f16::from_bits(b).to_f32()).collect())
        }
        Dtype::F8E4M3 if t.shape == dense => {
            let s = scale.ok_or_else(|| t.err("is FP8 but its `.scale` tensor is missing"))?;
            let want = [rows.div_ceil(128), cols.div_ceil(128)];
            if s.dtype != Dtype::F8E8M0 || s.shape != want {
                return Err(shape_err(&s, &format!("F8_E8M0 {want:?} (128x128 block scales)")));
            }
            let err = t.err("");
            return Weight::fp8(rows, cols, t.data, s.data).map_err(|e| with_reason(err, e));
        }
        Dtype::I8 | Dtype::U8 if t.shape == [rows, cols / 2] && cols.is_multiple_of(2) => {
            let s = scale.ok_or_else(|| t.err("is packed FP4 but its `.scale` tensor is missing"))?;
            let want = [rows, cols.div_ceil(32)];
            if s.dtype != Dtype::F8E8M0 || s.shape != want {
                return Err(shape_err(&s, &format!("F8_E8M0 {want:?} (one scale per 32 inputs)")));
            }
            let err = t.err("");
            return Weight::fp4(rows, cols, t.data, s.data).map_err(|e| with_reason(err, e));
        }
        _ => {
            return Err(shape_err(
                &t,
                &format!("F32/BF16/F8_E4M3 [{rows}, {cols}] or packed FP4 I8 [{rows}, {}]", cols / 2),
            ))
        }
    };
    w.map_err(|e| t.err(e.to_string()))
}

fn with_reason(e: ModelError, why: emesh_compute::WeightError) -> ModelError {
    match e {
        ModelError::Tensor { path, name, .. } => ModelError::Tensor { path, name, reason: why.to_string() },
        other => other,
    }
}

/// The `tid2eid` table `[vocab, k]` (I32 or I64), every id checked to be `< experts`.
pub fn tid2eid(t: &RawTensor, vocab: usize, k: usize, experts: usize) -> Result<Vec<u32>> {
    if t.shape != [vocab, k] {
        return Err(shape_err(t, &format!("I64/I32 [{vocab}, {k}]")));
    }
    let ids: Vec<i64> = match t.dtype {
        Dtype::I64 => t.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
        Dtype::I32 => t.data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
        _ => return Err(shape_err(t, &format!("I64/I32 [{vocab}, {k}]"))),
    };
    ids.into_iter()
        .enumerate()
        .map(|(i, e)| {
            if e < 0 || e as usize >= experts {
                Err(t.err(format!("row {} holds expert id {e}, outside 0..{experts}", i / k)))
            } else {
                Ok(e as u32)
            }
        })
        .collect()
}
