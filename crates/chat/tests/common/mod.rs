//! Locating the shared fixtures and tokenizer; a missing file fails the test instead of skipping it.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

fn dir(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default),
    }
}

pub fn fixtures_dir() -> PathBuf {
    dir("EMESH_FIXTURES_DIR", "../../../shared/fixtures")
}

pub fn tokenizer_dir() -> PathBuf {
    dir("EMESH_TOKENIZER_DIR", "../../../shared/models/deepseek-v4-tokenizer")
}

pub fn load_json(relative: &str) -> Value {
    let path = fixtures_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {} is required: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn chat_vectors() -> Value {
    load_json("chat-encoding/vectors.json")
}

/// The array under `key`, asserted non-empty.
pub fn vectors<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    let items = doc[key].as_array().unwrap_or_else(|| panic!("fixture key {key:?} must be an array"));
    assert!(!items.is_empty(), "fixture key {key:?} is empty");
    items
}

pub fn name(v: &Value) -> &str {
    v["name"].as_str().unwrap_or("<unnamed>")
}
