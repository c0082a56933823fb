//! The one dot product every matmul is made of.
//!
//! Canonical order for `dot(x, w)` of length `n`: eight lane accumulators, lane `l` accumulates
//! `acc = fma(x[k], w[k], acc)` (one rounding) for `k ≡ l (mod 8)` in increasing `k`; then
//! `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`. The block kernels compute several (row, token) pairs
//! at once for speed, but each pair runs exactly that sequence of operations, so its result never
//! depends on the block shape, the batch or the CPU: the vector path uses hardware FMA and the
//! portable path `f32::mul_add`, which rounds identically.

const LANES: usize = 8;

/// The canonical reduction of the eight lane accumulators (shared by every kernel).
#[inline(always)]
pub(crate) fn reduce(a: [f32; LANES]) -> f32 {
    let s0 = a[0] + a[4];
    let s1 = a[1] + a[5];
    let s2 = a[2] + a[6];
    let s3 = a[3] + a[7];
    (s0 + s2) + (s1 + s3)
}

/// `out[t][r] = dot(xs[t], ws[r])` for a `T x R` block; all slices have the same length.
#[inline(always)]
fn block_generic<const T: usize, const R: usize>(xs: [&[f32]; T], ws: [&[f32]; R]) -> [[f32; R]; T] {
    let n = ws[0].len();
    let mut acc = [[[0.0f32; LANES]; R]; T];
    let full = n - n % LANES;
    let mut k = 0;
    while k < full {
        let mut wv = [[0.0f32; LANES]; R];
        for r in 0..R {
            wv[r].copy_from_slice(&ws[r][k..k + LANES]);
        }
        for t in 0..T {
            let mut xv = [0.0f32; LANES];
            xv.copy_from_slice(&xs[t][k..k + LANES]);
            for r in 0..R {
                for l in 0..LANES {
                    acc[t][r][l] = xv[l].mul_add(wv[r][l], acc[t][r][l]);
                }
            }
        }
        k += LANES;
    }
    for l in 0..n - full {
        for t in 0..T {
            for r in 0..R {
                acc[t][r][l] = xs[t][full + l].mul_add(ws[r][full + l], acc[t][r][l]);
            }
        }
    }
    let mut out = [[0.0f32; R]; T];
    for t in 0..T {
        for r in 0..R {
            out[t][r] = reduce(acc[t][r]);
        }
    }
    out
}

macro_rules! dispatch_block {
    ($name:ident, $avx:ident, $t:literal, $r:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx(xs: [&[f32]; $t], ws: [&[f32]; $r]) -> [[f32; $r]; $t] {
            block_generic::<$t, $r>(xs, ws)
        }

        /// Block kernel; see the module docs for the operation order.
        #[inline]
        pub fn $name(xs: [&[f32]; $t], ws: [&[f32]; $r]) -> [[f32; $r]; $t] {
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 (checked at run time).
                    return unsafe { $avx(xs, ws) };
                }
            }
            block_generic::<$t, $r>(xs, ws)
        }
    };
}

dispatch_block!(block_1x1, block_1x1_avx2, 1, 1);
dispatch_block!(block_1x4, block_1x4_avx2, 1, 4);
dispatch_block!(block_4x1, block_4x1_avx2, 4, 1);
dispatch_block!(block_4x3, block_4x3_avx2, 4, 3);

#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok =
                std::is_x86_feature_detected!("avx2") && std::env::var_os(emesh_common::names::ENV_NO_SIMD).is_none();
            STATE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// The canonical dot product.
#[inline]
pub fn dot(x: &[f32], w: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), w.len());
    block_1x1([x], [w])[0][0]
}

/// `out[r] = dot(x, rows[r])` for a batch of rows sharing one input.
pub fn dot_rows(x: &[f32], rows: &[&[f32]], out: &mut [f32]) {
    let mut r = 0;
    while r + 4 <= rows.len() {
        let o = block_1x4([x], [rows[r], rows[r + 1], rows[r + 2], rows[r + 3]]);
        out[r..r + 4].copy_from_slice(&o[0]);
        r += 4;
    }
    while r < rows.len() {
        out[r] = dot(x, rows[r]);
        r += 1;
    }
}

/// Fixed-order sum of squares (the dot of `x` with itself).
#[inline]
pub fn sum_sq(x: &[f32]) -> f32 {
    dot(x, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_block_shape_gives_the_canonical_result() {
        for n in [1usize, 7, 8, 9, 31, 64, 129, 1000] {
            let xs: Vec<Vec<f32>> = (0..4).map(|i| data(n, i)).collect();
            let ws: Vec<Vec<f32>> = (0..4).map(|i| data(n, 100 + i)).collect();
            let reference: Vec<Vec<f32>> =
                xs.iter().map(|x| ws.iter().map(|w| block_generic::<1, 1>([x], [w])[0][0]).collect()).collect();
            let b = block_4x3([&xs[0], &xs[1], &xs[2], &xs[3]], [&ws[0], &ws[1], &ws[2]]);
            let c = block_1x4([&xs[2]], [&ws[0], &ws[1], &ws[2], &ws[3]]);
            let d = block_4x1([&xs[0], &xs[1], &xs[2], &xs[3]], [&ws[3]]);
            for t in 0..4 {
                for r in 0..3 {
                    assert_eq!(b[t][r].to_bits(), reference[t][r].to_bits());
                }
                assert_eq!(d[t][0].to_bits(), reference[t][3].to_bits());
                assert_eq!(dot(&xs[t], &ws[1]).to_bits(), reference[t][1].to_bits());
            }
            for r in 0..4 {
                assert_eq!(c[0][r].to_bits(), reference[2][r].to_bits());
            }
            let exact: f64 = xs[0].iter().zip(&ws[0]).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((reference[0][0] as f64 - exact).abs() < 1e-4);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx2() -> bool {
    false
}
