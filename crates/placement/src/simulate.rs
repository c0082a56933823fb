//! A seeded discrete-event model of worker failures, to compare recovery policies before
//! choosing one for a cluster.
//!
//! Every rank fails independently (exponential, mean `mtbf_hours`) and comes back after an
//! exponential repair time. A failure stalls the whole cluster, because every step's
//! all-to-all includes every rank: first for the lease TTL (until the failure is noticed), then
//! while the next placement is loaded. What has to be loaded depends on the policy:
//! - `Replicas`: redundant copies take over at once; only the dead rank's experts without a
//!   copy (`1 - replica_coverage` of them) are read from the checkpoint;
//! - `Reload`: all the dead rank's experts are read onto the survivors;
//! - `Spares`: an idle spare worker takes the dead rank's whole role (attention slice and
//!   experts) and the group keeps serving; with no spare left it falls back to `Reload`.
//!
//! Between recovery and repair, a group missing a rank cannot run attention, so the cluster
//! serves at `(dp - missing groups) / dp` of its capacity (not under `Spares`). When more ranks
//! are dead than the survivors' memory tolerates, the cluster is down until repairs catch up.
//! Requests in flight when a stall starts and those arriving during it are counted as delayed.
//! The same seed gives the same failure trace for every policy, so policies compare fairly.

use crate::error::{input, PlanError};
use crate::rng::SplitMix64;
use crate::sizing::LayoutReport;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    Replicas,
    Reload,
    Spares,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Replicas => "replicas",
            Policy::Reload => "reload",
            Policy::Spares => "spares",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub tp: usize,
    pub dp: usize,
    pub mtbf_hours: f64,
    pub repair_hours: f64,
    pub lease_ttl_s: f64,
    /// Checkpoint read bandwidth of one rank, GB/s.
    pub reload_gbps: f64,
    /// Routed-expert bytes on one rank.
    pub expert_bytes_per_rank: u64,
    /// Everything one rank holds (what a spare must load).
    pub rank_bytes: u64,
    /// Share of a rank's experts that have a copy elsewhere (under `Replicas`).
    pub replica_coverage: f64,
    pub spare_workers: usize,
    /// Ranks that may be dead at once before the survivors run out of memory.
    pub tolerated_failures: usize,
    pub requests_per_s: f64,
    pub request_seconds: f64,
    pub horizon_hours: f64,
}

impl SimConfig {
    fn validate(&self) -> Result<(), PlanError> {
        let positive = [
            ("mtbf_hours", self.mtbf_hours),
            ("repair_hours", self.repair_hours),
            ("reload_gbps", self.reload_gbps),
            ("horizon_hours", self.horizon_hours),
        ];
        for (f, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(input(f, format!("must be a positive number, got {v}")));
            }
        }
        for (f, v) in [
            ("lease_ttl_s", self.lease_ttl_s),
            ("requests_per_s", self.requests_per_s),
            ("request_seconds", self.request_seconds),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(input(f, format!("must be a non-negative number, got {v}")));
            }
        }
        if !(0.0..=1.0).contains(&self.replica_coverage) {
            return Err(input("replica_coverage", "must be in [0, 1]"));
        }
        if self.tp == 0 || self.dp == 0 || self.tp.saturating_mul(self.dp) > 1 << 20 {
            return Err(input("tp", "tp and dp must be positive and tp * dp at most 2^20"));
        }
        // Bound the event count: about ranks * horizon / mtbf failures.
        let expected = (self.tp * self.dp) as f64 * self.horizon_hours / self.mtbf_hours;
        if expected > 1e7 {
            return Err(input("horizon_hours", format!("about {expected:.0} failures to simulate; at most 1e7")));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    pub policy: Policy,
    pub seed: u64,
    pub failures: usize,
    /// Fraction of the horizon during which the cluster served at all.
    pub availability: f64,
    pub stall_hours: f64,
    pub degraded_hours: f64,
    pub down_hours: f64,
    pub requests_delayed: f64,
    /// Fraction of the horizon's serving capacity lost.
    pub throughput_lost: f64,
    pub mean_recovery_s: f64,
}

/// One failure of the trace.
#[derive(Clone, Copy, Debug)]
struct Failure {
    at: f64,
    repaired: f64,
    group: usize,
}

/// Failure times of every rank over the horizon, in hours, sorted.
fn trace(cfg: &SimConfig, seed: u64) -> Vec<Failure> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    for rank in 0..cfg.tp * cfg.dp {
        let mut t = 0.0;
        loop {
            t += rng.exp(cfg.mtbf_hours);
            if t >= cfg.horizon_hours {
                break;
            }
            let repaired = t + rng.exp(cfg.repair_hours);
            out.push(Failure { at: t, repaired, group: rank / cfg.tp });
            t = repaired;
        }
    }
    out.sort_by(|a, b| a.at.total_cmp(&b.at).then(a.group.cmp(&b.group)));
    out
}

/// An interval during which one failure affects the cluster.
#[derive(Clone, Copy)]
struct Span {
    start: f64,
    end: f64,
    kind: SpanKind,
}

#[derive(Clone, Copy, PartialEq)]
enum SpanKind {
    Stall,
    Degraded(usize),
    Dead,
}

