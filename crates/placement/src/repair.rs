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
