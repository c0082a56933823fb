//! Shared by the HTTP tests: a tiny model on the real V4 vocabulary with the real tokenizer, an
//! `emesh up` child serving it, and a minimal HTTP/1.1 client (chunked bodies, SSE events).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn tokenizer_dir() -> PathBuf {
    std::env::var("EMESH_TOKENIZER_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/deepseek-v4-tokenizer")
    })
}

/// The `tiny` preset on the real V4 vocabulary (so text and chat work), context `max_context`.
pub fn text_model(dir: &Path, max_context: usize) {
    let mut cfg = emesh_model::gen::preset("tiny").unwrap();
    cfg.vocab_size = 129280;
    cfg.max_position_embeddings = max_context;
    emesh_model::gen::generate(dir, &cfg, emesh_model::gen::GenDtype::F32, 2, 1 << 30, |_| {}).unwrap();
    std::fs::copy(tokenizer_dir().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
}

pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// `emesh up --workers 2 --model DIR --http 127.0.0.1:0 EXTRA...`, once it has bound.
    pub fn start(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_emesh"));
        cmd.args(["up", "--workers", "2", "--model", model.to_str().unwrap(), "--http", "127.0.0.1:0"]).args(extra);
        cmd.env_remove("EMESH_API_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
        Server { child, addr: v["http"].as_str().unwrap().to_string() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

/// One request; returns (status, body).
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"))
}

/// [`request`], with connection failures (refused, reset, cut short) as errors.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut s = TcpStream::connect(addr)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&out[..split]).to_lowercase();
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status in the reply"))?;
    let raw = &out[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") { dechunk(raw) } else { raw.to_vec() };
    Ok((status, String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?))
}

pub fn post(addr: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    request(addr, "POST", path, &[], body.to_string().as_bytes())
}

pub fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// POSTs and expects 200 with a JSON body.
pub fn ok(addr: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let (s, b) = post(addr, path, body);
    assert_eq!(s, 200, "{path} {body}: {b}");
    json_of(&b)
}

/// The `data:` payloads of a server-sent-events body; checks it ends with `[DONE]`.
pub fn sse(body: &str) -> Vec<serde_json::Value> {
    let data: Vec<&str> =
        body.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap()).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    data[..data.len() - 1].iter().map(|d| json_of(d)).collect()
}

/// Streams a request; returns its events.
pub fn stream(addr: &str, path: &str, body: &serde_json::Value) -> Vec<serde_json::Value> {
    let (s, b) = post(addr, path, body);
    assert_eq!(s, 200, "{b}");
    sse(&b)
}
