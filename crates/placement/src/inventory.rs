//! Every checkpoint tensor of a V4 model, computed from its config alone.
//!
//! The planner must know what each rank will hold before any file is opened, and a loader
//! must know what to expect in a checkpoint it has never seen. Both read this list: names,
//! dtypes, shapes and byte sizes of the official release form (FP8 linears with E8M0 block
//! scales, FP4 routed experts, BF16/F32 small tensors), or of the dense form that
//! `emesh gen-model --dtype f32|bf16` writes (same names, every linear plain, experts unpacked).
//! Each tensor also says how a tensor-parallel group shares it ([`Shard`]).

use emesh_common::{AttnKind, ExpertId, LayerId, ModelConfig};
use serde::{Deserialize, Serialize};

/// FP8 block-scale tile edge (rows and columns).
pub const FP8_BLOCK: usize = 128;
/// FP4 scale group along the input dimension.
pub const FP4_GROUP: usize = 32;

/// Element type, under its safetensors name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    BF16,
    F8E4M3,
    F8E8M0,
    /// Two FP4 e2m1 codes per byte (routed experts of the release form).
    I8,
    I64,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::BF16 => 2,
            DType::F8E4M3 | DType::F8E8M0 | DType::I8 => 1,
            DType::I64 => 8,
        }
    }

    /// The dtype string of a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::BF16 => "BF16",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E8M0 => "F8_E8M0",
            DType::I8 => "I8",
            DType::I64 => "I64",
        }
    }
}

/// How a checkpoint stores its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightForm {
    /// The official release: FP8 e4m3 linears + `.scale`, FP4 experts + `.scale`, BF16/F32 rest.
    Release,
    /// Every tensor F32 (tid2eid stays I64).
    DenseF32,
    /// Every linear, norm and embedding BF16; the F32 parameters of the release (mHC, sinks,
    /// `ape`, `gate.bias`) stay F32, tid2eid stays I64.
    DenseBf16,
}

impl WeightForm {
    /// The form a config declares: release when it carries a FP8 quantization config,
    /// otherwise `dense` (the config cannot tell F32 from BF16).
    pub fn from_config(cfg: &ModelConfig, dense: WeightForm) -> WeightForm {
        match cfg.weight_format {
            emesh_common::config::WeightFormat::Fp8 => WeightForm::Release,
            emesh_common::config::WeightFormat::Dense => dense,
        }
    }
}

/// How the ranks of one tensor-parallel attention group share a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shard {
    /// Every rank holds all of it.
    Replicated,
    /// Split by query heads (`wq_b` rows, `attn_sink`).
    Heads,
    /// Split by output groups (`wo_a` rows, `wo_b` columns).
    OutGroups,
    /// The shared expert, split over its intermediate dimension.
    SharedExpert,
    /// One routed expert, held only where the placement puts it.
    Expert(ExpertId),
}

/// One checkpoint tensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: u64,
    /// The block it belongs to: `0..num_layers` for main layers, `num_layers + i` for
    /// `mtp.i`; `None` for the embedding, head, final norm and `hc_head_*`.
    pub layer: Option<LayerId>,
    pub shard: Shard,
}

/// The full tensor list of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub form: WeightForm,
    pub tensors: Vec<TensorInfo>,
}

impl Inventory {
    /// Enumerates every tensor of `cfg` (main layers, globals and the MTP blocks) in `form`.
    pub fn new(cfg: &ModelConfig, form: WeightForm) -> Inventory {
        let mut b = Builder { cfg, form, out: Vec::new(), prefix: String::new(), layer: None };
        b.globals();
        for i in 0..cfg.num_layers {
            b.layer = Some(LayerId(i as u32));
            b.prefix = format!("layers.{i}.");
            let kind = cfg.attn_kinds.get(i).copied().unwrap_or(AttnKind::Sliding);
            b.block(kind, i < cfg.num_hash_layers);
        }
        for m in 0..cfg.num_nextn_predict_layers {
            b.layer = Some(LayerId((cfg.num_layers + m) as u32));
            b.prefix = format!("mtp.{m}.");
            b.mtp_extras();
            b.block(AttnKind::Sliding, false);
        }
        Inventory { form, tensors: b.out }
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().fold(0u64, |a, t| a.saturating_add(t.bytes))
    }

