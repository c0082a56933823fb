//! Number formats of the V4 checkpoints: BF16, FP8 e4m3fn, E8M0 scales, FP4 e2m1.
//!
//! Decoding is exact (every stored value is representable in f32). Encoding rounds to nearest,
//! ties to even, after saturating; it is used by `gen-model` to write quantized checkpoints and by
//! the optional quantization simulation (`--numerics official`).

/// BF16 bits to f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 to BF16 bits, round to nearest even.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

const fn e4m3_value(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((code >> 3) & 0x0f) as i32;
    let m = (code & 0x07) as f32;
    if e == 15 && (code & 0x07) == 7 {
        return f32::NAN;
    }
    if e == 0 {
        // Subnormal: m/8 * 2^-6 = m * 2^-9.
        return sign * m * (1.0 / 512.0);
    }
    let mut p = 1.0f32;
    let mut k = e - 7;
    while k > 0 {
        p *= 2.0;
        k -= 1;
    }
    while k < 0 {
        p *= 0.5;
        k += 1;
    }
    sign * (1.0 + m / 8.0) * p
}

const fn build_e4m3() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = e4m3_value(i as u8);
        i += 1;
    }
    t
}

/// Decoded value of every FP8 e4m3fn code.
pub static E4M3: [f32; 256] = build_e4m3();

/// FP4 e2m1 magnitudes by code (bit 3 is the sign).
pub const E2M1: [f32; 16] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

const fn build_fp4_pairs() -> [[f32; 2]; 256] {
    let mut t = [[0.0f32; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [E2M1[i & 0x0f], E2M1[i >> 4]];
        i += 1;
    }
    t
}

/// Both values of a packed FP4 byte: low nibble = even column, high nibble = odd column.
pub static FP4_PAIRS: [[f32; 2]; 256] = build_fp4_pairs();

/// E8M0 scale byte to its power of two (`255` is NaN).
#[inline(always)]
pub fn e8m0_to_f32(e: u8) -> f32 {
    match e {
        255 => f32::NAN,
        0 => f32::from_bits(0x0040_0000),
        e => f32::from_bits((e as u32) << 23),
    }
}

/// The E8M0 byte of a power-of-two scale `2^k` (k clamped to the representable range).
#[inline]
pub fn e8m0_from_exp(k: i32) -> u8 {
    (k + 127).clamp(0, 254) as u8
}

/// Nearest code among `codes` (sorted by increasing non-negative value), ties to the even code.
fn nearest_code(mag: f32, values: &[f32], codes: &[u8]) -> u8 {
    let n = values.len();
    if mag >= values[n - 1] {
        return codes[n - 1];
    }
    let hi = values.partition_point(|&v| v < mag);
    if hi == 0 {
        return codes[0];
    }
    let lo = hi - 1;
    let (dl, dh) = (mag - values[lo], values[hi] - mag);
    if dl < dh || (dl == dh && codes[lo] & 1 == 0) {
        codes[lo]
    } else {
        codes[hi]
    }
}

fn e4m3_positive() -> &'static ([f32; 127], [u8; 127]) {
    static T: std::sync::OnceLock<([f32; 127], [u8; 127])> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut v = [0.0f32; 127];
        let mut c = [0u8; 127];
        for i in 0..127u8 {
            v[i as usize] = E4M3[i as usize];
            c[i as usize] = i;
        }
        (v, c)
    })
}

/// f32 to FP8 e4m3fn, saturating at ±448, round to nearest even. NaN maps to the NaN code.
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let (v, c) = e4m3_positive();
    let code = nearest_code(x.abs(), v, c);
    if x.is_sign_negative() && code != 0 {
        code | 0x80
    } else {
        code
    }
}

/// f32 to FP4 e2m1 code, saturating at ±6, round to nearest even.
pub fn f32_to_e2m1(x: f32) -> u8 {
    const V: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    const C: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    let code = nearest_code(x.abs(), &V, &C);
    if x.is_sign_negative() && code != 0 {
        code | 0x8
    } else {
        code
    }
}

/// Power-of-two exponent `ceil(log2(v))` for a positive finite `v`.
fn ceil_log2(v: f32) -> i32 {
    let bits = v.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32;
    if exp == 0 {
        // Subnormal: fall back to float math.
        return v.log2().ceil() as i32;
    }
    let e = exp - 127;
    if bits & 0x007f_ffff == 0 {
        e
    } else {
        e + 1
    }
}

