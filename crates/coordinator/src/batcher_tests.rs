//! The scheduler against a fake cluster whose "model" makes each token a hash of the sequence's
//! whole cached history (and of the seed and token index when sampling), and which checks every
//! position and cache the way a worker does. Any scheduling mistake changes tokens or errors.

use super::*;
use std::collections::HashMap;

const VOCAB: u64 = 1000;

#[derive(Default)]
struct Fake {
    dp: usize,
    caches: HashMap<u64, Vec<u32>>,
    fail_next: bool,
    /// Tokens each group fed, per step.
    fed: Vec<Vec<usize>>,
    /// Cache tokens each group held after each step.
    held: Vec<Vec<usize>>,
    group_of: HashMap<u64, usize>,
    freed: Vec<Vec<u64>>,
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x100_0000_01B3).rotate_left(17)
}

impl StepCluster for Fake {
    fn dp(&self) -> usize {
        self.dp
    }
    fn step(
        &mut self,
        groups: Vec<GroupBatch>,
        free: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<SeqOutput>, ClusterError>> + Send {
        let r = self.run(groups, free);
        async move { r }
    }
}

impl Fake {
    fn new(dp: usize) -> Fake {
        Fake { dp, ..Default::default() }
    }

    fn run(&mut self, groups: Vec<GroupBatch>, free: Vec<u64>) -> Result<Vec<SeqOutput>, ClusterError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(ClusterError::Invalid("injected failure".into()));
        }
        assert_eq!(groups.len(), self.dp);
        for id in &free {
            self.caches.remove(id);
            self.group_of.remove(id);
        }
        self.freed.push(free);
        let mut out = Vec::new();
        let mut fed = vec![0; self.dp];
        for (g, batch) in groups.into_iter().enumerate() {
            for s in batch {
                if s.pos == 0 && !self.caches.contains_key(&s.id) {
                    self.caches.insert(s.id, vec![]);
                    self.group_of.insert(s.id, g);
                }
                let c =
                    self.caches.get_mut(&s.id).ok_or_else(|| ClusterError::Invalid(format!("{} no cache", s.id)))?;
                assert_eq!(c.len() as u64, s.pos, "sequence {} position", s.id);
                assert_eq!(self.group_of[&s.id], g, "sequence {} changed group without a re-prefill", s.id);
                c.extend(&s.tokens);
                fed[g] += s.tokens.len();
                if s.greedy {
                    assert_eq!(s.logits, LogitsMode::LogitsLast);
                    let h = c.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| mix(h, t as u64));
                    let h = match s.sampling {
                        Some(p) if p.temperature > 0.0 => mix(mix(h, p.seed), p.index),
                        _ => h,
                    };
                    out.push(SeqOutput { id: s.id, logits: vec![], token: Some((h % VOCAB) as u32), logprobs: None });
                }
            }
        }
        self.fed.push(fed);
        let mut held = vec![0; self.dp];
        for (id, c) in &self.caches {
            held[self.group_of[id]] += c.len();
        }
        self.held.push(held);
        Ok(out)
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|k| (k * 37 + salt * 11) % 997 + 1).collect()
}

fn requests() -> Vec<Request> {
    (0..7u32)
        .map(|i| Request {
            prompt: prompt(3 + 5 * i as usize, i),
            max_tokens: 4 + i as usize,
            sampling: (i % 2 == 1).then_some(SamplingParams { temperature: 0.8, top_p: 1.0, top_k: 0, seed: i as u64 }),
            ..Default::default()
        })
        .collect()
}

type Tokens = Vec<(u64, Vec<u32>)>;

/// Runs `reqs` to the end; returns (id, tokens) in id order, the fake, and the preempted ids.
fn run(cfg: SchedulerConfig, dp: usize, reqs: &[Request]) -> (Tokens, Fake, Vec<u64>) {
    let mut b = Batcher::with_config(cfg);
    let mut fake = Fake::new(dp);
    for r in reqs {
        b.submit(r.clone()).unwrap();
    }
    let mut done = Vec::new();
    let mut preempted = Vec::new();
    let mut emitted: HashMap<u64, Vec<u32>> = HashMap::new();
    while !b.is_idle() {
        let o = block_on(b.step_events(&mut fake)).unwrap();
        for e in o.emitted {
            let v = emitted.entry(e.id).or_default();
            assert_eq!(v.len(), e.index, "tokens are emitted once, in order");
            v.push(e.token);
        }
        preempted.extend(o.preempted);
        done.extend(o.finished.into_iter().map(|f| (f.id, f.tokens)));
    }
    done.sort();
    for (id, t) in &done {
        assert_eq!(&emitted[id], t);
    }
    (done, fake, preempted)
}

#[test]
fn chunked_prefill_within_the_token_budget_changes_no_token() {
    let reqs = requests();
    let (whole, _, _) = run(SchedulerConfig::new(4), 2, &reqs);
    let cfg = SchedulerConfig { step_tokens: 5, ..SchedulerConfig::new(4) };
    let (chunked, fake, _) = run(cfg, 2, &reqs);
    assert_eq!(whole, chunked);
    assert!(fake.fed.iter().flatten().all(|&n| n <= 5), "{:?}", fake.fed);
    assert_eq!(whole.len(), reqs.len());
    assert!(whole.iter().zip(&reqs).all(|((_, t), r)| t.len() == r.max_tokens));
}