/// Runs `policy` over the failure trace drawn from `seed`.
pub fn simulate(cfg: &SimConfig, policy: Policy, seed: u64) -> Result<SimReport, PlanError> {
    cfg.validate()?;
    let failures = trace(cfg, seed);
    let gb = |bytes: u64| bytes as f64 / 1e9;
    let reload_h = |bytes: u64| gb(bytes) / cfg.reload_gbps / 3600.0;
    let ttl_h = cfg.lease_ttl_s / 3600.0;
    let mut spares_back: Vec<f64> = Vec::new();
    let mut spans = Vec::with_capacity(failures.len() * 3);
    let mut recovery_total = 0.0;
    for f in &failures {
        let (load, covered) = match policy {
            Policy::Replicas => {
                (reload_h(((1.0 - cfg.replica_coverage) * cfg.expert_bytes_per_rank as f64) as u64), false)
            }
            Policy::Reload => (reload_h(cfg.expert_bytes_per_rank), false),
            Policy::Spares => {
                // A spare stays busy until the machine it replaced is repaired and idles.
                spares_back.retain(|&t| t > f.at);
                if spares_back.len() < cfg.spare_workers {
                    spares_back.push(f.repaired);
                    (reload_h(cfg.rank_bytes), true)
                } else {
                    (reload_h(cfg.expert_bytes_per_rank), false)
                }
            }
        };
        let recovered = (f.at + ttl_h + load).min(f.repaired);
        recovery_total += recovered - f.at;
        spans.push(Span { start: f.at, end: recovered, kind: SpanKind::Stall });
        if !covered && recovered < f.repaired {
            spans.push(Span { start: recovered, end: f.repaired, kind: SpanKind::Degraded(f.group) });
        }
        if !covered {
            spans.push(Span { start: f.at, end: f.repaired, kind: SpanKind::Dead });
        }
    }
    let sweep = sweep(cfg, &spans);
    let horizon = cfg.horizon_hours;
    let stall_starts = failures.len() as f64;
    let requests_delayed =
        stall_starts * cfg.requests_per_s * cfg.request_seconds + sweep.stall * 3600.0 * cfg.requests_per_s;
    Ok(SimReport {
        policy,
        seed,
        failures: failures.len(),
        availability: 1.0 - (sweep.stall + sweep.down) / horizon,
        stall_hours: sweep.stall,
        degraded_hours: sweep.degraded,
        down_hours: sweep.down,
        requests_delayed,
        throughput_lost: sweep.lost / horizon,
        mean_recovery_s: if failures.is_empty() { 0.0 } else { recovery_total * 3600.0 / stall_starts },
    })
}

/// Ranks of `layout` that may be dead at once while the survivors still hold every expert: the
/// dead ranks' experts move into the survivors' cache memory, each survivor keeping room for one
/// sequence of `kv_bytes_per_sequence`. At most all ranks but one.
pub fn tolerated_failures(layout: &LayoutReport, kv_bytes_per_sequence: u64) -> usize {
    let world = layout.tp.saturating_mul(layout.dp);
    let experts = layout.memory.experts as u128;
    let free = layout.memory.cache.saturating_sub(kv_bytes_per_sequence) as u128;
    let most = world.saturating_sub(1);
    if experts + free == 0 {
        return 0;
    }
    usize::try_from(world as u128 * free / (experts + free)).unwrap_or(most).min(most)
}

/// Runs every policy over the same failure trace.
pub fn compare(cfg: &SimConfig, seed: u64) -> Result<Vec<SimReport>, PlanError> {
    [Policy::Replicas, Policy::Reload, Policy::Spares].into_iter().map(|p| simulate(cfg, p, seed)).collect()
}

#[derive(Default)]
struct Sweep {
    stall: f64,
    degraded: f64,
    down: f64,
    lost: f64,
}

/// Integrates the spans over the horizon: at each instant the cluster is down (too many dead
/// ranks), stalled, degraded (some groups missing) or whole.
fn sweep(cfg: &SimConfig, spans: &[Span]) -> Sweep {
    let horizon = cfg.horizon_hours;
    let mut edges: Vec<(f64, bool, usize)> = Vec::with_capacity(spans.len() * 2);
    for (i, s) in spans.iter().enumerate() {
        if s.start < horizon && s.end > s.start {
            edges.push((s.start, true, i));
            edges.push((s.end.min(horizon), false, i));
        }
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut stalls, mut dead) = (0usize, 0usize);
    let mut degraded = vec![0usize; cfg.dp];
    let mut missing_groups = 0usize;
    let mut out = Sweep::default();
    let mut last = 0.0;
    for (t, open, i) in edges {
        let dt = t - last;
        if dt > 0.0 {
            if dead > cfg.tolerated_failures {
                out.down += dt;
                out.lost += dt;
            } else if stalls > 0 {
                out.stall += dt;
                out.lost += dt;
            } else if missing_groups > 0 {
                out.degraded += dt;
                out.lost += dt * missing_groups as f64 / cfg.dp as f64;
            }
            last = t;
        }
        match spans[i].kind {
            SpanKind::Stall if open => stalls += 1,
            SpanKind::Stall => stalls -= 1,
            SpanKind::Dead if open => dead += 1,
            SpanKind::Dead => dead -= 1,
            SpanKind::Degraded(g) => {
                let before = degraded[g] > 0;
                if open {
                    degraded[g] += 1;
                } else {
                    degraded[g] -= 1;
                }
                let after = degraded[g] > 0;
                if after && !before {
                    missing_groups += 1;
                } else if before && !after {
                    missing_groups -= 1;
                }
            }
        }
    }
    out
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<9} failures {:>5}  availability {:.6}  stalled {:>8.3} h  degraded {:>8.2} h  down {:>7.2} h  \
             delayed {:>10.0} requests  capacity lost {:.4}%  recovery {:.1} s",
            self.policy.to_string(),
            self.failures,
            self.availability,
            self.stall_hours,
            self.degraded_hours,
            self.down_hours,
            self.requests_delayed,
            100.0 * self.throughput_lost,
            self.mean_recovery_s
        )
    }
}
