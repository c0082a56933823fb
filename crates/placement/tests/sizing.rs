mod common;

use emesh_placement::sizing::{min_cluster, Bound};
use emesh_placement::{size, Hardware, ModelProfile, PlanError, SizingRequest, V3Config, WeightForm};

fn v3() -> ModelProfile {
    let c = V3Config::from_json_str(&common::read_config_text("deepseek-v3.json")).unwrap();
    ModelProfile::from_v3("DeepSeek-V3", &c)
}

/// DeepSeek's published V3/R1 service figures are day averages over a fleet that grows and
/// shrinks with load (tokens served / node-seconds). The model predicts full-load capacity;
/// this one factor, the mean fraction of capacity in use, is fitted to the two published
/// throughputs together. The per-sequence decode speed does not depend on it and is an
/// unfitted check of the step-time model.
const DEEPSEEK_UTILIZATION: f64 = 0.67;
/// Share of input tokens DeepSeek reported as served from the on-disk prefix cache.
const DEEPSEEK_CACHE_HIT: f64 = 0.563;
const TOLERANCE: f64 = 0.25;

fn rel(pred: f64, published: f64) -> f64 {
    (pred - published) / published
}

#[test]
fn v3_checkpoint_and_active_parameters() {
    let c = V3Config::from_json_str(&common::read_config_text("deepseek-v3.json")).unwrap();
    // Published: 688.6 GB over 163 shards, MTP included.
    assert!(rel(c.checkpoint_bytes() as f64, 688.6e9).abs() < 0.001, "{}", c.checkpoint_bytes());
    // Published: 37B activated parameters.
    assert!(rel(v3().active_params(), 37e9).abs() < 0.02, "{}", v3().active_params());
    assert!(V3Config::from_json_str("{}").is_err());
    assert!(V3Config::from_json_str(&common::read_config_text("deepseek-v4-pro.json")).is_err());
}

#[test]
fn v3_matches_deepseek_published_serving_figures() {
    let hw = Hardware::parse("h800").unwrap();
    let p = v3();

    // Prefill: EP32 over 4 nodes, attention DP32, 32 redundant experts (9 slots per GPU),
    // 4K prompts, 16K tokens per GPU per step.
    let mut req = SizingRequest::new(hw.clone(), 4, 8, 4096);
    req.redundant_experts = 32;
    req.assumptions.prefill_cache_hit = DEEPSEEK_CACHE_HIT;
    req.assumptions.utilization = DEEPSEEK_UTILIZATION;
    let r = size(&p, &req).unwrap();
    let l = &r.layouts[0];
    assert_eq!((l.tp, l.dp, l.ep, l.expert_slots), (1, 32, 32, 9));
    let prefill = l.prefill.as_ref().unwrap().tokens_per_s_node;

    // Decode: EP144 over 18 nodes, DP144, 2 slots per GPU, 4,989 tokens average cache,
    // 128 sequences per GPU.
    let mut req = SizingRequest::new(hw, 18, 8, 4989);
    req.redundant_experts = 32;
    req.batch = 128;
    req.assumptions.utilization = DEEPSEEK_UTILIZATION;
    let r = size(&p, &req).unwrap();
    let l = &r.layouts[0];
    assert_eq!((l.tp, l.ep, l.expert_slots), (1, 144, 2));
    let d = l.decode.as_ref().unwrap();
    assert_eq!(d.batch, 128);

    println!("| quantity | published | predicted | error |");
    println!("|---|---|---|---|");
    let rows = [
        ("prefill input tok/s per node (incl. cache hits)", 73_700.0, prefill),
        ("decode output tok/s per node", 14_800.0, d.tokens_per_s_node),
        ("decode tok/s per sequence (20-22 published)", 21.0, d.tokens_per_s_seq),
    ];
    for (what, published, predicted) in rows {
        println!("| {what} | {published:.1} | {predicted:.1} | {:+.1}% |", 100.0 * rel(predicted, published));
    }
    for (what, published, predicted) in rows {
        assert!(rel(predicted, published).abs() <= TOLERANCE, "{what}: {predicted} vs {published}");
    }
}

#[test]
fn v4_profiles_agree_with_the_spec() {
    let pro = ModelProfile::from_v4("V4-Pro", &common::pro(), WeightForm::Release).unwrap();
    assert_eq!(pro.weight_bytes(), 850_748_205_004);
    assert!(rel(pro.active_params(), 48.85e9).abs() < 0.002, "{}", pro.active_params());
    let flash = ModelProfile::from_v4("V4-Flash", &common::flash(), WeightForm::Release).unwrap();
    assert_eq!(flash.weight_bytes(), 156_015_698_140);
    assert!(rel(flash.active_params(), 13.27e9).abs() < 0.002, "{}", flash.active_params());
    // Cache growth per token (spec section 7.4, FP8 entries + FP8 indexer keys).
    let per_token = |p: &ModelProfile| (p.kv_bytes(1 << 21) - p.kv_bytes(1 << 20)) as f64 / (1 << 20) as f64;
    assert!((per_token(&pro) - 5511.4).abs() < 0.5, "{}", per_token(&pro));
    assert!((per_token(&flash) - 3850.0).abs() < 1.0, "{}", per_token(&flash));
    let gib = pro.kv_bytes(1 << 20) as f64 / (1u64 << 30) as f64;
    assert!((gib - 5.40).abs() < 0.03, "{gib}");
}

