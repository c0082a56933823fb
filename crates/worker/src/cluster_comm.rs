//! [`ModelComm`] over a transport: the two exchanges of every layer.
//!
//! - Attention: the group all-gathers its members' per-output-group partials and every member
//!   sums all groups in ascending order, from zero — the single-process order.
//! - MoE: a group's tokens are split across its members (token `t` belongs to position
//!   `t % tp`), so no token is dispatched twice. Each member sends each of its tokens once to
//!   every rank holding one of its experts, the expert ranks return one row per (token, slot),
//!   the owner sums them in slot (= ascending expert id) order, and the group all-gathers the
//!   owners' rows.

use crate::msg::{decode_combine, decode_dispatch, encode_combine, encode_dispatch, CombineRows, DispatchToken};
use bytes::Bytes;
use emesh_comm::{all_gather, all_to_all, decode_rows, encode_rows, PayloadDtype, Phase, Tag, Transport};
use emesh_common::{Epoch, ExpertId, LayerId, ModelConfig, Rank};
use emesh_model::moe::{self, ExpertOut, Route};
use emesh_model::weights::MoeWeights;
use emesh_model::{ModelComm, ModelError, Numerics};
use emesh_placement::Plan;
use std::collections::BTreeMap;

pub struct ClusterComm<'a> {
    pub transport: &'a dyn Transport,
    pub plan: &'a Plan,
    pub epoch: Epoch,
    pub step: u64,
    /// Ranks of this rank's group, by position.
    pub group: Vec<Rank>,
    pub position: usize,
    pub dispatch_dtype: PayloadDtype,
    /// Where this step's expert counts and exchange times go.
    pub stats: ExchangeStats,
}

/// What a rank's MoE exchanges did, summed (reported through `Health` for load balancing and
/// metrics).
#[derive(Clone, Debug, Default)]
pub struct ExchangeStats {
    /// `[layer][expert]`: tokens this rank's experts computed.
    pub expert_tokens: Vec<Vec<u64>>,
    pub dispatch_seconds: f64,
    pub combine_seconds: f64,
    pub exchanges: u64,
}

impl ExchangeStats {
    pub fn add(&mut self, other: &ExchangeStats) {
        if self.expert_tokens.len() < other.expert_tokens.len() {
            self.expert_tokens.resize(other.expert_tokens.len(), vec![]);
        }
        for (mine, theirs) in self.expert_tokens.iter_mut().zip(&other.expert_tokens) {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        self.dispatch_seconds += other.dispatch_seconds;
        self.combine_seconds += other.combine_seconds;
        self.exchanges += other.exchanges;
    }
}

fn comm_err(e: emesh_comm::CommError) -> ModelError {
    ModelError::Invalid(format!("exchange failed: {e}"))
}

impl ClusterComm<'_> {
    fn tag(&self, layer: usize, phase: Phase) -> Tag {
        Tag { epoch: self.epoch, step: self.step, layer: layer as u32, phase }
    }

    fn rows(&self, b: &[u8], n: usize) -> Result<Vec<f32>, ModelError> {
        decode_rows(b, n).map_err(comm_err)
    }
}

