//! Clusters of separate `emesh worker` processes on loopback: every layout must reproduce the
//! fixture and give exactly the single-process logits, through prefill and cached decode.

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
