//! The `emesh` binary end to end: what a user types, what they get back.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn emesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emesh"))
}

fn shared() -> PathBuf {
    let fixtures = std::env::var("EMESH_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    fixtures.parent().unwrap().to_path_buf()
}

fn json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn verify_passes_on_the_fixture_and_prints_one_json_line() {
    let dir = shared().join("fixtures/tiny-a");
    for weights in ["model.safetensors", "model.fp8.safetensors"] {
        let o = emesh().arg("verify").arg(&dir).args(["--weights", weights]).output().unwrap();
        assert!(o.status.success(), "{weights}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim().lines().count(), 1);
        let v = json(&o);
        assert!(v["prefill_max_abs_diff"].as_f64().unwrap() < 1e-4);
        assert!(v["decode_max_abs_diff"].as_f64().unwrap() < 1e-4);
        for k in ["greedy_tokens_match", "router_ids_match", "indexer_ids_match", "pass"] {
            assert_eq!(v[k], true, "{weights}: {k}");
        }
    }
}

#[test]
fn verify_fails_loudly_on_a_wrong_model() {
    // The fixture's expected outputs against another model's weights: must exit non-zero.
    let tmp = tempfile::tempdir().unwrap();
    let fixture = shared().join("fixtures/tiny-a");
    let o = emesh().args(["gen-model", "--preset", "tiny", "--seed", "99", "--out"]).arg(tmp.path()).output().unwrap();
    assert!(o.status.success());
    std::fs::copy(fixture.join("expected.safetensors"), tmp.path().join("expected.safetensors")).unwrap();
    let o = emesh().arg("verify").arg(tmp.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["pass"], false);
    // And a folder that is no fixture at all: a clear error, exit 2.
    let o = emesh().arg("verify").arg(tmp.path().join("nowhere")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no fixture"));
}

#[test]
fn gen_model_then_generate() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in ["f32", "bf16", "fp8"] {
        let dir = tmp.path().join(dtype);
        let o = emesh()
            .args(["gen-model", "--preset", "tiny", "--dtype", dtype, "--shard-size-mib", "1", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let g = json(&o);
        assert!(g["shards"].as_u64().unwrap() > 1);
        assert!(dir.join("model.safetensors.index.json").exists());
        let o = emesh()
            .args(["generate", "--prompt-ids", "3,4,5,6", "--max-tokens", "5", "--model"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v = json(&o);
        assert_eq!(v["tokens"].as_array().unwrap().len(), 5);
        assert!(v["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    }
    // Same seed, same model: generation is reproducible across processes.
    let run = |d: &str| {
        let o = emesh()
            .args(["generate", "--prompt-ids", "9,8,7", "--max-tokens", "6", "--model"])
            .arg(tmp.path().join(d))
            .output()
            .unwrap();
        json(&o)["tokens"].clone()
    };
    assert_eq!(run("f32"), run("f32"));
}

#[test]
fn generate_rejects_bad_input_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    emesh().args(["gen-model", "--preset", "tiny", "--out"]).arg(tmp.path()).output().unwrap();
    for (args, needle) in [
        (vec!["--prompt-ids", "1,x"], "not a token id"),
        (vec!["--prompt-ids", "1,5000"], "outside the vocabulary"),
        (vec!["--prompt", "hello"], "tokenizer.json"),
        (vec!["--prompt-ids", "1", "--numerics", "fast"], "unknown numerics"),
    ] {
        let o = emesh().arg("generate").arg("--model").arg(tmp.path()).args(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn chat_template_prints_exactly_the_prompt_for_every_vector() {
    let path = shared().join("fixtures/chat-encoding/vectors.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vectors = v["encode_vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for vec in vectors {
        let mut kwargs = vec["kwargs"].clone();
        kwargs["encoding_variant"] = vec["encoding_variant"].clone();
        let req =
            serde_json::json!({"messages": vec["messages"], "tools": vec["tools"], "chat_template_kwargs": kwargs});
        let mut child = emesh()
            .arg("chat-template")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}: {}", vec["name"], String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8(o.stdout).unwrap(), vec["expected_prompt"].as_str().unwrap(), "{}", vec["name"]);
    }
}

#[test]
fn up_generates_through_a_cluster_exactly_like_one_process() {
    let models = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = emesh().args(args).env("EMESH_MODELS_DIR", models.path()).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        json(&o)
    };
    let prompt = ["--preset", "tiny", "--prompt-ids", "5,6,7,8", "--max-tokens", "6"];
    let up = run(&[&["up", "--no-http", "--workers", "3"][..], &prompt[..]].concat());
    assert_eq!(up["workers"], 3);
    assert_eq!(up["dp"], 3);
    assert_eq!(up["tokens"].as_array().unwrap().len(), 6);
    assert_eq!(up["weight_bytes_per_rank"].as_array().unwrap().len(), 3);
    let single = run(&[&["generate"][..], &prompt[..]].concat());
    assert_eq!(up["tokens"], single["tokens"], "the cluster must generate what one process does");
    let tp =
        run(&[&["up", "--no-http", "--workers", "2", "--tp", "2", "--concurrency", "3"][..], &prompt[..]].concat());
    assert_eq!(tp["tokens"], single["tokens"]);
}
