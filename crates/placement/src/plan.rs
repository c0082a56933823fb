//! The placement plan: what every rank holds, decided from the config, the layout and the
//! workers' memory budgets.
//!
//! Ranks are grouped `tp` at a time into attention groups (data-parallel attention across
//! groups). Inside a group, rank `p` holds a contiguous range of query heads and the output
//! groups that those heads feed, its share of the shared experts, and a whole copy of every
//! replicated tensor. Routed experts are spread over all ranks as evenly as counts allow, and
//! `redundant_slots_per_rank` extra slots per layer hold copies of the hottest experts
//! (EPLB-style), on a different group than the copies they back up where possible.
//!
//! The plan is a pure function of its request: the same request gives the same plan, byte for
//! byte, so every coordinator that computes it agrees.

use crate::error::{input, PlanError};
use crate::inventory::WeightForm;
use crate::memory::{ModelBytes, StaticBytes};
use emesh_common::{Epoch, ExpertId, LayerId, ModelConfig, Rank};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Tensor-parallel attention groups of `tp` ranks, `dp` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Layout {
    pub tp: usize,
    pub dp: usize,
}

impl Layout {
    pub fn new(tp: usize, dp: usize) -> Layout {
        Layout { tp, dp }
    }

    /// Number of ranks (`tp * dp`), or `None` on overflow.
    pub fn world(&self) -> Option<usize> {
        self.tp.checked_mul(self.dp)
    }

    /// Checks the layout against a model: `tp` must divide the output groups.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<usize, PlanError> {
        if self.tp == 0 || self.dp == 0 {
            return Err(PlanError::Layout(format!("tp and dp must be positive (tp={}, dp={})", self.tp, self.dp)));
        }
        if cfg.o_groups.checked_rem(self.tp) != Some(0) {
            return Err(PlanError::Layout(format!(
                "tp={} must divide the model's {} output groups (attention is split by output group)",
                self.tp, cfg.o_groups
            )));
        }
        if cfg.num_heads.checked_rem(cfg.o_groups) != Some(0) {
            return Err(PlanError::Layout(format!(
                "{} heads do not split into {} output groups",
                cfg.num_heads, cfg.o_groups
            )));
        }
        self.world().ok_or_else(|| PlanError::Layout("tp * dp overflows".into()))
    }
}

/// One worker offered to the plan, in rank order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub id: String,
    pub budget_bytes: u64,
}

/// Everything a plan depends on.
#[derive(Clone, Debug)]
pub struct PlanRequest<'a> {
    pub model: &'a ModelConfig,
    pub form: WeightForm,
    pub layout: Layout,
    /// Worker `i` becomes rank `i`; there must be exactly `tp * dp` of them.
    pub workers: Vec<WorkerSpec>,
    /// Extra expert slots per rank per MoE layer, filled with copies of the hottest experts.
    pub redundant_slots_per_rank: usize,
    /// Observed tokens per expert, `[layer][expert]`; layers past the end count as uniform.
    pub expert_load: Option<Vec<Vec<f64>>>,
    /// Also place the MTP blocks (for speculative decoding).
    pub with_mtp: bool,
    /// Bytes every rank keeps free of weights (caches, activations, buffers).
    pub reserve_bytes: u64,
    pub epoch: Epoch,
}

impl<'a> PlanRequest<'a> {
    /// A request with no redundancy, no load data, no MTP, no reserve, at epoch 0.
    pub fn new(model: &'a ModelConfig, form: WeightForm, layout: Layout, workers: Vec<WorkerSpec>) -> Self {
        PlanRequest {
            model,
            form,
            layout,
            workers,
            redundant_slots_per_rank: 0,
            expert_load: None,
            with_mtp: false,
            reserve_bytes: 0,
            epoch: Epoch(0),
        }
    }
}

/// A rank's bytes by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankBytes {
    pub attention: u64,
    pub shared_expert: u64,
    pub replicated: u64,
    pub experts: u64,
    pub reserve: u64,
}

impl RankBytes {
    pub fn total(&self) -> u64 {
        self.attention + self.shared_expert + self.replicated + self.experts + self.reserve
    }
}

