//! The HTTP API of `emesh up --http`: what an OpenAI client sends, and what bad clients send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn tokenizer_dir() -> PathBuf {
    std::env::var("EMESH_TOKENIZER_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/deepseek-v4-tokenizer")
    })
}

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn openai_endpoints_serve_and_refuse_bad_input() {
    // The real V4 vocabulary on tiny dimensions, so text and chat work.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = emesh_model::gen::preset("tiny").unwrap();
    cfg.vocab_size = 129280;
    cfg.max_position_embeddings = 4096;
    emesh_model::gen::generate(tmp.path(), &cfg, emesh_model::gen::GenDtype::F32, 2, 1 << 30, |_| {}).unwrap();
    std::fs::copy(tokenizer_dir().join("tokenizer.json"), tmp.path().join("tokenizer.json")).unwrap();
    let model = tmp.path().to_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_emesh"))
        .args(["up", "--workers", "2", "--model", &model, "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _server = Server(child);
    let addr = json_of(line.trim())["http"].as_str().unwrap().to_string();
    let name = tmp.path().file_name().unwrap().to_str().unwrap().to_string();

    assert_eq!(http(&addr, "GET", "/health", b"").0, 200);
    assert_eq!(http(&addr, "GET", "/ready", b"").0, 200);
    let (s, b) = http(&addr, "GET", "/v1/models", b"");
    assert_eq!(s, 200);
    assert_eq!(json_of(&b)["data"][0]["id"], name.as_str());

    // A text completion gives the tokens one process generates for the same prompt.
    let req = serde_json::json!({"model": name, "prompt": "The capital of France is", "max_tokens": 6, "ignore_eos": true, "temperature": 0});
    let (s, b) = http(&addr, "POST", "/v1/completions", req.to_string().as_bytes());
    assert_eq!(s, 200, "{b}");
    let v = json_of(&b);
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let g = Command::new(env!("CARGO_BIN_EXE_emesh"))
        .args(["generate", "--model", &model, "--prompt", "The capital of France is", "--max-tokens", "6"])
        .output()
        .unwrap();
    let g = json_of(String::from_utf8_lossy(&g.stdout).trim());
    assert_eq!(v["choices"][0]["token_ids"], g["tokens"]);

    // Chat: the V4 encoding in, reasoning/content parsed out.
    let req = serde_json::json!({"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8,
        "chat_template_kwargs": {"thinking": true}});
    let (s, b) = http(&addr, "POST", "/v1/chat/completions", req.to_string().as_bytes());
    assert_eq!(s, 200, "{b}");
    let v = json_of(&b);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["reasoning_content"].is_string());
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 3);

    // Bad input: the right status, the field named, and the server keeps serving.
    let huge: Vec<u32> = vec![5; 5000];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/completions", b"{not json".to_vec(), 400, "body"),
        ("/v1/completions", vec![0xff, 0xfe, 0x7b], 400, "body"),
        ("/v1/completions", b"[1,2]".to_vec(), 400, "body"),
        ("/v1/completions", br#"{"prompt": 12}"#.to_vec(), 400, "prompt"),
        ("/v1/completions", br#"{"prompt": [1], "max_tokens": -3}"#.to_vec(), 400, "max_tokens"),
        ("/v1/completions", br#"{"prompt": [1], "max_tokens": "many"}"#.to_vec(), 400, "max_tokens"),
        ("/v1/completions", br#"{"prompt": [999999999]}"#.to_vec(), 400, "prompt"),
        ("/v1/completions", br#"{"prompt": []}"#.to_vec(), 400, "prompt"),
        ("/v1/completions", br#"{"prompt": [1], "model": "gpt-4"}"#.to_vec(), 404, "model"),
        ("/v1/completions", br#"{"prompt": [1], "stream": 1}"#.to_vec(), 400, "stream"),
        ("/v1/completions", serde_json::json!({"prompt": huge}).to_string().into_bytes(), 413, "prompt"),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(),
            400,
            "messages[0].role",
        ),
        ("/v1/chat/completions", br#"{"messages": "hi"}"#.to_vec(), 400, "messages"),
    ];
    for (path, body, want, param) in cases {
        let (s, b) = http(&addr, "POST", path, &body);
        assert_eq!(s, want, "{path} {}: {b}", String::from_utf8_lossy(&body));
        let e = json_of(&b);
        assert_eq!(e["error"]["param"], param, "{b}");
        assert!(e["error"]["message"].as_str().unwrap().len() > 5);
    }
    assert_eq!(http(&addr, "GET", "/nope", b"").0, 404);
    assert_eq!(http(&addr, "GET", "/health", b"").0, 200, "still serving after bad input");
}
