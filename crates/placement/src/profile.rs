//! A model reduced to the numbers that sizing needs: bytes by sharing class, FLOPs per token,
//! and cache bytes and attention work as functions of context length.
//!
//! V4 numbers come from the tensor inventory (so sizing and placement count the same bytes);
//! V3 numbers from its MLA shapes. Only the main layers count: the MTP block is not served by
//! plain inference.

use crate::error::PlanError;
use crate::inventory::{Inventory, Shard, WeightForm};
use crate::v3::V3Config;
use emesh_common::{AttnKind, ModelConfig};
use serde::{Deserialize, Serialize};

/// How a layer's attention reads its cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AttentionModel {
    /// V4: sliding window plus compressed entries, FP8 serving cache layout (584 B entries,
    /// 132 B FP8 indexer keys, FP32 compressor states).
    V4 {
        kinds: Vec<AttnKind>,
        heads: usize,
        head_dim: usize,
        rope_dim: usize,
        window: usize,
        index_heads: usize,
        index_head_dim: usize,
        index_topk: usize,
    },
    /// V3 multi-head latent attention with a BF16 latent cache; decode attends in the
    /// absorbed (latent) form, prefill in the expanded multi-head form.
    Mla { layers: usize, heads: usize, kv_lora: usize, rope: usize, qk_nope: usize, v_head: usize },
}

/// Attention work of one token (summed over layers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttnCost {
    /// FLOPs shared out by heads across a tensor-parallel group.
    pub split_flops: f64,
    /// FLOPs every rank of the group repeats (the V4 indexer).
    pub replicated_flops: f64,
    /// Cache bytes read.
    pub bytes: f64,
}

impl AttnCost {
    fn add(&mut self, o: AttnCost) {
        self.split_flops += o.split_flops;
        self.replicated_flops += o.replicated_flops;
        self.bytes += o.bytes;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    pub name: String,
    pub hidden: usize,
    pub layers: usize,
    pub moe_layers: usize,
    pub experts: usize,
    pub top_k: usize,
    /// A tensor-parallel degree must divide this (V4 output groups, V3 heads).
    pub tp_unit: usize,
    /// Linears run on FP8 units (release weights).
    pub fp8: bool,
    /// One routed expert, stored.
    pub expert_bytes: u64,
    /// Attention tensors split across a group, all layers.
    pub split_bytes: u64,
    /// Shared experts (and V3's dense FFNs), split across a group.
    pub shared_bytes: u64,
    /// Held whole by every rank, embedding and head included.
    pub replicated_bytes: u64,
    /// Embedding rows are gathered, not streamed, in decode.
    pub embed_bytes: u64,
    /// FLOPs per token, by the same classes.
    pub split_flops: f64,
    pub replicated_flops: f64,
    pub shared_flops: f64,
    pub expert_flops: f64,
    pub head_flops: f64,
    pub attention: AttentionModel,
}

impl ModelProfile {
    pub fn from_v4(name: &str, cfg: &ModelConfig, form: WeightForm) -> Result<ModelProfile, PlanError> {
        crate::inventory::check_model_size(cfg)?;
        let inv = Inventory::new(cfg, form);
        let mut p = ModelProfile {
            name: name.to_string(),
            hidden: cfg.hidden_size,
            layers: cfg.num_layers,
            moe_layers: cfg.num_layers,
            experts: cfg.n_routed_experts,
            top_k: cfg.num_experts_per_tok,
            tp_unit: cfg.o_groups,
            fp8: form == WeightForm::Release,
            expert_bytes: 0,
            split_bytes: 0,
            shared_bytes: 0,
            replicated_bytes: 0,
            embed_bytes: 0,
            split_flops: 0.0,
            replicated_flops: 0.0,
            shared_flops: 0.0,
            expert_flops: 0.0,
            head_flops: 0.0,
            attention: AttentionModel::V4 {
                kinds: cfg.attn_kinds.clone(),
                heads: cfg.num_heads,
                head_dim: cfg.head_dim,
                rope_dim: cfg.rope_dim,
                window: cfg.sliding_window,
                index_heads: cfg.index_n_heads,
                index_head_dim: cfg.index_head_dim,
                index_topk: cfg.index_topk,
            },
        };
        for t in &inv.tensors {
            if t.layer.is_some_and(|l| l.index() >= cfg.num_layers) {
                continue;
            }
            let params = if t.name.ends_with(".scale") || t.name.ends_with("tid2eid") {
                0.0
            } else {
                let n: u64 = t.shape.iter().map(|&d| d as u64).product();
                n as f64 * if t.dtype == crate::inventory::DType::I8 { 2.0 } else { 1.0 }
            };
            let flops = 2.0 * params;
            match t.shard {
                Shard::Heads | Shard::OutGroups => {
                    p.split_bytes += t.bytes;
                    p.split_flops += flops;
                }
                Shard::SharedExpert => {
                    p.shared_bytes += t.bytes;
                    p.shared_flops += flops;
                }
                Shard::Expert(e) => {
                    if e.0 == 0 && t.layer.is_some_and(|l| l.0 == 0) {
                        p.expert_bytes += t.bytes;
                        p.expert_flops += flops;
                    }
                }
                Shard::Replicated => {
                    p.replicated_bytes += t.bytes;
                    if t.name == "embed.weight" {
                        p.embed_bytes += t.bytes;
                    } else if t.name == "head.weight" {
                        p.head_flops += flops;
                    } else {
                        p.replicated_flops += flops;
                    }
                }
            }
        }
        Ok(p)
    }

