//! The loop that owns the cluster: it takes jobs, steps the batcher, and streams each job's
//! tokens back through the job's own channel as they are produced. A job whose receiver is gone
//! (the client disconnected, or a stop string ended it) is cancelled and its caches are freed.
//! A failed step is handled in one place, [`on_step_error`].

use emesh_common::metrics as m;
use emesh_coordinator::{Batcher, ClusterError, FinishReason, Request, Stepper, TokenLogprobs};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// What a job hears from the engine, in order: tokens, then `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Token {
        token: u32,
        logprobs: Option<TokenLogprobs>,
    },
    Done {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
    /// Failed because the cluster cannot serve now (degraded): the client may retry later.
    Unavailable(String),
}

pub struct Job {
    pub req: Request,
    pub events: mpsc::UnboundedSender<Event>,
    /// When the request arrived (for time to first token and end-to-end latency).
    pub arrived: Instant,
}

/// A job the batcher is working on.
pub struct Running {
    pub events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
    last: Option<Instant>,
}

pub type InFlight = HashMap<u64, Running>;

/// Runs until `jobs` closes. `cache_tokens` (all groups together) scales the cache usage gauge.
pub async fn engine_loop<C: Stepper + Send>(
    cluster: C,
    batcher: Batcher,
    jobs: mpsc::Receiver<Job>,
    cache_tokens: usize,
) {
    engine_loop_with(cluster, batcher, jobs, cache_tokens, Arc::new(RwLock::new(None))).await
}

/// [`engine_loop`], keeping `degraded` (what the API answers 503 with) in step with the cluster.
/// While idle it ticks the cluster every second (a returning worker may end a degraded state).
pub async fn engine_loop_with<C: Stepper + Send>(
    mut cluster: C,
    mut batcher: Batcher,
    mut jobs: mpsc::Receiver<Job>,
    cache_tokens: usize,
    degraded: Arc<RwLock<Option<String>>>,
) {
    let mut inflight: InFlight = HashMap::new();
    let report = |c: &C| *degraded.write().unwrap_or_else(|e| e.into_inner()) = c.degraded();
    loop {
        while batcher.is_idle() && batcher.pending_free() == 0 {
            gauges(&batcher, cache_tokens);
            tokio::select! {
                j = jobs.recv() => match j {
                    Some(j) => {
                        admit(&mut batcher, &mut inflight, j);
                        break;
                    }
                    None => return,
                },
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                    cluster.tick(&mut batcher).await;
                    report(&cluster);
                }
            }
        }
        while let Ok(j) = jobs.try_recv() {
            admit(&mut batcher, &mut inflight, j);
        }
        let gone: Vec<u64> = inflight.iter().filter(|(_, r)| r.events.is_closed()).map(|(id, _)| *id).collect();
        for id in gone {
            batcher.cancel(id);
            inflight.remove(&id);
        }
        gauges(&batcher, cache_tokens);
        let stepped = cluster.step_events(&mut batcher).await;
        report(&cluster);
        match stepped {
            Ok(out) => {
                let now = Instant::now();
                for e in out.emitted {
                    let Some(r) = inflight.get_mut(&e.id) else { continue };
                    let since = r.last.unwrap_or(r.arrived);
                    let name =
                        if r.last.is_some() { m::INTER_TOKEN_LATENCY_SECONDS } else { m::TIME_TO_FIRST_TOKEN_SECONDS };
                    metrics::histogram!(name).record(now.duration_since(since).as_secs_f64());
                    metrics::counter!(m::GENERATION_TOKENS_TOTAL).increment(1);
                    r.last = Some(now);
                    if r.events.send(Event::Token { token: e.token, logprobs: e.logprobs }).is_err() {
                        batcher.cancel(e.id);
                        inflight.remove(&e.id);
                    }
                }
                for f in out.finished {
                    if let Some(r) = inflight.remove(&f.id) {
                        metrics::histogram!(m::E2E_REQUEST_LATENCY_SECONDS)
                            .record(now.duration_since(r.arrived).as_secs_f64());
                        let _ = r.events.send(Event::Done {
                            reason: f.reason,
                            prompt_tokens: f.prompt_tokens,
                            completion_tokens: f.tokens.len(),
                        });
                    }
                }
            }
            Err(e) => {
                on_step_error(&e, &mut cluster, &mut batcher, &mut inflight).await;
                // A degraded cluster fails every step at once: do not spin on it (the runtime
                // also renews the leader lease and answers health checks).
                let pause = if e.is_degraded() { 200 } else { 10 };
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
        }
    }
}

/// A step failed for good: every job in flight fails loudly, and the batcher drops them (their
/// caches are freed with the next step). With a [`emesh_coordinator::Driver`] the cluster has
/// already been repaired and the step re-run as often as that could help; what reaches here is a
/// degraded cluster (the survivors cannot hold the model) or a step that keeps failing.
pub async fn on_step_error<C: Stepper>(
    e: &ClusterError,
    _cluster: &mut C,
    batcher: &mut Batcher,
    inflight: &mut InFlight,
) {
    tracing::error!("step failed: {e}");
    for (id, r) in inflight.drain() {
        batcher.cancel(id);
        let msg = format!("the cluster failed a step: {e}");
        let _ = r.events.send(if e.is_degraded() { Event::Unavailable(msg) } else { Event::Failed(msg) });
    }
}

fn admit(b: &mut Batcher, inflight: &mut InFlight, j: Job) {
    let prompt = j.req.prompt.len();
    match b.submit(j.req) {
        Ok(id) => {
            metrics::counter!(m::PROMPT_TOKENS_TOTAL).increment(prompt as u64);
            inflight.insert(id, Running { events: j.events, arrived: j.arrived, last: None });
        }
        Err(e) => {
            let _ = j.events.send(Event::Failed(e.to_string()));
        }
    }
}

fn gauges(b: &Batcher, cache_tokens: usize) {
    metrics::gauge!(m::NUM_REQUESTS_RUNNING).set(b.running() as f64);
    metrics::gauge!(m::NUM_REQUESTS_WAITING).set(b.waiting() as f64);
    let ratio = if cache_tokens == 0 { 0.0 } else { b.cache_tokens_used() as f64 / cache_tokens as f64 };
    metrics::gauge!(m::CACHE_USAGE_RATIO).set(ratio);
}
