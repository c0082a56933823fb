//! Helpers shared by the workspace tests: where the shared fixtures live.

use std::path::{Path, PathBuf};

/// Root of the shared fixtures (`EMESH_FIXTURES_DIR`, default `../shared/fixtures` beside the
/// workspace).
pub fn fixtures_dir() -> PathBuf {
    std::env::var(emesh_common::names::ENV_FIXTURES_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("../shared/fixtures"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fixture folders to run: `EMESH_FIXTURES` (colon-separated) or every folder under the
/// fixtures root that has an `expected.safetensors`.
pub fn fixture_folders() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var(emesh_common::names::ENV_FIXTURES) {
        return list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
    }
    let root = fixtures_dir();
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read fixtures folder {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.safetensors").exists())
        .collect();
    out.sort();
    out
}