/// What one rank holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankPlan {
    pub rank: Rank,
    pub worker: String,
    /// Attention group (`rank / tp`) and position inside it (`rank % tp`).
    pub group: usize,
    pub position: usize,
    pub heads: Range<usize>,
    pub out_groups: Range<usize>,
    /// Per block (`LayerId` index), the routed experts held, ascending (primaries and copies).
    pub experts: Vec<Vec<ExpertId>>,
    pub budget_bytes: u64,
    pub bytes: RankBytes,
}

impl RankPlan {
    pub fn free_bytes(&self) -> u64 {
        self.budget_bytes.saturating_sub(self.bytes.total())
    }

    /// Index of `expert` in this rank's slots of `layer`.
    pub fn slot(&self, layer: LayerId, expert: ExpertId) -> Option<usize> {
        self.experts.get(layer.index())?.binary_search(&expert).ok()
    }
}

/// The placement of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub epoch: Epoch,
    pub tp: usize,
    pub dp: usize,
    /// Live ranks, ascending by rank id (a repaired plan lacks the dead ones).
    pub ranks: Vec<RankPlan>,
    /// Bytes of one routed expert, per block.
    pub expert_bytes: Vec<u64>,
    /// `experts[layer][expert]`: the ranks holding it, ascending; the first is the primary.
    pub experts: Vec<Vec<Vec<Rank>>>,
}

impl Plan {
    /// Computes the plan for `req`, or says which rank does not fit.
    pub fn new(req: &PlanRequest) -> Result<Plan, PlanError> {
        let cfg = req.model;
        crate::inventory::check_model_size(cfg)?;
        let world = req.layout.validate(cfg)?;
        if req.workers.len() != world {
            return Err(PlanError::Layout(format!(
                "tp={} x dp={} needs {world} workers, got {}",
                req.layout.tp,
                req.layout.dp,
                req.workers.len()
            )));
        }
        if world > u32::MAX as usize || cfg.n_routed_experts > u32::MAX as usize {
            return Err(PlanError::Layout("too many ranks or experts".into()));
        }
        let model = ModelBytes::new(cfg, req.form);
        let blocks: Vec<_> = model.served(req.with_mtp).cloned().collect();
        let n_experts = cfg.n_routed_experts;
        if let Some(load) = &req.expert_load {
            check_load(load, blocks.len(), n_experts)?;
        }
        let static_bytes = model.static_bytes(req.layout.tp, req.with_mtp);

        let mut held: Vec<Vec<Vec<ExpertId>>> = vec![vec![Vec::new(); blocks.len()]; world];
        let mut experts = Vec::with_capacity(blocks.len());
        for (li, _) in blocks.iter().enumerate() {
            let load = req.expert_load.as_ref().and_then(|l| l.get(li));
            let homes = place_layer(li, n_experts, req.layout.tp, world, req.redundant_slots_per_rank, load);
            for (e, rs) in homes.iter().enumerate() {
                for r in rs {
                    held[r.0 as usize][li].push(ExpertId(e as u32));
                }
            }
            experts.push(homes);
        }
        let expert_bytes: Vec<u64> = blocks.iter().map(|b| b.expert).collect();
        let ranks = held
            .into_iter()
            .enumerate()
            .map(|(r, held)| {
                rank_plan(r, &req.workers[r], req.layout.tp, cfg, held, &expert_bytes, static_bytes, req.reserve_bytes)
            })
            .collect();
        let plan = Plan { epoch: req.epoch, tp: req.layout.tp, dp: req.layout.dp, ranks, expert_bytes, experts };
        plan.check_budgets()?;
        Ok(plan)
    }

    pub fn layout(&self) -> Layout {
        Layout { tp: self.tp, dp: self.dp }
    }

    pub fn rank(&self, rank: Rank) -> Option<&RankPlan> {
        self.ranks.binary_search_by_key(&rank, |r| r.rank).ok().map(|i| &self.ranks[i])
    }

    /// Ranks holding `expert` of `layer`, ascending; empty for an unknown pair.
    pub fn holders(&self, layer: LayerId, expert: ExpertId) -> &[Rank] {
        self.experts.get(layer.index()).and_then(|l| l.get(expert.index())).map_or(&[], Vec::as_slice)
    }

