//! Where generated demo models live, and making one on first use.

use anyhow::{Context, Result};
use emesh_common::names;
use emesh_model::gen::{self, GenDtype};
use std::path::{Path, PathBuf};

/// Folder for generated preset models: `$EMESH_MODELS_DIR` or `./models`.
pub fn models_dir() -> PathBuf {
    std::env::var(names::ENV_MODELS_DIR).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("models"))
}

/// The V4 tokenizer folder to copy into generated models, when one can be found:
/// `$EMESH_TOKENIZER_DIR`, else `../shared/models/deepseek-v4-tokenizer`.
pub fn default_tokenizer() -> Option<PathBuf> {
    let dir = std::env::var(names::ENV_TOKENIZER_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("../shared/models/deepseek-v4-tokenizer"));
    Some(dir.join("tokenizer.json")).filter(|p| p.exists())
}

/// Copies a file and leaves the copy writable (sources may be read-only).
pub fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    let _ = std::fs::remove_file(dst);
    std::fs::copy(src, dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    let mut perm = std::fs::metadata(dst)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(dst, perm)?;
    Ok(())
}

/// Returns the folder of preset `name`, generating it (f32, seed 0) if it is not there yet.
pub fn ensure_preset(name: &str) -> Result<PathBuf> {
    let dir = models_dir().join(name);
    if dir.join("config.json").exists() {
        return Ok(dir);
    }
    let cfg = gen::preset(name)?;
    eprintln!("generating the `{name}` preset model into {} (once)...", dir.display());
    gen::generate(&dir, &cfg, GenDtype::F32, 0, 2048 << 20, |_| {})?;
    if cfg.vocab_size >= 128000 {
        if let Some(t) = default_tokenizer() {
            copy_file(&t, &dir.join("tokenizer.json"))?;
        }
    }
    Ok(dir)
}
