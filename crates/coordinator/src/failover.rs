//! Keeping a cluster serving when workers die and come back.
//!
//! After a failed step the coordinator asks every rank for its health (with a short timeout: a
//! killed worker refuses the connection at once, a hung or cut-off one times out). Ranks that do
//! not answer, or that lost their lease, are dead. The planner's [`Plan::repair_serving`] gives
//! the next epoch: experts with a surviving copy switch to it, the others go to survivors with
//! room and are read from the checkpoint (only those tensors, see the worker's
//! `load_reusing`), and an attention group that lost a member leaves whole. The plan is
//! published by compare-and-swap (a coordinator that lost the lead loses the race), every
//! survivor loads its part, and the caller re-prefills its sequences from their token history
//! (the interrupted step is simply run again). Where the survivors cannot hold the model the
//! error is [`ClusterError::Degraded`] with the planner's reason, never a hang.
//!
//! A worker that registers while the cluster runs (a new one, or one that lost its lease and
//! came back) takes a free role at the next step boundary: [`Cluster::grow`] re-plans over all
//! ranks with a new epoch.

use crate::cluster::{connect, Cluster, ClusterError};
use emesh_common::metrics as m;
use emesh_common::{Epoch, Rank};
use emesh_placement::{Layout, Plan, PlanRequest, WeightForm, WorkerSpec};
use emesh_store::{PlacementStore, StoredPlacement};
use emesh_wire::pb;
use emesh_wire::pb::worker_client::WorkerClient;
use futures::future::join_all;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long a health probe may take before the worker counts as dead.
pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a registered worker that did not answer is left alone before it is probed again.
const UNANSWERED_BACKOFF: Duration = Duration::from_secs(5);

/// What a placement change did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovery {
    pub epoch: Epoch,
    /// Workers that left the placement (dead, or free because their group broke).
    pub left: Vec<String>,
    /// Workers that joined it.
    pub joined: Vec<String>,
    /// Experts whose surviving copy took over.
    pub promoted: usize,
    pub reloaded_experts: u64,
    pub reloaded_bytes: u64,
    /// From the start of the recovery to every rank ready.
    pub seconds: f64,
    pub world: usize,
}

/// A worker's answer to a probe.
#[derive(Clone, Debug)]
pub struct Probe {
    pub alive: bool,
    pub why: String,
}

async fn probe_one(mut c: emesh_wire::pb::worker_client::WorkerClient<tonic::transport::Channel>) -> Probe {
    match tokio::time::timeout(HEALTH_TIMEOUT, c.health(pb::HealthRequest {})).await {
        Err(_) => Probe { alive: false, why: format!("no health answer within {HEALTH_TIMEOUT:?}") },
        Ok(Err(s)) => Probe { alive: false, why: s.message().to_string() },
        Ok(Ok(h)) => {
            // A worker that answers can take a role again, even one that lost its lease (it has
            // registered anew) or is fenced for now (the next load unfences it).
            let h = h.into_inner();
            Probe { alive: h.state != "draining", why: h.state }
        }
    }
}

impl Cluster {
    /// Asks every rank for its health, concurrently.
    pub async fn probe(&self) -> Vec<Probe> {
        join_all(self.clients.iter().cloned().map(probe_one)).await
    }

    pub fn world(&self) -> usize {
        self.plan.ranks.len()
    }

    /// Worker id of each rank.
    pub fn worker_ids(&self) -> &[String] {
        &self.ids
    }

    pub fn epoch(&self) -> Epoch {
        self.plan.epoch
    }