    pub fn from_v3(name: &str, c: &V3Config) -> ModelProfile {
        let d = c.hidden_size as u64;
        let (attn_rep_b, attn_split_b) = c.attention_bytes();
        let (attn_rep_p, attn_split_p) = c.attention_params();
        let (dense_b, dense_p) = c.ffn(c.intermediate_size);
        let (shared_b, shared_p) = c.ffn(c.moe_intermediate_size * c.n_shared_experts);
        let (expert_b, expert_p) = c.ffn(c.moe_intermediate_size);
        let (layers, moe, dense) = (c.num_layers as u64, c.moe_layers() as u64, c.first_k_dense_replace as u64);
        let embed = 2 * c.vocab_size as u64 * d;
        let router_p = (c.n_routed_experts as u64) * d;
        ModelProfile {
            name: name.to_string(),
            hidden: c.hidden_size,
            layers: c.num_layers,
            moe_layers: c.moe_layers(),
            experts: c.n_routed_experts,
            top_k: c.num_experts_per_tok,
            tp_unit: c.num_heads,
            fp8: true,
            expert_bytes: expert_b,
            split_bytes: layers * attn_split_b,
            shared_bytes: dense * dense_b + moe * shared_b,
            replicated_bytes: 2 * embed + 2 * d + layers * attn_rep_b + moe * c.router_bytes(),
            embed_bytes: embed,
            split_flops: 2.0 * (layers * attn_split_p) as f64,
            replicated_flops: 2.0 * (layers * attn_rep_p + moe * router_p) as f64,
            shared_flops: 2.0 * (dense * dense_p + moe * shared_p) as f64,
            expert_flops: 2.0 * expert_p as f64,
            head_flops: 2.0 * (c.vocab_size as u64 * d) as f64,
            attention: AttentionModel::Mla {
                layers: c.num_layers,
                heads: c.num_heads,
                kv_lora: c.kv_lora_rank,
                rope: c.qk_rope_head_dim,
                qk_nope: c.qk_nope_head_dim,
                v_head: c.v_head_dim,
            },
        }
    }

    /// Weights served (main layers), bytes.
    pub fn weight_bytes(&self) -> u64 {
        self.split_bytes
            + self.shared_bytes
            + self.replicated_bytes
            + self.expert_bytes * (self.experts * self.moe_layers) as u64
    }

    /// Active parameters per token, embedding excluded.
    pub fn active_params(&self) -> f64 {
        (self.split_flops
            + self.replicated_flops
            + self.shared_flops
            + self.head_flops
            + self.expert_flops * (self.top_k * self.moe_layers) as f64)
            / 2.0
    }