#[test]
fn preemption_by_recompute_keeps_the_cache_budget_and_changes_no_token() {
    let reqs = requests();
    let (free_run, _, _) = run(SchedulerConfig::new(8), 1, &reqs);
    let cfg = SchedulerConfig { cache_tokens: 60, ..SchedulerConfig::new(8) };
    let (tight, fake, preempted) = run(cfg, 1, &reqs);
    assert_eq!(free_run, tight);
    assert!(!preempted.is_empty(), "the budget must force a preemption");
    assert!(fake.held.iter().flatten().all(|&n| n <= 60), "{:?}", fake.held);
}

#[test]
fn a_failed_step_leaves_the_batcher_unchanged_and_can_be_rerun() {
    let reqs = requests();
    let (want, _, _) = run(SchedulerConfig::new(3), 2, &reqs);
    let mut b = Batcher::with_config(SchedulerConfig { step_tokens: 6, ..SchedulerConfig::new(3) });
    let mut fake = Fake::new(2);
    for r in &reqs {
        b.submit(r.clone()).unwrap();
    }
    let mut done = Vec::new();
    let mut n = 0;
    while !b.is_idle() {
        if n % 3 == 1 {
            let before = format!("{b:?}");
            fake.fail_next = true;
            assert!(block_on(b.step_events(&mut fake)).is_err());
            assert_eq!(before, format!("{b:?}"), "state changed by a failed step");
        }
        done.extend(block_on(b.step(&mut fake)).unwrap().into_iter().map(|f| (f.id, f.tokens)));
        n += 1;
    }
    done.sort();
    assert_eq!(done, want);
}

#[test]
fn reprefill_all_after_lost_caches_continues_exactly() {
    let reqs = requests();
    let (want, _, _) = run(SchedulerConfig::new(4), 2, &reqs);
    let mut b = Batcher::with_config(SchedulerConfig { step_tokens: 7, ..SchedulerConfig::new(4) });
    let mut fake = Fake::new(2);
    for r in &reqs {
        b.submit(r.clone()).unwrap();
    }
    let mut done = Vec::new();
    let mut emitted: HashMap<u64, usize> = HashMap::new();
    let mut n = 0;
    while !b.is_idle() {
        if n == 3 || n == 7 {
            // A failover: every cache is gone, a fresh cluster.
            fake = Fake::new(2);
            b.reprefill_all();
        }
        let o = block_on(b.step_events(&mut fake)).unwrap();
        for e in o.emitted {
            let seen = emitted.entry(e.id).or_default();
            assert_eq!(*seen, e.index, "request {} emitted token {} twice or skipped one", e.id, e.index);
            *seen += 1;
        }
        done.extend(o.finished.into_iter().map(|f| (f.id, f.tokens)));
        n += 1;
    }
    done.sort();
    assert_eq!(done, want);
}

#[test]
fn fcfs_cancellation_stop_tokens_and_the_context_limit() {
    let cfg = SchedulerConfig { max_context: 10, ..SchedulerConfig::new(1) };
    let mut b = Batcher::with_config(cfg);
    let mut fake = Fake::new(1);
    assert!(b.submit(Request::greedy(prompt(10, 0), 3)).is_err(), "a prompt that fills the context");
    assert!(b.submit(Request::greedy(vec![], 3)).is_err());
    assert!(b.submit(Request::greedy(vec![1], 0)).is_err());
    let a = b.submit(Request::greedy(prompt(6, 1), 100)).unwrap();
    let c = b.submit(Request::greedy(prompt(4, 2), 3)).unwrap();
    let d = b.submit(Request::greedy(prompt(4, 3), 3)).unwrap();
    block_on(b.step(&mut fake)).unwrap();
    assert_eq!((b.running(), b.waiting()), (1, 2), "one slot: the first arrival runs");
    assert!(b.cancel(d), "a queued request can be cancelled");
    assert!(!b.cancel(99));
    let done = block_on(b.run_to_completion(&mut fake)).unwrap();
    assert_eq!(done.iter().map(|f| f.id).collect::<Vec<_>>(), vec![a, c]);
    assert_eq!(done[0].tokens.len(), 4, "max_tokens is cut to the context");
    assert_eq!(done[0].reason, FinishReason::Length);
    assert!(done[0].first_token_step < done[1].first_token_step);
    assert!(fake.caches.is_empty(), "every cache is freed");

    // Cancelling a running request frees its cache with the next step.
    let e = b.submit(Request::greedy(prompt(5, 4), 50)).unwrap();
    block_on(b.step(&mut fake)).unwrap();
    assert!(fake.caches.contains_key(&e));
    assert!(b.cancel(e));
    assert!(b.is_idle());
    block_on(b.run_to_completion(&mut fake)).unwrap();
    assert!(fake.caches.is_empty());

    // A stop token ends a request, the token included.
    let (want, _, _) = run(SchedulerConfig::new(1), 1, &[Request::greedy(prompt(5, 6), 6)]);
    let stop = want[0].1[2];
    let r = Request { stop_tokens: vec![stop], ..Request::greedy(prompt(5, 6), 6) };
    let mut b = Batcher::new(1);
    b.submit(r).unwrap();
    let done = block_on(b.run_to_completion(&mut fake)).unwrap();
    let cut = want[0].1.iter().position(|&t| t == stop).unwrap() + 1;
    assert_eq!(done[0].tokens, want[0].1[..cut]);
    assert_eq!(done[0].reason, FinishReason::Stop);
}