    /// Repairs the placement after a failed step (see the module docs). Errors other than
    /// [`ClusterError::Degraded`] are worth retrying: a worker may have failed mid-load.
    pub async fn recover(&mut self, store: &dyn PlacementStore) -> Result<Recovery, ClusterError> {
        let t0 = Instant::now();
        let probes = self.probe().await;
        let dead: Vec<Rank> =
            probes.iter().enumerate().filter(|(_, p)| !p.alive).map(|(r, _)| Rank(r as u32)).collect();
        for (r, p) in probes.iter().enumerate().filter(|(_, p)| !p.alive) {
            tracing::warn!("rank {r} ({}) at {} is dead: {}", self.ids[r], self.addrs[r], p.why);
        }
        let repaired = if dead.len() == self.world() {
            Err("no worker of the placement answers".to_string())
        } else {
            self.plan.repair_serving(&dead).map_err(|e| format!("the survivors cannot serve: {e}"))
        };
        let (repair, old_ranks) = match repaired {
            Ok(r) => r,
            // The survivors alone cannot serve: registered workers without a role may help.
            Err(why) => {
                return match self.replan(store, &dead, t0).await? {
                    Some(rec) => {
                        metrics::counter!(m::FAILOVERS_TOTAL).increment(1);
                        metrics::histogram!(m::RECOVERY_SECONDS).record(rec.seconds);
                        Ok(rec)
                    }
                    None => Err(ClusterError::Degraded(why)),
                }
            }
        };
        let mut plan = repair.plan;
        let left: Vec<String> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(r, _)| !old_ranks.contains(&Rank(*r as u32)))
            .map(|(_, id)| id.clone())
            .collect();
        let addrs: Vec<String> = old_ranks.iter().map(|r| self.addrs[r.0 as usize].clone()).collect();
        let clients = old_ranks.iter().map(|r| self.clients[r.0 as usize].clone()).collect();
        let ids = old_ranks.iter().map(|r| self.ids[r.0 as usize].clone()).collect();
        self.publish(store, &mut plan).await?;
        self.plan = plan;
        self.addrs = addrs;
        self.clients = clients;
        self.ids = ids;
        let rec = self.load_new_epoch(store, t0, left, vec![], repair.promoted).await?;
        metrics::counter!(m::FAILOVERS_TOTAL).increment(1);
        metrics::histogram!(m::RECOVERY_SECONDS).record(rec.seconds);
        Ok(rec)
    }

    /// [`Cluster::recover`] again and again (a worker may fail mid-load, the store may be away
    /// for a moment) until it succeeds, degrades, or `within` has passed.
    pub async fn recover_within(
        &mut self,
        store: &dyn PlacementStore,
        within: Duration,
    ) -> Result<Recovery, ClusterError> {
        let until = Instant::now() + within;
        loop {
            match self.recover(store).await {
                Ok(r) => return Ok(r),
                Err(e @ ClusterError::Degraded(_)) => return Err(e),
                Err(e) if Instant::now() >= until => {
                    return Err(ClusterError::Degraded(format!("no placement could be restored: {e}")))
                }
                Err(e) => {
                    tracing::warn!("recovery attempt failed: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Takes registered workers that hold no role into the placement (see the module docs).
    /// `Ok(None)` when there is nobody to take, or not enough for a whole attention group.
    pub async fn grow(&mut self, store: &dyn PlacementStore) -> Result<Option<Recovery>, ClusterError> {
        self.replan(store, &[], Instant::now()).await
    }

    /// Registered, answering workers that are not in the placement.
    async fn fresh_workers(
        &mut self,
        store: &dyn PlacementStore,
    ) -> Result<Vec<(emesh_store::WorkerRecord, WorkerClient<Channel>)>, ClusterError> {
        let mut fresh = Vec::new();
        let now = Instant::now();
        self.unanswered.retain(|_, retry| *retry > now);
        for w in store.workers().await? {
            if self.ids.contains(&w.id) || self.addrs.contains(&w.addr) || self.unanswered.contains_key(&w.addr) {
                continue;
            }
            let probed = async {
                let client = tokio::time::timeout(HEALTH_TIMEOUT, connect(&w.addr, HEALTH_TIMEOUT)).await.ok()?.ok()?;
                probe_one(client.clone()).await.alive.then_some(client)
            };
            match probed.await {
                Some(client) => fresh.push((w, client)),
                None => {
                    self.unanswered.insert(w.addr.clone(), now + UNANSWERED_BACKOFF);
                }
            }
        }
        Ok(fresh)
    }

    /// A fresh plan over the ranks not `dead` plus registered workers without a role, as many
    /// whole attention groups as they make. `Ok(None)` when no worker joins (or none is left).
    async fn replan(
        &mut self,
        store: &dyn PlacementStore,
        dead: &[Rank],
        t0: Instant,
    ) -> Result<Option<Recovery>, ClusterError> {
        let mut fresh = self.fresh_workers(store).await?;
        if fresh.is_empty() {
            return Ok(None);
        }
        let tp = self.plan.tp;
        let alive: Vec<usize> = (0..self.world()).filter(|r| !dead.contains(&Rank(*r as u32))).collect();
        let n = (alive.len() + fresh.len()) / tp * tp;
        if n == 0 || n <= alive.len() && dead.is_empty() {
            return Ok(None);
        }
        fresh.truncate(n.saturating_sub(alive.len()));
        let kept: Vec<usize> = alive.into_iter().take(n).collect();
        let budget = |b: u64| if b > 0 { b } else { self.opts.default_budget };
        let mut workers: Vec<WorkerSpec> = kept
            .iter()
            .map(|&r| WorkerSpec { id: self.ids[r].clone(), budget_bytes: self.plan.ranks[r].budget_bytes })
            .collect();
        workers
            .extend(fresh.iter().map(|(w, _)| WorkerSpec { id: w.id.clone(), budget_bytes: budget(w.memory_budget) }));
        let mut req = PlanRequest::new(
            &self.config,
            WeightForm::from_config(&self.config, WeightForm::DenseF32),
            Layout::new(tp, n / tp),
            workers,
        );
        req.redundant_slots_per_rank = self.opts.redundant_slots_per_rank;
        req.epoch = self.plan.epoch.next();
        let mut plan = Plan::new(&req).map_err(|e| ClusterError::Degraded(format!("even with new workers: {e}")))?;
        self.publish(store, &mut plan).await?;
        let left: Vec<String> = (0..self.world()).filter(|r| !kept.contains(r)).map(|r| self.ids[r].clone()).collect();
        let joined: Vec<String> = fresh.iter().map(|(w, _)| w.id.clone()).collect();
        let mut addrs: Vec<String> = kept.iter().map(|&r| self.addrs[r].clone()).collect();
        let mut clients: Vec<_> = kept.iter().map(|&r| self.clients[r].clone()).collect();
        let mut ids: Vec<String> = kept.iter().map(|&r| self.ids[r].clone()).collect();
        for (w, c) in fresh {
            addrs.push(w.addr);
            clients.push(c);
            ids.push(w.id);
        }
        self.addrs = addrs;
        self.clients = clients;
        self.ids = ids;
        self.plan = plan;
        Ok(Some(self.load_new_epoch(store, t0, left, joined, 0).await?))
    }

    /// Moves `plan` past every epoch in the store and publishes it by compare-and-swap.
    pub(crate) async fn publish(&self, store: &dyn PlacementStore, plan: &mut Plan) -> Result<(), ClusterError> {
        let stored = store.placement().await?.map(|p| p.epoch);
        plan.epoch = Epoch(plan.epoch.0.max(stored.map_or(0, |e| e.0) + 1).max(self.plan.epoch.0 + 1));
        let plan_json = serde_json::to_string(&*plan).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        if !store.put_placement(stored, StoredPlacement { epoch: plan.epoch, plan_json }).await? {
            return Err(ClusterError::LostPlacement(format!(
                "another coordinator changed the placement while epoch {} was being published",
                plan.epoch.0
            )));
        }
        metrics::gauge!(m::PLACEMENT_EPOCH).set(plan.epoch.0 as f64);
        Ok(())
    }

    pub(crate) async fn load_new_epoch(
        &mut self,
        store: &dyn PlacementStore,
        t0: Instant,
        left: Vec<String>,
        joined: Vec<String>,
        promoted: usize,
    ) -> Result<Recovery, ClusterError> {
        let plan_json = serde_json::to_string(&self.plan).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let loads = self.load_all(&plan_json).await?;
        self.weight_bytes = loads.iter().map(|l| l.weight_bytes).collect();
        self.mark_ready(store).await?;
        let rec = Recovery {
            epoch: self.plan.epoch,
            left,
            joined,
            promoted,
            reloaded_experts: loads.iter().map(|l| l.reloaded_experts).sum(),
            reloaded_bytes: loads.iter().filter(|l| l.reused_shard).map(|l| l.reloaded_bytes).sum::<u64>()
                + loads.iter().filter(|l| !l.reused_shard).map(|l| l.weight_bytes).sum::<u64>(),
            seconds: t0.elapsed().as_secs_f64(),
            world: self.world(),
        };
        metrics::gauge!(m::LIVE_WORKERS).set(rec.world as f64);
        metrics::counter!(m::EXPERTS_RELOADED_TOTAL).increment(rec.reloaded_experts);
        metrics::counter!(m::RELOADED_BYTES_TOTAL).increment(rec.reloaded_bytes);
        tracing::info!(
            "epoch {} ready in {:.2}s on {} ranks (left: {:?}, joined: {:?}; {} experts promoted, {} reloaded, {} bytes read)",
            rec.epoch.0,
            rec.seconds,
            rec.world,
            rec.left,
            rec.joined,
            rec.promoted,
            rec.reloaded_experts,
            rec.reloaded_bytes
        );
        Ok(rec)
    }
}

impl ClusterError {
    /// Whether the cluster cannot serve until something changes (survivors too small).
    pub fn is_degraded(&self) -> bool {
        matches!(self, ClusterError::Degraded(_))
    }
}
