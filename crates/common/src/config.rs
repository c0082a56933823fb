//! The DeepSeek-V4 model configuration.
//!
//! Three spellings of the same model exist in the wild and all of them load here:
//! - the official hub `config.json` (`compress_ratios`, `num_hash_layers`, `rope_scaling`);
//! - the HF transformers form (`layer_types`, `mlp_layer_types`, `compress_rates`,
//!   `rope_parameters`);
//! - DeepSeek's `inference/config.json` (`dim`, `n_layers`, `window_size`, `rope_factor`, ...).
//!
//! Everything downstream reads the per-layer schedule from [`ModelConfig::attn_kind`] and
//! [`ModelConfig::moe_kind`], never from a pattern.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("config field `{field}`: {reason}")]
    Field { field: String, reason: String },
}

fn field_err(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field { field: field.to_string(), reason: reason.into() }
}

/// Attention kind of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttnKind {
    /// Sliding window only (compress ratio 0).
    Sliding,
    /// Compressed sparse attention: overlapping compressor + lightning indexer.
    Csa { ratio: usize },
    /// Heavily compressed attention: non-overlapping compressor, all entries attended.
    Hca { ratio: usize },
}

impl AttnKind {
    pub fn ratio(self) -> usize {
        match self {
            AttnKind::Sliding => 0,
            AttnKind::Csa { ratio } | AttnKind::Hca { ratio } => ratio,
        }
    }
    pub fn has_compressor(self) -> bool {
        !matches!(self, AttnKind::Sliding)
    }
    pub fn has_indexer(self) -> bool {
        matches!(self, AttnKind::Csa { .. })
    }
    /// The HF transformers name of this kind.
    pub fn hf_name(self) -> &'static str {
        match self {
            AttnKind::Sliding => "sliding_attention",
            AttnKind::Csa { .. } => "compressed_sparse_attention",
            AttnKind::Hca { .. } => "heavily_compressed_attention",
        }
    }
}

/// How a layer's MoE picks experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoeKind {
    /// Frozen token-id -> expert table (`tid2eid`).
    Hash,
    /// Learned router: top-k of sqrtsoftplus scores plus a selection-only bias.
    Learned,
}

/// YaRN frequency blend (DeepSeek flavour: no mscale).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct YarnConfig {
    pub factor: f64,
    pub original_max_position_embeddings: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
}

/// One RoPE table's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeConfig {
    pub theta: f64,
    pub yarn: Option<YarnConfig>,
}

/// Storage format of the checkpoint's large linears, as the config declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightFormat {
    /// Plain floats (F32 or BF16).
    Dense,
    /// FP8 e4m3 linears with 128x128 E8M0 block scales (experts may be FP4).
    Fp8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub q_lora_rank: usize,
    pub o_groups: usize,
    pub o_lora_rank: usize,
    pub sliding_window: usize,
    /// Per main layer (length `num_layers`).
    pub attn_kinds: Vec<AttnKind>,
    /// Compress ratio of the MTP block, when the config lists one.
    pub mtp_compress_ratio: Option<usize>,
    pub main_rope: RopeConfig,
    pub compress_rope: RopeConfig,
    pub max_position_embeddings: usize,
    pub index_n_heads: usize,
    pub index_head_dim: usize,
    pub index_topk: usize,
    pub hc_mult: usize,
    pub hc_sinkhorn_iters: usize,
    pub hc_eps: f64,
    pub rms_norm_eps: f64,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub num_hash_layers: usize,
    pub routed_scaling_factor: f64,
    pub swiglu_limit: f64,
    pub num_nextn_predict_layers: usize,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub weight_format: WeightFormat,
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn get(&self, names: &[&str]) -> Option<&'a Value> {
        names.iter().find_map(|n| self.map.get(*n).filter(|v| !v.is_null()))
    }
    fn usize(&self, names: &[&str]) -> Result<usize, ConfigError> {
        let v = self.get(names).ok_or_else(|| field_err(names[0], "missing"))?;
        as_usize(v).ok_or_else(|| field_err(names[0], format!("expected a non-negative integer, got {v}")))
    }
    fn usize_or(&self, names: &[&str], default: usize) -> Result<usize, ConfigError> {
        match self.get(names) {
            None => Ok(default),
            Some(v) => {
                as_usize(v).ok_or_else(|| field_err(names[0], format!("expected a non-negative integer, got {v}")))
            }
        }
    }
    fn f64(&self, names: &[&str]) -> Result<f64, ConfigError> {
        let v = self.get(names).ok_or_else(|| field_err(names[0], "missing"))?;
        v.as_f64().ok_or_else(|| field_err(names[0], format!("expected a number, got {v}")))
    }
    fn f64_or(&self, names: &[&str], default: f64) -> Result<f64, ConfigError> {
        match self.get(names) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| field_err(names[0], format!("expected a number, got {v}"))),
        }
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    if let Some(u) = v.as_u64() {
        return usize::try_from(u).ok();
    }
    // Some writers emit integral floats (e.g. 4.0).
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f < 1e15).then_some(f as usize)
}

