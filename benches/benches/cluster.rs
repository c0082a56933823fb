//! Decode throughput of a 2-worker expert-parallel cluster (gRPC on loopback, one process,
//! sharing the machine's cores) against the single-process engine on the same cores and model.
//!
//! `cargo bench -p emesh-benches --bench cluster [-- --preset small --batch 1,8 --steps 16]`

use emesh_common::ModelConfig;
use emesh_coordinator::{Cluster, ClusterOptions, GroupBatch, SeqStep};
use emesh_model::gen::{self, GenDtype};
use emesh_model::{argmax, Engine, LoadOptions, Logits, Seq};
use emesh_wire::pb::LogitsMode;
use emesh_worker::WorkerConfig;
use std::path::PathBuf;
use std::time::Instant;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn prompt(n: usize, salt: u32, vocab: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(salt * 7919) % (vocab as u32 - 3)) + 3).collect()
}

fn single(e: &Engine, batch: usize, steps: usize) -> f64 {
    let v = e.cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = (0..batch).map(|b| prompt(32, b as u32, v)).collect();
    let mut caches: Vec<_> = (0..batch).map(|_| e.new_cache()).collect();
    let mut seqs: Vec<Seq> =
        caches.iter_mut().zip(&prompts).map(|(c, p)| Seq { tokens: p, cache: c, logits: Logits::Last }).collect();
    let out = e.forward(&mut seqs, None).unwrap();
    let mut next: Vec<[u32; 1]> = out.iter().map(|l| [argmax(l)]).collect();
    let t = Instant::now();
    for _ in 0..steps {
        let mut seqs: Vec<Seq> =
            caches.iter_mut().zip(&next).map(|(c, t)| Seq { tokens: t, cache: c, logits: Logits::Last }).collect();
        next = e.forward(&mut seqs, None).unwrap().iter().map(|l| [argmax(l)]).collect();
    }
    (batch * steps) as f64 / t.elapsed().as_secs_f64()
}

fn cluster(rt: &tokio::runtime::Runtime, c: &mut Cluster, batch: usize, steps: usize) -> f64 {
    let v = c.config.vocab_size;
    let dp = c.dp();
    let base = (batch as u64) << 20;
    let mut pos = vec![0u64; batch];
    let mut next: Vec<Vec<u32>> = (0..batch).map(|b| prompt(32, b as u32, v)).collect();
    let mut t = Instant::now();
    for s in 0..=steps {
        if s == 1 {
            t = Instant::now();
        }
        let mut groups: Vec<GroupBatch> = vec![vec![]; dp];
        for b in 0..batch {
            groups[b % dp].push(SeqStep {
                id: base + b as u64,
                tokens: next[b].clone(),
                pos: pos[b],
                logits: LogitsMode::LogitsLast,
                greedy: true,
                sampling: None,
            });
            pos[b] += next[b].len() as u64;
        }
        for o in rt.block_on(c.step(groups, vec![])).unwrap() {
            next[(o.id - base) as usize] = vec![o.token.unwrap()];
        }
    }
    (batch * steps) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    emesh_compute::init_threads(None);
    let preset = arg("--preset", "small");
    let steps: usize = arg("--steps", "16").parse().unwrap();
    let batches: Vec<usize> = arg("--batch", "1,8").split(',').map(|b| b.parse().unwrap()).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/bench-models/{preset}-f32"));
    if !dir.join("config.json").exists() {
        gen::generate(&dir, &gen::preset(&preset).unwrap(), GenDtype::F32, 0, 4096 << 20, |_| {}).unwrap();
    }
    let engine = Engine::load(&dir, &LoadOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        addrs.push(l.local_addr().unwrap().to_string());
        rt.spawn(emesh_worker::serve(WorkerConfig::default(), l, std::future::pending()));
    }
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let opts = ClusterOptions { model_dir: dir.display().to_string(), ..Default::default() };
    let mut c = rt.block_on(Cluster::start(&addrs, cfg, &opts)).unwrap();
    println!(
        "{preset} f32, {} compute threads shared by everything; EP2 = 2 workers (tp=1, dp=2) over gRPC",
        rayon::current_num_threads()
    );
    println!("{:<6} {:>14} {:>14} {:>8}", "batch", "one process", "EP2 cluster", "ratio");
    for &b in &batches {
        let s = single(&engine, b, steps);
        let k = cluster(&rt, &mut c, b, steps);
        println!("{:<6} {:>14.2} {:>14.2} {:>7.2}x", b, s, k, k / s);
        println!(
            "{}",
            serde_json::json!({"preset": preset, "batch": b, "single_tokens_per_s": s, "ep2_tokens_per_s": k, "ratio": k / s})
        );
    }
}
