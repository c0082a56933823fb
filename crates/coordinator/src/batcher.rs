//! A simple continuous batcher: requests wait in arrival order, join the batch at step
//! boundaries on the data-parallel group with the fewest running sequences, and leave when done
//! (their caches are freed on every rank with the next step). Greedy sampling happens on the
//! workers. The full scheduler (token budgets, chunked prefill, preemption) builds on this.

use crate::cluster::{Cluster, ClusterError, GroupBatch, SeqStep};
use emesh_wire::pb::LogitsMode;
use std::collections::VecDeque;

/// A greedy generation request.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    /// Stop after generating this token (included in the output).
    pub stop_token: Option<u32>,
}

/// A request that has finished.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub id: u64,
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    /// The step (0-based, counted by this batcher) that produced the first token.
    pub first_token_step: u64,
}

struct Active {
    id: u64,
    group: usize,
    pos: u64,
    feed: Vec<u32>,
    generated: Vec<u32>,
    req: Request,
    first_token_step: Option<u64>,
}

pub struct Batcher {
    next_id: u64,
    queue: VecDeque<(u64, Request)>,
    active: Vec<Active>,
    free: Vec<u64>,
    /// Most sequences one group runs at once.
    pub max_per_group: usize,
    steps: u64,
}

impl Batcher {
    pub fn new(max_per_group: usize) -> Self {
        Batcher {
            next_id: 0,
            queue: VecDeque::new(),
            active: vec![],
            free: vec![],
            max_per_group: max_per_group.max(1),
            steps: 0,
        }
    }

    /// Queues a request; returns its id. Empty prompts and zero budgets are refused.
    pub fn submit(&mut self, req: Request) -> Result<u64, ClusterError> {
        if req.prompt.is_empty() {
            return Err(ClusterError::Invalid("the prompt is empty".into()));
        }
        if req.max_tokens == 0 {
            return Err(ClusterError::Invalid("max_tokens must be at least 1".into()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, req));
        Ok(id)
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }

    pub fn running(&self) -> usize {
        self.active.len()
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Admits what fits, runs one step on the cluster, and returns the requests that finished.
    pub async fn step(&mut self, cluster: &mut Cluster) -> Result<Vec<Finished>, ClusterError> {
        let dp = cluster.dp();
        let mut load = vec![0usize; dp];
        for a in &self.active {
            load[a.group] += 1;
        }
        while let Some((id, req)) = self.queue.front().cloned() {
            let (g, n) = load.iter().enumerate().min_by_key(|(i, n)| (**n, *i)).map(|(g, n)| (g, *n)).unwrap_or((0, 0));
            if n >= self.max_per_group {
                break;
            }
            self.queue.pop_front();
            load[g] += 1;
            self.active.push(Active {
                id,
                group: g,
                pos: 0,
                feed: req.prompt.clone(),
                generated: vec![],
                req,
                first_token_step: None,
            });
        }
        if self.active.is_empty() && self.free.is_empty() {
            return Ok(vec![]);
        }
        let mut groups: Vec<GroupBatch> = vec![vec![]; dp];
        for a in &self.active {
            groups[a.group].push(SeqStep {
                id: a.id,
                tokens: a.feed.clone(),
                pos: a.pos,
                logits: LogitsMode::LogitsLast,
                greedy: true,
            });
        }
        let out = cluster.step(groups, std::mem::take(&mut self.free)).await?;
        let step = self.steps;
        self.steps += 1;
        let mut finished = Vec::new();
        for o in out {
            let Some(a) = self.active.iter_mut().find(|a| a.id == o.id) else { continue };
            let tok =
                o.token.ok_or_else(|| ClusterError::Invalid(format!("sequence {} came back without a token", o.id)))?;
            a.pos += a.feed.len() as u64;
            a.feed = vec![tok];
            a.generated.push(tok);
            a.first_token_step.get_or_insert(step);
        }
        let mut i = 0;
        while i < self.active.len() {
            let a = &self.active[i];
            let done = a.generated.len() >= a.req.max_tokens
                || (a.req.stop_token.is_some() && a.generated.last() == a.req.stop_token.as_ref());
            if done {
                let a = self.active.swap_remove(i);
                self.free.push(a.id);
                finished.push(Finished {
                    id: a.id,
                    prompt_tokens: a.req.prompt.len(),
                    tokens: a.generated,
                    first_token_step: a.first_token_step.unwrap_or(step),
                });
            } else {
                i += 1;
            }
        }
        finished.sort_by_key(|f| f.id);
        Ok(finished)
    }

    /// Sends every admitted sequence back to prefill from its token history (prompt and the
    /// tokens generated so far): after a placement change the workers' caches are gone.
    pub fn reprefill_all(&mut self) {
        for a in &mut self.active {
            a.pos = 0;
            a.feed = a.req.prompt.iter().chain(&a.generated).copied().collect();
        }
        self.free.clear();
    }

    /// Steps until every submitted request has finished; returns them by id.
    pub async fn run_to_completion(&mut self, cluster: &mut Cluster) -> Result<Vec<Finished>, ClusterError> {
        let mut all = Vec::new();
        while !self.is_idle() {
            all.extend(self.step(cluster).await?);
        }
        if !self.free.is_empty() {
            cluster.step(vec![vec![]; cluster.dp()], std::mem::take(&mut self.free)).await?;
        }
        all.sort_by_key(|f: &Finished| f.id);
        Ok(all)
    }
}
