//! The next epoch's plan after ranks die.
//!
//! Surviving copies take over at once: the holder lists simply lose the dead ranks, so the
//! lowest surviving rank becomes the primary and nothing moves. Experts left with no copy are
//! loaded from the checkpoint onto the survivor with the most free budget at that moment, one
//! expert at a time in (layer, expert) order, so the load spreads and the result is
//! deterministic. If some expert fits nowhere, the survivors cannot hold the model and the
//! repair says so rather than produce a plan that would run out of memory.

use crate::error::PlanError;
use crate::plan::Plan;
use emesh_common::{ExpertId, LayerId, Rank};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One expert to read from the checkpoint onto a rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadOrder {
    pub rank: Rank,
    pub layer: LayerId,
    pub expert: ExpertId,
    pub bytes: u64,
}

/// A repaired plan and the work that makes it real.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    pub plan: Plan,
    /// Experts that lost every copy, with their new home.
    pub loads: Vec<LoadOrder>,
    /// Experts whose primary died and whose surviving copy now serves them.
    pub promoted: usize,
}

impl Plan {
    /// The next-epoch plan without `rank`.
    pub fn without_rank(&self, rank: Rank) -> Result<Repair, PlanError> {
        self.repair(&[rank])
    }

    /// The next-epoch plan without the `dead` ranks (see the module docs).
    pub fn repair(&self, dead: &[Rank]) -> Result<Repair, PlanError> {
        let dead: BTreeSet<Rank> = dead.iter().copied().collect();
        if let Some(&r) = dead.iter().find(|&&r| self.rank(r).is_none()) {
            return Err(PlanError::UnknownRank(r));
        }
        let mut next = self.clone();
        next.epoch = self.epoch.next();
        next.ranks.retain(|r| !dead.contains(&r.rank));
        if next.ranks.is_empty() {
            return Err(PlanError::NoSurvivors);
        }
        let mut loads = Vec::new();
        let mut promoted = 0;
        for (li, layer) in next.experts.iter_mut().enumerate() {
            let bytes = self.expert_bytes.get(li).copied().unwrap_or(0);
            for (e, homes) in layer.iter_mut().enumerate() {
                let was_primary = homes.first().copied();
                homes.retain(|r| !dead.contains(r));
                if let Some(&first) = homes.first() {
                    promoted += usize::from(Some(first) != was_primary);
                    continue;
                }
                let (layer_id, expert) = (LayerId(li as u32), ExpertId(e as u32));
                let best = next
                    .ranks
                    .iter_mut()
                    .max_by(|a, b| a.free_bytes().cmp(&b.free_bytes()).then(b.rank.cmp(&a.rank)))
                    .filter(|r| r.free_bytes() >= bytes);
                let Some(target) = best else {
                    let most_free = next_most_free(&next.ranks);
                    return Err(PlanError::CannotHold { layer: li as u32, expert: e as u32, bytes, most_free });
                };
                let rank = target.rank;
                let Some(slots) = target.experts.get_mut(li) else {
                    return Err(crate::error::input("ranks", format!("{rank} lacks an expert list for layer {li}")));
                };
                let at = slots.binary_search(&expert).unwrap_or_else(|i| i);
                slots.insert(at, expert);
                target.bytes.experts += bytes;
                homes.push(target.rank);
                loads.push(LoadOrder { rank: target.rank, layer: layer_id, expert, bytes });
            }
        }
        Ok(Repair { plan: next, loads, promoted })
    }
}

fn next_most_free(ranks: &[crate::plan::RankPlan]) -> u64 {
    ranks.iter().map(|r| r.free_bytes()).max().unwrap_or(0)
}

impl Plan {
    /// The next-epoch plan a running cluster switches to when `dead` ranks fail: every rank of
    /// an attention group that lost a member leaves too (a group cannot run attention without
    /// all its heads; its survivors become free workers), the experts are repaired as in
    /// [`Plan::repair`], and the remaining ranks and groups are renumbered densely in their old
    /// order, so the result is an ordinary plan (`ranks` = `0..world`, `dp` complete groups).
    /// Returns the repair and, per new rank, the old rank it was.
    pub fn repair_serving(&self, dead: &[Rank]) -> Result<(Repair, Vec<Rank>), PlanError> {
        let dead: BTreeSet<Rank> = dead.iter().copied().collect();
        if let Some(&r) = dead.iter().find(|&&r| self.rank(r).is_none()) {
            return Err(PlanError::UnknownRank(r));
        }
        let broken: BTreeSet<usize> = self.ranks.iter().filter(|r| dead.contains(&r.rank)).map(|r| r.group).collect();
        let leaving: Vec<Rank> = self.ranks.iter().filter(|r| broken.contains(&r.group)).map(|r| r.rank).collect();
        let mut repair = self.repair(&leaving)?;
        let old_ranks: Vec<Rank> = repair.plan.ranks.iter().map(|r| r.rank).collect();
        let renumber = |r: Rank| old_ranks.binary_search(&r).map(|i| Rank(i as u32));
        let groups: Vec<usize> = {
            let mut g: Vec<usize> = repair.plan.ranks.iter().map(|r| r.group).collect();
            g.dedup();
            g
        };
        for rp in &mut repair.plan.ranks {
            rp.rank = renumber(rp.rank).map_err(|_| PlanError::UnknownRank(rp.rank))?;
            rp.group = groups.binary_search(&rp.group).map_err(|_| PlanError::UnknownRank(rp.rank))?;
        }
        for layer in &mut repair.plan.experts {
            for homes in layer.iter_mut() {
                for h in homes.iter_mut() {
                    *h = renumber(*h).map_err(|_| PlanError::UnknownRank(*h))?;
                }
            }
        }
        for l in &mut repair.loads {
            l.rank = renumber(l.rank).map_err(|_| PlanError::UnknownRank(l.rank))?;
        }
        repair.plan.dp = groups.len();
        repair.plan.validate()?;
        Ok((repair, old_ranks))
    }
}
