//! Steps the batcher on the cluster and keeps the cluster whole while doing so.
//!
//! A step fails when a rank dies, hangs, or is cut off; with a placement store that holds worker
//! leases, a rank whose lease vanishes also aborts the step in flight at once (a hung worker
//! would otherwise hold every peer until the exchange timeout). The driver then repairs the
//! placement ([`Cluster::recover_within`]), sends every running sequence back to re-prefill from
//! its token history, and runs the step again: with greedy sampling (or seeded sampling) the
//! tokens are the same as if nothing had happened. Between steps it takes newly registered
//! workers into the placement ([`Cluster::grow`]).

use crate::balance::LoadSample;
use crate::batcher::{Batcher, StepCluster, StepOutcome};
use crate::cluster::{Cluster, ClusterError};
use crate::failover::Recovery;
use emesh_common::metrics as m;
use emesh_store::PlacementStore;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a [`Driver`] reacts to failures.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// How long one recovery may keep retrying before the cluster is called degraded.
    pub recovery_budget: Duration,
    /// How often to look for workers to take in, and (during a step) for lost leases.
    pub watch_every: Duration,
    /// A step that takes longer than this is abandoned and the cluster checked.
    pub step_timeout: Duration,
    /// Recoveries in a row for one step before giving up on it.
    pub max_retries: usize,
    /// Re-place the redundant expert copies by the load observed since the last time, this
    /// often (`None`: never).
    pub rebalance_every: Option<Duration>,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            recovery_budget: Duration::from_secs(60),
            watch_every: Duration::from_millis(250),
            step_timeout: Duration::from_secs(300),
            max_retries: 5,
            rebalance_every: None,
        }
    }
}

pub struct Driver {
    pub cluster: Cluster,
    store: Arc<dyn PlacementStore>,
    opts: DriverOptions,
    last_grow: Instant,
    /// Why the cluster cannot serve now, if it cannot.
    pub degraded: Option<String>,
    /// Every placement change so far, with the time from the failure to the next completed step.
    pub history: Vec<(Recovery, f64)>,
    pending: Option<(Recovery, Instant)>,
    /// The last load sample (for metrics), and the one the next rebalance counts from.
    sampled: Option<LoadSample>,
    balanced: Option<(LoadSample, Instant)>,
    /// Every rebalance so far.
    pub rebalances: Vec<Recovery>,
}

impl Driver {
    pub fn new(cluster: Cluster, store: Arc<dyn PlacementStore>, opts: DriverOptions) -> Self {
        let d = Driver {
            cluster,
            store,
            opts,
            last_grow: Instant::now(),
            degraded: None,
            history: vec![],
            pending: None,
            sampled: None,
            balanced: None,
            rebalances: vec![],
        };
        d.export_gauges();
        d
    }

    /// Sets the placement gauges to the current state (again, e.g. once a metrics recorder is
    /// installed).
    pub fn export_gauges(&self) {
        metrics::gauge!(m::PLACEMENT_EPOCH).set(self.cluster.epoch().0 as f64);
        metrics::gauge!(m::LIVE_WORKERS).set(self.cluster.world() as f64);
        metrics::gauge!(m::DEGRADED).set(if self.degraded.is_some() { 1.0 } else { 0.0 });
    }

    pub fn store(&self) -> &Arc<dyn PlacementStore> {
        &self.store
    }

    /// Runs one batcher step, repairing the cluster as often as needed (see the module docs).
    /// Errors only when the cluster is degraded or the step keeps failing.
    pub async fn step(&mut self, b: &mut Batcher) -> Result<Vec<crate::Finished>, ClusterError> {
        Ok(self.step_events(b).await?.finished)
    }

