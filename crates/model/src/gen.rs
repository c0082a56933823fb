//! Random-weight V4-architecture checkpoints in the official format (`emesh gen-model`).
//!
//! Weights follow simple scale rules that keep activations alive through every layer (linears
//! `N(0, 1/in)`, norms `1 + N(0, 0.1)`, embeddings `N(0, 1)`, varied router biases and a random
//! `tid2eid`), so routing is varied and logits are not degenerate. Each tensor is drawn from its
//! own stream seeded by `(seed, name)`, so any tensor can be regenerated alone.

use crate::checkpoint::Dtype;
use crate::error::{ModelError, Result};
use crate::writer::{write_sharded, TensorSpec};
use emesh_common::config::WeightFormat;
use emesh_common::{AttnKind, ModelConfig, MoeKind};
use emesh_compute::formats::{f32_to_bf16, quantize_fp4_rows, quantize_fp8_blocks};
use std::path::Path;

/// Storage of a generated checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenDtype {
    F32,
    Bf16,
    /// The release layout: FP8 linears with 128x128 block scales, FP4 routed experts.
    Fp8,
}

impl std::str::FromStr for GenDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(GenDtype::F32),
            "bf16" => Ok(GenDtype::Bf16),
            "fp8" => Ok(GenDtype::Fp8),
            _ => Err(format!("unknown dtype `{s}` (expected f32, bf16 or fp8)")),
        }
    }
}

pub const PRESETS: &[&str] = &["tiny", "small", "medium"];

/// Preset model configs: `tiny` (~2.4M parameters, the golden-fixture shape), `small` (~300M,
/// the benchmark model), `medium` (~1.1B). `small` and `medium` use the real V4 vocabulary so
/// the V4 tokenizer serves text on them.
pub fn preset(name: &str) -> Result<ModelConfig> {
    let (
        hidden,
        layers,
        heads,
        head_dim,
        rope,
        q_lora,
        groups,
        o_lora,
        window,
        hca,
        idx_heads,
        idx_dim,
        topk,
        experts,
        top,
        inter,
        vocab,
    ) = match name {
        "tiny" => (128, 5, 4, 64, 16, 256, 2, 32, 16, 16, 8, 32, 6, 8, 2, 64, 1000),
        "small" => (512, 8, 8, 128, 32, 256, 4, 128, 64, 32, 8, 64, 32, 64, 6, 192, 129280),
        "medium" => (1024, 8, 16, 128, 32, 512, 8, 256, 128, 64, 16, 64, 64, 64, 6, 512, 129280),
        _ => return Err(ModelError::Invalid(format!("unknown preset `{name}` (expected one of {PRESETS:?})"))),
    };
    let mut ratios: Vec<usize> = (0..layers)
        .map(|i| {
            if i == 0 {
                0
            } else if i % 2 == 1 {
                4
            } else {
                hca
            }
        })
        .collect();
    ratios.push(0);
    let v = serde_json::json!({
        "model_type": "deepseek_v4",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "head_dim": head_dim,
        "qk_rope_head_dim": rope,
        "q_lora_rank": q_lora,
        "o_groups": groups,
        "o_lora_rank": o_lora,
        "sliding_window": window,
        "compress_ratios": ratios,
        "compress_rope_theta": 160000.0,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1},
        "max_position_embeddings": 65536,
        "index_n_heads": idx_heads,
        "index_head_dim": idx_dim,
        "index_topk": topk,
        "hc_mult": 4,
        "hc_sinkhorn_iters": 20,
        "hc_eps": 1e-6,
        "rms_norm_eps": 1e-6,
        "n_routed_experts": experts,
        "n_shared_experts": 1,
        "num_experts_per_tok": top,
        "moe_intermediate_size": inter,
        "num_hash_layers": 2,
        "routed_scaling_factor": 1.5,
        "swiglu_limit": if name == "tiny" { 1.5 } else { 10.0 },
        "num_nextn_predict_layers": 0,
        "bos_token_id": 0,
        "eos_token_id": 1,
    });
    Ok(ModelConfig::from_json(&v)?)
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Init {
    Normal { mean: f32, std: f32 },
    Uniform { lo: f32, hi: f32 },
    Tid2eid { experts: usize, k: usize },
}

