//! The scheduler: continuous batching per data-parallel group.
//!
//! Requests wait in arrival order (FCFS) and join at step boundaries on the group with the fewest
//! running sequences, when that group has a free slot and room in its cache budget (a count of
//! tokens held in caches, the sum of every running sequence's history). Each step gives a group a
//! token budget: every decoding sequence feeds its one token first, then prompts are fed in chunks
//! with what is left (chunked prefill; a chunk that does not end the prompt asks for no logits).
//! When growing sequences overrun the cache budget, the most recently arrived one is preempted:
//! its cache is freed and it goes back to the head of the queue to be recomputed from its token
//! history, without emitting its tokens again. The tokens are drawn on the workers (greedy or
//! seeded sampling), and the draw for a sequence's i-th token depends only on its seed and `i`,
//! so preemption and [`Batcher::reprefill_all`] change no token.
//!
//! A step is all or nothing: [`Batcher::step_events`] works on a copy and keeps it only when the
//! cluster step succeeded, so a failed step can simply be run again after a repair.

use crate::cluster::{Cluster, ClusterError, GroupBatch, SeqOutput, SeqStep};
use emesh_wire::pb::{self, LogitsMode};
use std::collections::VecDeque;
use std::future::Future;

pub use emesh_wire::pb::TokenLogprobs;

/// What the batcher needs from a cluster: its group count and one step.
pub trait StepCluster {
    fn dp(&self) -> usize;
    fn step(
        &mut self,
        groups: Vec<GroupBatch>,
        free: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<SeqOutput>, ClusterError>> + Send;
}

impl StepCluster for Cluster {
    fn dp(&self) -> usize {
        Cluster::dp(self)
    }
    fn step(
        &mut self,
        groups: Vec<GroupBatch>,
        free: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<SeqOutput>, ClusterError>> + Send {
        Cluster::step(self, groups, free)
    }
}

/// Seeded sampling; a temperature of 0 is the greedy argmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: u32,
    pub seed: u64,
}

/// A generation request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    /// Stop after generating this token (included in the output).
    pub stop_token: Option<u32>,
    /// More token ids that stop it the same way.
    pub stop_tokens: Vec<u32>,
    /// `None`: greedy.
    pub sampling: Option<SamplingParams>,
    /// `Some(n)`: return each token's log-probability and the `n` most likely alternatives.
    pub logprobs: Option<u32>,
}

impl Request {
    /// A greedy request with no stop token.
    pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Request {
        Request { prompt, max_tokens, ..Default::default() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A request that has finished.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub id: u64,
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    /// The step (0-based, counted by this batcher) that produced the first token.
    pub first_token_step: u64,
    pub reason: FinishReason,
}

/// One token a step produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    pub id: u64,
    pub token: u32,
    /// Its index among the request's generated tokens.
    pub index: usize,
    pub logprobs: Option<TokenLogprobs>,
}

/// Everything one step produced, in id order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutcome {
    pub emitted: Vec<Emitted>,
    pub finished: Vec<Finished>,
    /// Requests sent back to the queue to be recomputed.
    pub preempted: Vec<u64>,
}

/// Limits of the scheduler (per data-parallel group where it says so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most sequences one group runs at once.
    pub max_per_group: usize,
    /// Tokens one group feeds in one step (decodes first, then prompt chunks).
    pub step_tokens: usize,
    /// Tokens one group's caches may hold at once (the sum of its sequences' histories).
    pub cache_tokens: usize,
    /// Prompt plus generated tokens of one sequence.
    pub max_context: usize,
}

impl SchedulerConfig {
    pub fn new(max_per_group: usize) -> Self {
        SchedulerConfig { max_per_group, step_tokens: 2048, cache_tokens: usize::MAX, max_context: usize::MAX }
    }
}

#[derive(Clone, Debug)]
struct Seq {
    id: u64,
    req: Request,
    /// Prompt followed by the generated tokens.
    history: Vec<u32>,
    /// How many tokens of `history` the group's caches hold.
    pos: usize,
    group: usize,
    first_token_step: Option<u64>,
}

impl Seq {
    fn generated(&self) -> &[u32] {
        &self.history[self.req.prompt.len()..]
    }
}

#[derive(Clone, Debug)]
pub struct Batcher {
    next_id: u64,
    queue: VecDeque<Seq>,
    active: Vec<Seq>,
    free: Vec<u64>,
    pub cfg: SchedulerConfig,
    steps: u64,
}

/// One sequence's part of the coming step.
struct Work {
    at: usize,
    chunk: usize,
    sample: bool,
}

impl Batcher {
    pub fn new(max_per_group: usize) -> Self {
        Self::with_config(SchedulerConfig::new(max_per_group))
    }

    pub fn with_config(mut cfg: SchedulerConfig) -> Self {
        cfg.max_per_group = cfg.max_per_group.max(1);
        cfg.step_tokens = cfg.step_tokens.max(cfg.max_per_group);
        Batcher { next_id: 0, queue: VecDeque::new(), active: vec![], free: vec![], cfg, steps: 0 }
    }

