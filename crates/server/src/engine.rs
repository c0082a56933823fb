//! The loop that owns the cluster: takes jobs, steps the batcher, answers each job when done.

use emesh_coordinator::{Batcher, Driver, Request};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

pub struct JobResult {
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// "stop" when the stop token ended it, else "length".
    pub finish_reason: &'static str,
}

/// Where a job's answer goes, and the stop token that ends it.
type Waiting = HashMap<u64, (oneshot::Sender<Result<JobResult, String>>, Option<u32>)>;

pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub stop_token: Option<u32>,
    pub reply: oneshot::Sender<Result<JobResult, String>>,
}

/// Runs until `jobs` closes. The driver repairs the cluster when a step fails; a step that still
/// fails (the cluster is degraded) fails the jobs in flight, loudly, and the loop goes on.
pub async fn engine_loop(mut driver: Driver, mut batcher: Batcher, mut jobs: mpsc::Receiver<Job>) {
    let mut waiting: Waiting = HashMap::new();
    loop {
        if batcher.is_idle() {
            match jobs.recv().await {
                Some(j) => admit(&mut batcher, &mut waiting, j),
                None => return,
            }
        }
        while let Ok(j) = jobs.try_recv() {
            admit(&mut batcher, &mut waiting, j);
        }
        match driver.step(&mut batcher).await {
            Ok(done) => {
                for f in done {
                    if let Some((tx, stop)) = waiting.remove(&f.id) {
                        let stopped = stop.is_some() && f.tokens.last() == stop.as_ref();
                        let _ = tx.send(Ok(JobResult {
                            prompt_tokens: f.prompt_tokens,
                            finish_reason: if stopped { "stop" } else { "length" },
                            tokens: f.tokens,
                        }));
                    }
                }
            }
            Err(e) => {
                tracing::error!("step failed: {e}");
                for (_, (tx, _)) in waiting.drain() {
                    let _ = tx.send(Err(format!("the cluster failed a step: {e}")));
                }
                batcher = Batcher::new(batcher.max_per_group);
            }
        }
    }
}

fn admit(b: &mut Batcher, waiting: &mut Waiting, j: Job) {
    match b.submit(Request { prompt: j.prompt, max_tokens: j.max_tokens, stop_token: j.stop_token }) {
        Ok(id) => {
            waiting.insert(id, (j.reply, j.stop_token));
        }
        Err(e) => {
            let _ = j.reply.send(Err(e.to_string()));
        }
    }
}