/// Storage role of a tensor, deciding its dtype for each [`GenDtype`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    /// Large linear: FP8 in the release layout.
    Linear,
    /// Routed expert: FP4 in the release layout.
    Expert,
    /// Small or sensitive tensor kept BF16 in the release layout.
    Small,
    /// Always F32 (hc_*, sinks, ape, gate bias).
    Exact,
    Index,
}

struct Item {
    name: String,
    shape: Vec<usize>,
    role: Role,
    init: Init,
}

fn inventory(cfg: &ModelConfig) -> Vec<Item> {
    let d = cfg.hidden_size;
    let hc = cfg.hc_mult;
    let hd = cfg.head_dim;
    let mut v = Vec::new();
    let lin = |v: &mut Vec<Item>, name: String, rows: usize, cols: usize, role: Role| {
        v.push(Item {
            name,
            shape: vec![rows, cols],
            role,
            init: Init::Normal { mean: 0.0, std: 1.0 / (cols as f32).sqrt() },
        })
    };
    let norm = |v: &mut Vec<Item>, name: String, n: usize| {
        v.push(Item { name, shape: vec![n], role: Role::Small, init: Init::Normal { mean: 1.0, std: 0.1 } })
    };
    let exact = |v: &mut Vec<Item>, name: String, shape: Vec<usize>, init: Init| {
        v.push(Item { name, shape, role: Role::Exact, init })
    };
    v.push(Item {
        name: "embed.weight".into(),
        shape: vec![cfg.vocab_size, d],
        role: Role::Small,
        init: Init::Normal { mean: 0.0, std: 1.0 },
    });
    for i in 0..cfg.num_layers {
        let p = format!("layers.{i}.");
        norm(&mut v, format!("{p}attn_norm.weight"), d);
        norm(&mut v, format!("{p}ffn_norm.weight"), d);
        for h in ["hc_attn", "hc_ffn"] {
            let n = hc * (hc + 2);
            exact(&mut v, format!("{p}{h}_fn"), vec![n, hc * d], Init::Normal { mean: 0.0, std: 0.05 });
            exact(&mut v, format!("{p}{h}_base"), vec![n], Init::Normal { mean: 0.0, std: 0.3 });
            exact(&mut v, format!("{p}{h}_scale"), vec![3], Init::Uniform { lo: 0.6, hi: 1.3 });
        }
        lin(&mut v, format!("{p}attn.wq_a.weight"), cfg.q_lora_rank, d, Role::Linear);
        norm(&mut v, format!("{p}attn.q_norm.weight"), cfg.q_lora_rank);
        lin(&mut v, format!("{p}attn.wq_b.weight"), cfg.num_heads * hd, cfg.q_lora_rank, Role::Linear);
        lin(&mut v, format!("{p}attn.wkv.weight"), hd, d, Role::Linear);
        norm(&mut v, format!("{p}attn.kv_norm.weight"), hd);
        lin(
            &mut v,
            format!("{p}attn.wo_a.weight"),
            cfg.o_groups * cfg.o_lora_rank,
            cfg.heads_per_group() * hd,
            Role::Linear,
        );
        lin(&mut v, format!("{p}attn.wo_b.weight"), d, cfg.o_groups * cfg.o_lora_rank, Role::Linear);
        exact(&mut v, format!("{p}attn.attn_sink"), vec![cfg.num_heads], Init::Normal { mean: -0.8, std: 1.0 });
        let kind = cfg.attn_kind(i);
        let comp = |v: &mut Vec<Item>, prefix: String, ratio: usize, oc: usize, c: usize| {
            lin(v, format!("{prefix}.wkv.weight"), oc, d, Role::Small);
            lin(v, format!("{prefix}.wgate.weight"), oc, d, Role::Small);
            exact(v, format!("{prefix}.ape"), vec![ratio, oc], Init::Normal { mean: 0.0, std: 0.5 });
            norm(v, format!("{prefix}.norm.weight"), c);
        };
        match kind {
            AttnKind::Sliding => {}
            AttnKind::Csa { ratio } => {
                comp(&mut v, format!("{p}attn.compressor"), ratio, 2 * hd, hd);
                let (ih, id) = (cfg.index_n_heads, cfg.index_head_dim);
                lin(&mut v, format!("{p}attn.indexer.wq_b.weight"), ih * id, cfg.q_lora_rank, Role::Linear);
                lin(&mut v, format!("{p}attn.indexer.weights_proj.weight"), ih, d, Role::Small);
                comp(&mut v, format!("{p}attn.indexer.compressor"), ratio, 2 * id, id);
            }
            AttnKind::Hca { ratio } => comp(&mut v, format!("{p}attn.compressor"), ratio, hd, hd),
        }
        let e = cfg.n_routed_experts;
        v.push(Item {
            name: format!("{p}ffn.gate.weight"),
            shape: vec![e, d],
            role: Role::Small,
            init: Init::Normal { mean: 0.0, std: 1.0 / (d as f32).sqrt() },
        });
        match cfg.moe_kind(i) {
            MoeKind::Hash => v.push(Item {
                name: format!("{p}ffn.gate.tid2eid"),
                shape: vec![cfg.vocab_size, cfg.num_experts_per_tok],
                role: Role::Index,
                init: Init::Tid2eid { experts: e, k: cfg.num_experts_per_tok },
            }),
            MoeKind::Learned => {
                exact(&mut v, format!("{p}ffn.gate.bias"), vec![e], Init::Normal { mean: 0.0, std: 0.08 })
            }
        }
        let inter = cfg.moe_intermediate_size;
        for (w, r, c) in [("w1", inter, d), ("w2", d, inter), ("w3", inter, d)] {
            lin(&mut v, format!("{p}ffn.shared_experts.{w}.weight"), r, c, Role::Linear);
        }
        for x in 0..e {
            for (w, r, c) in [("w1", inter, d), ("w2", d, inter), ("w3", inter, d)] {
                lin(&mut v, format!("{p}ffn.experts.{x}.{w}.weight"), r, c, Role::Expert);
            }
        }
    }
    norm(&mut v, "norm.weight".into(), d);
    exact(&mut v, "hc_head_fn".into(), vec![hc, hc * d], Init::Normal { mean: 0.0, std: 0.05 });
    exact(&mut v, "hc_head_base".into(), vec![hc], Init::Normal { mean: 0.0, std: 0.3 });
    exact(&mut v, "hc_head_scale".into(), vec![1], Init::Uniform { lo: 0.6, hi: 1.3 });
    lin(&mut v, "head.weight".into(), cfg.vocab_size, d, Role::Small);
    v
}