    pub fn primary(&self, layer: LayerId, expert: ExpertId) -> Option<Rank> {
        self.holders(layer, expert).first().copied()
    }

    /// Attention groups whose `tp` ranks are all alive.
    pub fn serving_groups(&self) -> Vec<usize> {
        (0..self.dp).filter(|&g| self.ranks.iter().filter(|r| r.group == g).count() == self.tp).collect()
    }

    /// Checks every invariant a consumer relies on: each expert homed, the lookup and the
    /// per-rank lists agree, every rank within its budget.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (li, layer) in self.experts.iter().enumerate() {
            for (e, homes) in layer.iter().enumerate() {
                if homes.is_empty() {
                    return Err(input("experts", format!("layer {li} expert {e} has no home")));
                }
                if homes.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(input("experts", format!("layer {li} expert {e}: holders not ascending")));
                }
                for &r in homes {
                    let rp = self.rank(r).ok_or(PlanError::UnknownRank(r))?;
                    if rp.slot(LayerId(li as u32), ExpertId(e as u32)).is_none() {
                        return Err(input("experts", format!("{r} is listed for layer {li} expert {e} but lacks it")));
                    }
                }
            }
        }
        for rp in &self.ranks {
            let count: usize = rp.experts.iter().map(Vec::len).sum();
            let listed: usize = self.experts.iter().flatten().filter(|h| h.contains(&rp.rank)).count();
            if count != listed {
                return Err(input("ranks", format!("{} holds {count} experts but the lookup lists {listed}", rp.rank)));
            }
        }
        self.check_budgets()
    }

    fn check_budgets(&self) -> Result<(), PlanError> {
        match self.ranks.iter().find(|r| r.bytes.total() > r.budget_bytes) {
            Some(r) => Err(does_not_fit(r)),
            None => Ok(()),
        }
    }
}

pub(crate) fn does_not_fit(r: &RankPlan) -> PlanError {
    PlanError::DoesNotFit {
        rank: r.rank,
        worker: r.worker.clone(),
        needed: r.bytes.total(),
        budget: r.budget_bytes,
        attention: r.bytes.attention + r.bytes.shared_expert,
        replicated: r.bytes.replicated,
        experts: r.bytes.experts,
        reserve: r.bytes.reserve,
    }
}

#[allow(clippy::too_many_arguments)]
fn rank_plan(
    r: usize,
    worker: &WorkerSpec,
    tp: usize,
    cfg: &ModelConfig,
    held: Vec<Vec<ExpertId>>,
    expert_bytes: &[u64],
    s: StaticBytes,
    reserve: u64,
) -> RankPlan {
    let (group, position) = (r / tp, r % tp);
    let groups_per = cfg.o_groups / tp;
    let heads_per = cfg.num_heads / tp;
    let experts: u64 = held.iter().zip(expert_bytes).map(|(h, b)| h.len() as u64 * b).sum();
    RankPlan {
        rank: Rank(r as u32),
        worker: worker.id.clone(),
        group,
        position,
        heads: position * heads_per..(position + 1) * heads_per,
        out_groups: position * groups_per..(position + 1) * groups_per,
        experts: held,
        budget_bytes: worker.budget_bytes,
        bytes: RankBytes {
            attention: s.attention,
            shared_expert: s.shared_expert,
            replicated: s.replicated,
            experts,
            reserve,
        },
    }
}

fn check_load(load: &[Vec<f64>], blocks: usize, experts: usize) -> Result<(), PlanError> {
    if load.len() > blocks {
        return Err(input("expert_load", format!("{} layers given, the plan has {blocks}", load.len())));
    }
    for (l, row) in load.iter().enumerate() {
        if row.len() != experts {
            return Err(input("expert_load", format!("layer {l} has {} entries, expected {experts}", row.len())));
        }
        if let Some(x) = row.iter().find(|x| !x.is_finite() || **x < 0.0) {
            return Err(input("expert_load", format!("layer {l} has a load of {x}; loads are finite and >= 0")));
        }
    }
    Ok(())
}

