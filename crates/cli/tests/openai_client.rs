//! The official `openai` Python client (and curl) against `emesh up`: the script in
//! `tests/openai/client_test.py` must pass. Without Python + `openai` or curl the test skips with
//! a message, unless `EMESH_REQUIRE_PYTHON=1` (set by `.ci/run`), where it fails.

mod common;

use common::*;
use emesh_common::names;
use std::process::Command;

fn require() -> bool {
    std::env::var(names::ENV_REQUIRE_PYTHON).is_ok_and(|v| v == "1")
}

/// Whether `cmd` runs; a missing tool skips the test, or fails it when required.
fn available(what: &str, cmd: &mut Command) -> bool {
    let ok = cmd.output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!require(), "{what} is missing and {}=1", names::ENV_REQUIRE_PYTHON);
        eprintln!(
            "skipping the OpenAI client test: {what} is missing (set {} to fail instead)",
            names::ENV_REQUIRE_PYTHON
        );
    }
    ok
}

#[test]
fn official_openai_client_and_curl_accept_our_answers() {
    let python = std::env::var(names::ENV_PYTHON).unwrap_or_else(|_| "python3".into());
    if !available("python with the `openai` package", Command::new(&python).args(["-c", "import openai"]))
        || !available("curl", Command::new("curl").arg("--version"))
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    text_model(tmp.path(), 4096);
    let srv = Server::start(tmp.path(), &["--api-key", "test-key"], &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/openai/client_test.py");
    let out = Command::new(&python).arg(&script).args([&srv.addr, "test-key"]).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "client_test.py failed:\n{log}");
    assert!(log.contains("all checks passed"), "{log}");

    // curl, streaming.
    let body = r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": true}"#;
    let out = Command::new("curl")
        .args(["-sS", "-N", "--fail-with-body", &format!("http://{}/v1/chat/completions", srv.addr)])
        .args(["-H", "Authorization: Bearer test-key", "-H", "Content-Type: application/json", "-d", body])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl: {text} {}", String::from_utf8_lossy(&out.stderr));
    let events = sse(&text);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events.last().unwrap()["choices"][0]["finish_reason"].is_string());
}