    /// Logical parameters: FP4 codes count one each; scales and `tid2eid` tables count none.
    pub fn parameters(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| !t.name.ends_with(".scale") && t.dtype != DType::I64)
            .map(|t| elements(&t.shape).saturating_mul(if t.dtype == DType::I8 { 2 } else { 1 }))
            .fold(0u64, u64::saturating_add)
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Element count of a shape (saturating: absurd configs give huge sizes, not a panic).
pub fn elements(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// Refuses configs whose tensors could not exist (so that byte arithmetic cannot overflow).
pub fn check_model_size(cfg: &ModelConfig) -> Result<(), crate::PlanError> {
    let limits = [
        ("hidden_size", cfg.hidden_size, 1 << 20),
        ("num_hidden_layers", cfg.num_layers, 1 << 12),
        ("num_attention_heads", cfg.num_heads, 1 << 16),
        ("head_dim", cfg.head_dim, 1 << 16),
        ("q_lora_rank", cfg.q_lora_rank, 1 << 20),
        ("o_lora_rank", cfg.o_lora_rank, 1 << 20),
        ("o_groups", cfg.o_groups, 1 << 16),
        ("index_n_heads", cfg.index_n_heads, 1 << 16),
        ("index_head_dim", cfg.index_head_dim, 1 << 16),
        ("hc_mult", cfg.hc_mult, 1 << 8),
        ("n_routed_experts", cfg.n_routed_experts, 1 << 16),
        ("num_experts_per_tok", cfg.num_experts_per_tok, 1 << 16),
        ("moe_intermediate_size", cfg.moe_intermediate_size, 1 << 20),
        ("num_nextn_predict_layers", cfg.num_nextn_predict_layers, 1 << 4),
        ("vocab_size", cfg.vocab_size, 1 << 24),
    ];
    for (field, v, max) in limits {
        if v > max {
            return Err(crate::error::input(field, format!("{v} exceeds the supported maximum {max}")));
        }
    }
    if cfg.attn_kinds.len() != cfg.num_layers {
        return Err(crate::error::input("attn_kinds", "needs one entry per layer"));
    }
    if cfg.attn_kinds.iter().any(|k| k.has_compressor() && !(1..=1 << 16).contains(&k.ratio())) {
        return Err(crate::error::input("compress_ratios", "ratios must be in 1..=65536"));
    }
    Ok(())
}

/// Storage class of a tensor, before the form decides its dtype.
#[derive(Clone, Copy)]
enum Class {
    /// FP8 linear with 128x128 block scales in the release.
    Fp8Linear,
    /// FP4-packed routed-expert linear with per-32 scales in the release.
    Fp4Linear,
    /// BF16 in the release (norms, embeddings, compressor projections, router weight).
    Bf16,
    /// F32 in every form (mHC, sinks, `ape`, `gate.bias`) except that dense F32 is F32 anyway.
    F32,
    /// Token-id table.
    I64,
}

struct Builder<'a> {
    cfg: &'a ModelConfig,
    form: WeightForm,
    out: Vec<TensorInfo>,
    prefix: String,
    layer: Option<LayerId>,
}

impl Builder<'_> {
    fn push(&mut self, name: String, dtype: DType, shape: Vec<usize>, shard: Shard) {
        let elems: u64 = shape.iter().map(|&d| d as u64).product();
        self.out.push(TensorInfo { name, dtype, bytes: elems * dtype.size(), shape, layer: self.layer, shard });
    }

    /// Adds `<prefix><name>` (plus its `.scale` in the release form for quantized linears).
    fn add(&mut self, name: &str, class: Class, shape: &[usize], shard: Shard) {
        let full = format!("{}{name}", self.prefix);
        let dense = match self.form {
            WeightForm::Release => None,
            WeightForm::DenseF32 => Some(DType::F32),
            WeightForm::DenseBf16 => Some(DType::BF16),
        };
        match (class, dense) {
            (Class::I64, _) => self.push(full, DType::I64, shape.to_vec(), shard),
            (Class::F32, Some(DType::BF16)) | (Class::F32, None) => self.push(full, DType::F32, shape.to_vec(), shard),
            (_, Some(dt)) => self.push(full, dt, shape.to_vec(), shard),
            (Class::Bf16, None) => self.push(full, DType::BF16, shape.to_vec(), shard),
            (Class::Fp8Linear, None) => {
                let (o, i) = (shape[0], shape[1]);
                let scale = format!("{}.scale", full.trim_end_matches(".weight"));
                self.push(full, DType::F8E4M3, vec![o, i], shard);
                self.push(scale, DType::F8E8M0, vec![o.div_ceil(FP8_BLOCK), i.div_ceil(FP8_BLOCK)], shard);
            }
            (Class::Fp4Linear, None) => {
                let (o, i) = (shape[0], shape[1]);
                let scale = format!("{}.scale", full.trim_end_matches(".weight"));
                self.push(full, DType::I8, vec![o, i.div_ceil(2)], shard);
                self.push(scale, DType::F8E8M0, vec![o, i.div_ceil(FP4_GROUP)], shard);
            }
        }
    }

    fn globals(&mut self) {
        let c = self.cfg;
        let (d, v) = (c.hidden_size, c.vocab_size);
        let r = Shard::Replicated;
        self.add("embed.weight", Class::Bf16, &[v, d], r);
        self.add("norm.weight", Class::Bf16, &[d], r);
        self.add("head.weight", Class::Bf16, &[v, d], r);
        self.hc_head();
    }

    fn hc_head(&mut self) {
        let (d, hc) = (self.cfg.hidden_size, self.cfg.hc_mult);
        let r = Shard::Replicated;
        self.add("hc_head_fn", Class::F32, &[hc, hc * d], r);
        self.add("hc_head_base", Class::F32, &[hc], r);
        self.add("hc_head_scale", Class::F32, &[1], r);
    }

