//! The models `emesh plan` knows by name, and reading any supported `config.json`.
//!
//! Sizing needs only a model's config, and the official ones are small public files, so the
//! three DeepSeek configs are compiled into the binary: a cluster can be planned on a laptop
//! with no checkpoint and no shared folder. Other configs are recognised by `model_type`
//! (`deepseek_v4` or `deepseek_v3`), so a downloaded or generated checkpoint's `config.json`
//! sizes the same way. The caller reads files; this module only parses text.

use crate::error::{input, PlanError};
use crate::inventory::WeightForm;
use crate::profile::ModelProfile;
use crate::v3::V3Config;
use emesh_common::ModelConfig;
use serde_json::Value;

/// One built-in model: the name `--model` accepts, the display name, and the official config.
pub struct Builtin {
    pub name: &'static str,
    pub display: &'static str,
    pub config: &'static str,
}

/// Byte-identical copies of the official Hugging Face `config.json` files.
pub const BUILTINS: [Builtin; 3] = [
    Builtin {
        name: "deepseek-v4-pro",
        display: "DeepSeek-V4-Pro",
        config: include_str!("../configs/deepseek-v4-pro.json"),
    },
    Builtin {
        name: "deepseek-v4-flash",
        display: "DeepSeek-V4-Flash",
        config: include_str!("../configs/deepseek-v4-flash.json"),
    },
    Builtin { name: "deepseek-v3", display: "DeepSeek-V3", config: include_str!("../configs/deepseek-v3.json") },
];

/// The built-in model called `name` (case-insensitive).
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name.eq_ignore_ascii_case(name))
}

/// The names [`builtin`] accepts, comma-separated, for error messages.
pub fn builtin_names() -> String {
    BUILTINS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
}

/// Profiles a config by its `model_type`: V4 configs through the tensor inventory in the form the
/// config declares (FP8/FP4 release, else BF16), V3 configs through their MLA shapes.
pub fn profile_from_config(name: &str, text: &str) -> Result<ModelProfile, PlanError> {
    let v: Value = serde_json::from_str(text).map_err(|e| PlanError::Config(format!("not JSON: {e}")))?;
    match v.get("model_type").and_then(Value::as_str) {
        Some("deepseek_v4") => {
            let cfg = ModelConfig::from_json(&v)?;
            ModelProfile::from_v4(name, &cfg, WeightForm::from_config(&cfg, WeightForm::DenseBf16))
        }
        Some("deepseek_v3") => Ok(ModelProfile::from_v3(name, &V3Config::from_json_str(text)?)),
        Some(other) => Err(input("model_type", format!("`{other}` is not supported (deepseek_v4 or deepseek_v3)"))),
        None => Err(input("model_type", "missing; expected deepseek_v4 or deepseek_v3")),
    }
}
