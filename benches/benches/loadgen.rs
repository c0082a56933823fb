//! Load generator for a running `emesh up`: N concurrent streaming clients on loopback, each
//! sending streaming completions back to back, bounded by a request count and a deadline.
//! Reports generated tokens per second, time to first token and inter-token latency (p50/p99),
//! one JSON line per concurrency level.
//!
//! ```sh
//! emesh up --preset small &           # serves 127.0.0.1:8000
//! cargo bench -p emesh-benches --bench loadgen -- --addr 127.0.0.1:8000 --concurrency 1,8,32
//! ```
//!
//! Inter-token latency is measured between streamed events; a token that completes no character
//! (part of a UTF-8 sequence) is merged into the next event, so the prompt is token ids and the
//! request greedy with `ignore_eos` to keep every event one token in practice.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

struct Opts {
    addr: SocketAddr,
    concurrency: Vec<usize>,
    requests: usize,
    max_tokens: usize,
    prompt_tokens: usize,
    seconds: f64,
    api_key: Option<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
        concurrency: vec![1, 8, 32],
        requests: 2,
        max_tokens: 32,
        prompt_tokens: 32,
        seconds: 120.0,
        api_key: std::env::var("EMESH_API_KEY").ok(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().ok_or_else(|| format!("{} needs a value", args[i]));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match args[i].as_str() {
            "--addr" => o.addr = val()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--concurrency" => {
                o.concurrency = val()?.split(',').map(|s| num(s.to_string())).collect::<Result<_, _>>()?
            }
            "--requests" => o.requests = num(val()?)?,
            "--max-tokens" => o.max_tokens = num(val()?)?,
            "--prompt-tokens" => o.prompt_tokens = num(val()?)?,
            "--seconds" => o.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--api-key" => o.api_key = Some(val()?),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if !o.addr.ip().is_loopback() {
        return Err(format!("{} is not a loopback address; the load generator only targets this machine", o.addr));
    }
    Ok(o)
}

/// What one request measured.
#[derive(Default)]
struct Sample {
    ttft: Option<f64>,
    gaps: Vec<f64>,
    tokens: usize,
}

/// Reads a chunked body incrementally; calls `on_event` for every `data:` payload as it arrives.
fn read_events(s: &mut TcpStream, mut on_event: impl FnMut(&str)) -> Result<(), String> {
    let mut raw: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16384];
    let mut body_start = None;
    let mut payload: Vec<u8> = Vec::new();
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if body_start.is_none() {
            let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&raw[..p]).to_string();
            if !head.starts_with("HTTP/1.1 200") {
                return Err(head.lines().next().unwrap_or("").to_string());
            }
            raw.drain(..p + 4);
            body_start = Some(());
        }
        // De-chunk what is complete.
        let mut end = false;
        while let Some(nl) = raw.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&raw[..nl]).trim(), 16).map_err(|e| e.to_string())?;
            if size == 0 {
                end = true;
                break;
            }
            if raw.len() < nl + 2 + size + 2 {
                break;
            }
            payload.extend_from_slice(&raw[nl + 2..nl + 2 + size]);
            raw.drain(..nl + 2 + size + 2);
        }
        while let Some(p) = payload.windows(2).position(|w| w == b"\n\n") {
            let ev = String::from_utf8_lossy(&payload[..p]).to_string();
            payload.drain(..p + 2);
            if let Some(d) = ev.strip_prefix("data: ") {
                on_event(d);
            }
        }
        if end {
            return Ok(());
        }
    }
}

fn one_request(o: &Opts, client: usize, k: usize) -> Result<Sample, String> {
    let prompt: Vec<u32> =
        (0..o.prompt_tokens).map(|i| 1000 + ((client * 7919 + k * 104729 + i * 31) % 50000) as u32).collect();
    let body = serde_json::json!({"prompt": prompt, "max_tokens": o.max_tokens, "temperature": 0, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true}})
    .to_string();
    let mut s = TcpStream::connect(o.addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(600))).map_err(|e| e.to_string())?;
    let auth = o.api_key.as_ref().map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let t0 = Instant::now();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut sample = Sample::default();
    let mut last = t0;
    let mut err = None;
    read_events(&mut s, |d| {
        if d == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(d) else { return };
        if v.get("error").is_some() {
            err = Some(v["error"]["message"].to_string());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            sample.tokens = n as usize;
        }
        if v["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()) {
            let now = Instant::now();
            match sample.ttft {
                None => sample.ttft = Some(now.duration_since(t0).as_secs_f64()),
                Some(_) => sample.gaps.push(now.duration_since(last).as_secs_f64()),
            }
            last = now;
        }
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(sample),
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize] * 1000.0
}

fn run(o: &Opts, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let t0 = Instant::now();
    let results: Vec<(Vec<Sample>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|c| {
                scope.spawn(move || {
                    let (mut samples, mut errors) = (vec![], 0);
                    for k in 0..o.requests {
                        if Instant::now() >= deadline {
                            break;
                        }
                        match one_request(o, c, k) {
                            Ok(s) => samples.push(s),
                            Err(e) => {
                                eprintln!("client {c}: {e}");
                                errors += 1;
                            }
                        }
                    }
                    (samples, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let samples: Vec<&Sample> = results.iter().flat_map(|(s, _)| s).collect();
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let mut ttft: Vec<f64> = samples.iter().filter_map(|s| s.ttft).collect();
    let mut itl: Vec<f64> = samples.iter().flat_map(|s| s.gaps.iter().copied()).collect();
    serde_json::json!({
        "concurrency": n, "requests": samples.len(), "errors": results.iter().map(|(_, e)| e).sum::<usize>(),
        "max_tokens": o.max_tokens, "prompt_tokens": o.prompt_tokens, "generated_tokens": tokens,
        "wall_s": (wall * 100.0).round() / 100.0, "tok_per_s": (tokens as f64 / wall * 10.0).round() / 10.0,
        "ttft_p50_ms": pct(&mut ttft, 0.5).round(), "ttft_p99_ms": pct(&mut ttft, 0.99).round(),
        "itl_p50_ms": (pct(&mut itl, 0.5) * 10.0).round() / 10.0, "itl_p99_ms": (pct(&mut itl, 0.99) * 10.0).round() / 10.0,
    })
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    if TcpStream::connect_timeout(&o.addr, Duration::from_secs(2)).is_err() {
        eprintln!("loadgen: nothing listens on {}; start `emesh up` first", o.addr);
        std::process::exit(2);
    }
    for &n in &o.concurrency {
        println!("{}", run(&o, n.max(1)));
    }
}
