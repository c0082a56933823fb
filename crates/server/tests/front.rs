//! The HTTP front without a cluster: a queue nobody drains fills up (429), and a degraded or
//! unready service answers 503 with its reason on `/ready` and every generation endpoint.

use emesh_coordinator::Request;
use emesh_server::{router, AppState, Job};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn full_queue_is_429_and_degraded_is_503() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // A queue of one that no engine drains.
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let state = AppState::new("m".into(), None, tx, 64, 100, 1);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router(state.clone());
    rt.spawn(async move { axum::serve(listener, app).await });

    // Fill the queue, then ask.
    let (events, _events_rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job { req: Request::greedy(vec![1], 1), events, arrived: std::time::Instant::now() };
    assert!(state.jobs.try_send(job).is_ok());
    let body = r#"{"prompt": [1, 2, 3], "max_tokens": 2}"#;
    let (s, b) = request(&addr, "POST", "/v1/completions", body);
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("queue is full"), "{b}");

    state.set_degraded(Some("2 of 4 ranks lost; the survivors cannot hold the model".into()));
    for (method, path) in [("GET", "/ready"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")] {
        let (s, b) = request(&addr, method, path, body);
        assert_eq!(s, 503, "{path}: {b}");
        assert!(b.contains("degraded: 2 of 4 ranks lost"), "{b}");
    }
    assert_eq!(request(&addr, "GET", "/health", "").0, 200);
    state.set_degraded(None);
    assert_eq!(request(&addr, "GET", "/ready", "").0, 200);
    state.ready.store(false, Ordering::Relaxed);
    assert_eq!(request(&addr, "GET", "/ready", "").0, 503);
    assert_eq!(request(&addr, "POST", "/v1/completions", body).0, 503);
}

#[test]
fn n_choices_queue_together_or_not_at_all() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // A queue of three that no engine drains, two slots taken.
    let (tx, _rx) = tokio::sync::mpsc::channel(3);
    let state = AppState::new("m".into(), None, tx, 64, 100, 1);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router(state.clone());
    rt.spawn(async move { axum::serve(listener, app).await });
    let mut keep = vec![];
    for _ in 0..2 {
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        keep.push(events_rx);
        let job = Job { req: Request::greedy(vec![1], 1), events, arrived: std::time::Instant::now() };
        assert!(state.jobs.try_send(job).is_ok());
    }
    let (s, b) = request(&addr, "POST", "/v1/completions", r#"{"prompt": [1, 2], "max_tokens": 2, "n": 2}"#);
    assert_eq!(s, 429, "{b}");
    assert_eq!(state.jobs.capacity(), 1, "no choice of a refused request stays queued");
    for n in [0, 17] {
        let (s, b) = request(&addr, "POST", "/v1/completions", &format!(r#"{{"prompt": [1], "n": {n}}}"#));
        assert_eq!(s, 400, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["error"]["param"], "n", "{b}");
    }
    assert_eq!(state.jobs.capacity(), 1);
}

/// Bodies axum refuses are OpenAI-shaped JSON errors too, over the limit first among them.
#[test]
fn oversized_and_unreadable_bodies_are_json_errors() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let state = AppState::new("m".into(), None, tx, 64, 100, 1);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router(state);
    rt.spawn(async move { axum::serve(listener, app).await });

    for path in ["/v1/completions", "/v1/chat/completions", "/tokenize"] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = vec![b' '; emesh_server::MAX_BODY_BYTES + 16];
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            .unwrap();
        // The server may answer before it has read everything.
        let _ = s.write_all(&body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        let status: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(status, 413, "{path}: {out}");
        let (_, b) = out.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}"));
        assert!(v["error"]["message"].as_str().unwrap().contains("larger than the limit"), "{b}");
        assert_eq!(v["error"]["param"], "body");
        assert_eq!(v["error"]["code"], 413);
    }
    let (s, b) = request(&addr, "POST", "/v1/completions", "{not json");
    assert_eq!(s, 400, "{b}");
    assert!(serde_json::from_str::<serde_json::Value>(&b).unwrap()["error"]["message"].is_string());
    let (s, b) = request(&addr, "GET", "/v1/completions", "");
    assert_eq!(s, 405, "{b}");
    assert!(serde_json::from_str::<serde_json::Value>(&b).unwrap()["error"]["message"].is_string());
}
