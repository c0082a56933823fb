//! Expert load as the workers observe it: per-rank and per-layer metrics, and placements whose
//! redundant copies follow the load (EPLB: the planner copies the experts with the most load per
//! copy). A rebalance is an ordinary new epoch: published by compare-and-swap, loaded by every
//! rank (reading only the copies it lacks), and the batcher re-prefills.

use crate::cluster::{Cluster, ClusterError};
use crate::failover::Recovery;
use emesh_common::metrics as m;
use emesh_placement::{Plan, PlanRequest, WeightForm, WorkerSpec};
use emesh_store::PlacementStore;
use emesh_wire::pb;
use futures::future::join_all;
use std::time::Instant;

/// Cumulative counters of every rank, as reported by `Health`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadSample {
    /// `[rank][layer][expert]`: tokens the rank's experts computed since the worker started.
    pub tokens: Vec<Vec<Vec<u64>>>,
    pub dispatch_seconds: Vec<f64>,
    pub combine_seconds: Vec<f64>,
    pub exchanges: Vec<u64>,
}

impl LoadSample {
    /// `self - earlier`, rank by rank (a counter that went down, after a worker restarted,
    /// counts from zero).
    pub fn since(&self, earlier: &LoadSample) -> LoadSample {
        let sub = |a: u64, b: u64| a.checked_sub(b).unwrap_or(a);
        let tokens = self
            .tokens
            .iter()
            .enumerate()
            .map(|(r, layers)| {
                layers
                    .iter()
                    .enumerate()
                    .map(|(l, es)| {
                        es.iter()
                            .enumerate()
                            .map(|(e, &x)| {
                                sub(
                                    x,
                                    earlier
                                        .tokens
                                        .get(r)
                                        .and_then(|t| t.get(l))
                                        .and_then(|t| t.get(e))
                                        .copied()
                                        .unwrap_or(0),
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let fsub = |a: &[f64], b: &[f64]| -> Vec<f64> {
            a.iter().enumerate().map(|(i, &x)| (x - b.get(i).copied().unwrap_or(0.0)).max(0.0)).collect()
        };
        LoadSample {
            tokens,
            dispatch_seconds: fsub(&self.dispatch_seconds, &earlier.dispatch_seconds),
            combine_seconds: fsub(&self.combine_seconds, &earlier.combine_seconds),
            exchanges: self
                .exchanges
                .iter()
                .enumerate()
                .map(|(i, &x)| sub(x, earlier.exchanges.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// `[layer][expert]`: tokens summed over ranks.
    pub fn per_expert(&self) -> Vec<Vec<f64>> {
        let layers = self.tokens.iter().map(Vec::len).max().unwrap_or(0);
        let experts = self.tokens.iter().flatten().map(Vec::len).max().unwrap_or(0);
        let mut out = vec![vec![0.0; experts]; layers];
        for rank in &self.tokens {
            for (l, es) in rank.iter().enumerate() {
                for (e, &x) in es.iter().enumerate() {
                    out[l][e] += x as f64;
                }
            }
        }
        out
    }

    /// Per layer: the most loaded rank's tokens over the mean over ranks (1 is perfect balance;
    /// 0 for a layer that saw no tokens).
    pub fn imbalance(&self) -> Vec<f64> {
        let layers = self.tokens.iter().map(Vec::len).max().unwrap_or(0);
        (0..layers)
            .map(|l| {
                let per_rank: Vec<f64> =
                    self.tokens.iter().map(|r| r.get(l).map_or(0, |es| es.iter().sum::<u64>()) as f64).collect();
                let mean = per_rank.iter().sum::<f64>() / per_rank.len().max(1) as f64;
                let max = per_rank.iter().copied().fold(0.0, f64::max);
                if mean > 0.0 {
                    max / mean
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Exports the counters (cumulative) and, from `delta`, the imbalance and mean latencies.
    pub fn export(&self, delta: &LoadSample) {
        for (r, layers) in self.tokens.iter().enumerate() {
            let total: u64 = layers.iter().flatten().sum();
            metrics::counter!(m::RANK_TOKENS_RECEIVED_TOTAL, "rank" => r.to_string()).absolute(total);
        }
        for (l, x) in delta.imbalance().into_iter().enumerate() {
            metrics::gauge!(m::LAYER_LOAD_IMBALANCE, "layer" => l.to_string()).set(x);
        }
        for r in 0..delta.exchanges.len() {
            let n = delta.exchanges[r];
            if n > 0 {
                metrics::histogram!(m::DISPATCH_LATENCY_SECONDS).record(delta.dispatch_seconds[r] / n as f64);
                metrics::histogram!(m::COMBINE_LATENCY_SECONDS).record(delta.combine_seconds[r] / n as f64);
            }
        }
    }
}

impl Cluster {
    /// Every rank's counters, or `None` if a rank does not answer.
    pub async fn sample_load(&self) -> Option<LoadSample> {
        let answers = join_all(self.clients.iter().cloned().map(|mut c| async move {
            tokio::time::timeout(crate::HEALTH_TIMEOUT, c.health(pb::HealthRequest {})).await
        }))
        .await;
        let mut s = LoadSample::default();
        for a in answers {
            let h = a.ok()?.ok()?.into_inner();
            let per = (h.experts_per_layer as usize).max(1);
            s.tokens.push(h.expert_tokens.chunks(per).map(<[u64]>::to_vec).collect());
            s.dispatch_seconds.push(h.dispatch_seconds);
            s.combine_seconds.push(h.combine_seconds);
            s.exchanges.push(h.exchanges);
        }
        Some(s)
    }

    /// Re-places the redundant expert copies by `load` (`[layer][expert]`). `Ok(None)` when the
    /// placement would not change.
    pub async fn rebalance(
        &mut self,
        store: &dyn PlacementStore,
        load: Vec<Vec<f64>>,
    ) -> Result<Option<Recovery>, ClusterError> {
        let t0 = Instant::now();
        let workers: Vec<WorkerSpec> =
            self.plan.ranks.iter().map(|r| WorkerSpec { id: r.worker.clone(), budget_bytes: r.budget_bytes }).collect();
        let mut req = PlanRequest::new(
            &self.config,
            WeightForm::from_config(&self.config, WeightForm::DenseF32),
            self.plan.layout(),
            workers,
        );
        req.redundant_slots_per_rank = self.opts.redundant_slots_per_rank;
        req.expert_load = Some(load);
        req.epoch = self.plan.epoch.next();
        let mut plan = Plan::new(&req)?;
        if plan.experts == self.plan.experts {
            return Ok(None);
        }
        self.publish(store, &mut plan).await?;
        self.plan = plan;
        let rec = self.load_new_epoch(store, t0, vec![], vec![], 0).await?;
        Ok(Some(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tokens: Vec<Vec<Vec<u64>>>) -> LoadSample {
        let n = tokens.len();
        LoadSample { tokens, dispatch_seconds: vec![1.0; n], combine_seconds: vec![2.0; n], exchanges: vec![4; n] }
    }

    #[test]
    fn deltas_totals_and_imbalance() {
        let before = sample(vec![vec![vec![1, 0], vec![0, 0]], vec![vec![0, 1], vec![0, 0]]]);
        let now = sample(vec![vec![vec![7, 0], vec![0, 0]], vec![vec![0, 3], vec![0, 0]]]);
        let d = now.since(&before);
        assert_eq!(d.tokens, vec![vec![vec![6, 0], vec![0, 0]], vec![vec![0, 2], vec![0, 0]]]);
        assert_eq!(d.exchanges, vec![0, 0]);
        assert_eq!(d.per_expert(), vec![vec![6.0, 2.0], vec![0.0, 0.0]]);
        // Layer 0: ranks got 6 and 2, mean 4, max 6; layer 1 saw nothing.
        assert_eq!(d.imbalance(), vec![1.5, 0.0]);
        // A worker that restarted (counters went down) counts from zero.
        let restarted = sample(vec![vec![vec![2, 0], vec![0, 0]], vec![vec![0, 3], vec![0, 0]]]);
        assert_eq!(restarted.since(&now).tokens[0][0], vec![2, 0]);
    }
}
