//! Matmul kernels alone: GB/s of weight bytes streamed at batch 1 (GEMV, the decode case) and
//! GFLOP/s at batch 64 (the prefill case), per stored format, beside the read bandwidth.

use emesh_benches::read_bandwidth;
use emesh_compute::formats::{f32_to_bf16, quantize_fp4_rows, quantize_fp8_blocks};
use emesh_compute::{matmul, Weight};
use std::time::Instant;

fn weights(rows: usize, cols: usize) -> Vec<Weight> {
    let w: Vec<f32> = (0..rows * cols).map(|i| ((i as f32) * 0.618).sin() * 0.05).collect();
    let (c8, s8) = quantize_fp8_blocks(&w, rows, cols);
    let (c4, s4) = quantize_fp4_rows(&w, rows, cols);
    vec![
        Weight::bf16(rows, cols, w.iter().map(|&v| f32_to_bf16(v)).collect()).unwrap(),
        Weight::fp8(rows, cols, c8, s8).unwrap(),
        Weight::fp4(rows, cols, c4, s4).unwrap(),
        Weight::f32(rows, cols, w).unwrap(),
    ]
}

fn time(w: &Weight, n: usize, reps: usize) -> f64 {
    let x: Vec<f32> = (0..n * w.cols()).map(|i| (i as f32 * 0.1).cos()).collect();
    let mut out = vec![0.0; n * w.rows()];
    matmul(w, &x, n, &mut out);
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        matmul(w, &x, n, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&out);
    best
}

fn main() {
    emesh_compute::init_threads(None);
    println!("threads {}; read bandwidth {:.2} GB/s", rayon::current_num_threads(), read_bandwidth(1 << 30, 5) / 1e9);
    for (what, rows, cols) in
        [("head 129280x512", 129280, 512), ("expert 192x512", 192, 512), ("wq_b 1024x256", 1024, 256)]
    {
        for w in weights(rows, cols) {
            let t1 = time(&w, 1, 20);
            let t64 = time(&w, 64, 3);
            println!(
                "{what:<18} {:<5} gemv {:>8.1} us {:>7.2} GB/s | n=64 {:>7.2} GFLOP/s",
                w.format_name(),
                t1 * 1e6,
                w.bytes() as f64 / t1 / 1e9,
                2.0 * 64.0 * (rows * cols) as f64 / t64 / 1e9
            );
        }
    }
}