    /// Queues a request; returns its id. Empty prompts, zero budgets and prompts that cannot fit
    /// are refused; `max_tokens` is cut to what the context and the cache budget leave.
    pub fn submit(&mut self, mut req: Request) -> Result<u64, ClusterError> {
        if req.prompt.is_empty() {
            return Err(ClusterError::Invalid("the prompt is empty".into()));
        }
        if req.max_tokens == 0 {
            return Err(ClusterError::Invalid("max_tokens must be at least 1".into()));
        }
        let limit = self.cfg.max_context.min(self.cfg.cache_tokens);
        if req.prompt.len() >= limit {
            return Err(ClusterError::Invalid(format!(
                "the prompt has {} tokens; at most {} fit",
                req.prompt.len(),
                limit.saturating_sub(1)
            )));
        }
        req.max_tokens = req.max_tokens.min(limit - req.prompt.len());
        let id = self.next_id;
        self.next_id += 1;
        let history = req.prompt.clone();
        self.queue.push_back(Seq { id, req, history, pos: 0, group: 0, first_token_step: None });
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

    /// Tokens the running sequences hold in caches, over all groups.
    pub fn cache_tokens_used(&self) -> usize {
        self.active.iter().map(|s| s.history.len()).sum()
    }

    /// Sequences whose caches the next step frees.
    pub fn pending_free(&self) -> usize {
        self.free.len()
    }

    /// Drops a request, queued or running (its caches are freed with the next step). `false` if
    /// it is not here (finished or never submitted).
    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.queue.iter().position(|s| s.id == id) {
            self.queue.remove(i);
            return true;
        }
        if let Some(i) = self.active.iter().position(|s| s.id == id) {
            let s = self.active.remove(i);
            if s.pos > 0 {
                self.free.push(s.id);
            }
            return true;
        }
        false
    }

    /// After the workers lost every cache (a failover): each admitted sequence goes back to the
    /// head of the queue, in id order, to re-prefill its whole history (prompt and generated
    /// tokens) from position 0 on whatever groups the new placement has, and nothing waits to be
    /// freed. No token is emitted twice, and the next draws are the ones that were due.
    pub fn reprefill_all(&mut self) {
        let mut back: Vec<Seq> = std::mem::take(&mut self.active);
        for s in &mut back {
            s.pos = 0;
        }
        back.extend(self.queue.drain(..));
        back.sort_by_key(|s| s.id);
        self.queue = back.into();
        self.free.clear();
    }

    /// Runs one step; returns the requests that finished.
    pub async fn step<C: StepCluster>(&mut self, cluster: &mut C) -> Result<Vec<Finished>, ClusterError> {
        Ok(self.step_events(cluster).await?.finished)
    }

    /// Admits what fits, runs one step on the cluster, and returns what it produced. On an error
    /// the batcher is exactly as it was before the call.
    pub async fn step_events<C: StepCluster>(&mut self, cluster: &mut C) -> Result<StepOutcome, ClusterError> {
        let mut next = self.clone();
        let outcome = next.advance(cluster).await?;
        *self = next;
        Ok(outcome)
    }

    /// Steps until every submitted request has finished; returns them by id.
    pub async fn run_to_completion<C: StepCluster>(&mut self, cluster: &mut C) -> Result<Vec<Finished>, ClusterError> {
        let mut all = Vec::new();
        while !self.is_idle() {
            all.extend(self.step(cluster).await?);
        }
        if !self.free.is_empty() {
            let dp = cluster.dp();
            cluster.step(vec![vec![]; dp], std::mem::take(&mut self.free)).await?;
        }
        all.sort_by_key(|f: &Finished| f.id);
        Ok(all)
    }

    async fn advance<C: StepCluster>(&mut self, cluster: &mut C) -> Result<StepOutcome, ClusterError> {
        let dp = cluster.dp().max(1);
        let mut outcome = StepOutcome { preempted: self.preempt(dp), ..Default::default() };
        self.admit(dp);
        let work = self.plan();
        if work.is_empty() && self.free.is_empty() {
            return Ok(outcome);
        }
        let mut groups: Vec<GroupBatch> = vec![vec![]; dp];
        for w in &work {
            let s = &self.active[w.at];
            groups[s.group].push(SeqStep {
                id: s.id,
                tokens: s.history[s.pos..s.pos + w.chunk].to_vec(),
                pos: s.pos as u64,
                logits: if w.sample { LogitsMode::LogitsLast } else { LogitsMode::LogitsNone },
                greedy: w.sample,
                sampling: if w.sample { sampling_of(s) } else { None },
            });
        }
        let out = cluster.step(groups, std::mem::take(&mut self.free)).await?;
        let step = self.steps;
        self.steps += 1;
        for w in &work {
            let s = &mut self.active[w.at];
            s.pos += w.chunk;
            if !w.sample {
                continue;
            }
            let o = out.iter().find(|o| o.id == s.id);
            let token = o
                .and_then(|o| o.token)
                .ok_or_else(|| ClusterError::Invalid(format!("sequence {} came back without a token", s.id)))?;
            let index = s.generated().len();
            s.history.push(token);
            s.first_token_step.get_or_insert(step);
            outcome.emitted.push(Emitted { id: s.id, token, index, logprobs: o.and_then(|o| o.logprobs.clone()) });
        }
        let mut i = 0;
        while i < self.active.len() {
            match self.finish_reason(&self.active[i]) {
                Some(reason) => {
                    let s = self.active.remove(i);
                    self.free.push(s.id);
                    outcome.finished.push(Finished {
                        id: s.id,
                        prompt_tokens: s.req.prompt.len(),
                        tokens: s.generated().to_vec(),
                        first_token_step: s.first_token_step.unwrap_or(step),
                        reason,
                    });
                }
                None => i += 1,
            }
        }
        outcome.emitted.sort_by_key(|e| e.id);
        outcome.finished.sort_by_key(|f| f.id);
        Ok(outcome)
    }

