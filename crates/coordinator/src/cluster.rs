//! A cluster of workers reached over gRPC.

use emesh_common::{Epoch, ModelConfig};
use emesh_placement::{Layout, Plan, PlanRequest, WeightForm, WorkerSpec};
use emesh_store::{PlacementStore, StoredPlacement, WorkerRecord};
use emesh_wire::pb::worker_client::WorkerClient;
use emesh_wire::pb::{self, LogitsMode};
use futures::future::join_all;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("worker {addr}: {reason}")]
    Worker { addr: String, reason: String },
    #[error("placement")]
    Plan(#[from] emesh_placement::PlanError),
    #[error("placement store")]
    Store(#[from] emesh_store::StoreError),
    #[error("{0}")]
    Invalid(String),
    /// The survivors cannot serve the model (the reason says why); serving stops until a worker
    /// joins.
    #[error("degraded: {0}")]
    Degraded(String),
    /// Another coordinator published a newer placement: this one no longer leads.
    #[error("placement lost: {0}")]
    LostPlacement(String),
}

/// One sequence's part of a step, as the coordinator sends it.
#[derive(Clone, Debug)]
pub struct SeqStep {
    pub id: u64,
    pub tokens: Vec<u32>,
    pub pos: u64,
    /// 0 none, 1 last position, 2 all positions.
    pub logits: LogitsMode,
    /// Only the greedy token of the last position comes back (sampling on the worker).
    pub greedy: bool,
    /// With `greedy`: draw the token with these parameters instead of the argmax.
    pub sampling: Option<pb::Sampling>,
}

/// One sequence's result of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqOutput {
    pub id: u64,
    /// `[rows, vocab]`, empty for greedy steps.
    pub logits: Vec<f32>,
    pub token: Option<u32>,
    /// Log-probabilities of the drawn token, when its `sampling` asked for them.
    pub logprobs: Option<pb::TokenLogprobs>,
}

pub type GroupBatch = Vec<SeqStep>;

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub tp: usize,
    pub model_dir: String,
    pub numerics: String,
    pub dispatch_dtype: String,
    /// Per-worker memory budget used for planning when a worker reports none.
    pub default_budget: u64,
    pub redundant_slots_per_rank: usize,
    pub connect_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            tp: 1,
            model_dir: String::new(),
            numerics: "exact".into(),
            dispatch_dtype: "f32".into(),
            default_budget: 1 << 50,
            redundant_slots_per_rank: 0,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Cluster {
    pub(crate) addrs: Vec<String>,
    pub(crate) clients: Vec<WorkerClient<Channel>>,
    /// Worker id of each rank.
    pub(crate) ids: Vec<String>,
    pub plan: Plan,
    pub config: ModelConfig,
    pub(crate) opts: ClusterOptions,
    pub(crate) step: u64,
    /// Registered workers that did not answer a probe, by address, and when to try again (a
    /// hung worker's record outlives it by up to a lease TTL; probing it every time would stall
    /// every step boundary for the probe timeout).
    pub(crate) unanswered: std::collections::HashMap<String, std::time::Instant>,
    /// Weight bytes each rank loaded.
    pub weight_bytes: Vec<u64>,
}

pub(crate) fn werr(addr: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Worker { addr: addr.to_string(), reason: e.to_string() }
}