    /// Cache bytes of one sequence holding `t` tokens.
    pub fn kv_bytes(&self, t: usize) -> u64 {
        match &self.attention {
            AttentionModel::V4 { kinds, head_dim, rope_dim, window, index_head_dim, .. } => {
                let entry = v4_entry_bytes(*head_dim, *rope_dim);
                let index_entry = (*index_head_dim + 4) as u64;
                let t64 = t as u64;
                kinds
                    .iter()
                    .map(|k| {
                        let win = t.min(*window) as u64 * entry;
                        match *k {
                            AttnKind::Sliding => win,
                            AttnKind::Csa { ratio } => {
                                let n = t64 / ratio.max(1) as u64;
                                let state = (2 * ratio * 2 * 2 * (*head_dim + *index_head_dim) * 4) as u64;
                                win + n * (entry + index_entry) + state
                            }
                            AttnKind::Hca { ratio } => {
                                win + t64 / ratio.max(1) as u64 * entry + (ratio * 2 * *head_dim * 4) as u64
                            }
                        }
                    })
                    .sum()
            }
            AttentionModel::Mla { layers, kv_lora, rope, .. } => (t * layers * (kv_lora + rope) * 2) as u64,
        }
    }

    /// Attention work of one decode token at context `t` (it sees `t` positions).
    pub fn decode_attention(&self, t: usize) -> AttnCost {
        match &self.attention {
            AttentionModel::V4 { .. } => self.v4_attention(t),
            AttentionModel::Mla { layers, heads, kv_lora, rope, .. } => {
                let per_key = (2 * (kv_lora + rope) + 2 * kv_lora) as f64;
                AttnCost {
                    split_flops: (*layers * *heads) as f64 * per_key * t as f64,
                    replicated_flops: 0.0,
                    bytes: (t * layers * (kv_lora + rope) * 2) as f64,
                }
            }
        }
    }

    /// Mean attention work per prompt token over a prompt of `p` tokens (causal).
    pub fn prefill_attention(&self, p: usize) -> AttnCost {
        let p = p.max(1);
        let samples = p.min(256);
        let mut sum = AttnCost::default();
        for s in 0..samples {
            let pos = 1 + (s * p + p / 2) / samples;
            let mut c = match &self.attention {
                AttentionModel::V4 { .. } => self.v4_attention(pos.min(p)),
                AttentionModel::Mla { layers, heads, qk_nope, rope, v_head, .. } => AttnCost {
                    split_flops: (*layers * *heads) as f64 * (2 * (qk_nope + rope) + 2 * v_head) as f64 * pos as f64,
                    ..Default::default()
                },
            };
            c.bytes = 0.0;
            sum.add(c);
        }
        AttnCost {
            split_flops: sum.split_flops / samples as f64,
            replicated_flops: sum.replicated_flops / samples as f64,
            bytes: 0.0,
        }
    }

    fn v4_attention(&self, t: usize) -> AttnCost {
        let AttentionModel::V4 { kinds, heads, head_dim, rope_dim, window, index_heads, index_head_dim, index_topk } =
            &self.attention
        else {
            return AttnCost::default();
        };
        let entry = v4_entry_bytes(*head_dim, *rope_dim) as f64;
        let per_key = (*heads * 4 * *head_dim) as f64;
        let mut c = AttnCost::default();
        for k in kinds {
            let win = t.min(*window);
            let (keys, index_scan) = match *k {
                AttnKind::Sliding => (win, 0),
                AttnKind::Csa { ratio } => (win + (t / ratio.max(1)).min(*index_topk), t / ratio.max(1)),
                AttnKind::Hca { ratio } => (win + t / ratio.max(1), 0),
            };
            c.split_flops += per_key * keys as f64;
            c.replicated_flops += (index_scan * *index_heads * *index_head_dim * 2) as f64;
            c.bytes += keys as f64 * entry + (index_scan * (*index_head_dim + 4)) as f64;
        }
        c
    }
}

/// FP8 serving entry: e4m3 no-rope dims, BF16 rope dims, one E8M0 scale per 64 dims + 1 pad.
fn v4_entry_bytes(head_dim: usize, rope_dim: usize) -> u64 {
    let nope = head_dim.saturating_sub(rope_dim);
    (nope + 2 * rope_dim + nope / 64 + 1) as u64
}
