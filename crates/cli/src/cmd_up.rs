use crate::local_cluster::{runtime, LocalWorkers};
use anyhow::{bail, Context, Result};
use emesh_common::ModelConfig;
use emesh_coordinator::leader::Leadership;
use emesh_coordinator::{Batcher, Cluster, ClusterOptions, Driver, DriverOptions, Request};
use emesh_store::PlacementStore;
use emesh_worker::WorkerConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Worker ranks to start (each its own gRPC server on loopback).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[command(flatten)]
    drive: DriveArgs,
}

/// What the coordinator does with a cluster (shared by `up` and `coordinator`).
#[derive(clap::Args)]
pub struct DriveArgs {
    /// Tensor-parallel size of each attention group; workers / tp groups serve in parallel.
    #[arg(long, default_value_t = 1)]
    tp: usize,
    /// Model folder; without it the `--preset` model is generated once into models/<preset>.
    #[arg(long)]
    model: Option<PathBuf>,
    /// tiny, small or medium.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Weight bytes each worker may hold (a shard above it is refused).
    #[arg(long)]
    memory_budget: Option<u64>,
    /// Redundant expert slots per rank (replicas of the hottest experts).
    #[arg(long, default_value_t = 0)]
    redundant_experts: usize,
    /// Prompt to generate from (needs tokenizer.json), or use --prompt-ids.
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,
    #[arg(long)]
    prompt_ids: Option<String>,
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Concurrent sequences (spread over the data-parallel groups).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// exact or official.
    #[arg(long, default_value = "exact")]
    numerics: String,
    /// Dispatch payload: f32 (exact), bf16 or fp8.
    #[arg(long, default_value = "f32")]
    dispatch_dtype: String,
    /// Serve the OpenAI-compatible HTTP API on this address (port 0: any) until interrupted,
    /// instead of the demo generation. Prints `{"http": ADDR}` once bound.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Requests that may wait for a free slot before new ones get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Seconds a step may take before the cluster is checked for hung workers.
    #[arg(long, default_value_t = 300.0)]
    step_timeout: f64,
    /// Stay up after the demo generation until interrupted.
    #[arg(long)]
    keep_running: bool,
}

pub fn run(args: Args) -> Result<i32> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let rt = runtime()?;
    let a = &args.drive;
    let wcfg = WorkerConfig {
        memory_budget: a.memory_budget,
        exchange_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let workers = LocalWorkers::start(&rt, args.workers, &wcfg)?;
    let store: Arc<dyn PlacementStore> = Arc::new(emesh_store::MemoryStore::new());
    let code = drive(&rt, &workers.addrs, a, store, None)?;
    drop(workers);
    Ok(code)
}

