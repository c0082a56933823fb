//! Bad checkpoints give errors that name the file and the tensor, never a panic.

use emesh_model::gen::{self, GenDtype};
use emesh_model::{Engine, LoadOptions};
use std::path::Path;

fn gen_tiny(dir: &Path, dtype: GenDtype) {
    let cfg = gen::preset("tiny").unwrap();
    gen::generate(dir, &cfg, dtype, 1, 1 << 30, |_| {}).unwrap();
}

/// Rewrites the safetensors header of `file` with `edit`, keeping the data bytes.
fn edit_header(file: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(h.as_object_mut().unwrap());
    let hb = serde_json::to_vec(&h).unwrap();
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&hb);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(file, out).unwrap();
}

fn load_err(dir: &Path) -> String {
    match Engine::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named() {
    let d = tempfile::tempdir().unwrap();
    gen_tiny(d.path(), GenDtype::F32);
    edit_header(&d.path().join("model.safetensors"), |h| {
        let v = h.remove("layers.3.attn.wkv.weight").unwrap();
        h.insert("layers.3.attn.wkv_renamed".into(), v);
    });
    let e = load_err(d.path());
    assert!(e.contains("layers.3.attn.wkv.weight") && e.contains("missing"), "{e}");
}

#[test]
fn wrong_shape_is_named_with_the_expected_shape() {
    let d = tempfile::tempdir().unwrap();
    gen_tiny(d.path(), GenDtype::F32);
    edit_header(&d.path().join("model.safetensors"), |h| {
        // Same byte count, transposed shape.
        h["layers.1.attn.wq_a.weight"]["shape"] = serde_json::json!([128, 256]);
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("layers.1.attn.wq_a.weight") && e.contains("[256, 128]"),
        "{e}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let d = tempfile::tempdir().unwrap();
    gen_tiny(d.path(), GenDtype::F32);
    edit_header(&d.path().join("model.safetensors"), |h| {
        let t = &mut h["layers.0.ffn.gate.tid2eid"];
        t["dtype"] = "F32".into();
        t["shape"] = serde_json::json!([1000, 4]);
    });
    let e = load_err(d.path());
    assert!(e.contains("layers.0.ffn.gate.tid2eid") && e.contains("I64"), "{e}");
}

#[test]
fn fp8_weight_without_scale_is_named() {
    let d = tempfile::tempdir().unwrap();
    gen_tiny(d.path(), GenDtype::Fp8);
    edit_header(&d.path().join("model.safetensors"), |h| {
        h.remove("layers.2.attn.wo_b.scale");
    });
    let e = load_err(d.path());
    assert!(e.contains("layers.2.attn.wo_b.weight") && e.contains("scale"), "{e}");
}

#[test]
fn truncated_file_is_reported() {
    let d = tempfile::tempdir().unwrap();
    gen_tiny(d.path(), GenDtype::F32);
    let f = d.path().join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len - 1000).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");
}

#[test]
fn garbage_header_is_reported() {
    let d = tempfile::tempdir().unwrap();
    gen_tiny(d.path(), GenDtype::F32);
    std::fs::write(d.path().join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors") && e.contains("JSON"), "{e}");
    std::fs::write(d.path().join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap();
    assert!(load_err(d.path()).contains("header length"));
}

#[test]
fn sharded_checkpoint_loads_only_what_a_shard_needs() {
    let d = tempfile::tempdir().unwrap();
    let cfg = gen::preset("tiny").unwrap();
    let rep = gen::generate(d.path(), &cfg, GenDtype::Fp8, 1, 256 << 10, |_| {}).unwrap();
    assert!(rep.shards > 1);
    let ck = emesh_model::checkpoint::Checkpoint::open(d.path()).unwrap();
    let mut shard = emesh_model::Shard::full(&cfg);
    for (l, e) in shard.experts.iter_mut().enumerate() {
        e.retain(|&x| x as usize % 2 == l % 2);
    }
    shard.groups = 1..2;
    let names = emesh_model::weights::tensor_names(&cfg, &shard, &ck);
    assert!(names
        .iter()
        .all(|n| !n.contains("experts.1.") || n.starts_with("layers.1.") || n.starts_with("layers.3.")));
    let w = emesh_model::weights::load(&cfg, &shard, &ck, false).unwrap();
    let full = emesh_model::weights::load(&cfg, &emesh_model::Shard::full(&cfg), &ck, false).unwrap();
    assert!(w.bytes() < full.bytes());
    assert_eq!(w.layers[0].attn.sink.len(), cfg.num_heads / 2);
    assert!(w.layers[0].moe.experts[1].is_none() && w.layers[0].moe.experts[0].is_some());
}

#[test]
fn memory_budget_is_enforced() {
    let d = tempfile::tempdir().unwrap();
    gen_tiny(d.path(), GenDtype::F32);
    let e = Engine::load(d.path(), &LoadOptions { memory_budget: Some(1 << 20), ..Default::default() }).err().unwrap();
    assert!(e.to_string().contains("memory budget"), "{e}");
}
