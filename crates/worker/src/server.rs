//! The worker as a gRPC server: `Worker` (load, step, health, drain) and `Exchange` (peers).

use crate::core::{SeqWork, ShardSource, StepInput, WorkerCore};
use crate::lease::{Fence, Registration};
use emesh_comm::{PayloadDtype, Transport};
use emesh_common::{Epoch, Rank};
use emesh_model::{Logits, Numerics};
use emesh_placement::Plan;
use emesh_wire::pb::exchange_server::ExchangeServer;
use emesh_wire::pb::worker_server::{Worker, WorkerServer};
use emesh_wire::pb::{self, LogitsMode};
use emesh_wire::{f32_bytes, ExchangeService, GrpcTransport, PeerSlot};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub worker_id: String,
    /// Refuse shards whose weights exceed this many bytes.
    pub memory_budget: Option<u64>,
    /// Model folder on this host (overrides the one the coordinator names).
    pub model_dir: Option<PathBuf>,
    /// How long a collective waits for a peer.
    pub exchange_timeout: Duration,
    pub progress: bool,
    /// Register in the placement store with a lease, and fence on losing it.
    pub registration: Option<Registration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: "worker".into(),
            memory_budget: None,
            model_dir: None,
            exchange_timeout: Duration::from_secs(60),
            progress: false,
            registration: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Waiting,
    Loading,
    Ready,
    Draining,
    Failed,
}

impl Phase {
    fn refuses_steps(self) -> bool {
        self != Phase::Ready
    }
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Loading => "loading",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Failed => "failed",
        }
    }
}

pub(crate) struct Inner {
    pub(crate) fence: Mutex<Fence>,
    /// Set by the `worker::cut_off` fault point: until then the worker behaves as if its
    /// network were gone (no answers, no lease renewals).
    cut_until: Mutex<Option<Instant>>,
    stats: Arc<Mutex<crate::cluster_comm::ExchangeStats>>,
    cfg: WorkerConfig,
    slot: PeerSlot,
    core: Arc<Mutex<Option<WorkerCore>>>,
    phase: Mutex<Phase>,
    rank: Mutex<Option<Rank>>,
    epoch: Mutex<Epoch>,
}

#[derive(Clone)]
pub struct WorkerService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WorkerService {
    pub fn new(cfg: WorkerConfig) -> Self {
        WorkerService {
            inner: Arc::new(Inner {
                fence: Mutex::new(Fence::new(cfg.registration.as_ref().map(|r| r.ttl))),
                stats: Arc::default(),
                cut_until: Mutex::new(None),
                cfg,
                slot: Arc::new(RwLock::new(None)),
                core: Arc::new(Mutex::new(None)),
                phase: Mutex::new(Phase::Waiting),
                rank: Mutex::new(None),
                epoch: Mutex::new(Epoch(0)),
            }),
        }
    }

    fn vocab(&self) -> usize {
        lock(&self.inner.core).as_ref().map_or(1, |c| c.engine.cfg.vocab_size)
    }

    fn set_phase(&self, p: Phase) {
        *lock(&self.inner.phase) = p;
    }

    /// Whether the `worker::cut_off` fault has cut this worker off right now.
    pub(crate) fn is_cut_off(&self) -> bool {
        lock(&self.inner.cut_until).is_some_and(|t| t > Instant::now())
    }

