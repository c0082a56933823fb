//! `emesh plan` and `emesh simulate` end to end: the answers an operator sizing a cluster relies
//! on (fits or not, and why; the smallest cluster; reproducible failure simulations), using the
//! configs built into the binary, so these run without any model files.

use std::process::{Command, Output};

fn emesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_emesh")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}\nstderr: {}", stderr(o)))
}

fn plan(model: &str, gpu: &str, nodes: usize, extra: &[&str]) -> Output {
    let nodes = nodes.to_string();
    let mut args = vec!["plan", "--model", model, "--gpu", gpu, "--nodes", &nodes, "--gpus-per-node", "8"];
    args.extend_from_slice(extra);
    emesh(&args)
}

#[test]
fn pro_on_h200_has_a_feasible_layout_and_json_report() {
    let o = plan("deepseek-v4-pro", "h200", 2, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    for key in
        ["model", "hardware", "context", "weight_bytes", "kv_bytes_per_sequence", "layouts", "best", "min_cluster"]
    {
        assert!(v.get(key).is_some(), "missing `{key}`: {v}");
    }
    assert_eq!(v["model"], "DeepSeek-V4-Pro");
    assert_eq!(v["context"], 131072);
    let best = &v["layouts"][v["best"].as_u64().unwrap() as usize];
    assert_eq!(best["fits"], true);
    assert_eq!(best["tp"].as_u64().unwrap() * best["dp"].as_u64().unwrap(), 16);
    for key in ["memory", "expert_slots", "sequences_total", "decode", "prefill"] {
        assert!(!best[key].is_null(), "layout lacks `{key}`: {best}");
    }
    assert!(best["decode"]["tokens_per_s_gpu"].as_f64().unwrap() > 0.0);
    assert!(best["decode"]["a2a_bytes_per_step"].as_f64().unwrap() > 0.0);

    let text = plan("deepseek-v4-pro", "h200", 2, &[]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("DeepSeek-V4-Pro") && text.contains("smallest cluster"), "{text}");
}

#[test]
fn pro_needs_a_larger_cluster_of_h100_than_of_h200() {
    let min_nodes = |gpu: &str| {
        let o = plan("deepseek-v4-pro", gpu, 1, &["--context", "1M", "--json"]);
        json(&o)["min_cluster"]["nodes"].as_u64().unwrap()
    };
    let (h100, h200) = (min_nodes("h100-80g"), min_nodes("h200"));
    assert!(h100 > h200, "h100-80g {h100} nodes, h200 {h200} nodes");
}

#[test]
fn a_cluster_too_small_says_what_is_missing() {
    let o = emesh(&["plan", "--model", "deepseek-v4-pro", "--gpu", "h100-80g", "--nodes", "1", "--gpus-per-node", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("does not fit") && err.contains("GiB") && err.contains("more node"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("does not fit"));
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let o = plan("deepseek-v4-pro", "tpu-v5", 1, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for known in ["h100-80g", "h200", "b200", "cpu:<GiB>"] {
        assert!(err.contains(known), "{err}");
    }
    let o = plan("no-such-model", "h200", 1, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("deepseek-v4-flash"), "{}", stderr(&o));
    for extra in [&["--context", "lots"][..], &["--batch", "0"], &["--utilization", "2"]] {
        let o = plan("deepseek-v4-flash", "h200", 1, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    let o = plan("deepseek-v4-flash", "h200", 0, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn configs_by_path_and_v3_are_recognised_by_model_type() {
    let dir = tempfile::tempdir().unwrap();
    let v3 = r#"{"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168,
        "intermediate_size": 18432, "num_hidden_layers": 61, "num_attention_heads": 128,
        "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
        "moe_intermediate_size": 2048, "first_k_dense_replace": 3, "num_nextn_predict_layers": 1,
        "n_group": 8, "topk_group": 4}"#;
    std::fs::write(dir.path().join("config.json"), v3).unwrap();
    let path = dir.path().to_str().unwrap();
    let by_path = json(&plan(path, "h800", 4, &["--context", "4096", "--json"]));
    let by_name = json(&plan("deepseek-v3", "h800", 4, &["--context", "4096", "--json"]));
    assert_eq!(by_path["weight_bytes"], by_name["weight_bytes"]);
    assert_eq!(by_path["layouts"], by_name["layouts"]);

    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let o = plan(path, "h800", 4, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("model_type"), "{}", stderr(&o));
}

#[test]
fn simulate_with_a_seed_is_reproducible() {
    let run = |seed: &str| {
        let o = emesh(&[
            "simulate",
            "--model",
            "deepseek-v4-flash",
            "--gpu",
            "h200",
            "--nodes",
            "2",
            "--gpus-per-node",
            "8",
            "--mtbf-hours",
            "500",
            "--seed",
            seed,
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o.stdout
    };
    let (a, b) = (run("7"), run("7"));
    assert_eq!(a, b);
    assert_ne!(a, run("8"));
    let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        let availability = r["availability"].as_f64().unwrap();
        assert!(r["failures"].as_u64().unwrap() > 0 && (0.0..=1.0).contains(&availability), "{r}");
        assert!(r.get("requests_delayed").is_some() && r.get("throughput_lost").is_some(), "{r}");
    }
}

#[test]
fn simulate_rejects_bad_input_and_clusters_that_cannot_hold_the_model() {
    let base = ["simulate", "--model", "deepseek-v4-pro", "--gpu", "h200", "--gpus-per-node", "8"];
    let with = |extra: &[&str]| emesh(&[&base[..], extra].concat());
    let o = with(&["--nodes", "2", "--mtbf-hours", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("mtbf"), "{}", stderr(&o));
    let o = with(&["--nodes", "2", "--policy", "pray"]);
    assert_eq!(o.status.code(), Some(2));
    let o = with(&["--nodes", "2", "--tp", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fitting"), "{}", stderr(&o));
    let o = with(&["--nodes", "1", "--context", "100M"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not fit"), "{}", stderr(&o));
}
