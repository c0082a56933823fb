//! Weight bytes per rank, summed once from the inventory.
//!
//! The planner and the sizing report ask "how many bytes does rank p of a tp-group hold"
//! thousands of times; they read this summary instead of walking 145k tensors each time.
//! Split tensors are counted pro rata and rounded up to a byte; that is exact whenever a
//! rank's slice falls on whole 128-row scale blocks, as it does for every head and output
//! group split of the released models.

use crate::inventory::{Inventory, Shard, WeightForm};
use emesh_common::{LayerId, ModelConfig};
use serde::{Deserialize, Serialize};

/// Stored bytes of one block (main layer or MTP block), by how a group shares them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBytes {
    pub layer: LayerId,
    pub mtp: bool,
    pub replicated: u64,
    /// Split by query heads.
    pub heads: u64,
    /// Split by output groups.
    pub out_groups: u64,
    pub shared_expert: u64,
    /// One routed expert (all experts of a block have the same size).
    pub expert: u64,
    pub experts: usize,
}

impl BlockBytes {
    pub fn total(&self) -> u64 {
        self.replicated + self.heads + self.out_groups + self.shared_expert + self.expert * self.experts as u64
    }
}

/// The whole model's stored bytes, by block and sharing class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBytes {
    pub form: WeightForm,
    /// Embedding, head, final norm, `hc_head_*`.
    pub globals: u64,
    /// Main layers in order, then the MTP blocks.
    pub blocks: Vec<BlockBytes>,
}

/// What one rank holds besides its routed experts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticBytes {
    /// Its heads' and output groups' slices of attention.
    pub attention: u64,
    /// Its slice of the shared experts.
    pub shared_expert: u64,
    /// Tensors every rank holds whole.
    pub replicated: u64,
}

impl StaticBytes {
    pub fn total(&self) -> u64 {
        self.attention + self.shared_expert + self.replicated
    }
}

fn pro_rata(bytes: u64, part: usize, whole: usize) -> u64 {
    if whole == 0 {
        return 0;
    }
    ((bytes as u128 * part as u128).div_ceil(whole as u128)) as u64
}

impl ModelBytes {
    pub fn new(cfg: &ModelConfig, form: WeightForm) -> ModelBytes {
        Self::from_inventory(cfg, &Inventory::new(cfg, form))
    }

    pub fn from_inventory(cfg: &ModelConfig, inv: &Inventory) -> ModelBytes {
        let n_blocks = cfg.num_layers + cfg.num_nextn_predict_layers;
        let mut blocks: Vec<BlockBytes> = (0..n_blocks)
            .map(|i| BlockBytes {
                layer: LayerId(i as u32),
                mtp: i >= cfg.num_layers,
                replicated: 0,
                heads: 0,
                out_groups: 0,
                shared_expert: 0,
                expert: 0,
                experts: cfg.n_routed_experts,
            })
            .collect();
        let mut globals = 0;
        for t in &inv.tensors {
            let Some(b) = t.layer.and_then(|l| blocks.get_mut(l.index())) else {
                globals += t.bytes;
                continue;
            };
            match t.shard {
                Shard::Replicated => b.replicated += t.bytes,
                Shard::Heads => b.heads += t.bytes,
                Shard::OutGroups => b.out_groups += t.bytes,
                Shard::SharedExpert => b.shared_expert += t.bytes,
                Shard::Expert(e) if e.0 == 0 => b.expert += t.bytes,
                Shard::Expert(_) => {}
            }
        }
        ModelBytes { form: inv.form, globals, blocks }
    }

    pub fn total(&self) -> u64 {
        self.globals + self.blocks.iter().map(BlockBytes::total).sum::<u64>()
    }

    /// The blocks a deployment serves: main layers, plus the MTP blocks when asked.
    pub fn served(&self, with_mtp: bool) -> impl Iterator<Item = &BlockBytes> {
        self.blocks.iter().filter(move |b| with_mtp || !b.mtp)
    }

    /// Routed-expert bytes of all served blocks.
    pub fn routed_total(&self, with_mtp: bool) -> u64 {
        self.served(with_mtp).map(|b| b.expert * b.experts as u64).sum()
    }

    /// What each rank of a `tp`-group holds outside its routed experts (`tp` divides the
    /// heads and output groups, so every position holds the same amount).
    pub fn static_bytes(&self, tp: usize, with_mtp: bool) -> StaticBytes {
        let mut s = StaticBytes { replicated: self.globals, ..Default::default() };
        for b in self.served(with_mtp) {
            s.attention += pro_rata(b.heads, 1, tp) + pro_rata(b.out_groups, 1, tp);
            s.shared_expert += pro_rata(b.shared_expert, 1, tp);
            s.replicated += b.replicated;
        }
        s
    }
}
