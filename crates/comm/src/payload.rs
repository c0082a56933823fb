//! Rows of f32 on the wire: raw little-endian bytes by default (exact), or a lower-precision
//! form for dispatch (bf16, or fp8 e4m3 with one power-of-two scale per 128 values).

use crate::CommError;
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PayloadDtype {
    #[default]
    F32,
    Bf16,
    Fp8,
}

impl std::str::FromStr for PayloadDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(PayloadDtype::F32),
            "bf16" => Ok(PayloadDtype::Bf16),
            "fp8" => Ok(PayloadDtype::Fp8),
            _ => Err(format!("unknown payload dtype `{s}` (expected f32, bf16 or fp8)")),
        }
    }
}

const FP8_MAX: f32 = 448.0;

fn e4m3_encode(x: f32) -> u8 {
    // Round to nearest even on the e4m3 grid, saturating; enough for activations.
    let a = x.abs().min(FP8_MAX);
    let code = if a < 2f32.powi(-6) {
        ((a * 512.0).round_ties_even() as u8).min(7)
    } else {
        let e = a.log2().floor() as i32;
        let m = ((a / 2f32.powi(e) - 1.0) * 8.0).round_ties_even() as i32;
        let (e, m) = if m == 8 { (e + 1, 0) } else { (e, m) };
        if e + 7 > 15 || (e + 7 == 15 && m > 6) {
            0x7e
        } else {
            (((e + 7) as u8) << 3) | m as u8
        }
    };
    if x.is_sign_negative() && code != 0 {
        code | 0x80
    } else {
        code
    }
}

fn e4m3_decode(b: u8) -> f32 {
    let e = ((b >> 3) & 0xf) as i32;
    let m = (b & 7) as f32;
    let v = if e == 0 { m / 512.0 } else { (1.0 + m / 8.0) * 2f32.powi(e - 7) };
    if b & 0x80 != 0 {
        -v
    } else {
        v
    }
}

/// Encodes `x` (any length) in `dtype`.
pub fn encode_rows(x: &[f32], dtype: PayloadDtype) -> Bytes {
    let mut b = BytesMut::with_capacity(x.len() * 4 + 1);
    b.put_u8(dtype as u8);
    match dtype {
        PayloadDtype::F32 => {
            for v in x {
                b.put_f32_le(*v);
            }
        }
        PayloadDtype::Bf16 => {
            for v in x {
                b.put_u16_le(half::bf16::from_f32(*v).to_bits());
            }
        }
        PayloadDtype::Fp8 => {
            for chunk in x.chunks(128) {
                let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let k = (amax.max(1e-4) / FP8_MAX).log2().ceil() as i32;
                b.put_i8(k.clamp(-127, 127) as i8);
                let s = 2f32.powi(k);
                for v in chunk {
                    b.put_u8(e4m3_encode(v / s));
                }
            }
        }
    }
    b.freeze()
}

/// Decodes a payload made by [`encode_rows`]; `n` is the expected number of values.
pub fn decode_rows(b: &[u8], n: usize) -> Result<Vec<f32>, CommError> {
    let (&tag, body) = b.split_first().ok_or_else(|| CommError::Payload("empty payload".into()))?;
    let bad = |what: &str| CommError::Payload(format!("{what}: {} bytes for {n} values", body.len()));
    match tag {
        0 => {
            if body.len() != n * 4 {
                return Err(bad("f32"));
            }
            Ok(body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        1 => {
            if body.len() != n * 2 {
                return Err(bad("bf16"));
            }
            Ok(body.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect())
        }
        2 => {
            if body.len() != n + n.div_ceil(128) {
                return Err(bad("fp8"));
            }
            let mut out = Vec::with_capacity(n);
            for chunk in body.chunks(129) {
                let s = 2f32.powi(chunk[0] as i8 as i32);
                out.extend(chunk[1..].iter().map(|&c| e4m3_decode(c) * s));
            }
            Ok(out)
        }
        t => Err(CommError::Payload(format!("unknown payload dtype tag {t}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips() {
        let x: Vec<f32> = (0..300).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        assert_eq!(decode_rows(&encode_rows(&x, PayloadDtype::F32), 300).unwrap(), x);
        let b = decode_rows(&encode_rows(&x, PayloadDtype::Bf16), 300).unwrap();
        assert!(x.iter().zip(&b).all(|(a, b)| (a - b).abs() <= a.abs() / 128.0 + 1e-6));
        let f = decode_rows(&encode_rows(&x, PayloadDtype::Fp8), 300).unwrap();
        assert!(x.iter().zip(&f).all(|(a, b)| (a - b).abs() <= 3.0 / 8.0), "fp8 error too large");
        assert!(decode_rows(&encode_rows(&x, PayloadDtype::F32), 299).is_err());
        assert!(decode_rows(&[], 0).is_err());
        assert!(decode_rows(&[9, 0], 0).is_err());
    }
}
