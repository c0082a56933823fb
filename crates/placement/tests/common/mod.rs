//! Test helpers: where the official configs and fixtures live.

#![allow(dead_code)]

use emesh_common::ModelConfig;
use std::path::PathBuf;

/// `EMESH_CONFIGS_DIR`, else `../shared/models/configs` beside the workspace.
pub fn configs_dir() -> PathBuf {
    std::env::var("EMESH_CONFIGS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/configs"))
}

pub fn fixtures_dir() -> PathBuf {
    std::env::var(emesh_common::names::ENV_FIXTURES_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

/// Reads a config file; a missing file fails the test.
pub fn read_config_text(file: &str) -> String {
    let p = configs_dir().join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

pub fn v4(file: &str) -> ModelConfig {
    ModelConfig::from_json_str(&read_config_text(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

pub fn pro() -> ModelConfig {
    v4("deepseek-v4-pro.json")
}

pub fn flash() -> ModelConfig {
    v4("deepseek-v4-flash.json")
}

/// A small model that keeps every V4 feature (SWA, CSA, HCA, hash layers, MTP).
pub fn tiny(experts: usize) -> ModelConfig {
    let mut c = flash();
    c.hidden_size = 256;
    c.num_heads = 8;
    c.head_dim = 128;
    c.o_groups = 4;
    c.o_lora_rank = 64;
    c.q_lora_rank = 128;
    c.index_n_heads = 4;
    c.index_head_dim = 64;
    c.moe_intermediate_size = 128;
    c.n_routed_experts = experts;
    c.num_experts_per_tok = experts.min(2);
    c.num_layers = 4;
    c.attn_kinds.truncate(4);
    c.vocab_size = 1000;
    c
}

/// Name -> (dtype, shape) of a safetensors file header.
pub fn safetensors_header(path: &std::path::Path) -> Vec<(String, String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let v: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut out = Vec::new();
    for (k, t) in v.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        let dtype = t["dtype"].as_str().unwrap().to_string();
        let shape = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        out.push((k.clone(), dtype, shape));
    }
    out.sort();
    out
}