    /// MTP-only tensors: the two input projections, their norms, the block's own head collapse.
    fn mtp_extras(&mut self) {
        let d = self.cfg.hidden_size;
        let r = Shard::Replicated;
        self.add("e_proj.weight", Class::Fp8Linear, &[d, d], r);
        self.add("h_proj.weight", Class::Fp8Linear, &[d, d], r);
        self.add("enorm.weight", Class::Bf16, &[d], r);
        self.add("hnorm.weight", Class::Bf16, &[d], r);
        self.add("norm.weight", Class::Bf16, &[d], r);
        self.hc_head();
    }

    fn block(&mut self, kind: AttnKind, hash: bool) {
        let c = self.cfg;
        let (d, hc) = (c.hidden_size, c.hc_mult);
        let r = Shard::Replicated;
        let hc_rows = (2 + hc) * hc;

        // Attention core.
        self.add("attn.wq_a.weight", Class::Fp8Linear, &[c.q_lora_rank, d], r);
        self.add("attn.q_norm.weight", Class::Bf16, &[c.q_lora_rank], r);
        self.add("attn.wq_b.weight", Class::Fp8Linear, &[c.num_heads * c.head_dim, c.q_lora_rank], Shard::Heads);
        self.add("attn.wkv.weight", Class::Fp8Linear, &[c.head_dim, d], r);
        self.add("attn.kv_norm.weight", Class::Bf16, &[c.head_dim], r);
        let group_in = (c.num_heads * c.head_dim).checked_div(c.o_groups).unwrap_or(0);
        self.add("attn.wo_a.weight", Class::Fp8Linear, &[c.o_groups * c.o_lora_rank, group_in], Shard::OutGroups);
        self.add("attn.wo_b.weight", Class::Fp8Linear, &[d, c.o_groups * c.o_lora_rank], Shard::OutGroups);
        self.add("attn.attn_sink", Class::F32, &[c.num_heads], Shard::Heads);

        // Compressor and indexer.
        if kind.has_compressor() {
            let overlap = if kind.has_indexer() { 2 } else { 1 };
            let w = overlap * c.head_dim;
            self.add("attn.compressor.wkv.weight", Class::Bf16, &[w, d], r);
            self.add("attn.compressor.wgate.weight", Class::Bf16, &[w, d], r);
            self.add("attn.compressor.ape", Class::F32, &[kind.ratio(), w], r);
            self.add("attn.compressor.norm.weight", Class::Bf16, &[c.head_dim], r);
        }
        if kind.has_indexer() {
            let (ih, id) = (c.index_n_heads, c.index_head_dim);
            self.add("attn.indexer.wq_b.weight", Class::Fp8Linear, &[ih * id, c.q_lora_rank], r);
            self.add("attn.indexer.weights_proj.weight", Class::Bf16, &[ih, d], r);
            self.add("attn.indexer.compressor.wkv.weight", Class::Bf16, &[2 * id, d], r);
            self.add("attn.indexer.compressor.wgate.weight", Class::Bf16, &[2 * id, d], r);
            self.add("attn.indexer.compressor.ape", Class::F32, &[kind.ratio(), 2 * id], r);
            self.add("attn.indexer.compressor.norm.weight", Class::Bf16, &[id], r);
        }

        // Norms and hyper-connections.
        self.add("attn_norm.weight", Class::Bf16, &[d], r);
        self.add("ffn_norm.weight", Class::Bf16, &[d], r);
        for sub in ["attn", "ffn"] {
            self.add(&format!("hc_{sub}_fn"), Class::F32, &[hc_rows, hc * d], r);
            self.add(&format!("hc_{sub}_base"), Class::F32, &[hc_rows], r);
            self.add(&format!("hc_{sub}_scale"), Class::F32, &[3], r);
        }

        // MoE: router, shared expert, routed experts.
        let (e, i) = (c.n_routed_experts, c.moe_intermediate_size);
        self.add("ffn.gate.weight", Class::Bf16, &[e, d], r);
        if hash {
            self.add("ffn.gate.tid2eid", Class::I64, &[c.vocab_size, c.num_experts_per_tok], r);
        } else {
            self.add("ffn.gate.bias", Class::F32, &[e], r);
        }
        let s = Shard::SharedExpert;
        self.add("ffn.shared_experts.w1.weight", Class::Fp8Linear, &[i, d], s);
        self.add("ffn.shared_experts.w2.weight", Class::Fp8Linear, &[d, i], s);
        self.add("ffn.shared_experts.w3.weight", Class::Fp8Linear, &[i, d], s);
        for x in 0..e {
            let s = Shard::Expert(ExpertId(x as u32));
            self.add(&format!("ffn.experts.{x}.w1.weight"), Class::Fp4Linear, &[i, d], s);
            self.add(&format!("ffn.experts.{x}.w2.weight"), Class::Fp4Linear, &[d, i], s);
            self.add(&format!("ffn.experts.{x}.w3.weight"), Class::Fp4Linear, &[i, d], s);
        }
    }
}