impl ModelComm for ClusterComm<'_> {
    fn reduce_attention(&mut self, layer: usize, partials: Vec<Vec<f32>>, len: usize) -> emesh_model::Result<Vec<f32>> {
        let me = self.plan.rank(self.transport.rank()).ok_or_else(|| ModelError::Invalid("rank not in plan".into()))?;
        let mine: Vec<f32> = partials.concat();
        let got = all_gather(
            self.transport,
            self.tag(layer, Phase::AttnReduce),
            &self.group,
            encode_rows(&mine, PayloadDtype::F32),
        )
        .map_err(comm_err)?;
        // Order every member's groups ascending, then sum from zero.
        let mut by_group: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        for (pos, bytes) in got.iter().enumerate() {
            let rp =
                self.plan.rank(self.group[pos]).ok_or_else(|| ModelError::Invalid("group rank not in plan".into()))?;
            let n = rp.out_groups.len();
            let all = if self.group[pos] == me.rank { mine.clone() } else { self.rows(bytes, n * len)? };
            for (i, g) in rp.out_groups.clone().enumerate() {
                by_group.insert(g, all[i * len..(i + 1) * len].to_vec());
            }
        }
        if len > 0 && by_group.len() != self.plan_groups() {
            return Err(ModelError::Invalid(format!(
                "layer {layer}: attention partials cover {} groups",
                by_group.len()
            )));
        }
        let mut u = vec![0.0f32; len];
        for p in by_group.values() {
            for (a, &b) in u.iter_mut().zip(p) {
                *a += b;
            }
        }
        Ok(u)
    }

    fn routed_experts(
        &mut self,
        cfg: &ModelConfig,
        layer: usize,
        moe_w: &MoeWeights,
        x: &[f32],
        routes: &[Route],
        nx: Numerics,
    ) -> emesh_model::Result<Vec<f32>> {
        let d = cfg.hidden_size;
        let tp = self.group.len();
        let world = self.transport.world();
        let n = routes.len();
        let owned: Vec<usize> = (0..n).filter(|t| t % tp == self.position).collect();

        // Dispatch: each owned token once to each rank holding one of its experts.
        let mut per_dest: Vec<(Vec<DispatchToken>, Vec<f32>)> = vec![(vec![], vec![]); world];
        for &t in &owned {
            let mut by_rank: BTreeMap<u32, Vec<(u32, u32, f32)>> = BTreeMap::new();
            for (s, (&e, &w)) in routes[t].experts.iter().zip(&routes[t].weights).enumerate() {
                let holders = self.plan.holders(LayerId(layer as u32), ExpertId(e));
                if holders.is_empty() {
                    return Err(ModelError::Invalid(format!(
                        "layer {layer}: expert {e} has no holder in the placement"
                    )));
                }
                let dest = holders[t % holders.len()];
                by_rank.entry(dest.0).or_default().push((s as u32, e, w));
            }
            for (q, items) in by_rank {
                let (toks, rows) = &mut per_dest[q as usize];
                toks.push(DispatchToken { token: t as u32, items });
                rows.extend_from_slice(&x[t * d..(t + 1) * d]);
            }
        }
        let out: Vec<Bytes> = per_dest
            .iter()
            .map(
                |(toks, rows)| {
                    if toks.is_empty() {
                        Bytes::new()
                    } else {
                        encode_dispatch(toks, rows, self.dispatch_dtype)
                    }
                },
            )
            .collect();
        fail::fail_point!("worker::dispatch", |_| Err(ModelError::Invalid(format!(
            "layer {layer}: fail point worker::dispatch: the dispatch failed midway"
        ))));
        let t0 = std::time::Instant::now();
        let got = all_to_all(self.transport, self.tag(layer, Phase::Dispatch), out).map_err(comm_err)?;
        self.stats.dispatch_seconds += t0.elapsed().as_secs_f64();
        self.stats.exchanges += 1;

        // Expert compute on everything received, grouped by expert.
        let mut received = Vec::with_capacity(world);
        for b in &got {
            received.push(decode_dispatch(b, d).map_err(comm_err)?);
        }
        struct Item {
            sender: usize,
            token: u32,
            slot: u32,
            row: usize,
            weight: f32,
        }
        let mut by_expert: BTreeMap<u32, Vec<Item>> = BTreeMap::new();
        for (sender, (toks, _)) in received.iter().enumerate() {
            for (row, dt) in toks.iter().enumerate() {
                for &(slot, e, weight) in &dt.items {
                    by_expert.entry(e).or_default().push(Item { sender, token: dt.token, slot, row, weight });
                }
            }
        }
        if self.stats.expert_tokens.len() <= layer {
            self.stats.expert_tokens.resize(layer + 1, vec![]);
        }
        let counts = &mut self.stats.expert_tokens[layer];
        counts.resize(cfg.n_routed_experts, 0);
        for (e, items) in &by_expert {
            if let Some(c) = counts.get_mut(*e as usize) {
                *c += items.len() as u64;
            }
        }
        let mut replies: Vec<CombineRows> = vec![(vec![], vec![]); world];
        for (e, items) in &by_expert {
            let ew = moe_w.experts.get(*e as usize).and_then(|o| o.as_ref()).ok_or_else(|| {
                ModelError::Invalid(format!("layer {layer}: asked for expert {e}, which this rank does not hold"))
            })?;
            let mut xs = Vec::with_capacity(items.len() * d);
            for it in items {
                let rows = &received[it.sender].1;
                xs.extend_from_slice(&rows[it.row * d..(it.row + 1) * d]);
            }
            let pre: Option<Vec<f32>> = nx.official().then(|| items.iter().map(|it| it.weight).collect());
            let y = moe::expert_forward(cfg, ew, &xs, items.len(), pre.as_deref(), nx);
            for (j, it) in items.iter().enumerate() {
                let (ids, rows) = &mut replies[it.sender];
                ids.push((it.token, it.slot));
                rows.extend_from_slice(&y[j * d..(j + 1) * d]);
            }
        }
        let out: Vec<Bytes> = replies
            .iter()
            .map(|(ids, rows)| if ids.is_empty() { Bytes::new() } else { encode_combine(ids, rows) })
            .collect();
        let t0 = std::time::Instant::now();
        let back = all_to_all(self.transport, self.tag(layer, Phase::Combine), out).map_err(comm_err)?;
        self.stats.combine_seconds += t0.elapsed().as_secs_f64();

        // Combine: the owned tokens' outputs, summed in slot order.
        let local: BTreeMap<usize, usize> = owned.iter().enumerate().map(|(i, &t)| (t, i)).collect();
        let mut outs = Vec::new();
        for b in &back {
            let (ids, rows) = decode_combine(b, d).map_err(comm_err)?;
            let mut toks = Vec::with_capacity(ids.len());
            for &(t, s) in &ids {
                let li = *local
                    .get(&(t as usize))
                    .ok_or_else(|| ModelError::Invalid(format!("combine for token {t} not owned here")))?;
                toks.push((li, s as usize));
            }
            outs.push(ExpertOut { expert: 0, tokens: toks, y: rows });
        }
        let my_routes: Vec<Route> = owned.iter().map(|&t| routes[t].clone()).collect();
        let mine = moe::combine_routed(cfg, &my_routes, &outs, nx)
            .map_err(|e| ModelError::Invalid(format!("layer {layer}: {e}")))?;

        // Every member of the group gets every token's row.
        let gathered = all_gather(
            self.transport,
            self.tag(layer, Phase::MoeGather),
            &self.group,
            encode_rows(&mine, PayloadDtype::F32),
        )
        .map_err(comm_err)?;
        let mut full = vec![0.0f32; n * d];
        for (pos, b) in gathered.iter().enumerate() {
            let theirs: Vec<usize> = (0..n).filter(|t| t % tp == pos).collect();
            let rows = if pos == self.position { mine.clone() } else { self.rows(b, theirs.len() * d)? };
            for (i, &t) in theirs.iter().enumerate() {
                full[t * d..(t + 1) * d].copy_from_slice(&rows[i * d..(i + 1) * d]);
            }
        }
        Ok(full)
    }
}

impl ClusterComm<'_> {
    fn plan_groups(&self) -> usize {
        self.plan.ranks.iter().map(|r| r.out_groups.end).max().unwrap_or(0)
    }
}
