//! `emesh plan`: can this cluster serve the model, in which layouts, and how fast might it run.
//!
//! Everything is computed by `emesh_placement::size`, the same accounting the workers use to
//! place tensors, so a plan made on paper is what the cluster will load. This file only turns
//! flags into a request and the report into a table or JSON. Exit codes: 0 when some layout
//! fits, 1 when none does (the report and what is missing are still printed), 2 on bad input.

use anyhow::{bail, Context, Result};
use emesh_placement::catalog::{builtin, builtin_names, profile_from_config};
use emesh_placement::sizing::count;
use emesh_placement::{size, Hardware, ModelProfile, SizingReport, SizingRequest};
use std::path::Path;

/// The model and the cluster, shared by `plan` and `simulate`.
#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Model: a built-in name (deepseek-v4-pro, deepseek-v4-flash, deepseek-v3), a `config.json`
    /// path, or a checkpoint folder holding one. V4 and V3 are told apart by `model_type`.
    #[arg(long)]
    pub model: String,
    /// Accelerator: h100-80g, h200, b200, h800, or cpu:<GiB> for a CPU node with that much memory.
    #[arg(long, value_parser = parse_gpu)]
    pub gpu: Hardware,
    /// Nodes in the cluster.
    #[arg(long)]
    pub nodes: usize,
    /// Accelerators per node (one rank each; NVLink within a node, the network between nodes).
    #[arg(long)]
    pub gpus_per_node: usize,
    /// Tokens in every sequence's cache. Accepts 1k = 1000 and 1K = 1024 (likewise m/M).
    #[arg(long, default_value = "128K", value_parser = parse_tokens)]
    pub context: usize,
    /// Extra expert copies per MoE layer over the whole cluster (for load balance or failover).
    #[arg(long, default_value_t = 0)]
    pub redundant_experts: usize,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Decode sequences per attention group in one step (default: every sequence that fits).
    #[arg(long)]
    batch: Option<usize>,
    /// Prompt length for the prefill estimate (default: --context). Same suffixes as --context.
    #[arg(long, value_parser = parse_tokens)]
    prompt: Option<usize>,
    /// Prompt tokens each GPU computes in one prefill step.
    #[arg(long, default_value_t = 16384)]
    prefill_tokens_per_gpu: usize,
    /// Share of prompt tokens served from a prefix cache, counted as prefill throughput.
    #[arg(long, default_value_t = 0.0)]
    prefix_cache_hit: f64,
    /// Average share of capacity in use, scaling both throughputs (1: a fully loaded cluster).
    #[arg(long, default_value_t = 1.0)]
    utilization: f64,
    /// Print the report as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<i32> {
    if a.batch == Some(0) {
        bail!("--batch must be positive (leave it out to batch every sequence that fits)");
    }
    let profile = load_model(&a.cluster.model)?;
    let mut req = a.cluster.request();
    req.batch = a.batch.unwrap_or(0);
    req.prompt = a.prompt.unwrap_or(0);
    req.prefill_tokens_per_gpu = a.prefill_tokens_per_gpu;
    req.assumptions.prefill_cache_hit = a.prefix_cache_hit;
    req.assumptions.utilization = a.utilization;
    let report = size(&profile, &req)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(match does_not_fit(&report) {
        Some(why) => {
            eprintln!("error: {why}");
            1
        }
        None => 0,
    })
}

impl ClusterArgs {
    /// The sizing request of these flags, every other setting at its default.
    pub fn request(&self) -> SizingRequest {
        let mut req = SizingRequest::new(self.gpu.clone(), self.nodes, self.gpus_per_node, self.context);
        req.redundant_experts = self.redundant_experts;
        req
    }
}

/// Why no layout of `r` fits, and how many nodes would: `None` when one fits.
pub fn does_not_fit(r: &SizingReport) -> Option<String> {
    if r.best.is_some() {
        return None;
    }
    let problem = r.layouts.last().and_then(|l| l.problem.clone()).unwrap_or_else(|| {
        format!("no tensor-parallel degree divides both the model's unit and {} GPUs per node", r.gpus_per_node)
    });
    let fix = match &r.min_cluster {
        Some(c) if c.nodes > r.nodes => format!(
            "missing {}: the smallest cluster of {}-GPU {} nodes that holds it is {} ({} GPUs, tp={})",
            count(c.nodes - r.nodes, "more node"),
            r.gpus_per_node,
            r.hardware.name,
            count(c.nodes, "node"),
            c.gpus,
            c.tp
        ),
        Some(c) => format!("a cluster of {} ({} GPUs, tp={}) holds it", count(c.nodes, "node"), c.gpus, c.tp),
        None => format!(
            "no cluster of up to 4096 {}-GPU {} nodes holds it: each GPU needs more memory",
            r.gpus_per_node, r.hardware.name
        ),
    };
    Some(format!(
        "{} at {} tokens of context does not fit on {} x {} {}: {problem}; {fix}",
        r.model,
        r.context,
        count(r.nodes, "node"),
        r.gpus_per_node,
        r.hardware.name
    ))
}

/// Profiles a built-in model by name, or reads a config file or checkpoint folder.
pub fn load_model(spec: &str) -> Result<ModelProfile> {
    if let Some(b) = builtin(spec) {
        return Ok(profile_from_config(b.display, b.config)?);
    }
    let path = Path::new(spec);
    let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    if !file.is_file() {
        bail!("unknown model `{spec}`: not a built-in name ({}) and no such config file", builtin_names());
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let named = if file.file_name().is_some_and(|n| n == "config.json") { file.parent() } else { Some(file.as_path()) };
    let name = named.and_then(Path::file_stem).map_or_else(|| spec.to_string(), |s| s.to_string_lossy().into_owned());
    profile_from_config(&name, &text).with_context(|| format!("model config {}", file.display()))
}

fn parse_gpu(s: &str) -> Result<Hardware, String> {
    Hardware::parse(s).map_err(|e| e.to_string())
}

/// A token count: digits with an optional k/m (x1000, x1000^2) or K/M (x1024, x1024^2) suffix.
pub fn parse_tokens(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k')) => (&s[..i], 1e3),
        Some((i, 'm')) => (&s[..i], 1e6),
        Some((i, 'K')) => (&s[..i], 1024.0),
        Some((i, 'M')) => (&s[..i], 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    let bad = || format!("`{s}` is not a token count (examples: 4096, 128K, 1M, 25.6k)");
    if mult == 1.0 {
        return num.parse::<usize>().map_err(|_| bad());
    }
    let v = (num.parse::<f64>().map_err(|_| bad())? * mult).round();
    if !(v.is_finite() && v >= 0.0 && v < 2f64.powi(53)) {
        return Err(bad());
    }
    Ok(v as usize)
}