fn parse_yarn(v: &Value, field: &str) -> Result<Option<YarnConfig>, ConfigError> {
    let Some(m) = v.as_object() else {
        return Err(field_err(field, "expected an object"));
    };
    let kind = m.get("rope_type").or_else(|| m.get("type")).and_then(Value::as_str).unwrap_or("default");
    match kind {
        "default" | "linear_none" => Ok(None),
        "yarn" | "deepseek_yarn" => {
            let f = Fields { map: m };
            if let Some(a) = f.get(&["attention_factor", "mscale"]).and_then(Value::as_f64) {
                if (a - 1.0).abs() > 1e-12 && m.contains_key("attention_factor") {
                    return Err(field_err(
                        &format!("{field}.attention_factor"),
                        format!("V4 applies no YaRN attention scaling; got {a}"),
                    ));
                }
            }
            Ok(Some(YarnConfig {
                factor: f.f64(&["factor"])?,
                original_max_position_embeddings: f.f64(&["original_max_position_embeddings"])?,
                beta_fast: f.f64_or(&["beta_fast"], 32.0)?,
                beta_slow: f.f64_or(&["beta_slow"], 1.0)?,
            }))
        }
        other => Err(field_err(field, format!("unsupported rope type `{other}` (expected default or yarn)"))),
    }
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), cause: source })?;
        Self::from_json_str(&text)
    }

    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(text)?;
        Self::from_json(&v)
    }

    pub fn from_json(v: &Value) -> Result<Self, ConfigError> {
        let map = v.as_object().ok_or_else(|| field_err("<root>", "expected a JSON object"))?;
        let f = Fields { map };
        if let Some(mt) = f.get(&["model_type"]).and_then(Value::as_str) {
            if mt != "deepseek_v4" {
                return Err(field_err("model_type", format!("expected deepseek_v4, got `{mt}`")));
            }
        }
        let num_layers = f.usize(&["num_hidden_layers", "n_layers"])?;
        let hidden_size = f.usize(&["hidden_size", "dim"])?;
        let head_dim = f.usize(&["head_dim"])?;
        let rope_dim = match f.get(&["qk_rope_head_dim", "rope_head_dim"]) {
            Some(_) => f.usize(&["qk_rope_head_dim", "rope_head_dim"])?,
            None => {
                let p = f.f64(&["partial_rotary_factor"])?;
                (head_dim as f64 * p).round() as usize
            }
        };

        // Per-layer attention schedule.
        let (attn_kinds, mtp_compress_ratio) = if let Some(lt) = f.get(&["layer_types"]) {
            let arr = lt.as_array().ok_or_else(|| field_err("layer_types", "expected a list"))?;
            let rates = f.get(&["compress_rates"]).and_then(Value::as_object);
            let rate = |name: &str, default: usize| -> Result<usize, ConfigError> {
                match rates.and_then(|r| r.get(name)) {
                    Some(v) => as_usize(v).ok_or_else(|| field_err("compress_rates", format!("bad `{name}`: {v}"))),
                    None => Ok(default),
                }
            };
            let csa = rate("compressed_sparse_attention", 4)?;
            let hca = rate("heavily_compressed_attention", 128)?;
            let mut kinds = Vec::with_capacity(arr.len());
            for (i, t) in arr.iter().enumerate() {
                kinds.push(match t.as_str() {
                    Some("sliding_attention") => AttnKind::Sliding,
                    Some("compressed_sparse_attention") => AttnKind::Csa { ratio: csa },
                    Some("heavily_compressed_attention") => AttnKind::Hca { ratio: hca },
                    _ => return Err(field_err(&format!("layer_types[{i}]"), format!("unknown layer type {t}"))),
                });
            }
            (kinds, None)
        } else {
            let cr = f.get(&["compress_ratios"]).ok_or_else(|| {
                field_err("compress_ratios", "missing (and no `layer_types`): cannot tell each layer's attention kind")
            })?;
            let arr = cr.as_array().ok_or_else(|| field_err("compress_ratios", "expected a list"))?;
            let mut kinds = Vec::with_capacity(arr.len());
            for (i, r) in arr.iter().enumerate() {
                let r = as_usize(r)
                    .ok_or_else(|| field_err(&format!("compress_ratios[{i}]"), format!("not an integer: {r}")))?;
                kinds.push(match r {
                    0 => AttnKind::Sliding,
                    4 => AttnKind::Csa { ratio: 4 },
                    r if r > 1 => AttnKind::Hca { ratio: r },
                    r => return Err(field_err(&format!("compress_ratios[{i}]"), format!("unsupported ratio {r}"))),
                });
            }
            let mtp = kinds.get(num_layers).map(|k| k.ratio());
            (kinds, mtp)
        };
        if attn_kinds.len() < num_layers {
            return Err(field_err(
                "compress_ratios",
                format!("has {} entries but the model has {num_layers} layers", attn_kinds.len()),
            ));
        }
        let attn_kinds: Vec<AttnKind> = attn_kinds.into_iter().take(num_layers).collect();

        // MoE schedule.
        let num_hash_layers = if let Some(mt) = f.get(&["mlp_layer_types"]) {
            let arr = mt.as_array().ok_or_else(|| field_err("mlp_layer_types", "expected a list"))?;
            let mut n = 0;
            for (i, t) in arr.iter().enumerate().take(num_layers) {
                match t.as_str() {
                    Some("hash_moe") if i == n => n += 1,
                    Some("hash_moe") => {
                        return Err(field_err("mlp_layer_types", "hash layers must come first, without gaps"))
                    }
                    Some("moe") => {}
                    _ => return Err(field_err(&format!("mlp_layer_types[{i}]"), format!("unknown MLP type {t}"))),
                }
            }
            n
        } else {
            f.usize_or(&["num_hash_layers", "n_hash_layers"], 0)?
        };

        // RoPE tables.
        let (main_rope, compress_rope) = if let Some(rp) = f.get(&["rope_parameters"]).and_then(Value::as_object) {
            let theta = |m: &Map<String, Value>, field: &str| -> Result<f64, ConfigError> {
                m.get("rope_theta").and_then(Value::as_f64).ok_or_else(|| field_err(field, "missing rope_theta"))
            };
            let main = rp.get("main").and_then(Value::as_object);
            let comp = rp.get("compress").and_then(Value::as_object);
            match (main, comp) {
                (Some(main), Some(comp)) => (
                    RopeConfig {
                        theta: theta(main, "rope_parameters.main")?,
                        yarn: parse_yarn(&Value::Object(main.clone()), "rope_parameters.main")?,
                    },
                    RopeConfig {
                        theta: theta(comp, "rope_parameters.compress")?,
                        yarn: parse_yarn(&Value::Object(comp.clone()), "rope_parameters.compress")?,
                    },
                ),
                _ => return Err(field_err("rope_parameters", "expected `main` and `compress` entries")),
            }
        } else {
            let main_theta = f.f64_or(&["rope_theta"], 10000.0)?;
            let comp_theta = f.f64_or(&["compress_rope_theta"], 160000.0)?;
            let yarn = if let Some(rs) = f.get(&["rope_scaling"]) {
                parse_yarn(rs, "rope_scaling")?
            } else if let Some(factor) = f.get(&["rope_factor"]).and_then(Value::as_f64) {
                // DeepSeek inference spelling.
                Some(YarnConfig {
                    factor,
                    original_max_position_embeddings: f.f64(&["original_seq_len"])?,
                    beta_fast: f.f64_or(&["beta_fast"], 32.0)?,
                    beta_slow: f.f64_or(&["beta_slow"], 1.0)?,
                })
            } else {
                None
            };
            (RopeConfig { theta: main_theta, yarn: None }, RopeConfig { theta: comp_theta, yarn })
        };

        if let Some(sf) = f.get(&["scoring_func", "score_func"]).and_then(Value::as_str) {
            if sf != "sqrtsoftplus" {
                return Err(field_err("scoring_func", format!("V4 uses sqrtsoftplus, got `{sf}`")));
            }
        }
        let weight_format = match f.get(&["quantization_config"]) {
            Some(q) => match q.get("quant_method").and_then(Value::as_str) {
                Some("fp8") | None => WeightFormat::Fp8,
                Some(other) => {
                    return Err(field_err("quantization_config.quant_method", format!("unsupported `{other}`")))
                }
            },
            None => match f.get(&["dtype"]).and_then(Value::as_str) {
                Some("fp8") => WeightFormat::Fp8,
                _ => WeightFormat::Dense,
            },
        };

        let cfg = ModelConfig {
            vocab_size: f.usize(&["vocab_size"])?,
            hidden_size,
            num_layers,
            num_heads: f.usize(&["num_attention_heads", "n_heads"])?,
            head_dim,
            rope_dim,
            q_lora_rank: f.usize(&["q_lora_rank"])?,
            o_groups: f.usize(&["o_groups"])?,
            o_lora_rank: f.usize(&["o_lora_rank"])?,
            sliding_window: f.usize(&["sliding_window", "window_size"])?,
            attn_kinds,
            mtp_compress_ratio,
            main_rope,
            compress_rope,
            max_position_embeddings: f.usize_or(&["max_position_embeddings"], 0)?,
            index_n_heads: f.usize_or(&["index_n_heads"], 0)?,
            index_head_dim: f.usize_or(&["index_head_dim"], 0)?,
            index_topk: f.usize_or(&["index_topk"], 0)?,
            hc_mult: f.usize_or(&["hc_mult"], 4)?,
            hc_sinkhorn_iters: f.usize_or(&["hc_sinkhorn_iters"], 20)?,
            hc_eps: f.f64_or(&["hc_eps"], 1e-6)?,
            rms_norm_eps: f.f64_or(&["rms_norm_eps", "norm_eps"], 1e-6)?,
            n_routed_experts: f.usize(&["n_routed_experts"])?,
            n_shared_experts: f.usize_or(&["n_shared_experts"], 1)?,
            num_experts_per_tok: f.usize(&["num_experts_per_tok", "n_activated_experts"])?,
            moe_intermediate_size: f.usize(&["moe_intermediate_size", "moe_inter_dim"])?,
            num_hash_layers,
            routed_scaling_factor: f.f64_or(&["routed_scaling_factor", "route_scale"], 1.0)?,
            swiglu_limit: f.f64_or(&["swiglu_limit"], 0.0)?,
            num_nextn_predict_layers: f.usize_or(&["num_nextn_predict_layers", "n_mtp_layers"], 0)?,
            bos_token_id: f.usize_or(&["bos_token_id"], 0)? as u32,
            eos_token_id: f.usize_or(&["eos_token_id"], 1)? as u32,
            weight_format,
        };
        if cfg.max_position_embeddings == 0 {
            let mut c = cfg;
            c.max_position_embeddings = 1 << 20;
            c.validate()?;
            return Ok(c);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the relations between fields that the forward pass relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pos = |name: &str, v: usize| {
            if v == 0 {
                Err(field_err(name, "must be positive"))
            } else {
                Ok(())
            }
        };
        pos("vocab_size", self.vocab_size)?;
        pos("hidden_size", self.hidden_size)?;
        pos("num_hidden_layers", self.num_layers)?;
        pos("num_attention_heads", self.num_heads)?;
        pos("head_dim", self.head_dim)?;
        pos("o_groups", self.o_groups)?;
        pos("o_lora_rank", self.o_lora_rank)?;
        pos("q_lora_rank", self.q_lora_rank)?;
        pos("sliding_window", self.sliding_window)?;
        pos("n_routed_experts", self.n_routed_experts)?;
        pos("num_experts_per_tok", self.num_experts_per_tok)?;
        pos("moe_intermediate_size", self.moe_intermediate_size)?;
        pos("hc_mult", self.hc_mult)?;
        pos("hc_sinkhorn_iters", self.hc_sinkhorn_iters)?;
        if self.rope_dim == 0 || !self.rope_dim.is_multiple_of(2) || self.rope_dim > self.head_dim {
            return Err(field_err(
                "qk_rope_head_dim",
                format!("must be even and at most head_dim, got {}", self.rope_dim),
            ));
        }
        if !self.num_heads.is_multiple_of(self.o_groups) {
            return Err(field_err(
                "o_groups",
                format!("{} heads do not split into {} groups", self.num_heads, self.o_groups),
            ));
        }
        if self.num_experts_per_tok > self.n_routed_experts {
            return Err(field_err("num_experts_per_tok", "exceeds n_routed_experts"));
        }
        if self.n_shared_experts != 1 {
            return Err(field_err(
                "n_shared_experts",
                format!("V4 has exactly one shared expert, got {}", self.n_shared_experts),
            ));
        }
        if self.num_hash_layers > self.num_layers {
            return Err(field_err("num_hash_layers", "exceeds the number of layers"));
        }
        if self.attn_kinds.iter().any(|k| k.has_indexer()) {
            pos("index_n_heads", self.index_n_heads)?;
            pos("index_head_dim", self.index_head_dim)?;
            pos("index_topk", self.index_topk)?;
            if self.rope_dim > self.index_head_dim {
                return Err(field_err("index_head_dim", "smaller than the rope dims"));
            }
        }
        if !self.hidden_size.is_multiple_of(2) || !self.moe_intermediate_size.is_multiple_of(2) {
            return Err(field_err("hidden_size", "hidden and intermediate sizes must be even (FP4 packing)"));
        }
        Ok(())
    }

    pub fn attn_kind(&self, layer: usize) -> AttnKind {
        self.attn_kinds[layer]
    }

    pub fn moe_kind(&self, layer: usize) -> MoeKind {
        if layer < self.num_hash_layers {
            MoeKind::Hash
        } else {
            MoeKind::Learned
        }
    }

    pub fn rope_for(&self, kind: AttnKind) -> RopeConfig {
        if kind.has_compressor() {
            self.compress_rope
        } else {
            self.main_rope
        }
    }

    pub fn heads_per_group(&self) -> usize {
        self.num_heads / self.o_groups
    }

    pub fn nope_dim(&self) -> usize {
        self.head_dim - self.rope_dim
    }

    /// Writes the official hub spelling (what `emesh gen-model` emits).
    pub fn to_official_json(&self) -> Value {
        let mut ratios: Vec<usize> = self.attn_kinds.iter().map(|k| k.ratio()).collect();
        ratios.push(self.mtp_compress_ratio.unwrap_or(0));
        let mut m = serde_json::json!({
            "architectures": ["DeepseekV4ForCausalLM"],
            "model_type": "deepseek_v4",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": 1,
            "head_dim": self.head_dim,
            "qk_rope_head_dim": self.rope_dim,
            "q_lora_rank": self.q_lora_rank,
            "o_groups": self.o_groups,
            "o_lora_rank": self.o_lora_rank,
            "sliding_window": self.sliding_window,
            "compress_ratios": ratios,
            "compress_rope_theta": self.compress_rope.theta,
            "rope_theta": self.main_rope.theta,
            "max_position_embeddings": self.max_position_embeddings,
            "index_n_heads": self.index_n_heads,
            "index_head_dim": self.index_head_dim,
            "index_topk": self.index_topk,
            "hc_mult": self.hc_mult,
            "hc_sinkhorn_iters": self.hc_sinkhorn_iters,
            "hc_eps": self.hc_eps,
            "rms_norm_eps": self.rms_norm_eps,
            "n_routed_experts": self.n_routed_experts,
            "n_shared_experts": self.n_shared_experts,
            "num_experts_per_tok": self.num_experts_per_tok,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_hash_layers": self.num_hash_layers,
            "scoring_func": "sqrtsoftplus",
            "topk_method": "noaux_tc",
            "norm_topk_prob": true,
            "routed_scaling_factor": self.routed_scaling_factor,
            "swiglu_limit": self.swiglu_limit,
            "hidden_act": "silu",
            "num_nextn_predict_layers": self.num_nextn_predict_layers,
            "tie_word_embeddings": false,
            "attention_bias": false,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        });
        let obj = m.as_object_mut().expect("object literal");
        if let Some(y) = self.compress_rope.yarn {
            obj.insert(
                "rope_scaling".into(),
                serde_json::json!({
                    "type": "yarn",
                    "factor": y.factor,
                    "original_max_position_embeddings": y.original_max_position_embeddings,
                    "beta_fast": y.beta_fast,
                    "beta_slow": y.beta_slow,
                }),
            );
        }
        if self.weight_format == WeightFormat::Fp8 {
            obj.insert("torch_dtype".into(), "bfloat16".into());
            obj.insert("expert_dtype".into(), "fp4".into());
            obj.insert(
                "quantization_config".into(),
                serde_json::json!({
                    "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                    "scale_fmt": "ue8m0", "weight_block_size": [128, 128]
                }),
            );
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        let dir = std::env::var(crate::names::ENV_FIXTURES_DIR)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
        dir.join("tiny-a")
    }

    #[test]
    fn all_spellings_agree() {
        let dir = fixtures();
        let hf = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let orig = ModelConfig::from_file(&dir.join("config.original.json")).unwrap();
        let inf = ModelConfig::from_file(&dir.join("config.original_inference.json")).unwrap();
        assert_eq!(hf.attn_kinds, orig.attn_kinds);
        assert_eq!(hf.attn_kinds, inf.attn_kinds);
        assert_eq!(
            hf.attn_kinds,
            vec![
                AttnKind::Sliding,
                AttnKind::Csa { ratio: 4 },
                AttnKind::Hca { ratio: 16 },
                AttnKind::Csa { ratio: 4 },
                AttnKind::Hca { ratio: 16 }
            ]
        );
        for c in [&orig, &inf] {
            assert_eq!(hf.num_hash_layers, c.num_hash_layers);
            assert_eq!(hf.compress_rope, c.compress_rope);
            assert_eq!(hf.main_rope, c.main_rope);
            assert_eq!(hf.rope_dim, c.rope_dim);
            assert_eq!(hf.swiglu_limit, c.swiglu_limit);
        }
        assert_eq!(hf.num_hash_layers, 2);
        let fp8 = ModelConfig::from_file(&dir.join("config.original.fp8.json")).unwrap();
        assert_eq!(fp8.weight_format, WeightFormat::Fp8);
    }

    #[test]
    fn official_roundtrip() {
        let hf = ModelConfig::from_file(&fixtures().join("config.json")).unwrap();
        let back = ModelConfig::from_json(&hf.to_official_json()).unwrap();
        assert_eq!(back.attn_kinds, hf.attn_kinds);
        assert_eq!(back.compress_rope, hf.compress_rope);
    }

    #[test]
    fn rejects_bad_fields() {
        let e = ModelConfig::from_json_str(r#"{"hidden_size": 8}"#).unwrap_err();
        assert!(e.to_string().contains("num_hidden_layers"), "{e}");
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join("config.original.json")).unwrap()).unwrap();
        v["compress_ratios"] = serde_json::json!([0, 4]);
        let e = ModelConfig::from_json(&v).unwrap_err();
        assert!(e.to_string().contains("compress_ratios"), "{e}");
        v["compress_ratios"] = serde_json::json!([0, 4, 16, 4, 16]);
        v["o_groups"] = serde_json::json!(3);
        let e = ModelConfig::from_json(&v).unwrap_err();
        assert!(e.to_string().contains("o_groups"), "{e}");
    }

    #[test]
    fn official_v4_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/configs");
        let pro = ModelConfig::from_file(&dir.join("deepseek-v4-pro.json")).unwrap();
        assert_eq!(pro.num_layers, 61);
        assert_eq!(pro.attn_kinds.iter().filter(|k| k.has_indexer()).count(), 30);
        assert_eq!(pro.attn_kinds.iter().filter(|k| matches!(k, AttnKind::Hca { ratio: 128 })).count(), 31);
        assert_eq!(pro.mtp_compress_ratio, Some(0));
        let flash = ModelConfig::from_file(&dir.join("deepseek-v4-flash.json")).unwrap();
        assert_eq!(flash.num_layers, 43);
        assert_eq!(flash.attn_kinds[0], AttnKind::Sliding);
        assert_eq!(flash.num_hash_layers, 3);
    }
}