/// Places the model on the workers at `addrs`, runs the demo generation, and stays up if asked.
pub fn drive(
    rt: &tokio::runtime::Runtime,
    addrs: &[String],
    a: &DriveArgs,
    store: Arc<dyn PlacementStore>,
    leadership: Option<Leadership>,
) -> Result<i32> {
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let model = match &a.model {
        Some(m) => m.clone(),
        None => crate::models::ensure_preset(&a.preset)?,
    };
    let config = ModelConfig::from_file(&model.join("config.json"))?;
    let tokenizer = match model.join("tokenizer.json") {
        p if p.exists() => Some(emesh_chat::Tokenizer::from_file(&p)?),
        _ => None,
    };
    let t0 = Instant::now();
    let opts = ClusterOptions {
        tp: a.tp,
        model_dir: std::fs::canonicalize(&model)?.display().to_string(),
        numerics: a.numerics.clone(),
        dispatch_dtype: a.dispatch_dtype.clone(),
        redundant_slots_per_rank: a.redundant_experts,
        default_budget: a.memory_budget.unwrap_or(1 << 50),
        ..Default::default()
    };
    let cluster = rt.block_on(Cluster::start_with(addrs, config, &opts, &*store))?;
    let dp = cluster.dp();
    eprintln!(
        "cluster up in {:.1}s: {} workers (tp={}, dp={dp}) at {}; weights per rank (MiB): {:?}",
        t0.elapsed().as_secs_f64(),
        addrs.len(),
        a.tp,
        addrs.join(", "),
        cluster.weight_bytes.iter().map(|b| b >> 20).collect::<Vec<_>>()
    );
    let dopts = DriverOptions { step_timeout: Duration::from_secs_f64(a.step_timeout), ..Default::default() };
    let mut driver = Driver::new(cluster, store, dopts);
    if let Some(addr) = a.http {
        return serve_http(rt, driver, &model, tokenizer, addr, a, leadership);
    }
    let prompt: Vec<u32> = match (&a.prompt_ids, &tokenizer) {
        (Some(ids), _) => ids
            .split(',')
            .map(|s| s.trim().parse::<u32>().with_context(|| format!("--prompt-ids: `{s}` is not a token id")))
            .collect::<Result<_>>()?,
        (None, Some(t)) => t.encode(&a.prompt)?,
        (None, None) => bail!("{} has no tokenizer.json: use --prompt-ids", model.display()),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    // The demo generation: `concurrency` copies of the prompt through the batcher.
    let mut batcher = Batcher::new(a.concurrency.div_ceil(dp).max(1));
    for _ in 0..a.concurrency {
        batcher.submit(Request { prompt: prompt.clone(), max_tokens: a.max_tokens, stop_token: None })?;
    }
    let (mut prefill_s, mut decode_s) = (0.0, 0.0);
    let mut finished = Vec::new();
    let mut first = true;
    while !batcher.is_idle() {
        let t = Instant::now();
        finished.extend(rt.block_on(driver.step(&mut batcher))?);
        if first {
            prefill_s = t.elapsed().as_secs_f64();
            first = false;
        } else {
            decode_s += t.elapsed().as_secs_f64();
        }
    }
    finished.sort_by_key(|f| f.id);
    let generated: Vec<Vec<u32>> = finished.iter().map(|f| f.tokens.clone()).collect();
    let text = tokenizer.as_ref().map(|t| t.decode(&generated[0], false)).transpose()?;
    println!(
        "{}",
        serde_json::json!({
            "workers": addrs.len(), "tp": a.tp, "dp": dp, "epoch": driver.cluster.plan.epoch.0,
            "weight_bytes_per_rank": driver.cluster.weight_bytes,
            "prompt_tokens": prompt.len(), "concurrency": a.concurrency,
            "tokens": generated[0], "text": text,
            "prefill_tokens_per_second": (prompt.len() * a.concurrency) as f64 / prefill_s,
            "decode_tokens_per_second": if a.max_tokens > 1 { ((a.max_tokens - 1) * a.concurrency) as f64 / decode_s } else { 0.0 },
        })
    );
    if a.keep_running {
        eprintln!("serving; Ctrl-C to stop");
        rt.block_on(crate::cmd_worker::shutdown_signal());
    }
    Ok(0)
}

/// Serves the HTTP API over `cluster` until Ctrl-C or SIGTERM.
fn serve_http(
    rt: &tokio::runtime::Runtime,
    driver: Driver,
    model: &std::path::Path,
    tokenizer: Option<emesh_chat::Tokenizer>,
    addr: std::net::SocketAddr,
    a: &DriveArgs,
    leadership: Option<Leadership>,
) -> Result<i32> {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;
    let cfg = driver.cluster.config.clone();
    let name = std::fs::canonicalize(model)?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "emesh".into());
    let (tx, rx) = tokio::sync::mpsc::channel(a.max_queue.max(1));
    let batcher = Batcher::new(a.concurrency.max(8));
    rt.spawn(emesh_server::engine_loop(driver, batcher, rx));
    let state = emesh_server::AppState {
        model: name,
        tokenizer: tokenizer.map(Arc::new),
        jobs: tx,
        ready: Arc::new(AtomicBool::new(true)),
        max_context: cfg.max_position_embeddings,
        vocab: cfg.vocab_size,
        eos: cfg.eos_token_id,
        ids: Arc::new(AtomicU64::new(0)),
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("{}", serde_json::json!({ "http": listener.local_addr()?.to_string() }));
        let mut lost = leadership.as_ref().map(|l| l.lost.clone());
        let lost = async move {
            match lost.as_mut() {
                Some(rx) => {
                    let _ = rx.wait_for(|l| *l).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = axum::serve(listener, emesh_server::router(state))
                .with_graceful_shutdown(crate::cmd_worker::shutdown_signal()) => r?,
            _ = lost => anyhow::bail!("lost the leader lease: another coordinator leads now"),
        }
        if let Some(l) = leadership {
            l.resign().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
