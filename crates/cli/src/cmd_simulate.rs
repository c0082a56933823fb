//! `emesh simulate`: what worker failures would cost a planned cluster, under each recovery policy.
//!
//! The cluster is sized exactly as `emesh plan` sizes it, so the bytes a failed rank held, what a
//! spare must load and how many dead ranks the survivors' memory absorbs all come from the same
//! layout; `emesh_placement::simulate` then replays one seeded failure trace under every policy,
//! so the policies are compared on the same failures and a seed always gives the same answer.
//! Exit codes as for `plan`: 1 when the model does not fit, 2 on bad input.

use crate::cmd_plan::{does_not_fit, load_model, ClusterArgs};
use anyhow::{bail, Result};
use emesh_placement::simulate::{compare, simulate, tolerated_failures, Policy, SimConfig};
use emesh_placement::size;
use emesh_placement::sizing::count;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PolicyArg {
    /// Every policy, on the same failure trace.
    All,
    /// Copies of the experts on other nodes take over at once.
    Replicas,
    /// The dead rank's experts are read from storage onto the survivors.
    Reload,
    /// An idle spare worker takes the dead rank's whole role.
    Spares,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Tensor-parallel degree of the layout to simulate (default: the plan's best decode layout).
    #[arg(long)]
    tp: Option<usize>,
    /// Recovery policy to simulate.
    #[arg(long, value_enum, default_value = "all")]
    policy: PolicyArg,
    /// Mean time between failures of one rank (a GPU and its worker process), hours.
    #[arg(long, default_value_t = 5000.0)]
    mtbf_hours: f64,
    /// Mean time until a failed rank is back in service, hours.
    #[arg(long, default_value_t = 4.0)]
    repair_hours: f64,
    /// Seconds a rank's lease lasts without renewal: how long a failure goes unnoticed.
    #[arg(long, default_value_t = 10.0)]
    lease_ttl: f64,
    /// Checkpoint read bandwidth of one rank when reloading experts, GB/s.
    #[arg(long, default_value_t = 2.0)]
    reload_gbps: f64,
    /// Share of each rank's experts with a copy on another node, under the replicas policy.
    #[arg(long, default_value_t = 1.0)]
    replica_coverage: f64,
    /// Idle workers standing by to take a failed rank's role, under the spares policy.
    #[arg(long, default_value_t = 1)]
    spare_workers: usize,
    /// Requests arriving per second.
    #[arg(long, default_value_t = 50.0)]
    request_rate: f64,
    /// Mean duration of one request, seconds (requests in flight when a stall starts are delayed).
    #[arg(long, default_value_t = 20.0)]
    request_seconds: f64,
    /// Simulated time, hours (default: one year).
    #[arg(long, default_value_t = 8760.0)]
    horizon_hours: f64,
    /// Seed of the failure trace; the same seed gives the same result.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the result as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<i32> {
    let profile = load_model(&a.cluster.model)?;
    let report = size(&profile, &a.cluster.request())?;
    if let Some(why) = does_not_fit(&report) {
        eprintln!("error: {why}");
        return Ok(1);
    }
    let layout = match a.tp {
        None => report.best.and_then(|i| report.layouts.get(i)),
        Some(tp) => report.layouts.iter().find(|l| l.tp == tp),
    };
    let Some(layout) = layout.filter(|l| l.fits) else {
        let fitting: Vec<String> = report.layouts.iter().filter(|l| l.fits).map(|l| l.tp.to_string()).collect();
        bail!("--tp {} is not a fitting layout of this cluster (fitting: {})", a.tp.unwrap_or(0), fitting.join(", "));
    };
    let cfg = SimConfig {
        tp: layout.tp,
        dp: layout.dp,
        mtbf_hours: a.mtbf_hours,
        repair_hours: a.repair_hours,
        lease_ttl_s: a.lease_ttl,
        reload_gbps: a.reload_gbps,
        expert_bytes_per_rank: layout.memory.experts,
        rank_bytes: layout.memory.weights(),
        replica_coverage: a.replica_coverage,
        spare_workers: a.spare_workers,
        tolerated_failures: tolerated_failures(layout, report.kv_bytes_per_sequence),
        requests_per_s: a.request_rate,
        request_seconds: a.request_seconds,
        horizon_hours: a.horizon_hours,
    };
    // Under `replicas` the copies take memory from the caches; say what remains.
    let replica_bytes = (cfg.replica_coverage * cfg.expert_bytes_per_rank as f64) as u64;
    let kv = report.kv_bytes_per_sequence.max(1);
    let seqs_with_replicas = layout.memory.cache.saturating_sub(replica_bytes) / kv * layout.dp as u64;
    let results = match a.policy {
        PolicyArg::All => compare(&cfg, a.seed)?,
        PolicyArg::Replicas => vec![simulate(&cfg, Policy::Replicas, a.seed)?],
        PolicyArg::Reload => vec![simulate(&cfg, Policy::Reload, a.seed)?],
        PolicyArg::Spares => vec![simulate(&cfg, Policy::Spares, a.seed)?],
    };
    if a.json {
        let v = serde_json::json!({
            "model": report.model,
            "hardware": report.hardware.name,
            "nodes": report.nodes,
            "gpus_per_node": report.gpus_per_node,
            "context": report.context,
            "seed": a.seed,
            "config": cfg,
            "replica_bytes_per_rank": replica_bytes,
            "sequences_with_replicas": seqs_with_replicas,
            "sequences_without_replicas": layout.sequences_total,
            "results": results,
        });
        println!("{v}");
        return Ok(0);
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!(
        "model     {} on {} nodes x {} {}, context {} tokens: tp={}, dp={} ({} ranks)",
        report.model,
        report.nodes,
        report.gpus_per_node,
        report.hardware.name,
        report.context,
        cfg.tp,
        cfg.dp,
        cfg.tp * cfg.dp
    );
    println!(
        "per rank  routed experts {:.1} GiB, all weights {:.1} GiB; survivors absorb up to {}",
        gib(cfg.expert_bytes_per_rank),
        gib(cfg.rank_bytes),
        count(cfg.tolerated_failures, "dead rank")
    );
    println!(
        "failures  MTBF {} h per rank, repair {} h, lease TTL {} s, reload {} GB/s per rank; \
         replicas cover {:.0}% of experts; {}",
        cfg.mtbf_hours,
        cfg.repair_hours,
        cfg.lease_ttl_s,
        cfg.reload_gbps,
        100.0 * cfg.replica_coverage,
        count(cfg.spare_workers, "spare worker")
    );
    println!(
        "replicas  cost {:.1} GiB per rank: caches hold {} sequences with them, {} without{}",
        gib(replica_bytes),
        seqs_with_replicas,
        layout.sequences_total,
        if seqs_with_replicas == 0 { " (the replicas policy does not fit this cluster)" } else { "" }
    );
    println!(
        "load      {} requests/s of {} s; {} h simulated; seed {}",
        cfg.requests_per_s, cfg.request_seconds, cfg.horizon_hours, a.seed
    );
    println!();
    for r in &results {
        println!("{r}");
    }
    Ok(0)
}
