//! The crate graph points one way. This test reads `cargo metadata` and fails on any edge
//! between workspace crates that the architecture does not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("emesh-common", &[][..]),
        ("emesh-compute", &["emesh-common"][..]),
        ("emesh-model", &["emesh-common", "emesh-compute"][..]),
        ("emesh-chat", &[][..]),
        ("emesh-placement", &["emesh-common"][..]),
        ("emesh-comm", &["emesh-common"][..]),
        ("emesh-wire", &["emesh-common", "emesh-comm"][..]),
        (
            "emesh-worker",
            &[
                "emesh-common",
                "emesh-compute",
                "emesh-model",
                "emesh-comm",
                "emesh-placement",
                "emesh-wire",
                "emesh-store",
            ][..],
        ),
        // The coordinator never touches model weights or math.
        ("emesh-coordinator", &["emesh-common", "emesh-placement", "emesh-store", "emesh-wire"][..]),
        ("emesh-store", &["emesh-common"][..]),
        (
            "emesh-cli",
            &[
                "emesh-common",
                "emesh-compute",
                "emesh-model",
                "emesh-chat",
                "emesh-placement",
                "emesh-worker",
                "emesh-coordinator",
                "emesh-wire",
                "emesh-store",
                "emesh-server",
            ][..],
        ),
        ("emesh-server", &["emesh-common", "emesh-chat", "emesh-coordinator"][..]),
        ("emesh-tests", &["emesh-common", "emesh-compute", "emesh-model"][..]),
        // Benchmarks measure every layer.
        (
            "emesh-benches",
            &[
                "emesh-common",
                "emesh-compute",
                "emesh-model",
                "emesh-comm",
                "emesh-wire",
                "emesh-worker",
                "emesh-coordinator",
            ][..],
        ),
    ])
}

#[test]
fn dependencies_point_one_way() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(emesh_tests::workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed = allowed();
    let mut seen = BTreeSet::new();
    for pkg in v["packages"].as_array().unwrap() {
        let name = pkg["name"].as_str().unwrap();
        seen.insert(name.to_string());
        let ok = allowed.get(name).unwrap_or_else(|| panic!("crate {name} is not in the dependency map of this test"));
        for dep in pkg["dependencies"].as_array().unwrap() {
            let d = dep["name"].as_str().unwrap();
            if d.starts_with("emesh-") {
                assert!(ok.contains(&d), "{name} must not depend on {d}");
            }
        }
    }
    for name in allowed.keys() {
        assert!(seen.contains(*name), "crate {name} listed here is missing from the workspace");
    }
}