/// The power-of-two scale exponent DeepSeek uses for FP8 blocks: `ceil(log2(max(amax,1e-4)/448))`.
pub fn fp8_scale_exp(amax: f32) -> i32 {
    ceil_log2(amax.max(1e-4) / 448.0)
}

/// The power-of-two scale exponent for FP4 blocks: `ceil(log2(max(amax, 6*2^-126)/6))`.
pub fn fp4_scale_exp(amax: f32) -> i32 {
    ceil_log2(amax.max(6.0 * f32::from_bits(0x0080_0000)) / 6.0)
}

fn pow2(k: i32) -> f32 {
    if (-126..=127).contains(&k) {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        2f32.powi(k)
    }
}

/// Quantize-dequantize in place to FP8 e4m3 with one power-of-two scale per `block` values.
pub fn fp8_qdq(x: &mut [f32], block: usize) {
    for chunk in x.chunks_mut(block) {
        let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = pow2(fp8_scale_exp(amax));
        for v in chunk.iter_mut() {
            *v = E4M3[f32_to_e4m3(*v / s) as usize] * s;
        }
    }
}

/// Quantize-dequantize in place to FP4 e2m1 with one power-of-two scale per `block` values.
pub fn fp4_qdq(x: &mut [f32], block: usize) {
    for chunk in x.chunks_mut(block) {
        let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = pow2(fp4_scale_exp(amax));
        for v in chunk.iter_mut() {
            *v = E2M1[f32_to_e2m1((*v / s).clamp(-6.0, 6.0)) as usize] * s;
        }
    }
}

