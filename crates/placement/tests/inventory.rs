mod common;

use emesh_common::ModelConfig;
use emesh_placement::{DType, Inventory, Shard, WeightForm};

#[test]
fn pro_release_matches_published_index() {
    let inv = Inventory::new(&common::pro(), WeightForm::Release);
    assert_eq!(inv.len(), 145_116);
    assert_eq!(inv.total_bytes(), 864_704_792_696);
    assert_eq!(inv.parameters(), 1_598_837_347_742);
    let wq_a = inv.get("layers.0.attn.wq_a.scale").unwrap();
    assert_eq!((wq_a.dtype, wq_a.shape.clone()), (DType::F8E8M0, vec![12, 56]));
    let e = inv.get("layers.5.ffn.experts.383.w2.weight").unwrap();
    assert_eq!((e.dtype, e.shape.clone()), (DType::I8, vec![7168, 1536]));
    assert!(inv.get("layers.2.ffn.gate.tid2eid").is_some());
    assert!(inv.get("layers.3.ffn.gate.tid2eid").is_none());
    assert!(inv.get("layers.60.attn.indexer.wq_b.weight").is_some());
    assert!(inv.get("layers.59.attn.indexer.wq_b.weight").is_none());
}

#[test]
fn model_bytes_add_up_to_the_inventory() {
    for cfg in [common::pro(), common::flash()] {
        for form in [WeightForm::Release, WeightForm::DenseBf16] {
            let inv = Inventory::new(&cfg, form);
            let mb = emesh_placement::ModelBytes::from_inventory(&cfg, &inv);
            assert_eq!(mb.total(), inv.total_bytes());
        }
    }
}

#[test]
fn flash_release_matches_published_index() {
    let inv = Inventory::new(&common::flash(), WeightForm::Release);
    assert_eq!(inv.len(), 69_187);
    assert_eq!(inv.total_bytes(), 159_609_485_896);
    let wo_a = inv.get("layers.7.attn.wo_a.scale").unwrap();
    assert_eq!(wo_a.shape, vec![64, 32]);
    let w1 = inv.get("layers.0.ffn.experts.0.w1.scale").unwrap();
    assert_eq!(w1.shape, vec![2048, 128]);
}

#[test]
fn mtp_block_has_no_compressor_and_a_biased_gate() {
    let cfg = common::pro();
    let inv = Inventory::new(&cfg, WeightForm::Release);
    let mtp: Vec<_> = inv.tensors.iter().filter(|t| t.name.starts_with("mtp.0.")).collect();
    assert!(mtp.iter().all(|t| !t.name.contains("compressor") && !t.name.contains("indexer")));
    assert!(mtp.iter().all(|t| t.layer.map(|l| l.index()) == Some(cfg.num_layers)));
    for name in ["e_proj.weight", "e_proj.scale", "h_proj.scale", "enorm.weight", "hnorm.weight", "norm.weight"] {
        assert!(inv.get(&format!("mtp.0.{name}")).is_some(), "{name}");
    }
    for name in ["ffn.gate.bias", "hc_head_fn", "hc_head_base", "hc_head_scale", "attn.attn_sink"] {
        assert!(inv.get(&format!("mtp.0.{name}")).is_some(), "{name}");
    }
    assert!(inv.get("mtp.0.ffn.gate.tid2eid").is_none());
    let mtp_params: u64 = Inventory { form: inv.form, tensors: mtp.into_iter().cloned().collect() }.parameters();
    assert_eq!(mtp_params, 25_840_145_979);
}

#[test]
fn shard_classes_cover_the_split_tensors() {
    let inv = Inventory::new(&common::flash(), WeightForm::Release);
    let shard = |n: &str| inv.get(n).unwrap().shard;
    assert_eq!(shard("layers.2.attn.wq_b.weight"), Shard::Heads);
    assert_eq!(shard("layers.2.attn.wq_b.scale"), Shard::Heads);
    assert_eq!(shard("layers.2.attn.attn_sink"), Shard::Heads);
    assert_eq!(shard("layers.2.attn.wo_a.weight"), Shard::OutGroups);
    assert_eq!(shard("layers.2.attn.wo_b.scale"), Shard::OutGroups);
    assert_eq!(shard("layers.2.ffn.shared_experts.w2.weight"), Shard::SharedExpert);
    assert_eq!(shard("layers.2.attn.indexer.wq_b.weight"), Shard::Replicated);
    assert_eq!(shard("layers.2.ffn.experts.17.w3.scale"), Shard::Expert(17.into()));
}

fn compare_with_fixture(cfg: &ModelConfig, form: WeightForm, file: &str) {
    let path = common::fixtures_dir().join("tiny-a").join(file);
    let header = common::safetensors_header(&path);
    let inv = Inventory::new(cfg, form);
    let mut ours: Vec<_> =
        inv.tensors.iter().map(|t| (t.name.clone(), t.dtype.safetensors_name().to_string(), t.shape.clone())).collect();
    ours.sort();
    assert_eq!(ours.len(), header.len(), "{file}: tensor count");
    for (a, b) in ours.iter().zip(&header) {
        assert_eq!(a, b, "{file}");
    }
}

#[test]
fn dense_f32_matches_fixture_checkpoint() {
    let dir = common::fixtures_dir().join("tiny-a");
    let cfg = ModelConfig::from_file(&dir.join("config.original.json")).unwrap();
    compare_with_fixture(&cfg, WeightForm::DenseF32, "model.safetensors");
}

#[test]
fn release_matches_fixture_fp8_checkpoint() {
    let dir = common::fixtures_dir().join("tiny-a");
    let cfg = ModelConfig::from_file(&dir.join("config.original.fp8.json")).unwrap();
    assert_eq!(WeightForm::from_config(&cfg, WeightForm::DenseF32), WeightForm::Release);
    compare_with_fixture(&cfg, WeightForm::Release, "model.fp8.safetensors");
}

#[test]
fn dense_bf16_keeps_f32_parameters() {
    let inv = Inventory::new(&common::flash(), WeightForm::DenseBf16);
    let release = Inventory::new(&common::flash(), WeightForm::Release);
    let unscaled = release.tensors.iter().filter(|t| !t.name.ends_with(".scale")).count();
    assert_eq!(inv.len(), unscaled);
    assert_eq!(inv.parameters(), release.parameters());
    let dt = |n: &str| inv.get(n).unwrap().dtype;
    assert_eq!(dt("layers.0.ffn.experts.0.w1.weight"), DType::BF16);
    assert_eq!(dt("layers.0.hc_attn_fn"), DType::F32);
    assert_eq!(dt("layers.0.ffn.gate.tid2eid"), DType::I64);
    assert!(inv.tensors.iter().all(|t| !t.name.ends_with(".scale")));
    let e = inv.get("layers.4.ffn.experts.9.w2.weight").unwrap();
    assert_eq!(e.shape, vec![4096, 2048]);
    assert_eq!(e.bytes, 4096 * 2048 * 2);
}
