//! DeepSeek-V3 (MLA attention, FP8 experts), for sizing comparisons only.
//!
//! V3 is not served by ExpertMesh, but DeepSeek published how fast their own V3/R1 service
//! ran, which is the one public yardstick for a roofline model of expert-parallel serving.
//! This parser reads just the fields that sizing needs from the hub `config.json`.

use crate::error::{input, PlanError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct V3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Dense FFN width of the first `first_k_dense_replace` layers.
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub q_lora_rank: usize,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub first_k_dense_replace: usize,
    pub num_nextn_predict_layers: usize,
    /// Experts are grouped; a token may use at most `topk_group` of `n_group` groups.
    pub n_group: usize,
    pub topk_group: usize,
}

impl V3Config {
    pub fn from_json_str(text: &str) -> Result<V3Config, PlanError> {
        let v: Value = serde_json::from_str(text).map_err(|e| PlanError::Config(e.to_string()))?;
        let get = |k: &str| -> Result<usize, PlanError> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| input(k, "missing or not a non-negative integer"))
        };
        if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
            if mt != "deepseek_v3" {
                return Err(input("model_type", format!("expected deepseek_v3, got `{mt}`")));
            }
        }
        let c = V3Config {
            vocab_size: get("vocab_size")?,
            hidden_size: get("hidden_size")?,
            intermediate_size: get("intermediate_size")?,
            num_layers: get("num_hidden_layers")?,
            num_heads: get("num_attention_heads")?,
            q_lora_rank: get("q_lora_rank")?,
            kv_lora_rank: get("kv_lora_rank")?,
            qk_nope_head_dim: get("qk_nope_head_dim")?,
            qk_rope_head_dim: get("qk_rope_head_dim")?,
            v_head_dim: get("v_head_dim")?,
            n_routed_experts: get("n_routed_experts")?,
            n_shared_experts: get("n_shared_experts")?,
            num_experts_per_tok: get("num_experts_per_tok")?,
            moe_intermediate_size: get("moe_intermediate_size")?,
            first_k_dense_replace: get("first_k_dense_replace")?,
            num_nextn_predict_layers: get("num_nextn_predict_layers").unwrap_or(0),
            n_group: get("n_group").unwrap_or(1),
            topk_group: get("topk_group").unwrap_or(1),
        };
        for (k, x, max) in [
            ("hidden_size", c.hidden_size, 1 << 16),
            ("num_hidden_layers", c.num_layers, 1 << 10),
            ("num_attention_heads", c.num_heads, 1 << 12),
            ("n_routed_experts", c.n_routed_experts, 1 << 12),
            ("num_experts_per_tok", c.num_experts_per_tok, 1 << 12),
            ("moe_intermediate_size", c.moe_intermediate_size, 1 << 16),
            ("intermediate_size", c.intermediate_size, 1 << 18),
            ("vocab_size", c.vocab_size, 1 << 22),
            ("q_lora_rank", c.q_lora_rank, 1 << 16),
            ("kv_lora_rank", c.kv_lora_rank, 1 << 16),
            ("qk_nope_head_dim", c.qk_nope_head_dim, 1 << 12),
            ("qk_rope_head_dim", c.qk_rope_head_dim, 1 << 12),
            ("v_head_dim", c.v_head_dim, 1 << 12),
            ("n_shared_experts", c.n_shared_experts, 1 << 6),
            ("num_nextn_predict_layers", c.num_nextn_predict_layers, 1 << 4),
        ] {
            if x > max {
                return Err(input(k, format!("{x} exceeds the supported maximum {max}")));
            }
        }
        for (k, x) in [
            ("hidden_size", c.hidden_size),
            ("num_hidden_layers", c.num_layers),
            ("num_attention_heads", c.num_heads),
            ("n_routed_experts", c.n_routed_experts),
            ("num_experts_per_tok", c.num_experts_per_tok),
            ("moe_intermediate_size", c.moe_intermediate_size),
        ] {
            if x == 0 {
                return Err(input(k, "must be positive"));
            }
        }
        if c.num_experts_per_tok > c.n_routed_experts || c.first_k_dense_replace > c.num_layers {
            return Err(input("num_experts_per_tok", "inconsistent MoE fields"));
        }
        Ok(c)
    }

    pub fn moe_layers(&self) -> usize {
        self.num_layers - self.first_k_dense_replace
    }

    /// Stored bytes of one FP8 linear with its F32 128x128 block scales.
    pub fn fp8_linear(out: usize, inp: usize) -> u64 {
        (out * inp) as u64 + 4 * (out.div_ceil(128) * inp.div_ceil(128)) as u64
    }

    /// Per layer: (replicated, head-split) attention bytes.
    pub fn attention_bytes(&self) -> (u64, u64) {
        let (d, h) = (self.hidden_size, self.num_heads);
        let qk = self.qk_nope_head_dim + self.qk_rope_head_dim;
        let kv_a = self.kv_lora_rank + self.qk_rope_head_dim;
        let replicated = Self::fp8_linear(self.q_lora_rank, d)
            + Self::fp8_linear(kv_a, d)
            + 2 * (self.q_lora_rank + self.kv_lora_rank + 2 * d) as u64;
        let split = Self::fp8_linear(h * qk, self.q_lora_rank)
            + Self::fp8_linear(h * (self.qk_nope_head_dim + self.v_head_dim), self.kv_lora_rank)
            + Self::fp8_linear(d, h * self.v_head_dim);
        (replicated, split)
    }

    /// Per layer: (replicated, head-split) attention parameters.
    pub fn attention_params(&self) -> (u64, u64) {
        let (d, h) = (self.hidden_size as u64, self.num_heads as u64);
        let qk = (self.qk_nope_head_dim + self.qk_rope_head_dim) as u64;
        let kv_a = (self.kv_lora_rank + self.qk_rope_head_dim) as u64;
        let (ql, kl) = (self.q_lora_rank as u64, self.kv_lora_rank as u64);
        let replicated = ql * d + kv_a * d;
        let split =
            h * qk * ql + h * (self.qk_nope_head_dim + self.v_head_dim) as u64 * kl + d * h * self.v_head_dim as u64;
        (replicated, split)
    }

    /// One SwiGLU FFN of width `i`: (bytes, parameters).
    pub fn ffn(&self, i: usize) -> (u64, u64) {
        let d = self.hidden_size;
        (2 * Self::fp8_linear(i, d) + Self::fp8_linear(d, i), 3 * (i * d) as u64)
    }

    /// Router of one MoE layer: BF16 weight + F32 correction bias.
    pub fn router_bytes(&self) -> u64 {
        (2 * self.n_routed_experts * self.hidden_size + 4 * self.n_routed_experts) as u64
    }

    /// Bytes of the released checkpoint, MTP layers included (each MTP layer is a MoE layer
    /// plus its own embedding and head copies, two norms and the BF16 `eh_proj`).
    pub fn checkpoint_bytes(&self) -> u64 {
        let d = self.hidden_size as u64;
        let embed = 2 * self.vocab_size as u64 * d;
        let (ar, asplit) = self.attention_bytes();
        let dense = self.ffn(self.intermediate_size).0;
        let moe = self.router_bytes()
            + self.ffn(self.moe_intermediate_size * self.n_shared_experts).0
            + self.n_routed_experts as u64 * self.ffn(self.moe_intermediate_size).0;
        let main = 2 * embed
            + 2 * d
            + self.num_layers as u64 * (ar + asplit)
            + self.first_k_dense_replace as u64 * dense
            + self.moe_layers() as u64 * moe;
        let mtp = ar + asplit + moe + 2 * embed + 2 * (2 * d * d) + 4 * d;
        main + self.num_nextn_predict_layers as u64 * mtp
    }
}