/// Normalized Walsh-Hadamard transform (Sylvester order) in place; `x.len()` must be a power of 2.
pub fn hadamard(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let s = 1.0 / (n as f32).sqrt();
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// Encodes a row-major `[rows, cols]` f32 matrix as FP8 with `[ceil(rows/128), ceil(cols/128)]`
/// E8M0 block scales (the V4 release layout).
pub fn quantize_fp8_blocks(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let (br, bc) = (rows.div_ceil(128), cols.div_ceil(128));
    let mut scales = vec![0u8; br * bc];
    let mut codes = vec![0u8; rows * cols];
    for bi in 0..br {
        for bj in 0..bc {
            let (r0, r1) = (bi * 128, ((bi + 1) * 128).min(rows));
            let (c0, c1) = (bj * 128, ((bj + 1) * 128).min(cols));
            let mut amax = 0.0f32;
            for r in r0..r1 {
                for &v in &w[r * cols + c0..r * cols + c1] {
                    amax = amax.max(v.abs());
                }
            }
            let k = fp8_scale_exp(amax);
            scales[bi * bc + bj] = e8m0_from_exp(k);
            let s = pow2(k);
            for r in r0..r1 {
                for c in c0..c1 {
                    codes[r * cols + c] = f32_to_e4m3(w[r * cols + c] / s);
                }
            }
        }
    }
    (codes, scales)
}

/// Encodes a row-major `[rows, cols]` f32 matrix as packed FP4 (low nibble = even column) with
/// `[rows, cols/32]` E8M0 scales.
pub fn quantize_fp4_rows(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let nb = cols.div_ceil(32);
    let mut scales = vec![0u8; rows * nb];
    let mut packed = vec![0u8; rows * cols / 2];
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        for b in 0..nb {
            let blk = &row[b * 32..((b + 1) * 32).min(cols)];
            let amax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let k = fp4_scale_exp(amax);
            scales[r * nb + b] = e8m0_from_exp(k);
            let s = pow2(k);
            for (i, &v) in blk.iter().enumerate() {
                let c = b * 32 + i;
                let code = f32_to_e2m1((v / s).clamp(-6.0, 6.0));
                let byte = &mut packed[r * cols / 2 + c / 2];
                if c % 2 == 0 {
                    *byte |= code;
                } else {
                    *byte |= code << 4;
                }
            }
        }
    }
    (packed, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_table() {
        assert_eq!(E4M3[0x00], 0.0);
        assert_eq!(E4M3[0x01], 2f32.powi(-9));
        assert_eq!(E4M3[0x07], 7.0 * 2f32.powi(-9));
        assert_eq!(E4M3[0x08], 2f32.powi(-6));
        assert_eq!(E4M3[0x38], 1.0);
        assert_eq!(E4M3[0x7e], 448.0);
        assert!(E4M3[0x7f].is_nan() && E4M3[0xff].is_nan());
        assert_eq!(E4M3[0xb8], -1.0);
        assert_eq!(E4M3[0xfe], -448.0);
        // Monotonic positive codes.
        for i in 1..127 {
            assert!(E4M3[i] > E4M3[i - 1]);
        }
    }

    #[test]
    fn e4m3_roundtrip_and_rounding() {
        for i in 0..=255u8 {
            let v = E4M3[i as usize];
            if v.is_nan() || (v == 0.0 && i == 0x80) {
                continue;
            }
            assert_eq!(f32_to_e4m3(v), i, "code {i:#x} value {v}");
        }
        assert_eq!(E4M3[f32_to_e4m3(1000.0) as usize], 448.0);
        assert_eq!(E4M3[f32_to_e4m3(-1000.0) as usize], -448.0);
        // 1.0625 is halfway between 1.0 (0x38, even) and 1.125 (0x39): ties to even.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        // 1.1875 is halfway between 1.125 (0x39) and 1.25 (0x3a): to even 0x3a.
        assert_eq!(f32_to_e4m3(1.1875), 0x3a);
        assert_eq!(f32_to_e4m3(1.05), 0x38);
        assert_eq!(f32_to_e4m3(1.07), 0x39);
    }

    #[test]
    fn e2m1_and_packing() {
        assert_eq!(FP4_PAIRS[0x21], [0.5, 1.0]);
        assert_eq!(FP4_PAIRS[0xf7], [6.0, -6.0]);
        for c in 0..16u8 {
            if c == 8 {
                continue;
            }
            assert_eq!(f32_to_e2m1(E2M1[c as usize]), c);
        }
        assert_eq!(f32_to_e2m1(2.5), 4); // tie 2 (code 4, even) vs 3 (code 5)
        assert_eq!(f32_to_e2m1(5.0), 6); // tie 4 (code 6) vs 6 (code 7)
        assert_eq!(f32_to_e2m1(0.25), 0); // tie 0 vs 0.5 -> 0
        assert_eq!(f32_to_e2m1(100.0), 7);
    }

    #[test]
    fn e8m0() {
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(128), 2.0);
        assert_eq!(e8m0_to_f32(120), 2f32.powi(-7));
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        assert!(e8m0_to_f32(255).is_nan());
        assert_eq!(e8m0_from_exp(-3), 124);
    }

    #[test]
    fn quantize_roundtrips_within_format_error() {
        let rows = 130;
        let cols = 96;
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i as f32 * 0.37).sin()) * 0.05).collect();
        let (codes, scales) = quantize_fp8_blocks(&w, rows, cols);
        assert_eq!(scales.len(), 2);
        for r in 0..rows {
            for c in 0..cols {
                let d = E4M3[codes[r * cols + c] as usize] * e8m0_to_f32(scales[r / 128 + c / 128]);
                let v = w[r * cols + c];
                assert!((d - v).abs() <= v.abs() * 0.0625 + 1e-6, "{d} vs {v}");
            }
        }
        let (packed, s4) = quantize_fp4_rows(&w, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                let byte = packed[r * cols / 2 + c / 2];
                let d = FP4_PAIRS[byte as usize][c % 2] * e8m0_to_f32(s4[r * 3 + c / 32]);
                let amax = w[r * cols + (c / 32) * 32..r * cols + (c / 32) * 32 + 32]
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()));
                assert!((d - w[r * cols + c]).abs() <= amax * 0.25 + 1e-7);
            }
        }
    }

    #[test]
    fn qdq_and_hadamard() {
        let mut x: Vec<f32> = (0..128).map(|i| (i as f32 - 60.0) * 0.01).collect();
        let orig = x.clone();
        hadamard(&mut x);
        hadamard(&mut x);
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-5);
        }
        let mut y = orig.clone();
        fp8_qdq(&mut y, 64);
        for (a, b) in y.iter().zip(&orig) {
            assert!((a - b).abs() <= b.abs() / 16.0 + 1e-6);
        }
        let mut z = orig.clone();
        fp4_qdq(&mut z, 32);
        assert!(z.iter().all(|v| v.is_finite()));
        assert_eq!(fp8_scale_exp(448.0), 0);
        assert_eq!(fp8_scale_exp(449.0), 1);
        assert_eq!(fp4_scale_exp(6.0), 0);
        assert_eq!(fp4_scale_exp(3.0), -1);
    }
}