    fn finish_reason(&self, s: &Seq) -> Option<FinishReason> {
        let generated = s.generated();
        let last = *generated.last()?;
        if s.req.stop_token == Some(last) || s.req.stop_tokens.contains(&last) {
            return Some(FinishReason::Stop);
        }
        (generated.len() >= s.req.max_tokens || s.history.len() >= self.cfg.max_context).then_some(FinishReason::Length)
    }

    /// Cache tokens and sequences of each group.
    fn load(&self, dp: usize) -> Vec<(usize, usize)> {
        let mut load = vec![(0usize, 0usize); dp];
        for s in &self.active {
            load[s.group].0 += s.history.len();
            load[s.group].1 += 1;
        }
        load
    }

    /// Sends the latest arrivals of over-full groups back to the head of the queue.
    fn preempt(&mut self, dp: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for g in 0..dp {
            loop {
                let used: usize = self.active.iter().filter(|s| s.group == g).map(|s| s.history.len()).sum();
                let alone = self.active.iter().filter(|s| s.group == g).count() <= 1;
                if used <= self.cfg.cache_tokens || alone {
                    break;
                }
                let Some(i) = self
                    .active
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.group == g)
                    .max_by_key(|(_, s)| s.id)
                    .map(|(i, _)| i)
                else {
                    break;
                };
                let mut s = self.active.remove(i);
                if s.pos > 0 {
                    self.free.push(s.id);
                }
                s.pos = 0;
                out.push(s.id);
                let at = self.queue.iter().position(|q| q.id > s.id).unwrap_or(self.queue.len());
                self.queue.insert(at, s);
            }
        }
        out.sort_unstable();
        out
    }

    /// Moves queued requests, in order, onto the least-loaded group with a slot and cache room.
    fn admit(&mut self, dp: usize) {
        let mut load = self.load(dp);
        while let Some(head) = self.queue.front() {
            let need = head.history.len();
            let fits = |(used, n): (usize, usize)| {
                n < self.cfg.max_per_group && used.saturating_add(need) <= self.cfg.cache_tokens
            };
            let Some(g) = (0..dp).filter(|&g| fits(load[g])).min_by_key(|&g| (load[g].1, g)) else {
                break;
            };
            let Some(mut s) = self.queue.pop_front() else { break };
            s.group = g;
            load[g].0 += need;
            load[g].1 += 1;
            self.active.push(s);
        }
        self.active.sort_by_key(|s| s.id);
    }

    /// What each running sequence feeds this step, within each group's token budget.
    fn plan(&self) -> Vec<Work> {
        let groups = self.active.iter().map(|s| s.group + 1).max().unwrap_or(0);
        let mut left = vec![self.cfg.step_tokens; groups];
        let mut work = Vec::new();
        for (at, s) in self.active.iter().enumerate() {
            if s.pos + 1 == s.history.len() {
                left[s.group] = left[s.group].saturating_sub(1);
                work.push(Work { at, chunk: 1, sample: true });
            }
        }
        for (at, s) in self.active.iter().enumerate() {
            if s.pos + 1 < s.history.len() {
                let chunk = (s.history.len() - s.pos).min(left[s.group]);
                if chunk > 0 {
                    left[s.group] -= chunk;
                    work.push(Work { at, chunk, sample: s.pos + chunk == s.history.len() });
                }
            }
        }
        work.sort_by_key(|w| w.at);
        work
    }
}

fn sampling_of(s: &Seq) -> Option<pb::Sampling> {
    if s.req.sampling.is_none() && s.req.logprobs.is_none() {
        return None;
    }
    let p = s.req.sampling.unwrap_or(SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0 });
    Some(pb::Sampling {
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        seed: p.seed,
        index: s.generated().len() as u64,
        logprobs: s.req.logprobs.is_some(),
        top_logprobs: s.req.logprobs.unwrap_or(0),
    })
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
