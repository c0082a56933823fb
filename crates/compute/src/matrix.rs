//! Weight matrices in their stored form, and the batch-invariant matmul over them.
//!
//! A [`Weight`] is `[rows, cols]` (`y = W x`, as every V4 checkpoint stores linears). FP8 and
//! FP4 weights are decoded one row at a time into a scratch buffer inside [`matmul`]; nothing is
//! dequantized ahead of time, so a V4 expert takes its stored bytes in RAM, not 4x that.

use crate::dot;
use crate::formats::{bf16_to_f32, e8m0_to_f32, E4M3, FP4_PAIRS};
use rayon::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("{what}: expected {expected} bytes/values, got {got}")]
    Size { what: &'static str, expected: usize, got: usize },
    #[error("slice {start}..{end} of {len} is out of range")]
    Range { start: usize, end: usize, len: usize },
    #[error("{0}")]
    Layout(String),
}

/// A `[rows, cols]` weight matrix in its stored number format.
#[derive(Clone, Debug)]
pub enum Weight {
    F32 {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
    Bf16 {
        rows: usize,
        cols: usize,
        data: Vec<u16>,
    },
    /// FP8 e4m3 codes with E8M0 scales per 128x128 block. `scales` is a `[*, scale_cols]` grid;
    /// element `(r, c)` uses scale `((r + row0) / 128, (c + col0) / 128)`, so row/column slices
    /// keep the blocks of the original tensor.
    Fp8 {
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        scales: Vec<u8>,
        scale_cols: usize,
        row0: usize,
        col0: usize,
    },
    /// Packed FP4 e2m1 (two per byte, low nibble = even column) with one E8M0 scale per 32
    /// columns (`[rows, cols/32]`).
    Fp4 {
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        scales: Vec<u8>,
    },
}

/// Asks the kernel for transparent huge pages on a large weight buffer: a decode step streams
/// every weight once, and 2 MiB pages cut the TLB misses of that stream. Advisory only.
fn advise_huge<T>(data: &[T]) {
    let bytes = std::mem::size_of_val(data);
    if bytes < 4 << 20 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: madvise only reads the range, which belongs to `data`; failure is harmless.
    unsafe {
        let page = 4096usize;
        let start = (data.as_ptr() as usize).div_ceil(page) * page;
        let end = (data.as_ptr() as usize + bytes) / page * page;
        if end > start {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

impl Weight {
    pub fn f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, WeightError> {
        check("f32 data", rows * cols, data.len())?;
        advise_huge(&data);
        Ok(Weight::F32 { rows, cols, data })
    }

    pub fn bf16(rows: usize, cols: usize, data: Vec<u16>) -> Result<Self, WeightError> {
        check("bf16 data", rows * cols, data.len())?;
        advise_huge(&data);
        Ok(Weight::Bf16 { rows, cols, data })
    }

    pub fn fp8(rows: usize, cols: usize, data: Vec<u8>, scales: Vec<u8>) -> Result<Self, WeightError> {
        check("fp8 data", rows * cols, data.len())?;
        let scale_cols = cols.div_ceil(128);
        check("fp8 block scales", rows.div_ceil(128) * scale_cols, scales.len())?;
        if let Some(i) = data.iter().position(|&b| b & 0x7f == 0x7f) {
            return Err(WeightError::Layout(format!("fp8 value {i} is a NaN code ({:#04x})", data[i])));
        }
        nan_scale(&scales)?;
        advise_huge(&data);
        Ok(Weight::Fp8 { rows, cols, data, scales, scale_cols, row0: 0, col0: 0 })
    }

    pub fn fp4(rows: usize, cols: usize, data: Vec<u8>, scales: Vec<u8>) -> Result<Self, WeightError> {
        if !cols.is_multiple_of(2) {
            return Err(WeightError::Layout(format!("fp4 weight needs an even column count, got {cols}")));
        }
        check("fp4 packed data", rows * cols / 2, data.len())?;
        check("fp4 scales", rows * cols.div_ceil(32), scales.len())?;
        nan_scale(&scales)?;
        advise_huge(&data);
        Ok(Weight::Fp4 { rows, cols, data, scales })
    }

    pub fn rows(&self) -> usize {
        match self {
            Weight::F32 { rows, .. }
            | Weight::Bf16 { rows, .. }
            | Weight::Fp8 { rows, .. }
            | Weight::Fp4 { rows, .. } => *rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Weight::F32 { cols, .. }
            | Weight::Bf16 { cols, .. }
            | Weight::Fp8 { cols, .. }
            | Weight::Fp4 { cols, .. } => *cols,
        }
    }

    /// Bytes held in memory (payload and scales).
    pub fn bytes(&self) -> usize {
        match self {
            Weight::F32 { data, .. } => data.len() * 4,
            Weight::Bf16 { data, .. } => data.len() * 2,
            Weight::Fp8 { data, scales, .. } | Weight::Fp4 { data, scales, .. } => data.len() + scales.len(),
        }
    }

    /// True when the stored form is FP8 or FP4 (activation quantization applies to its input in
    /// the `official` numerics).
    pub fn is_quantized(&self) -> bool {
        matches!(self, Weight::Fp8 { .. } | Weight::Fp4 { .. })
    }

    pub fn format_name(&self) -> &'static str {
        match self {
            Weight::F32 { .. } => "f32",
            Weight::Bf16 { .. } => "bf16",
            Weight::Fp8 { .. } => "fp8",
            Weight::Fp4 { .. } => "fp4",
        }
    }

    /// Decodes row `r` into `out` (length `cols`), exactly.
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        match self {
            Weight::F32 { cols, data, .. } => out.copy_from_slice(&data[r * cols..(r + 1) * cols]),
            Weight::Bf16 { cols, data, .. } => {
                for (o, &b) in out.iter_mut().zip(&data[r * cols..(r + 1) * cols]) {
                    *o = bf16_to_f32(b);
                }
            }
            Weight::Fp8 { cols, data, scales, scale_cols, row0, col0, .. } => {
                let srow = &scales[((r + row0) / 128 - row0 / 128) * scale_cols..];
                let codes = &data[r * cols..(r + 1) * cols];
                let mut c = 0;
                while c < *cols {
                    let blk = (c + col0) / 128;
                    let end = ((blk + 1) * 128 - col0).min(*cols);
                    let s = e8m0_to_f32(srow[blk - col0 / 128]);
                    for (o, &q) in out[c..end].iter_mut().zip(&codes[c..end]) {
                        *o = E4M3[q as usize] * s;
                    }
                    c = end;
                }
            }
            Weight::Fp4 { cols, data, scales, .. } => {
                let nb = cols.div_ceil(32);
                let packed = &data[r * cols / 2..(r + 1) * cols / 2];
                for b in 0..nb {
                    let s = e8m0_to_f32(scales[r * nb + b]);
                    let (c0, c1) = (b * 32, ((b + 1) * 32).min(*cols));
                    for c in (c0..c1).step_by(2) {
                        let [lo, hi] = FP4_PAIRS[packed[c / 2] as usize];
                        out[c] = lo * s;
                        out[c + 1] = hi * s;
                    }
                }
            }
        }
    }

    /// The whole matrix as f32 (for tests and small tensors).
    pub fn to_f32(&self) -> Vec<f32> {
        let cols = self.cols();
        let mut out = vec![0.0; self.rows() * cols];
        for r in 0..self.rows() {
            self.decode_row(r, &mut out[r * cols..(r + 1) * cols]);
        }
        out
    }

    /// Rows `start..end` as a new weight (used to split attention heads across ranks).
    pub fn slice_rows(&self, start: usize, end: usize) -> Result<Weight, WeightError> {
        let rows = self.rows();
        if start > end || end > rows {
            return Err(WeightError::Range { start, end, len: rows });
        }
        let n = end - start;
        Ok(match self {
            Weight::F32 { cols, data, .. } => {
                Weight::F32 { rows: n, cols: *cols, data: data[start * cols..end * cols].to_vec() }
            }
            Weight::Bf16 { cols, data, .. } => {
                Weight::Bf16 { rows: n, cols: *cols, data: data[start * cols..end * cols].to_vec() }
            }
            Weight::Fp8 { cols, data, scales, scale_cols, row0, col0, .. } => {
                let abs0 = start + row0;
                let b0 = abs0 / 128 - row0 / 128;
                let b1 = if n == 0 { b0 } else { (end - 1 + row0) / 128 - row0 / 128 + 1 };
                Weight::Fp8 {
                    rows: n,
                    cols: *cols,
                    data: data[start * cols..end * cols].to_vec(),
                    scales: scales[b0 * scale_cols..b1 * scale_cols].to_vec(),
                    scale_cols: *scale_cols,
                    row0: abs0 % 128,
                    col0: *col0,
                }
            }
            Weight::Fp4 { cols, data, scales, .. } => {
                let nb = cols.div_ceil(32);
                Weight::Fp4 {
                    rows: n,
                    cols: *cols,
                    data: data[start * cols / 2..end * cols / 2].to_vec(),
                    scales: scales[start * nb..end * nb].to_vec(),
                }
            }
        })
    }

    /// Columns `start..end` as a new weight (used to split `wo_b` by output groups).
    pub fn slice_cols(&self, start: usize, end: usize) -> Result<Weight, WeightError> {
        let cols = self.cols();
        let rows = self.rows();
        if start > end || end > cols {
            return Err(WeightError::Range { start, end, len: cols });
        }
        let n = end - start;
        let take = |stride: usize, s: usize, e: usize, f: &mut dyn FnMut(usize, usize)| {
            for r in 0..rows {
                f(r * stride + s, r * stride + e);
            }
        };
        Ok(match self {
            Weight::F32 { data, .. } => {
                let mut out = Vec::with_capacity(rows * n);
                take(cols, start, end, &mut |a, b| out.extend_from_slice(&data[a..b]));
                Weight::F32 { rows, cols: n, data: out }
            }
            Weight::Bf16 { data, .. } => {
                let mut out = Vec::with_capacity(rows * n);
                take(cols, start, end, &mut |a, b| out.extend_from_slice(&data[a..b]));
                Weight::Bf16 { rows, cols: n, data: out }
            }
            Weight::Fp8 { data, scales, scale_cols, row0, col0, .. } => {
                let mut out = Vec::with_capacity(rows * n);
                take(cols, start, end, &mut |a, b| out.extend_from_slice(&data[a..b]));
                let abs0 = start + col0;
                let b0 = abs0 / 128 - col0 / 128;
                let b1 = if n == 0 { b0 } else { (end - 1 + col0) / 128 - col0 / 128 + 1 };
                let grid_rows = scales.len() / scale_cols;
                let mut s = Vec::with_capacity(grid_rows * (b1 - b0));
                for gr in 0..grid_rows {
                    s.extend_from_slice(&scales[gr * scale_cols + b0..gr * scale_cols + b1]);
                }
                Weight::Fp8 { rows, cols: n, data: out, scales: s, scale_cols: b1 - b0, row0: *row0, col0: abs0 % 128 }
            }
            Weight::Fp4 { data, scales, .. } => {
                if !start.is_multiple_of(32) || (!end.is_multiple_of(32) && end != cols) {
                    return Err(WeightError::Layout(format!(
                        "fp4 column slice {start}..{end} is not aligned to the 32-column scale blocks"
                    )));
                }
                let nb = cols.div_ceil(32);
                let mut out = Vec::with_capacity(rows * n / 2);
                take(cols / 2, start / 2, end / 2, &mut |a, b| out.extend_from_slice(&data[a..b]));
                let mut s = Vec::new();
                take(nb, start / 32, end.div_ceil(32), &mut |a, b| s.extend_from_slice(&scales[a..b]));
                Weight::Fp4 { rows, cols: n, data: out, scales: s }
            }
        })
    }
}

fn nan_scale(scales: &[u8]) -> Result<(), WeightError> {
    match scales.iter().position(|&b| b == 255) {
        Some(i) => Err(WeightError::Layout(format!("scale {i} is the E8M0 NaN code (0xff)"))),
        None => Ok(()),
    }
}

fn check(what: &'static str, expected: usize, got: usize) -> Result<(), WeightError> {
    if expected == got {
        Ok(())
    } else {
        Err(WeightError::Size { what, expected, got })
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: every task writes a disjoint set of output indices (its own rows).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Rows decoded together before the token loop (prefill path).
const SUB_ROWS: usize = 24;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows per parallel task: enough tasks to balance the threads, whole sub-blocks each.
fn task_rows(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per = rows.div_ceil(threads * 4);
    per.div_ceil(SUB_ROWS).max(1) * SUB_ROWS
}

/// `out[t * rows + r] = dot(x[t * cols ..], W[r])` for `n` tokens.
///
/// Batch-invariant: each output element is [`dot::dot`] of one input row and one decoded weight
/// row, whatever `n`, the tiling, the thread count or the CPU's vector width.
pub fn matmul(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(x.len(), n * cols, "matmul input is {} values, expected {n} x {cols}", x.len());
    assert_eq!(out.len(), n * rows, "matmul output is {} values, expected {n} x {rows}", out.len());
    if n == 0 || rows == 0 {
        return;
    }
    let ptr = SendPtr(out.as_mut_ptr());
    let per = task_rows(rows);
    let tasks = rows.div_ceil(per);
    let run = |ti: usize| {
        let (r0, r1) = (ti * per, ((ti + 1) * per).min(rows));
        let p = ptr;
        // SAFETY: this task writes only columns r0..r1 of each output row.
        let put = |t: usize, r: usize, v: f32| unsafe { *p.0.add(t * rows + r) = v };
        #[cfg(target_arch = "x86_64")]
        if dot::has_avx2() {
            // SAFETY: AVX2 is present (checked above).
            unsafe { run_avx2(w, x, n, r0, r1, &put) };
            return;
        }
        run_portable(w, x, n, r0, r1, &put);
    };
    if tasks == 1 || rows * cols * n < 64 * 1024 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn run_avx2(w: &Weight, x: &[f32], n: usize, r0: usize, r1: usize, put: &dyn Fn(usize, usize, f32)) {
    use crate::simd::{Bf16Row, F32Row, Fp4Row, Fp8Row};
    match w {
        Weight::F32 { cols, data, .. } => {
            let c = *cols;
            tiles(x, n, r0, r1, c, put, |r| F32Row(&data[r * c..(r + 1) * c]))
        }
        Weight::Bf16 { cols, data, .. } => {
            let c = *cols;
            tiles(x, n, r0, r1, c, put, |r| Bf16Row(&data[r * c..(r + 1) * c]))
        }
        Weight::Fp8 { cols, data, scales, scale_cols, row0, col0, .. } => {
            let (c, sc) = (*cols, *scale_cols);
            tiles(x, n, r0, r1, c, put, |r| Fp8Row {
                codes: &data[r * c..(r + 1) * c],
                scales: &scales[((r + row0) / 128) * sc..((r + row0) / 128 + 1) * sc],
                col0: *col0,
            })
        }
        Weight::Fp4 { cols, data, scales, .. } => {
            let c = *cols;
            let nb = c.div_ceil(32);
            tiles(x, n, r0, r1, c, put, |r| Fp4Row {
                packed: &data[r * c / 2..(r + 1) * c / 2],
                scales: &scales[r * nb..(r + 1) * nb],
            })
        }
    }
}

/// Rows `r0..r1` for all tokens. Few tokens: decode fused into the dot (weights read once from
/// their stored form). More: decode a sub-block of rows once, then tile tokens over it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tiles<L: crate::simd::RowLoad>(
    x: &[f32],
    n: usize,
    r0: usize,
    r1: usize,
    cols: usize,
    put: &dyn Fn(usize, usize, f32),
    row: impl Fn(usize) -> L,
) {
    use crate::simd::{decode, dot_block, F32Row};
    let xrow = |t: usize| &x[t * cols..(t + 1) * cols];
    if n < 4 {
        for t in 0..n {
            let mut r = r0;
            while r + 4 <= r1 {
                let o = dot_block::<1, 4, L>([xrow(t)], [row(r), row(r + 1), row(r + 2), row(r + 3)]);
                for (i, &v) in o[0].iter().enumerate() {
                    put(t, r + i, v);
                }
                r += 4;
            }
            while r < r1 {
                put(t, r, dot_block::<1, 1, L>([xrow(t)], [row(r)])[0][0]);
                r += 1;
            }
        }
        return;
    }
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        scratch.resize(SUB_ROWS * cols, 0.0);
        let mut b0 = r0;
        while b0 < r1 {
            let b1 = (b0 + SUB_ROWS).min(r1);
            let nr = b1 - b0;
            for (i, r) in (b0..b1).enumerate() {
                decode(row(r), &mut scratch[i * cols..(i + 1) * cols]);
            }
            let rows: Vec<F32Row> = scratch[..nr * cols].chunks_exact(cols).map(F32Row).collect();
            let mut t = 0;
            while t + 4 <= n {
                let xs = [xrow(t), xrow(t + 1), xrow(t + 2), xrow(t + 3)];
                let mut r = 0;
                while r + 3 <= nr {
                    let o = dot_block::<4, 3, F32Row>(xs, [rows[r], rows[r + 1], rows[r + 2]]);
                    for (dt, orow) in o.iter().enumerate() {
                        for (dr, &v) in orow.iter().enumerate() {
                            put(t + dt, b0 + r + dr, v);
                        }
                    }
                    r += 3;
                }
                while r < nr {
                    let o = dot_block::<4, 1, F32Row>(xs, [rows[r]]);
                    for (dt, orow) in o.iter().enumerate() {
                        put(t + dt, b0 + r, orow[0]);
                    }
                    r += 1;
                }
                t += 4;
            }
            while t < n {
                for (r, rw) in rows.iter().enumerate() {
                    put(t, b0 + r, dot_block::<1, 1, F32Row>([xrow(t)], [*rw])[0][0]);
                }
                t += 1;
            }
            b0 = b1;
        }
    });
}

fn run_portable(w: &Weight, x: &[f32], n: usize, r0: usize, r1: usize, put: &dyn Fn(usize, usize, f32)) {
    let cols = w.cols();
    let xrow = |t: usize| &x[t * cols..(t + 1) * cols];
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        let mut b0 = r0;
        while b0 < r1 {
            let b1 = (b0 + SUB_ROWS).min(r1);
            let nr = b1 - b0;
            let wrows: Vec<&[f32]> = if let Weight::F32 { data, .. } = w {
                (b0..b1).map(|r| &data[r * cols..(r + 1) * cols]).collect()
            } else {
                scratch.resize(nr * cols, 0.0);
                for (i, r) in (b0..b1).enumerate() {
                    w.decode_row(r, &mut scratch[i * cols..(i + 1) * cols]);
                }
                scratch.chunks_exact(cols).collect()
            };
            let mut t = 0;
            while t + 4 <= n {
                let xs = [xrow(t), xrow(t + 1), xrow(t + 2), xrow(t + 3)];
                let mut r = 0;
                while r + 3 <= nr {
                    let o = dot::block_4x3(xs, [wrows[r], wrows[r + 1], wrows[r + 2]]);
                    for (dt, row) in o.iter().enumerate() {
                        for (dr, &v) in row.iter().enumerate() {
                            put(t + dt, b0 + r + dr, v);
                        }
                    }
                    r += 3;
                }
                while r < nr {
                    let o = dot::block_4x1(xs, [wrows[r]]);
                    for (dt, row) in o.iter().enumerate() {
                        put(t + dt, b0 + r, row[0]);
                    }
                    r += 1;
                }
                t += 4;
            }
            while t < n {
                let mut r = 0;
                while r + 4 <= nr {
                    let o = dot::block_1x4([xrow(t)], [wrows[r], wrows[r + 1], wrows[r + 2], wrows[r + 3]]);
                    for (dr, &v) in o[0].iter().enumerate() {
                        put(t, b0 + r + dr, v);
                    }
                    r += 4;
                }
                while r < nr {
                    put(t, b0 + r, dot::dot(xrow(t), wrows[r]));
                    r += 1;
                }
                t += 1;
            }
            b0 = b1;
        }
    });
}

