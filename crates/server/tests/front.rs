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
