//! Clusters of separate `emesh worker` processes on loopback: every layout must reproduce the
//! fixture and give exactly the single-process logits, through prefill and cached decode; and a
//! model larger than one worker's memory budget is served by several.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn emesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emesh"))
}

fn fixture() -> PathBuf {
    std::env::var("EMESH_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
        .join("tiny-a")
}

/// Worker processes, killed when dropped.
struct Workers(Vec<Child>, Vec<String>);

impl Workers {
    fn start(n: usize, extra: &[&str]) -> Workers {
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let mut c = emesh()
                .args(["worker", "--listen", "127.0.0.1:0", "--id", &format!("w{i}"), "--exchange-timeout", "30"])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).unwrap();
            let v: serde_json::Value =
                serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("worker said {line:?}: {e}"));
            addrs.push(v["listening"].as_str().unwrap().to_string());
            children.push(c);
        }
        Workers(children, addrs)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn worker_processes_match_one_process_for_every_layout() {
    for (n, tp) in [(1usize, 1usize), (2, 1), (3, 1), (4, 2)] {
        let w = Workers::start(n, &[]);
        let o = emesh()
            .arg("verify")
            .arg(fixture())
            .args(["--connect", &w.1.join(","), "--tp", &tp.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{n} workers tp{tp}: {text}\n{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["bitwise_equal_single"], true, "{n} workers tp{tp}");
        assert_eq!(v["pass"], true);
        assert_eq!(v["checkpoints"].as_array().unwrap().len(), 2, "f32 and fp8 checkpoints");
        assert_eq!(v["dp"].as_u64().unwrap() as usize, n / tp);
    }
}

#[test]
fn in_process_cluster_and_bad_layouts() {
    let o = emesh()
        .arg("verify")
        .arg(fixture())
        .args(["--workers", "3", "--weights", "model.fp8.safetensors"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(v["bitwise_equal_single"], true);
    // tp must divide the model's output groups (2 in the fixture): a clear refusal, no hang.
    let o = emesh().arg("verify").arg(fixture()).args(["--workers", "3", "--tp", "3"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tp=3") && err.contains("output groups"), "{err}");
}

fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_model_beyond_one_workers_budget_is_served_by_a_cluster() {
    // An expert-heavy model: 261 MB of f32 weights, 96% of them routed experts.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = emesh_model::gen::preset("tiny").unwrap();
    cfg.n_routed_experts = 64;
    cfg.moe_intermediate_size = 512;
    let rep =
        emesh_model::gen::generate(tmp.path(), &cfg, emesh_model::gen::GenDtype::F32, 3, 1 << 30, |_| {}).unwrap();
    let budget: u64 = 200_000_000;
    assert!(rep.bytes > budget);
    let model = tmp.path().to_str().unwrap();
    let prompt = ["--prompt-ids", "5,6,7,8", "--max-tokens", "6"];

    // One process under the budget refuses, naming the need and the budget.
    let o = emesh()
        .args(["generate", "--model", model, "--memory-budget", &budget.to_string()])
        .args(prompt)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("memory budget"), "{}", String::from_utf8_lossy(&o.stderr));
    let want = emesh().args(["generate", "--model", model]).args(prompt).output().unwrap();
    let want: serde_json::Value = serde_json::from_slice(&want.stdout).unwrap();

    // One worker with that budget: the planner refuses.
    let one = Workers::start(1, &["--memory-budget", &budget.to_string()]);
    let o = emesh().args(["coordinator", "--workers", &one.1[0], "--model", model]).args(prompt).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("budget") && err.contains("rank0"), "{err}");
    drop(one);

    // Two workers, each under the budget and an address-space limit: they serve it.
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..2 {
        let mut c = Command::new("prlimit")
            .arg(format!("--as={}", 420u64 << 20))
            .arg(env!("CARGO_BIN_EXE_emesh"))
            .args([
                "worker",
                "--listen",
                "127.0.0.1:0",
                "--id",
                &format!("w{i}"),
                "--memory-budget",
                &budget.to_string(),
            ])
            .env("MALLOC_ARENA_MAX", "2")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        addrs.push(v["listening"].as_str().unwrap().to_string());
        children.push(c);
    }
    let guard = Workers(children, addrs.clone());
    let o =
        emesh().args(["coordinator", "--workers", &addrs.join(","), "--model", model]).args(prompt).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["tokens"], want["tokens"], "the cluster generates what one unconstrained process does");
    for (i, c) in guard.0.iter().enumerate() {
        let shard = got["weight_bytes_per_rank"][i].as_u64().unwrap();
        let peak = peak_rss_bytes(c.id());
        assert!(shard < budget);
        assert!(peak < shard + (64 << 20), "worker {i}: peak RSS {peak} for a {shard}-byte shard");
        assert!(peak < rep.bytes, "worker {i} held more than the whole model");
    }
}