/// SplitMix64 stream.
struct Rng(u64);

impl Rng {
    fn for_tensor(seed: u64, name: &str) -> Self {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normals(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.uniform(), self.uniform());
            let r = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            out.push(mean + std * (r * a.cos()) as f32);
            out.push(mean + std * (r * a.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

fn values(item: &Item, seed: u64) -> Vec<f32> {
    let n: usize = item.shape.iter().product();
    let mut rng = Rng::for_tensor(seed, &item.name);
    match item.init {
        Init::Normal { mean, std } => rng.normals(n, mean, std),
        Init::Uniform { lo, hi } => (0..n).map(|_| lo + (hi - lo) * rng.uniform() as f32).collect(),
        Init::Tid2eid { .. } => vec![],
    }
}

fn tid2eid_bytes(item: &Item, seed: u64) -> Vec<u8> {
    let Init::Tid2eid { experts, k } = item.init else {
        return vec![];
    };
    let mut rng = Rng::for_tensor(seed, &item.name);
    let rows = item.shape[0];
    let mut out = Vec::with_capacity(rows * k * 8);
    let mut pick = Vec::with_capacity(k);
    for _ in 0..rows {
        pick.clear();
        while pick.len() < k {
            let e = (rng.next() % experts as u64) as i64;
            if !pick.contains(&e) {
                pick.push(e);
            }
        }
        for e in &pick {
            out.extend_from_slice(&e.to_le_bytes());
        }
    }
    out
}

/// The stored tensors (name, dtype, shape) of `cfg` generated as `dtype`, in file order.
fn specs(items: &[Item], dtype: GenDtype) -> Vec<(TensorSpec, Option<TensorSpec>)> {
    items
        .iter()
        .map(|it| {
            let (r, c) = (it.shape[0], it.shape.get(1).copied().unwrap_or(1));
            let t = |dt: Dtype, shape: &[usize]| TensorSpec::new(it.name.clone(), dt, shape);
            let scale = |shape: &[usize]| {
                Some(TensorSpec::new(it.name.trim_end_matches(".weight").to_string() + ".scale", Dtype::F8E8M0, shape))
            };
            match (it.role, dtype) {
                (Role::Index, _) => (t(Dtype::I64, &it.shape), None),
                (Role::Exact, _) | (_, GenDtype::F32) => (t(Dtype::F32, &it.shape), None),
                (_, GenDtype::Bf16) | (Role::Small, GenDtype::Fp8) => (t(Dtype::BF16, &it.shape), None),
                (Role::Linear, GenDtype::Fp8) => {
                    (t(Dtype::F8E4M3, &it.shape), scale(&[r.div_ceil(128), c.div_ceil(128)]))
                }
                (Role::Expert, GenDtype::Fp8) => (t(Dtype::I8, &[r, c / 2]), scale(&[r, c.div_ceil(32)])),
            }
        })
        .collect()
}

/// Summary of a generated checkpoint.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenReport {
    pub parameters: u64,
    pub tensors: usize,
    pub bytes: u64,
    pub shards: usize,
}

/// Writes `config.json` and the weights of a random model into `dir`.
pub fn generate(
    dir: &Path,
    cfg: &ModelConfig,
    dtype: GenDtype,
    seed: u64,
    shard_bytes: u64,
    on_progress: impl FnMut(u64),
) -> Result<GenReport> {
    let mut cfg = cfg.clone();
    cfg.weight_format = if dtype == GenDtype::Fp8 { WeightFormat::Fp8 } else { WeightFormat::Dense };
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io { path: dir.to_path_buf(), cause: source })?;
    let items = inventory(&cfg);
    let pairs = specs(&items, dtype);
    let by_name: std::collections::HashMap<&str, &Item> = items.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut flat = Vec::new();
    for (w, s) in &pairs {
        if let Some(s) = s {
            flat.push(s.clone());
        }
        flat.push(w.clone());
    }
    let fill = |spec: &TensorSpec| -> Vec<u8> {
        let (base, is_scale) = match spec.name.strip_suffix(".scale") {
            Some(b) => (b.to_string() + ".weight", true),
            None => (spec.name.clone(), false),
        };
        let Some(item) = by_name.get(base.as_str()) else {
            return vec![];
        };
        if matches!(item.init, Init::Tid2eid { .. }) {
            return tid2eid_bytes(item, seed);
        }
        let vals = values(item, seed);
        let (r, c) = (item.shape[0], item.shape.get(1).copied().unwrap_or(1));
        match (spec.dtype, is_scale) {
            (Dtype::F32, _) => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            (Dtype::BF16, _) => vals.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
            (Dtype::F8E4M3, _) => quantize_fp8_blocks(&vals, r, c).0,
            (Dtype::I8, _) => quantize_fp4_rows(&vals, r, c).0,
            (Dtype::F8E8M0, true) if item.role == Role::Expert => quantize_fp4_rows(&vals, r, c).1,
            (Dtype::F8E8M0, true) => quantize_fp8_blocks(&vals, r, c).1,
            _ => vec![],
        }
    };
    let bytes: u64 = flat.iter().map(TensorSpec::bytes).sum();
    let shards = write_sharded(dir, &flat, shard_bytes, &fill, on_progress)?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&cfg.to_official_json()).map_err(|e| ModelError::Invalid(e.to_string()))?;
    std::fs::write(&cfg_path, text + "\n").map_err(|source| ModelError::Io { path: cfg_path, cause: source })?;
    let parameters = items.iter().map(|i| i.shape.iter().product::<usize>() as u64).sum();
    Ok(GenReport { parameters, tensors: flat.len(), bytes, shards })
}

/// Logical parameter count of a config (every FP4 value counts as one).
pub fn parameter_count(cfg: &ModelConfig) -> u64 {
    inventory(cfg).iter().map(|i| i.shape.iter().product::<usize>() as u64).sum()
}
