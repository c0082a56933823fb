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
    pub(crate) tp: usize,
    /// Model folder; without it the `--preset` model is generated once into models/<preset>.
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// tiny, small or medium.
    #[arg(long, default_value = "small")]
    pub(crate) preset: String,
    /// Weight bytes each worker may hold (a shard above it is refused).
    #[arg(long)]
    pub(crate) memory_budget: Option<u64>,
    /// Redundant expert slots per rank (replicas of the hottest experts).
    #[arg(long, default_value_t = 0)]
    pub(crate) redundant_experts: usize,
    /// Prompt to generate from (needs tokenizer.json), or use --prompt-ids.
    #[arg(long, default_value = "The capital of France is")]
    pub(crate) prompt: String,
    #[arg(long)]
    pub(crate) prompt_ids: Option<String>,
    #[arg(long, default_value_t = 32)]
    pub(crate) max_tokens: usize,
    /// Concurrent sequences (spread over the data-parallel groups).
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// exact or official.
    #[arg(long, default_value = "exact")]
    pub(crate) numerics: String,
    /// Dispatch payload: f32 (exact), bf16 or fp8.
    #[arg(long, default_value = "f32")]
    pub(crate) dispatch_dtype: String,
    /// Serve the OpenAI-compatible HTTP API on this address (port 0: any) until interrupted,
    /// instead of the demo generation. Prints `{"http": ADDR}` once bound. `emesh up` serves on
    /// 127.0.0.1:8000 unless told `--no-http`.
    #[arg(long)]
    pub(crate) http: Option<std::net::SocketAddr>,
    /// Run the one-shot demo generation instead of serving HTTP.
    #[arg(long, conflicts_with = "http")]
    pub(crate) no_http: bool,
    /// Require `Authorization: Bearer KEY` on /v1/*, /tokenize and /detokenize.
    #[arg(long, env = "EMESH_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Requests that may wait for a free slot before new ones get 429.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_queue: usize,
    /// Re-place the redundant expert copies (--redundant-experts) by the load observed over this
    /// many seconds, each time a new epoch (0: never).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rebalance_every: f64,
    /// Seconds a step may take before the cluster is checked for hung workers.
    #[arg(long, default_value_t = 300.0)]
    pub(crate) step_timeout: f64,
    /// Most sequences one data-parallel group runs at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_seqs: usize,
    /// Tokens one group feeds per step (decodes first, then chunks of prompts).
    #[arg(long, default_value_t = 2048)]
    pub(crate) step_tokens: usize,
    /// Tokens one group's caches may hold at once; beyond it the latest request is preempted
    /// and recomputed later.
    #[arg(long, default_value_t = 262144)]
    pub(crate) cache_tokens: usize,
    /// Stay up after the demo generation until interrupted.
    #[arg(long)]
    pub(crate) keep_running: bool,
}

impl DriveArgs {
    /// Where `coordinator` serves HTTP (only with `--http`: it has no default).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        if self.no_http {
            None
        } else {
            self.http
        }
    }
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
    let http =
        if a.no_http { None } else { Some(a.http.unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8000)))) };
    let store: Arc<dyn PlacementStore> = Arc::new(emesh_store::MemoryStore::new());
    let code = drive_with(&rt, &workers.addrs, a, http, store, None)?;
    drop(workers);
    Ok(code)
}

/// Places the model on the workers at `addrs`, then serves `--http` if given, else runs the demo
/// generation and stays up if asked.
pub fn drive(
    rt: &tokio::runtime::Runtime,
    addrs: &[String],
    a: &DriveArgs,
    store: Arc<dyn PlacementStore>,
    leadership: Option<Leadership>,
) -> Result<i32> {
    drive_with(rt, addrs, a, if a.no_http { None } else { a.http }, store, leadership)
}

/// [`drive`], serving HTTP on `http` when given.
pub fn drive_with(
    rt: &tokio::runtime::Runtime,
    addrs: &[String],
    a: &DriveArgs,
    http: Option<std::net::SocketAddr>,
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
    let dopts = DriverOptions {
        step_timeout: Duration::from_secs_f64(a.step_timeout),
        rebalance_every: (a.rebalance_every > 0.0).then(|| Duration::from_secs_f64(a.rebalance_every)),
        ..Default::default()
    };
    let mut driver = Driver::new(cluster, store, dopts);
    if let Some(addr) = http {
        return crate::serve::serve_http(rt, driver, &model, tokenizer, addr, a, leadership);
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
        batcher.submit(Request::greedy(prompt.clone(), a.max_tokens))?;
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
