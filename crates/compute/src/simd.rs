//! AVX2+FMA kernels with the exact operation order of [`crate::dot`]: lane `l` of an 8-wide
//! accumulator takes `fma(x[k], w[k], acc)` for `k ≡ l (mod 8)`, and the final reduction is the
//! canonical tree. Weights are
//! decoded in registers from their stored form, producing exactly the values of
//! [`crate::matrix::Weight::decode_row`], so results are bit-identical to the portable path.

#![allow(unsafe_op_in_unsafe_fn)]

use crate::dot::reduce;
use crate::formats::e8m0_to_f32;
use std::arch::x86_64::*;

/// A weight row in its stored form that decodes to exactly the values of
/// [`crate::matrix::Weight::decode_row`], eight at a time.
pub trait RowLoad: Copy {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element `k`, decoded (scalar; the same value as the vector path).
    fn get(&self, k: usize) -> f32;
    /// Elements `k..k+8` (`k` a multiple of 8).
    ///
    /// # Safety
    /// AVX2 must be available and `k + 8 <= len`.
    unsafe fn load8(&self, k: usize) -> __m256;
}

#[derive(Clone, Copy)]
pub struct F32Row<'a>(pub &'a [f32]);

#[derive(Clone, Copy)]
pub struct Bf16Row<'a>(pub &'a [u16]);

/// Codes of the row, its E8M0 block scales (one per 128 columns), and the column offset of the
/// row's first element inside its 128-block grid.
#[derive(Clone, Copy)]
pub struct Fp8Row<'a> {
    pub codes: &'a [u8],
    pub scales: &'a [u8],
    pub col0: usize,
}

/// Packed codes (two per byte, low nibble first) and one E8M0 scale per 32 columns.
#[derive(Clone, Copy)]
pub struct Fp4Row<'a> {
    pub packed: &'a [u8],
    pub scales: &'a [u8],
}

const TWO_POW_120: f32 = f32::from_bits((127 + 120) << 23);

impl RowLoad for F32Row<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn get(&self, k: usize) -> f32 {
        self.0[k]
    }
    #[inline(always)]
    unsafe fn load8(&self, k: usize) -> __m256 {
        _mm256_loadu_ps(self.0.as_ptr().add(k))
    }
}

impl RowLoad for Bf16Row<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn get(&self, k: usize) -> f32 {
        f32::from_bits((self.0[k] as u32) << 16)
    }
    #[inline(always)]
    unsafe fn load8(&self, k: usize) -> __m256 {
        let h = _mm_loadu_si128(self.0.as_ptr().add(k) as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }
}

impl RowLoad for Fp8Row<'_> {
    fn len(&self) -> usize {
        self.codes.len()
    }
    #[inline(always)]
    fn get(&self, k: usize) -> f32 {
        let b = self.codes[k] as u32;
        let s = e8m0_to_f32(self.scales[(k + self.col0) / 128 - self.col0 / 128]);
        f32::from_bits(((b & 0x7f) << 20) | ((b & 0x80) << 24)) * TWO_POW_120 * s
    }
    #[inline(always)]
    unsafe fn load8(&self, k: usize) -> __m256 {
        // The code's sign, exponent and mantissa land at bits 31, 23..26 and 20..22 of an f32
        // whose value is the e4m3 value times 2^-120.
        let b = _mm_loadl_epi64(self.codes.as_ptr().add(k) as *const __m128i);
        let top = _mm256_slli_epi32(_mm256_cvtepu8_epi32(b), 24);
        let bits = _mm256_and_si256(_mm256_srai_epi32(top, 4), _mm256_set1_epi32(0x87f0_0000u32 as i32));
        let v = _mm256_castsi256_ps(bits);
        let s = e8m0_to_f32(*self.scales.get_unchecked((k + self.col0) / 128 - self.col0 / 128));
        let s2 = s * TWO_POW_120;
        if s2.is_finite() {
            // Both orders are exact products of powers of two with a 4-bit significand.
            _mm256_mul_ps(v, _mm256_set1_ps(s2))
        } else {
            _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(TWO_POW_120)), _mm256_set1_ps(s))
        }
    }
}

impl RowLoad for Fp4Row<'_> {
    fn len(&self) -> usize {
        self.packed.len() * 2
    }
    #[inline(always)]
    fn get(&self, k: usize) -> f32 {
        let byte = self.packed[k / 2];
        let code = if k.is_multiple_of(2) { byte & 0x0f } else { byte >> 4 };
        crate::formats::E2M1[code as usize] * e8m0_to_f32(self.scales[k / 32])
    }
    #[inline(always)]
    unsafe fn load8(&self, k: usize) -> __m256 {
        // 4 bytes -> 8 codes in column order (low nibble first), looked up as 2*value.
        let raw = (self.packed.as_ptr().add(k / 2) as *const u32).read_unaligned();
        let lo = raw & 0x0f0f_0f0f;
        let hi = (raw >> 4) & 0x0f0f_0f0f;
        let idx = _mm_unpacklo_epi8(_mm_cvtsi32_si128(lo as i32), _mm_cvtsi32_si128(hi as i32));
        let lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
        let twice = _mm_shuffle_epi8(lut, idx);
        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(twice));
        _mm256_mul_ps(f, _mm256_set1_ps(0.5 * e8m0_to_f32(*self.scales.get_unchecked(k / 32))))
    }
}

/// `out[t][r] = dot(xs[t], rows[r])` with the canonical order.
#[inline(always)]
unsafe fn block<const T: usize, const R: usize, L: RowLoad>(xs: [&[f32]; T], rows: [L; R]) -> [[f32; R]; T] {
    let n = rows[0].len();
    let full = n - n % 8;
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    let mut k = 0;
    while k < full {
        let mut wv = [_mm256_setzero_ps(); R];
        for r in 0..R {
            wv[r] = rows[r].load8(k);
        }
        for t in 0..T {
            let xv = _mm256_loadu_ps(xs[t].as_ptr().add(k));
            for r in 0..R {
                acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]);
            }
        }
        k += 8;
    }
    let mut out = [[0.0f32; R]; T];
    for t in 0..T {
        for r in 0..R {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[t][r]);
            for l in 0..n - full {
                lanes[l] = xs[t][full + l].mul_add(rows[r].get(full + l), lanes[l]);
            }
            out[t][r] = reduce(lanes);
        }
    }
    out
}

/// `out[t][r] = dot(xs[t], rows[r])` for a `T x R` block, canonical order.
///
/// # Safety
/// The CPU must support AVX2; all rows and inputs must have the same length.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_block<const T: usize, const R: usize, L: RowLoad>(xs: [&[f32]; T], rows: [L; R]) -> [[f32; R]; T] {
    block::<T, R, L>(xs, rows)
}

/// Decodes a whole row into `out` (vector path).
///
/// # Safety
/// The CPU must support AVX2; `out.len() == row.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn decode<L: RowLoad>(row: L, out: &mut [f32]) {
    let n = row.len();
    let full = n - n % 8;
    let mut k = 0;
    while k < full {
        _mm256_storeu_ps(out.as_mut_ptr().add(k), row.load8(k));
        k += 8;
    }
    for (j, o) in out.iter_mut().enumerate().skip(full) {
        *o = row.get(j);
    }
}
