//! Benchmark helpers: the machine's memory bandwidth and the bytes a decode step must read.

use emesh_model::weights::ModelWeights;
use emesh_model::Engine;
use rayon::prelude::*;
use std::time::Instant;

/// Read bandwidth in bytes/s: the best of `reps` parallel passes summing a `bytes`-sized buffer
/// (large enough to defeat the caches).
pub fn read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let n = bytes / 4;
    let buf: Vec<f32> = (0..n).map(|i| (i % 1024) as f32).collect();
    let mut best = f64::INFINITY;
    let mut sink = 0.0f32;
    for _ in 0..reps {
        let t = Instant::now();
        let s: f32 = buf
            .par_chunks(1 << 16)
            .map(|c| {
                let mut acc = [0.0f32; 16];
                for ch in c.chunks_exact(16) {
                    for l in 0..16 {
                        acc[l] += ch[l];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        best = best.min(t.elapsed().as_secs_f64());
        sink += s;
    }
    std::hint::black_box(sink);
    bytes as f64 / best
}

/// Bytes of weights one decode step at batch 1 reads: every dense tensor of every layer, `k`
/// routed experts per layer (at the average expert size), one embedding row and the head.
pub fn active_bytes_per_token(engine: &Engine) -> f64 {
    let w: &ModelWeights = &engine.weights;
    let cfg = &engine.cfg;
    let k = cfg.num_experts_per_tok as f64;
    let mut total = w.head.bytes() as f64 + (w.embed.bytes() / cfg.vocab_size) as f64;
    for l in &w.layers {
        let experts: Vec<usize> = l.moe.experts.iter().flatten().map(|e| e.bytes()).collect();
        let avg = experts.iter().sum::<usize>() as f64 / experts.len().max(1) as f64;
        let routed: usize = experts.iter().sum();
        let mut dense = 0usize;
        dense += l.moe.gate.bytes() + l.moe.shared.bytes();
        let a = &l.attn;
        dense += a.wq_a.bytes() + a.wq_b.bytes() + a.wkv.bytes();
        dense += a.wo_a.iter().chain(&a.wo_b).map(|m| m.bytes()).sum::<usize>();
        if let Some(c) = &a.compressor {
            dense += c.wkv.bytes() + c.wgate.bytes();
        }
        if let Some(i) = &a.indexer {
            dense += i.wq_b.bytes() + i.weights_proj.bytes() + i.compressor.wkv.bytes() + i.compressor.wgate.bytes();
        }
        dense += l.hc_attn.fn_.bytes() + l.hc_ffn.fn_.bytes();
        let _ = routed;
        total += dense as f64 + k * avg;
    }
    total
}