    /// [`Driver::step`] with everything the step produced.
    pub async fn step_events(&mut self, b: &mut Batcher) -> Result<StepOutcome, ClusterError> {
        self.tick(b).await;
        if let Some(reason) = &self.degraded {
            return Err(ClusterError::Degraded(reason.clone()));
        }
        let mut last = None;
        for _ in 0..=self.opts.max_retries {
            let ids: Vec<String> = self.cluster.worker_ids().to_vec();
            let outcome = tokio::select! {
                r = tokio::time::timeout(self.opts.step_timeout, b.step_events(&mut self.cluster)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(ClusterError::Invalid(format!("the step took longer than {:?}", self.opts.step_timeout))),
                },
                lost = lease_lost(&*self.store, &ids, self.opts.watch_every) => Err(ClusterError::Invalid(lost)),
            };
            match outcome {
                Ok(done) => {
                    if let Some((rec, t)) = self.pending.take() {
                        let secs = t.elapsed().as_secs_f64();
                        let unix_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis());
                        tracing::info!(
                            "first step after epoch {} completed {secs:.2}s after the failure (at unix_ms={unix_ms})",
                            rec.epoch.0
                        );
                        self.history.push((rec, secs));
                    }
                    return Ok(done);
                }
                Err(e) => {
                    let failed_at = Instant::now();
                    tracing::warn!("step failed at epoch {}: {e}; repairing", self.cluster.epoch().0);
                    match self.cluster.recover_within(&*self.store, self.opts.recovery_budget).await {
                        Ok(rec) => {
                            b.reprefill_all();
                            // Time counts from the first failure of this step.
                            let start = self.pending.take().map_or(failed_at, |(_, t)| t);
                            self.pending = Some((rec, start));
                        }
                        Err(e) => {
                            if let ClusterError::Degraded(reason) = &e {
                                tracing::error!("cluster degraded: {reason}");
                                metrics::gauge!(m::DEGRADED).set(1.0);
                                self.degraded = Some(reason.clone());
                            }
                            return Err(e);
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClusterError::Invalid("the step kept failing".into())))
    }

    /// Called while there is nothing to step: takes in returning workers; while degraded, tries
    /// the repair again (a worker may have come back or joined).
    pub async fn tick(&mut self, b: &mut Batcher) {
        if self.degraded.is_some() {
            if self.last_grow.elapsed() < self.opts.watch_every.max(Duration::from_secs(1)) {
                return;
            }
            self.last_grow = Instant::now();
            match self.cluster.recover(&*self.store).await {
                Ok(rec) => {
                    b.reprefill_all();
                    self.degraded = None;
                    metrics::gauge!(m::DEGRADED).set(0.0);
                    tracing::info!("serving again on {} ranks (epoch {})", rec.world, rec.epoch.0);
                    self.pending = Some((rec, Instant::now()));
                }
                Err(ClusterError::Degraded(reason)) => self.degraded = Some(reason),
                Err(e) => tracing::warn!("still degraded: {e}"),
            }
            return;
        }
        self.maybe_grow(b).await;
    }

    async fn maybe_grow(&mut self, b: &mut Batcher) {
        if self.last_grow.elapsed() < self.opts.watch_every.max(Duration::from_secs(1)) {
            return;
        }
        self.last_grow = Instant::now();
        match self.cluster.grow(&*self.store).await {
            Ok(Some(rec)) => {
                b.reprefill_all();
                if self.degraded.take().is_some() {
                    metrics::gauge!(m::DEGRADED).set(0.0);
                    tracing::info!("serving again on {} ranks", rec.world);
                }
                self.pending = Some((rec, Instant::now()));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("taking in new workers: {e}"),
        }
        if self.degraded.is_none() {
            self.observe(b).await;
        }
    }

    /// Samples the expert load for the metrics, and rebalances when it is time.
    async fn observe(&mut self, b: &mut Batcher) {
        let Some(now) = self.cluster.sample_load().await else { return };
        let delta = self.sampled.as_ref().map_or_else(|| now.clone(), |s| now.since(s));
        now.export(&delta);
        self.sampled = Some(now.clone());
        let Some(every) = self.opts.rebalance_every else { return };
        let Some((base, at)) = &self.balanced else {
            self.balanced = Some((now, Instant::now()));
            return;
        };
        if at.elapsed() < every {
            return;
        }
        let load = now.since(base).per_expert();
        if load.iter().flatten().sum::<f64>() == 0.0 {
            return;
        }
        match self.cluster.rebalance(&*self.store, load).await {
            Ok(Some(rec)) => {
                b.reprefill_all();
                tracing::info!("rebalanced by observed load: epoch {}", rec.epoch.0);
                self.rebalances.push(rec);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("rebalancing: {e}"),
        }
        self.balanced = Some((now, Instant::now()));
    }
}

/// Resolves (with the reason) once a worker of `ids` has no record in the store; never while the
/// store cannot be read or keeps no records for them (then step errors tell).
async fn lease_lost(store: &dyn PlacementStore, ids: &[String], every: Duration) -> String {
    loop {
        tokio::time::sleep(every).await;
        let Ok(ws) = store.workers().await else { continue };
        let missing: Vec<&String> = ids.iter().filter(|id| !ws.iter().any(|w| &w.id == *id)).collect();
        // All gone at once means the records were never there (or were wiped): steps will tell.
        if !missing.is_empty() && missing.len() < ids.len() {
            return format!("the lease of {missing:?} is gone");
        }
    }
}

/// What the engine loop steps: a bare cluster (errors end the jobs in flight) or a [`Driver`]
/// (errors are repaired first).
pub trait Stepper {
    fn step_events(&mut self, b: &mut Batcher) -> impl Future<Output = Result<StepOutcome, ClusterError>> + Send;
    /// Work between steps while idle.
    fn tick(&mut self, _b: &mut Batcher) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Why the cluster cannot serve now, if it cannot.
    fn degraded(&self) -> Option<String> {
        None
    }
    fn dp(&self) -> usize;
}

impl<C: StepCluster + Send> Stepper for C {
    fn step_events(&mut self, b: &mut Batcher) -> impl Future<Output = Result<StepOutcome, ClusterError>> + Send {
        b.step_events(self)
    }
    fn dp(&self) -> usize {
        StepCluster::dp(self)
    }
}

impl Stepper for Driver {
    fn step_events(&mut self, b: &mut Batcher) -> impl Future<Output = Result<StepOutcome, ClusterError>> + Send {
        Driver::step_events(self, b)
    }
    fn tick(&mut self, b: &mut Batcher) -> impl Future<Output = ()> + Send {
        Driver::tick(self, b)
    }
    fn degraded(&self) -> Option<String> {
        self.degraded.clone()
    }
    fn dp(&self) -> usize {
        self.cluster.dp()
    }
}