pub(crate) async fn connect(addr: &str, timeout: Duration) -> Result<WorkerClient<Channel>, ClusterError> {
    let url = if addr.starts_with("http") { addr.to_string() } else { format!("http://{addr}") };
    let until = std::time::Instant::now() + timeout;
    loop {
        let attempt = async { emesh_wire::endpoint(&url)?.connect().await };
        match attempt.await {
            Ok(ch) => {
                return Ok(WorkerClient::new(ch).max_decoding_message_size(1 << 30).max_encoding_message_size(1 << 30))
            }
            Err(e) if std::time::Instant::now() >= until => return Err(werr(addr, e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Cluster {
    /// [`Cluster::start_with`] on a fresh in-memory store.
    pub async fn start(addrs: &[String], config: ModelConfig, opts: &ClusterOptions) -> Result<Cluster, ClusterError> {
        Self::start_with(addrs, config, opts, &emesh_store::MemoryStore::new()).await
    }

    /// Connects to the workers (rank = position in `addrs`), plans the model over them, publishes
    /// the placement in `store` (compare-and-swap on its epoch), has every worker load its shard
    /// and connect to its peers, and records each one ready for the epoch.
    pub async fn start_with(
        addrs: &[String],
        config: ModelConfig,
        opts: &ClusterOptions,
        store: &dyn PlacementStore,
    ) -> Result<Cluster, ClusterError> {
        if addrs.is_empty() {
            return Err(ClusterError::Invalid("no workers".into()));
        }
        if opts.tp == 0 || !addrs.len().is_multiple_of(opts.tp) {
            return Err(ClusterError::Invalid(format!(
                "{} workers do not split into groups of tp={}",
                addrs.len(),
                opts.tp
            )));
        }
        let mut clients = Vec::with_capacity(addrs.len());
        for a in addrs {
            clients.push(connect(a, opts.connect_timeout).await?);
        }
        let healths =
            join_all(clients.iter().cloned().map(|mut c| async move { c.health(pb::HealthRequest {}).await })).await;
        let mut workers = Vec::new();
        let registered = store.workers().await?;
        let mut epoch = 0;
        for (i, (h, a)) in healths.into_iter().zip(addrs).enumerate() {
            let h = h.map_err(|s| werr(a, s.message()))?.into_inner();
            epoch = epoch.max(h.epoch);
            let budget = if h.memory_budget > 0 { h.memory_budget } else { opts.default_budget };
            let id = if h.worker_id.is_empty() || workers.iter().any(|w: &WorkerSpec| w.id == h.worker_id) {
                format!("w{i}")
            } else {
                h.worker_id
            };
            // A worker that registered itself (with its lease) keeps its record.
            if !registered.iter().any(|w| w.id == id) {
                store.register_worker(WorkerRecord { id: id.clone(), addr: a.clone(), memory_budget: budget }).await?;
            }
            workers.push(WorkerSpec { id, budget_bytes: budget });
        }
        let stored = store.placement().await?;
        let expected = stored.as_ref().map(|p| p.epoch);
        epoch = epoch.max(expected.map_or(0, |e| e.0));
        let dp = addrs.len() / opts.tp;
        let mut req = PlanRequest::new(
            &config,
            WeightForm::from_config(&config, WeightForm::DenseF32),
            Layout::new(opts.tp, dp),
            workers,
        );
        req.redundant_slots_per_rank = opts.redundant_slots_per_rank;
        // A new placement is a new epoch, past anything a worker has seen.
        req.epoch = Epoch(epoch + 1);
        let plan = Plan::new(&req)?;
        let plan_json = serde_json::to_string(&plan).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let next = StoredPlacement { epoch: plan.epoch, plan_json: plan_json.clone() };
        if !store.put_placement(expected, next).await? {
            return Err(ClusterError::Invalid(format!(
                "the placement changed while epoch {} was being planned; retry",
                plan.epoch.0
            )));
        }
        let ids: Vec<String> = plan.ranks.iter().map(|r| r.worker.clone()).collect();
        let mut cluster = Cluster {
            addrs: addrs.to_vec(),
            clients,
            ids,
            plan,
            config,
            opts: opts.clone(),
            step: 0,
            unanswered: Default::default(),
            weight_bytes: vec![],
        };
        let loads = cluster.load_all(&plan_json).await?;
        cluster.weight_bytes = loads.iter().map(|l| l.weight_bytes).collect();
        cluster.mark_ready(store).await?;
        Ok(cluster)
    }

    /// Has every rank load its part of `self.plan` (serialized as `plan_json`) and connect to
    /// its peers.
    pub(crate) async fn load_all(&self, plan_json: &str) -> Result<Vec<pb::LoadResponse>, ClusterError> {
        let opts = &self.opts;
        let loads = join_all(self.clients.iter().cloned().enumerate().map(|(r, mut c)| {
            let req = pb::LoadRequest {
                epoch: self.plan.epoch.0,
                rank: r as u32,
                plan_json: plan_json.to_string(),
                peer_addrs: self.addrs.clone(),
                model_dir: opts.model_dir.clone(),
                numerics: opts.numerics.clone(),
                dispatch_dtype: opts.dispatch_dtype.clone(),
            };
            async move { c.load(req).await }
        }))
        .await;
        loads
            .into_iter()
            .zip(&self.addrs)
            .map(|(l, a)| l.map(|r| r.into_inner()).map_err(|s| werr(a, s.message())))
            .collect()
    }

    /// Records every rank ready for the current epoch and checks the store agrees.
    pub(crate) async fn mark_ready(&self, store: &dyn PlacementStore) -> Result<(), ClusterError> {
        for rp in &self.plan.ranks {
            store.set_ready(self.plan.epoch, &rp.worker).await?;
        }
        let ready = store.ready(self.plan.epoch).await?;
        if ready.len() != self.plan.ranks.len() {
            return Err(ClusterError::Invalid(format!(
                "{} of {} ranks ready for epoch {}",
                ready.len(),
                self.plan.ranks.len(),
                self.plan.epoch.0
            )));
        }
        Ok(())
    }

    pub fn dp(&self) -> usize {
        self.plan.dp
    }

    pub fn tp(&self) -> usize {
        self.plan.tp
    }

    /// Runs one step on every rank: `groups[g]` is data-parallel group `g`'s batch. Returns each
    /// sequence's logits (`[rows, vocab]`) as sent by its group's first rank.
    pub async fn step(&mut self, groups: Vec<GroupBatch>, free: Vec<u64>) -> Result<Vec<SeqOutput>, ClusterError> {
        if groups.len() != self.dp() {
            return Err(ClusterError::Invalid(format!("{} group batches for {} groups", groups.len(), self.dp())));
        }
        let req = pb::StepRequest {
            epoch: self.plan.epoch.0,
            step: self.step,
            groups: groups
                .into_iter()
                .map(|g| pb::GroupBatch {
                    seqs: g
                        .into_iter()
                        .map(|s| pb::SeqWork {
                            id: s.id,
                            tokens: s.tokens,
                            pos: s.pos,
                            logits: s.logits as i32,
                            greedy: s.greedy,
                            sampling: s.sampling,
                        })
                        .collect(),
                })
                .collect(),
            free,
        };
        self.step += 1;
        // The first rank that fails ends the step: the others may be waiting on it in an exchange.
        let outs = futures::future::try_join_all(self.clients.iter().cloned().zip(&self.addrs).map(|(mut c, a)| {
            let req = req.clone();
            async move { c.step(req).await.map_err(|s| werr(a, s.message())) }
        }))
        .await?;
        let mut logits = Vec::new();
        for (o, a) in outs.into_iter().zip(&self.addrs) {
            let o = o.into_inner();
            if o.epoch != self.plan.epoch.0 {
                return Err(werr(a, format!("answered for epoch {}, the step was for {}", o.epoch, self.plan.epoch.0)));
            }
            for r in o.results {
                logits.push(SeqOutput {
                    id: r.id,
                    logits: emesh_wire::f32s(&r.logits).map_err(|e| werr(a, e))?,
                    token: r.token,
                    logprobs: r.logprobs,
                });
            }
        }
        logits.sort_by_key(|o| o.id);
        Ok(logits)
    }
}