/// Convenience: allocates the output.
pub fn matmul_new(w: &Weight, x: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * w.rows()];
    matmul(w, x, n, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{quantize_fp4_rows, quantize_fp8_blocks};

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn all_formats(rows: usize, cols: usize) -> Vec<Weight> {
        let w = data(rows * cols, 7);
        let (c8, s8) = quantize_fp8_blocks(&w, rows, cols);
        let (c4, s4) = quantize_fp4_rows(&w, rows, cols);
        vec![
            Weight::f32(rows, cols, w.clone()).unwrap(),
            Weight::bf16(rows, cols, w.iter().map(|&v| crate::formats::f32_to_bf16(v)).collect()).unwrap(),
            Weight::fp8(rows, cols, c8, s8).unwrap(),
            Weight::fp4(rows, cols, c4, s4).unwrap(),
        ]
    }

    #[test]
    fn batch_invariant_bitwise() {
        let (rows, cols) = (203, 160);
        for w in all_formats(rows, cols) {
            let x = data(13 * cols, 3);
            let full = matmul_new(&w, &x, 13);
            for t in 0..13 {
                let one = matmul_new(&w, &x[t * cols..(t + 1) * cols], 1);
                for r in 0..rows {
                    assert_eq!(one[r].to_bits(), full[t * rows + r].to_bits(), "{} t{t} r{r}", w.format_name());
                }
            }
            // Against a float64 reference on the decoded weights.
            let dense = w.to_f32();
            for t in [0, 12] {
                for r in [0, 100, 202] {
                    let e: f64 = (0..cols).map(|c| dense[r * cols + c] as f64 * x[t * cols + c] as f64).sum();
                    assert!((full[t * rows + r] as f64 - e).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn every_path_equals_the_canonical_dot_bitwise() {
        // The canonical definition: dot::dot of the input row and the decoded weight row.
        for (rows, cols) in [(203, 160), (37, 100), (300, 320)] {
            for w in all_formats(rows, cols) {
                let c1 = 32 + (cols - 64) / 32 * 32;
                let variants = vec![w.clone(), w.slice_rows(5, rows - 3).unwrap(), w.slice_cols(32, c1).unwrap()];
                for v in variants {
                    let (r, c) = (v.rows(), v.cols());
                    let dense = v.to_f32();
                    for n in [1usize, 2, 3, 4, 5, 13] {
                        let x = data(n * c, 11 + n as u64);
                        let got = matmul_new(&v, &x, n);
                        for t in 0..n {
                            for i in 0..r {
                                let want = dot::dot(&x[t * c..(t + 1) * c], &dense[i * c..(i + 1) * c]);
                                assert_eq!(
                                    got[t * r + i].to_bits(),
                                    want.to_bits(),
                                    "{} {r}x{c} n{n} t{t} r{i}",
                                    v.format_name()
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nan_codes_are_rejected() {
        assert!(Weight::fp8(1, 2, vec![0x7f, 0], vec![127]).is_err());
        assert!(Weight::fp8(1, 2, vec![0xff, 0], vec![127]).is_err());
        assert!(Weight::fp8(1, 2, vec![0x10, 0], vec![255]).is_err());
        assert!(Weight::fp4(1, 32, vec![0; 16], vec![255]).is_err());
    }

    #[test]
    fn slices_match_the_whole() {
        let (rows, cols) = (300, 320);
        for w in all_formats(rows, cols) {
            let dense = w.to_f32();
            for (r0, r1) in [(0, 300), (64, 200), (130, 131)] {
                let s = w.slice_rows(r0, r1).unwrap();
                let d = s.to_f32();
                assert_eq!(&d[..], &dense[r0 * cols..r1 * cols], "{} rows {r0}..{r1}", w.format_name());
                for (c0, c1) in [(0, 320), (64, 192), (160, 224)] {
                    let sc = s.slice_cols(c0, c1).unwrap();
                    let d2 = sc.to_f32();
                    for r in 0..(r1 - r0) {
                        assert_eq!(&d2[r * (c1 - c0)..(r + 1) * (c1 - c0)], &d[r * cols + c0..r * cols + c1]);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(Weight::f32(2, 3, vec![0.0; 5]).is_err());
        assert!(Weight::fp8(200, 10, vec![0; 2000], vec![0; 1]).is_err());
        assert!(Weight::fp4(2, 3, vec![0; 3], vec![0; 2]).is_err());
        let w = Weight::f32(2, 2, vec![0.0; 4]).unwrap();
        assert!(w.slice_rows(1, 3).is_err());
    }
}
