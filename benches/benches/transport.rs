//! The gRPC exchange against raw TCP on loopback, measured in the same run: bulk bytes/s of an
//! all-to-all between two ranks, and the round trip of a small message.
//!
//! `cargo bench -p emesh-benches --bench transport`

use bytes::Bytes;
use emesh_comm::{all_to_all, Phase, Tag, Transport};
use emesh_common::{Epoch, Rank};
use emesh_wire::pb::exchange_server::ExchangeServer;
use emesh_wire::{ExchangeService, GrpcTransport};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BULK: usize = 4 << 20;
const BULK_ROUNDS: usize = 48;
const PINGS: usize = 2000;

async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

/// Raw TCP: both sides send BULK bytes and read the other's, per round (an all-to-all of two).
async fn tcp_bulk() -> f64 {
    let (a, b) = tcp_pair().await;
    let side = |s: tokio::net::TcpStream| async move {
        let (mut r, mut w) = s.into_split();
        let buf = vec![7u8; BULK];
        let writer = tokio::spawn(async move {
            for _ in 0..BULK_ROUNDS {
                w.write_all(&buf).await.unwrap();
            }
        });
        let mut got = vec![0u8; BULK];
        for _ in 0..BULK_ROUNDS {
            r.read_exact(&mut got).await.unwrap();
        }
        writer.await.unwrap();
    };
    let t = Instant::now();
    tokio::join!(side(a), side(b));
    (2 * BULK * BULK_ROUNDS) as f64 / t.elapsed().as_secs_f64()
}

async fn tcp_rtt() -> f64 {
    let (mut a, mut b) = tcp_pair().await;
    let echo = tokio::spawn(async move {
        let mut m = [0u8; 64];
        for _ in 0..PINGS {
            b.read_exact(&mut m).await.unwrap();
            b.write_all(&m).await.unwrap();
        }
    });
    let mut m = [1u8; 64];
    let t = Instant::now();
    for _ in 0..PINGS {
        a.write_all(&m).await.unwrap();
        a.read_exact(&mut m).await.unwrap();
    }
    let rtt = t.elapsed().as_secs_f64() / PINGS as f64;
    echo.await.unwrap();
    rtt
}

fn grpc_pair(rt: &tokio::runtime::Runtime) -> Vec<Arc<GrpcTransport>> {
    let mut addrs = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..2 {
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        addrs.push(l.local_addr().unwrap().to_string());
        let slot = Arc::new(RwLock::new(None));
        slots.push(slot.clone());
        rt.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            emesh_wire::server()
                .add_service(ExchangeServer::new(ExchangeService { slot }).max_decoding_message_size(1 << 30))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
    }
    let ts: Vec<Arc<GrpcTransport>> =
        (0..2).map(|r| GrpcTransport::new(Rank(r), 2, Epoch(1), Duration::from_secs(30))).collect();
    for (t, s) in ts.iter().zip(&slots) {
        *s.write().unwrap() = Some(t.clone());
    }
    rt.block_on(async {
        let (a, b) = tokio::join!(
            ts[0].connect(&addrs, Duration::from_secs(10)),
            ts[1].connect(&addrs, Duration::from_secs(10))
        );
        a.unwrap();
        b.unwrap();
    });
    ts
}

fn tag(step: u64) -> Tag {
    Tag { epoch: Epoch(1), step, layer: 0, phase: Phase::Dispatch }
}

fn grpc_bulk(ts: &[Arc<GrpcTransport>]) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for tr in ts {
            s.spawn(move || {
                let payload = Bytes::from(vec![7u8; BULK]);
                for step in 0..BULK_ROUNDS as u64 {
                    let out = vec![payload.clone(), payload.clone()];
                    let got = all_to_all(tr.as_ref(), tag(step), out).unwrap();
                    assert_eq!(got[1 - tr.rank().0 as usize].len(), BULK);
                }
            });
        }
    });
    (2 * BULK * BULK_ROUNDS) as f64 / t.elapsed().as_secs_f64()
}

fn grpc_rtt(ts: &[Arc<GrpcTransport>]) -> f64 {
    let base = 1_000_000u64;
    let t = Instant::now();
    std::thread::scope(|s| {
        let (a, b) = (&ts[0], &ts[1]);
        s.spawn(move || {
            for i in 0..PINGS as u64 {
                let m = b.recv(Rank(0), tag(base + i)).unwrap();
                b.send(Rank(0), tag(base + i), m).unwrap();
            }
        });
        for i in 0..PINGS as u64 {
            a.send(Rank(1), tag(base + i), Bytes::from_static(&[1u8; 64])).unwrap();
            a.recv(Rank(1), tag(base + i)).unwrap();
        }
    });
    t.elapsed().as_secs_f64() / PINGS as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tcp_bw = rt.block_on(tcp_bulk());
    let tcp_lat = rt.block_on(tcp_rtt());
    let ts = grpc_pair(&rt);
    let g_bw = grpc_bulk(&ts);
    let g_lat = grpc_rtt(&ts);
    println!(
        "all-to-all of two ranks, {} MiB per peer per round, {} rounds; round trip of 64 B, {} times",
        BULK >> 20,
        BULK_ROUNDS,
        PINGS
    );
    println!("{:<10} {:>12} {:>14}", "", "GB/s", "round trip us");
    println!("{:<10} {:>12.2} {:>14.1}", "raw TCP", tcp_bw / 1e9, tcp_lat * 1e6);
    println!("{:<10} {:>12.2} {:>14.1}", "gRPC", g_bw / 1e9, g_lat * 1e6);
    println!("{:<10} {:>11.0}% {:>13.2}x", "ratio", 100.0 * g_bw / tcp_bw, g_lat / tcp_lat);
    println!(
        "{}",
        serde_json::json!({"tcp_bytes_per_s": tcp_bw, "grpc_bytes_per_s": g_bw, "bandwidth_ratio": g_bw / tcp_bw,
            "tcp_rtt_s": tcp_lat, "grpc_rtt_s": g_lat, "latency_ratio": g_lat / tcp_lat})
    );
}
