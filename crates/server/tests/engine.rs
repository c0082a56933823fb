//! The engine loop over a fake cluster: tokens stream to the job as they are made, a job whose
//! receiver is dropped is cancelled and its cache freed, and a failed step fails every job in
//! flight loudly while the loop goes on serving.

use emesh_coordinator::{Batcher, ClusterError, FinishReason, GroupBatch, Request, SeqOutput, StepCluster};
use emesh_server::{engine_loop, Event, Job};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Default)]
struct Log {
    fail_at: Option<usize>,
    steps: usize,
    freed: Vec<u64>,
}

struct Fake(Arc<Mutex<Log>>);

impl StepCluster for Fake {
    fn dp(&self) -> usize {
        1
    }
    fn step(
        &mut self,
        groups: Vec<GroupBatch>,
        free: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<SeqOutput>, ClusterError>> + Send {
        let mut log = self.0.lock().unwrap();
        log.steps += 1;
        let r = if log.fail_at == Some(log.steps) {
            Err(ClusterError::Invalid("rank 1 is gone".into()))
        } else {
            log.freed.extend(free);
            Ok(groups[0]
                .iter()
                .filter(|s| s.greedy)
                .map(|s| SeqOutput {
                    id: s.id,
                    logits: vec![],
                    token: Some(10 + s.pos as u32 + s.tokens.len() as u32),
                    logprobs: None,
                })
                .collect())
        };
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            r
        }
    }
}

async fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = vec![];
    while let Some(e) = rx.recv().await {
        let end = !matches!(e, Event::Token { .. });
        out.push(e);
        if end {
            break;
        }
    }
    out
}

fn job(prompt: Vec<u32>, max_tokens: usize) -> (Job, mpsc::UnboundedReceiver<Event>) {
    let (events, rx) = mpsc::unbounded_channel();
    (Job { req: Request::greedy(prompt, max_tokens), events, arrived: Instant::now() }, rx)
}

#[tokio::test]
async fn tokens_stream_cancellation_frees_and_a_failed_step_fails_loudly() {
    let log = Arc::new(Mutex::new(Log::default()));
    let (tx, rx) = mpsc::channel(8);
    let engine = tokio::spawn(engine_loop(Fake(log.clone()), Batcher::new(4), rx, 1000));

    let (j, events) = job(vec![1, 2, 3], 4);
    tx.send(j).await.unwrap();
    let got = collect(events).await;
    let tokens: Vec<u32> =
        got.iter().filter_map(|e| if let Event::Token { token, .. } = e { Some(*token) } else { None }).collect();
    assert_eq!(tokens, vec![13, 14, 15, 16], "one token per step, from the positions the fake saw");
    assert_eq!(got.last(), Some(&Event::Done { reason: FinishReason::Length, prompt_tokens: 3, completion_tokens: 4 }));

    // A client that goes away: the job is cancelled and its cache freed.
    let (j, mut events) = job(vec![5; 4], 100_000);
    tx.send(j).await.unwrap();
    assert!(matches!(events.recv().await, Some(Event::Token { .. })));
    drop(events);
    let until = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().freed.contains(&1) {
        assert!(Instant::now() < until, "the abandoned job was never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A failed step fails the job in flight, with the reason; the next job is served.
    let next = log.lock().unwrap().steps + 3;
    log.lock().unwrap().fail_at = Some(next);
    let (j, events) = job(vec![7, 7], 50);
    tx.send(j).await.unwrap();
    match collect(events).await.last() {
        Some(Event::Failed(msg)) => assert!(msg.contains("rank 1 is gone"), "{msg}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    let (j, events) = job(vec![9], 2);
    tx.send(j).await.unwrap();
    assert!(matches!(collect(events).await.last(), Some(Event::Done { completion_tokens: 2, .. })));
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), engine).await.unwrap().unwrap();
}
