//! Engine throughput on the `small` preset, against the machine's memory-bandwidth roofline
//! measured in the same run.
//!
//! `cargo bench -p emesh-benches [-- --preset small --dtypes f32,fp8 --prompt 512 --steps 32]`
//! Prints a table and one JSON line per configuration. Models are generated once into
//! `target/bench-models/`.

use emesh_benches::{active_bytes_per_token, read_bandwidth};
use emesh_model::gen::{self, GenDtype};
use emesh_model::{argmax, Engine, LoadOptions, Logits, Seq};
use std::path::PathBuf;
use std::time::Instant;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn model_dir(preset: &str, dtype: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-models");
    let dir = root.join(format!("{preset}-{dtype}"));
    if !dir.join("config.json").exists() {
        let cfg = gen::preset(preset).expect("preset");
        let dt: GenDtype = dtype.parse().expect("dtype");
        eprintln!("generating {preset} ({dtype}) into {}", dir.display());
        gen::generate(&dir, &cfg, dt, 0, 4096 << 20, |_| {}).expect("generate");
    }
    dir
}

fn prompt(n: usize, salt: u32, vocab: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(salt * 7919) % (vocab as u32 - 3)) + 3).collect()
}

/// Decode tokens/s at `batch` sequences of `ctx` prompt tokens each, over `steps` greedy steps.
fn decode(e: &Engine, batch: usize, ctx: usize, steps: usize) -> f64 {
    let v = e.cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = (0..batch).map(|b| prompt(ctx, b as u32, v)).collect();
    let mut caches: Vec<_> = (0..batch).map(|_| e.new_cache()).collect();
    let mut seqs: Vec<Seq> =
        caches.iter_mut().zip(&prompts).map(|(c, p)| Seq { tokens: p, cache: c, logits: Logits::Last }).collect();
    let out = e.forward(&mut seqs, None).expect("prefill");
    let mut next: Vec<[u32; 1]> = out.iter().map(|l| [argmax(l)]).collect();
    // One warm-up step, then the timed ones.
    let mut times = Vec::new();
    for s in 0..=steps {
        let t = Instant::now();
        let mut seqs: Vec<Seq> =
            caches.iter_mut().zip(&next).map(|(c, t)| Seq { tokens: t, cache: c, logits: Logits::Last }).collect();
        let out = e.forward(&mut seqs, None).expect("decode");
        next = out.iter().map(|l| [argmax(l)]).collect();
        if s > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    batch as f64 / times[times.len() / 2]
}

fn prefill(e: &Engine, len: usize, reps: usize) -> f64 {
    let p = prompt(len, 99, e.cfg.vocab_size);
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let mut c = e.new_cache();
        let t = Instant::now();
        e.forward(&mut [Seq { tokens: &p, cache: &mut c, logits: Logits::Last }], None).expect("prefill");
        best = best.min(t.elapsed().as_secs_f64());
    }
    len as f64 / best
}

fn main() {
    emesh_compute::init_threads(None);
    let preset = arg("--preset", "small");
    let dtypes = arg("--dtypes", "f32,fp8");
    let plen: usize = arg("--prompt", "512").parse().expect("--prompt");
    let steps: usize = arg("--steps", "32").parse().expect("--steps");
    let threads = rayon::current_num_threads();
    let bw = read_bandwidth(1 << 30, 5);
    println!("threads {threads}; memory read bandwidth {:.2} GB/s", bw / 1e9);
    println!(
        "{:<6} {:>12} {:>12} {:>13} {:>14} {:>11} {:>10}",
        "dtype", "prefill t/s", "decode b=1", "decode b=16", "bytes/token", "roofline", "fraction"
    );
    for dtype in dtypes.split(',') {
        let dir = model_dir(&preset, dtype);
        let e = Engine::load(&dir, &LoadOptions::default()).expect("load");
        let active = active_bytes_per_token(&e);
        let roofline = bw / active;
        let pf = prefill(&e, plen, 2);
        let d1 = decode(&e, 1, 32, steps);
        let d16 = decode(&e, 16, 32, steps / 2);
        println!(
            "{:<6} {:>12.1} {:>12.2} {:>13.2} {:>14.0} {:>11.2} {:>9.1}%",
            dtype,
            pf,
            d1,
            d16,
            active,
            roofline,
            100.0 * d1 / roofline
        );
        println!(
            "{}",
            serde_json::json!({
                "preset": preset, "dtype": dtype, "threads": threads, "bandwidth_bytes_per_s": bw,
                "prefill_tokens_per_s": pf, "prompt_tokens": plen,
                "decode_b1_tokens_per_s": d1, "decode_b16_tokens_per_s": d16,
                "active_weight_bytes_per_token": active, "roofline_tokens_per_s": roofline,
                "roofline_fraction_b1": d1 / roofline, "weights_bytes": e.weights.bytes(),
            })
        );
    }
}