/// Primary counts per rank for one layer: as even as possible, with the ranks that take the
/// remainder rotating from layer to layer so that no rank is heavier in every layer.
pub fn primary_counts(experts: usize, world: usize, layer: usize) -> Vec<usize> {
    if world == 0 {
        return Vec::new();
    }
    let (base, rem) = (experts / world, experts % world);
    let offset = (layer % world) * rem % world;
    (0..world).map(|r| base + usize::from((r + world - offset) % world < rem)).collect()
}

/// Homes of every expert of one layer: contiguous primaries, then replicas in free slots.
fn place_layer(
    layer: usize,
    n_experts: usize,
    tp: usize,
    world: usize,
    slots: usize,
    load: Option<&Vec<f64>>,
) -> Vec<Vec<Rank>> {
    let mut homes: Vec<Vec<usize>> = Vec::with_capacity(n_experts);
    for (r, c) in primary_counts(n_experts, world, layer).into_iter().enumerate() {
        homes.extend(std::iter::repeat_n(vec![r], c));
    }
    if slots > 0 && world > 1 {
        add_replicas(&mut homes, tp, world, slots, load);
    }
    homes
        .into_iter()
        .map(|mut h| {
            h.sort_unstable();
            h.into_iter().map(|r| Rank(r as u32)).collect()
        })
        .collect()
}

/// Greedy EPLB: repeatedly copy the expert with the most load per copy onto the least loaded
/// rank with a free slot, preferring a group that holds no copy of it yet. Among equally hot
/// experts (always the case without load data) the one whose primary rank keeps the most
/// unshared load goes first, which spreads the copies over the primaries' ranks.
fn add_replicas(homes: &mut [Vec<usize>], tp: usize, world: usize, slots: usize, load: Option<&Vec<f64>>) {
    let weight = |e: usize| load.map_or(1.0, |l| l[e]);
    let mut free = vec![slots; world];
    let mut blocked = vec![false; homes.len()];
    let mut rank_load = vec![0.0f64; world];
    // Load of the experts each rank is primary for, divided by their copies.
    let mut own_load = vec![0.0f64; world];
    for (e, h) in homes.iter().enumerate() {
        rank_load[h[0]] += weight(e);
        own_load[h[0]] += weight(e);
    }
    let mut left = world.saturating_mul(slots);
    while left > 0 {
        let per_copy = |e: usize| weight(e) / homes[e].len() as f64;
        let eligible = |e: &usize| !blocked[*e] && homes[*e].len() < world;
        let Some(top) = (0..homes.len()).filter(eligible).map(per_copy).max_by(f64::total_cmp) else {
            break;
        };
        let mut tier: Vec<usize> = (0..homes.len()).filter(eligible).filter(|&e| per_copy(e) == top).collect();
        tier.sort_by(|&a, &b| {
            let (la, lb) = (own_load[homes[a][0]], own_load[homes[b][0]]);
            lb.total_cmp(&la).then(homes[a].len().cmp(&homes[b].len())).then(a.cmp(&b))
        });
        let best_rank = |e: usize, new_group: bool| {
            (0..world)
                .filter(|&r| free[r] > 0 && !homes[e].contains(&r))
                .filter(|&r| !new_group || homes[e].iter().all(|&h| h / tp != r / tp))
                .min_by(|&a, &b| rank_load[a].total_cmp(&rank_load[b]).then(a.cmp(&b)))
        };
        let mut chosen = None;
        let mut fallback = None;
        for &e in &tier {
            if let Some(r) = best_rank(e, true) {
                chosen = Some((e, r));
                break;
            }
            match best_rank(e, false) {
                Some(r) if fallback.is_none() => fallback = Some((e, r)),
                Some(_) => {}
                None => blocked[e] = true,
            }
        }
        let Some((e, r)) = chosen.or(fallback) else {
            continue;
        };
        let (old, new) = (weight(e) / homes[e].len() as f64, weight(e) / (homes[e].len() + 1) as f64);
        for &h in homes[e].iter() {
            rank_load[h] += new - old;
        }
        own_load[homes[e][0]] += new - old;
        rank_load[r] += new;
        homes[e].push(r);
        free[r] -= 1;
        left -= 1;
    }
}
