//! A cluster of worker gRPC servers on loopback inside this process, and a [`Forward`] that
//! runs batches through a coordinator-driven cluster.

use anyhow::{Context, Result};
use emesh_coordinator::{Cluster, ClusterOptions, GroupBatch, SeqStep};
use emesh_model::verify::Forward;
use emesh_model::Logits;
use emesh_wire::pb::LogitsMode;
use emesh_worker::WorkerConfig;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

pub fn runtime() -> Result<Arc<Runtime>> {
    Ok(Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?))
}

/// `n` workers, each its own gRPC server on `127.0.0.1`, served by `rt`.
pub struct LocalWorkers {
    pub addrs: Vec<String>,
    stops: Vec<oneshot::Sender<()>>,
}

impl LocalWorkers {
    pub fn start(rt: &Runtime, n: usize, cfg: &WorkerConfig) -> Result<LocalWorkers> {
        let mut addrs = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let listener =
                rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).context("binding a loopback port")?;
            addrs.push(listener.local_addr()?.to_string());
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            let cfg = WorkerConfig { worker_id: format!("local-{i}"), ..cfg.clone() };
            rt.spawn(async move {
                if let Err(e) = emesh_worker::serve(cfg, listener, async {
                    let _ = rx.await;
                })
                .await
                {
                    tracing::error!("worker {i}: {e}");
                }
            });
        }
        Ok(LocalWorkers { addrs, stops })
    }
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

/// Runs batches on a cluster: sequence `id` lives in data-parallel group `id % dp`.
pub struct ClusterForward {
    pub rt: Arc<Runtime>,
    pub cluster: Cluster,
    pos: HashMap<u64, u64>,
    _workers: Option<LocalWorkers>,
}

impl ClusterForward {
    pub fn new(rt: Arc<Runtime>, cluster: Cluster, workers: Option<LocalWorkers>) -> Self {
        ClusterForward { rt, cluster, pos: HashMap::new(), _workers: workers }
    }

    pub fn start(
        rt: Arc<Runtime>,
        addrs: &[String],
        config: emesh_common::ModelConfig,
        opts: &ClusterOptions,
        workers: Option<LocalWorkers>,
    ) -> Result<Self> {
        let cluster = rt.block_on(Cluster::start(addrs, config, opts))?;
        Ok(Self::new(rt, cluster, workers))
    }
}

fn mode(l: Logits) -> LogitsMode {
    match l {
        Logits::None => LogitsMode::LogitsNone,
        Logits::Last => LogitsMode::LogitsLast,
        Logits::All => LogitsMode::LogitsAll,
    }
}

impl Forward for ClusterForward {
    fn forward(&mut self, batch: &[(u64, &[u32], Logits)]) -> emesh_model::Result<Vec<Vec<f32>>> {
        let dp = self.cluster.dp() as u64;
        let mut groups: Vec<GroupBatch> = vec![vec![]; dp as usize];
        for (id, tokens, logits) in batch {
            let pos = self.pos.entry(*id).or_insert(0);
            groups[(*id % dp) as usize].push(SeqStep {
                id: *id,
                tokens: tokens.to_vec(),
                pos: *pos,
                logits: mode(*logits),
                greedy: false,
                sampling: None,
            });
            *pos += tokens.len() as u64;
        }
        let out = self
            .rt
            .block_on(self.cluster.step(groups, vec![]))
            .map_err(|e| emesh_model::ModelError::Invalid(format!("cluster step: {e}")))?;
        let map: HashMap<u64, Vec<f32>> = out.into_iter().map(|o| (o.id, o.logits)).collect();
        Ok(batch
            .iter()
            .map(|(id, _, l)| if *l == Logits::None { vec![] } else { map.get(id).cloned().unwrap_or_default() })
            .collect())
    }
}