#[test]
fn pro_report_lists_layouts_and_the_smallest_cluster() {
    let pro = ModelProfile::from_v4("V4-Pro", &common::pro(), WeightForm::Release).unwrap();
    let req = SizingRequest::new(Hardware::parse("h100-80g").unwrap(), 2, 8, 65536);
    let r = size(&pro, &req).unwrap();
    assert_eq!(r.layouts.iter().map(|l| l.tp).collect::<Vec<_>>(), vec![1, 2, 4, 8]);
    for l in &r.layouts {
        assert_eq!(l.tp * l.dp, 16);
        assert_eq!(l.fits, l.decode.is_some());
        if l.fits {
            let d = l.decode.as_ref().unwrap();
            assert!(d.tokens_per_s_gpu > 0.0 && d.times.step > 0.0);
            assert!(l.memory.weights() + l.memory.overhead + l.memory.cache <= l.memory.capacity);
        } else {
            assert!(l.problem.as_ref().unwrap().contains("GiB"));
        }
    }
    let min = r.min_cluster.clone().unwrap();
    let mut smaller = req.clone();
    smaller.nodes = min.nodes;
    assert!(size(&pro, &smaller).unwrap().layouts.iter().any(|l| l.fits));
    if min.nodes > 1 {
        smaller.nodes = min.nodes - 1;
        assert!(size(&pro, &smaller).unwrap().layouts.iter().all(|l| !l.fits));
    }
    let text = r.to_string();
    assert!(text.contains("V4-Pro") && text.contains("smallest cluster"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["layouts"].as_array().unwrap().len() == 4);
    println!("{text}");
}

#[test]
fn flash_on_cpu_nodes_and_bad_inputs() {
    let flash = ModelProfile::from_v4("V4-Flash", &common::flash(), WeightForm::Release).unwrap();
    let cpu = Hardware::parse("cpu:512").unwrap();
    let req = SizingRequest::new(cpu, 1, 1, 8192);
    let r = size(&flash, &req).unwrap();
    assert!(r.layouts[0].fits);
    assert_eq!(r.min_cluster.as_ref().unwrap().nodes, 1);
    assert_ne!(r.layouts[0].decode.as_ref().unwrap().bound, Bound::NvLink);
    assert!(matches!(Hardware::parse("tpu"), Err(PlanError::UnknownHardware(_))));
    assert!(Hardware::parse("cpu:-3").is_err());
    let mut bad = req.clone();
    bad.nodes = 0;
    assert!(size(&flash, &bad).is_err());
    let mut bad = req.clone();
    bad.assumptions.utilization = 1.5;
    assert!(size(&flash, &bad).is_err());
    // Every node holds the whole attention and the replicated tensors (about 7 GiB).
    let mut small = req;
    small.hardware = Hardware::parse("cpu:8").unwrap();
    assert!(min_cluster(&flash, &small).is_none());
    small.hardware = Hardware::parse("cpu:32").unwrap();
    let c = min_cluster(&flash, &small).unwrap();
    assert!(c.nodes > 4 && c.nodes < 16, "{c:?}");
}

#[test]
fn extreme_inputs_give_errors_or_reports_not_panics() {
    let flash = ModelProfile::from_v4("V4-Flash", &common::flash(), WeightForm::Release).unwrap();
    let hw = Hardware::parse("b200").unwrap();
    for (nodes, gpn, ctx, batch, red) in [
        (1 << 20, 4096, 1 << 32, 1 << 32, 1 << 24),
        (1, 1, 1, 1, 0),
        (3, 7, 1_000_003, 5, 17),
        (usize::MAX, 2, 10, 0, 0),
        (2, 8, usize::MAX, 0, usize::MAX),
    ] {
        let mut req = SizingRequest::new(hw.clone(), nodes, gpn, ctx);
        req.batch = batch;
        req.redundant_experts = red;
        if let Ok(r) = size(&flash, &req) {
            let _ = r.to_string();
        }
    }
    let mut cfg = common::flash();
    cfg.hidden_size = usize::MAX / 2;
    assert!(ModelProfile::from_v4("x", &cfg, WeightForm::Release).is_err());
}