    /// While cut off, an RPC gets no answer until the cut heals, and then fails as a late one.
    async fn through_the_cut(&self) -> Result<(), Status> {
        let until = *lock(&self.inner.cut_until);
        match until {
            Some(t) if t > Instant::now() => {
                tokio::time::sleep_until(t.into()).await;
                Err(Status::unavailable("the worker was cut off the network"))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn worker_id(&self) -> &str {
        &self.inner.cfg.worker_id
    }

    pub(crate) fn memory_budget(&self) -> u64 {
        self.inner.cfg.memory_budget.unwrap_or(0)
    }

    /// Stops serving the loaded epoch: closes its exchanges so a running step fails fast. With
    /// `older_than`, only if the loaded epoch is still older than it (a load may have just
    /// finished). The weights stay, for the next load to reuse; that load also drops the caches.
    pub(crate) fn fence(&self, reason: &str, older_than: Option<Epoch>) {
        let f = lock(&self.inner.fence);
        let mut phase = lock(&self.inner.phase);
        // Only a serving worker has something to fence; a loading one is loading a newer epoch.
        if *phase != Phase::Ready || older_than.is_some_and(|e| f.loaded >= e) {
            return;
        }
        tracing::warn!("{}: fenced: {reason}", self.inner.cfg.worker_id);
        if let Some(t) = self.inner.slot.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            t.mailbox().close(reason);
        }
        *phase = Phase::Waiting;
    }
}

fn status(e: impl std::fmt::Display, code: tonic::Code) -> Status {
    Status::new(code, e.to_string())
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn load(&self, req: Request<pb::LoadRequest>) -> Result<Response<pb::LoadResponse>, Status> {
        self.through_the_cut().await?;
        let r = req.into_inner();
        let t0 = Instant::now();
        let plan: Plan =
            serde_json::from_str(&r.plan_json).map_err(|e| Status::invalid_argument(format!("plan_json: {e}")))?;
        if plan.epoch.0 != r.epoch {
            return Err(Status::invalid_argument(format!(
                "plan is for epoch {}, request for {}",
                plan.epoch.0, r.epoch
            )));
        }
        let current = *lock(&self.inner.epoch);
        if r.epoch <= current.0 {
            return Err(Status::failed_precondition(format!(
                "placement epoch {} refused: this worker is already at epoch {}",
                r.epoch, current.0
            )));
        }
        let rank = Rank(r.rank);
        let world = plan.ranks.len();
        if r.peer_addrs.len() != world || r.rank as usize >= world {
            return Err(Status::invalid_argument(format!(
                "{} peer addresses for {world} ranks, rank {}",
                r.peer_addrs.len(),
                r.rank
            )));
        }
        let numerics: Numerics = r.numerics.parse().map_err(|e: String| Status::invalid_argument(e))?;
        let dispatch: PayloadDtype = if r.dispatch_dtype.is_empty() {
            PayloadDtype::F32
        } else {
            r.dispatch_dtype.parse().map_err(|e: String| Status::invalid_argument(e))?
        };
        let model_dir = self.inner.cfg.model_dir.clone().unwrap_or_else(|| PathBuf::from(&r.model_dir));
        self.set_phase(Phase::Loading);
        let epoch = Epoch(r.epoch);
        let transport = GrpcTransport::new(rank, world, epoch, self.inner.cfg.exchange_timeout);
        let old = self.inner.slot.write().unwrap_or_else(|e| e.into_inner()).replace(transport.clone());
        if let Some(old) = old {
            old.mailbox().close(&format!("replaced by epoch {}", epoch.0));
        }
        let old = lock(&self.inner.core).take();
        *lock(&self.inner.rank) = Some(rank);
        *lock(&self.inner.epoch) = epoch;
        lock(&self.inner.fence).saw_epoch(epoch);
        let cfg = self.inner.cfg.clone();
        let t: Arc<dyn Transport> = transport.clone();
        let loading = tokio::task::spawn_blocking(move || {
            fail::fail_point!("worker::load", |_| Err(crate::WorkerError::Invalid(
                "fail point worker::load: the load failed midway".into()
            )));
            let src = ShardSource { model_dir, numerics, memory_budget: cfg.memory_budget, progress: cfg.progress };
            WorkerCore::load_reusing(old, &src, plan, rank, t)
        });
        let connect = transport.connect(&r.peer_addrs, self.inner.cfg.exchange_timeout);
        let (core, conn) = tokio::join!(loading, connect);
        let core = match core {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.set_phase(Phase::Failed);
                return Err(status(e, tonic::Code::FailedPrecondition));
            }
            Err(e) => {
                self.set_phase(Phase::Failed);
                return Err(status(e, tonic::Code::Internal));
            }
        };
        if let Err(e) = conn {
            self.set_phase(Phase::Failed);
            return Err(status(e, tonic::Code::Unavailable));
        }
        let (mut core, reload) = core;
        core.dispatch_dtype = dispatch;
        core.stats = self.inner.stats.clone();
        let bytes = core.weight_bytes() as u64;
        *lock(&self.inner.core) = Some(core);
        {
            let mut f = lock(&self.inner.fence);
            f.loaded(epoch);
            self.set_phase(Phase::Ready);
        }
        tracing::info!(
            "{rank}: epoch {} ready with {bytes} bytes of weights in {:.2}s ({})",
            epoch.0,
            t0.elapsed().as_secs_f64(),
            if reload.reused {
                format!("kept the previous shard, read {} experts, {} bytes", reload.experts, reload.bytes)
            } else {
                "read the whole shard".to_string()
            }
        );
        Ok(Response::new(pb::LoadResponse {
            epoch: r.epoch,
            rank: r.rank,
            weight_bytes: bytes,
            load_seconds: t0.elapsed().as_secs_f64(),
            reloaded_experts: reload.experts,
            reloaded_bytes: reload.bytes,
            reused_shard: reload.reused,
        }))
    }

    async fn step(&self, req: Request<pb::StepRequest>) -> Result<Response<pb::StepResponse>, Status> {
        // `worker::cut_off=N*off->1*return(MS)->off`: after N steps, no network for MS ms.
        if let Some(ms) = fail::eval("worker::cut_off", |arg| arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(3000)) {
            tracing::warn!("fail point worker::cut_off: no network for {ms} ms");
            *lock(&self.inner.cut_until) = Some(Instant::now() + Duration::from_millis(ms));
        }
        self.through_the_cut().await?;
        let r = req.into_inner();
        let phase = *lock(&self.inner.phase);
        if phase.refuses_steps() {
            return Err(Status::unavailable(format!("worker is {}", phase.name())));
        }
        lock(&self.inner.fence).admit(Epoch(r.epoch))?;
        fail::fail_point!("worker::step", |_| Err(Status::aborted("fail point worker::step: the step failed midway")));
        let greedy: std::collections::HashMap<u64, Option<pb::Sampling>> =
            r.groups.iter().flat_map(|g| g.seqs.iter().filter(|s| s.greedy).map(|s| (s.id, s.sampling))).collect();
        let input = StepInput {
            epoch: Epoch(r.epoch),
            step: r.step,
            groups: r
                .groups
                .iter()
                .map(|g| {
                    g.seqs
                        .iter()
                        .map(|s| SeqWork {
                            id: s.id,
                            tokens: s.tokens.clone(),
                            pos: s.pos as usize,
                            logits: match LogitsMode::try_from(s.logits).unwrap_or(LogitsMode::LogitsNone) {
                                LogitsMode::LogitsNone => Logits::None,
                                LogitsMode::LogitsLast => Logits::Last,
                                LogitsMode::LogitsAll => Logits::All,
                            },
                        })
                        .collect()
                })
                .collect(),
            free: r.free.clone(),
        };
        let core = self.inner.core.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut guard = lock(&core);
            let c = guard.as_mut().ok_or_else(|| Status::unavailable("no shard loaded"))?;
            let rank = c.rank;
            c.step(&input).map(|o| (rank, o)).map_err(|e| status(e, tonic::Code::Aborted))
        })
        .await
        .map_err(|e| status(e, tonic::Code::Internal))??;
        // Never answer for an epoch that became stale while the step ran.
        lock(&self.inner.fence).served(Epoch(r.epoch))?;
        Ok(Response::new(pb::StepResponse {
            epoch: r.epoch,
            step: r.step,
            rank: out.0 .0,
            results: out
                .1
                .logits
                .into_iter()
                .map(|(id, l)| {
                    if let Some(sampling) = greedy.get(&id) {
                        let v = self.vocab();
                        let last = &l[l.len().saturating_sub(v)..];
                        let (token, logprobs) = match sampling {
                            Some(p) => crate::sample::sample(last, p),
                            None => (emesh_model::argmax(last), None),
                        };
                        pb::SeqResult { id, logits: Default::default(), token: Some(token), logprobs }
                    } else {
                        pb::SeqResult { id, logits: f32_bytes(&l), token: None, logprobs: None }
                    }
                })
                .collect(),
        }))
    }

    async fn health(&self, _req: Request<pb::HealthRequest>) -> Result<Response<pb::HealthResponse>, Status> {
        self.through_the_cut().await?;
        let f = lock(&self.inner.fence).clone();
        let reason = f.reason();
        let phase = *lock(&self.inner.phase);
        let stats = lock(&self.inner.stats).clone();
        let per_layer = stats.expert_tokens.iter().map(Vec::len).max().unwrap_or(0);
        let expert_tokens = stats
            .expert_tokens
            .iter()
            .flat_map(|l| l.iter().copied().chain(std::iter::repeat(0)).take(per_layer))
            .collect();
        Ok(Response::new(pb::HealthResponse {
            expert_tokens,
            experts_per_layer: per_layer as u32,
            dispatch_seconds: stats.dispatch_seconds,
            combine_seconds: stats.combine_seconds,
            exchanges: stats.exchanges,
            rank: lock(&self.inner.rank).map(|r| r.0),
            epoch: lock(&self.inner.epoch).0,
            state: if reason.is_some() && phase == Phase::Ready { "fenced".into() } else { phase.name().into() },
            memory_budget: self.inner.cfg.memory_budget.unwrap_or(0),
            worker_id: self.inner.cfg.worker_id.clone(),
            newest_epoch: f.newest.0,
            stale_refused: f.stale_refused,
            steps_served: f.steps_served,
            last_served_epoch: f.last_served.0,
            fenced_reason: reason.unwrap_or_default(),
        }))
    }

    async fn drain(&self, _req: Request<pb::DrainRequest>) -> Result<Response<pb::DrainResponse>, Status> {
        self.set_phase(Phase::Draining);
        Ok(Response::new(pb::DrainResponse {}))
    }
}

/// Serves a worker on `listener` until `shutdown` resolves.
pub async fn serve(
    cfg: WorkerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let svc = WorkerService::new(cfg);
    let exchange = ExchangeService { slot: svc.inner.slot.clone() };
    let registered = svc.inner.cfg.registration.clone().map(|reg| {
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tokio::spawn(crate::lease::keep_registered(svc.clone(), reg, addr))
    });
    emesh_wire::server()
        .add_service(WorkerServer::new(svc).max_decoding_message_size(1 << 30).max_encoding_message_size(1 << 30))
        .add_service(
            ExchangeServer::new(exchange).max_decoding_message_size(1 << 30).max_encoding_message_size(1 << 30),
        )
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    if let Some(task) = registered {
        task.abort();
    }
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: exchanges are many small messages whose
/// latency is on the critical path of every layer.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Binds `addr` and serves until `shutdown`; returns the bound address through `on_bound`.
pub async fn run(
    cfg: WorkerConfig,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    serve(cfg, listener, shutdown).await?;
    Ok(())
}
