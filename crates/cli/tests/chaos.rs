//! Failover under load, with real processes: an etcd, two `emesh coordinator`s (leader and
//! standby, elected in etcd), three `emesh worker`s registered with 2 s leases, and 16 concurrent
//! greedy generations over HTTP, with one failure injected while they run. Each test checks:
//! - every request completes (a client whose coordinator died retries on the other one, the
//!   only thing a client can do when the process holding its connection is gone);
//! - every output is token for token what one process generates (the engine alone, no cluster,
//!   no failure);
//! - no worker answered a step of an epoch older than one already published (sampled from every
//!   worker's health while the test runs, checked against the epoch in etcd);
//! - the placement is whole again where the failure allows it.
//!
//! Recovery times (from the failure to the next completed step, read from the coordinator's log)
//! are printed for the issue notes.

mod common;

use emesh_store::etcd_server::{free_port, unique_prefix, EtcdServer};
use emesh_store::PlacementStore;
use emesh_wire::pb::worker_client::WorkerClient;
use emesh_wire::pb::HealthRequest;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENTS: usize = 16;
const MAX_TOKENS: usize = 160;
const LEASE_TTL: &str = "2";
/// Nothing here may take longer.
const DEADLINE: Duration = Duration::from_secs(120);

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A child process, killed (and resumed first, if stopped) on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.pid());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace joined to the host by a veth pair, removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl Netns {
    /// `None` where namespaces cannot be made here (no `ip`, no privilege).
    fn create() -> Option<Netns> {
        let n = std::process::id() % 200 + 20;
        let ns = Netns {
            name: format!("emesh-chaos-{}", std::process::id()),
            host_if: format!("emh{}", std::process::id() % 100000),
            host_ip: format!("10.213.{n}.1"),
            ns_ip: format!("10.213.{n}.2"),
        };
        let ns_if = format!("{}n", ns.host_if);
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), ns.name.clone()],
            vec![
                "link".into(),
                "add".into(),
                ns.host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                ns_if.clone(),
            ],
            vec!["link".into(), "set".into(), ns_if.clone(), "netns".into(), ns.name.clone()],
            vec!["addr".into(), "add".into(), format!("{}/24", ns.host_ip), "dev".into(), ns.host_if.clone()],
            vec!["link".into(), "set".into(), ns.host_if.clone(), "up".into()],
            vec![
                "-n".into(),
                ns.name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", ns.ns_ip),
                "dev".into(),
                ns_if.clone(),
            ],
            vec!["-n".into(), ns.name.clone(), "link".into(), "set".into(), ns_if, "up".into()],
            vec!["-n".into(), ns.name.clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
        ];
        for s in &steps {
            let ok = Command::new("ip").args(s).stderr(Stdio::null()).status().is_ok_and(|st| st.success());
            if !ok {
                eprintln!("network namespaces unavailable here (`ip {}` failed)", s.join(" "));
                return None;
            }
        }
        Some(ns)
    }

    fn link(&self, up: bool) {
        let ok = Command::new("ip")
            .args(["link", "set", &self.host_if, if up { "up" } else { "down" }])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set {} {}", self.host_if, if up { "up" } else { "down" });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

struct Worker {
    id: String,
    addr: String,
    proc: Proc,
}

struct Coordinator {
    http: String,
    proc: Proc,
}

struct Harness {
    // Dropped in this order: processes, then etcd, then the namespace and files.
    coordinators: Vec<Coordinator>,
    workers: Vec<Worker>,
    etcd: EtcdServer,
    netns: Option<Netns>,
    prefix: String,
    dir: tempfile::TempDir,
    /// Where host processes listen (the veth address with a namespace, else loopback).
    host: String,
    /// Passed to every worker.
    worker_args: Vec<String>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

impl Harness {
    async fn start(test: &str, netns: Option<Netns>) -> Option<Harness> {
        let extra: Vec<String> = netns.iter().map(|n| n.host_ip.clone()).collect();
        let etcd = EtcdServer::start_or_skip_on(test, &extra).await?;
        let dir = tempfile::tempdir().unwrap();
        eprintln!("{test}: logs in {}", dir.path().display());
        let cfg = emesh_model::gen::preset("tiny").unwrap();
        emesh_model::gen::generate(
            &dir.path().join("model"),
            &cfg,
            emesh_model::gen::GenDtype::F32,
            7,
            1 << 30,
            |_| {},
        )
        .unwrap();
        let host = netns.as_ref().map_or("127.0.0.1".to_string(), |n| n.host_ip.clone());
        Some(Harness {
            coordinators: vec![],
            workers: vec![],
            etcd,
            netns,
            prefix: unique_prefix(),
            dir,
            host,
            worker_args: vec![],
        })
    }

    fn etcd_url(&self, in_netns: bool) -> String {
        match (&self.netns, in_netns) {
            (Some(n), true) => self.etcd.endpoints().into_iter().find(|e| e.contains(&n.host_ip)).unwrap(),
            _ => self.etcd.endpoint().to_string(),
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn spawn(&self, name: &str, mut cmd: Command) -> Proc {
        let log = self.log_path(name);
        let f = std::fs::File::create(&log).unwrap();
        cmd.env("EMESH_THREADS", "1")
            .env("EMESH_LOG", "info,emesh_coordinator=info,emesh_worker=info")
            .stdout(Stdio::piped())
            .stderr(f)
            .stdin(Stdio::null());
        Proc { child: cmd.spawn().unwrap(), log }
    }

    /// Starts `emesh worker` (inside the namespace with `in_netns`); returns once it listens.
    fn start_worker(&mut self, id: &str, in_netns: bool, env: &[(&str, &str)]) {
        let w = self.worker(id, in_netns, env);
        self.workers.push(w);
    }

    /// A running `emesh worker` with `worker_args`, not yet counted in `workers`.
    fn worker(&self, id: &str, in_netns: bool, env: &[(&str, &str)]) -> Worker {
        let bin = env!("CARGO_BIN_EXE_emesh");
        let listen = match (&self.netns, in_netns) {
            (Some(n), true) => format!("{}:0", n.ns_ip),
            _ => format!("{}:0", self.host),
        };
        let mut cmd = match (&self.netns, in_netns) {
            (Some(n), true) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.name, bin]);
                c
            }
            _ => Command::new(bin),
        };
        cmd.args(["worker", "--listen", &listen, "--id", id, "--exchange-timeout", "20", "--lease-ttl", LEASE_TTL])
            .args(["--etcd-endpoints", &self.etcd_url(in_netns), "--etcd-prefix", &self.prefix])
            .args(&self.worker_args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = self.spawn(id, cmd);
        let mut line = String::new();
        BufReader::new(proc.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{id}: {e}: {line:?}\n{}", proc.log()));
        let addr = v["listening"].as_str().unwrap().to_string();
        Worker { id: id.into(), addr, proc }
    }

    /// Starts `emesh coordinator`; with `wait`, returns once it serves (it leads).
    fn start_coordinator(&mut self, id: &str, extra: &[&str], wait: bool) {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_emesh"));
        let model = self.dir.path().join("model");
        let expect = self.workers.len().to_string();
        cmd.args(["coordinator", "--id", id, "--expect-workers", &expect, "--http", &http, "--step-timeout", "20"])
            .args(["--model", model.to_str().unwrap(), "--max-seqs", "16", "--lease-ttl", LEASE_TTL])
            .args(["--etcd-endpoints", self.etcd.endpoint(), "--etcd-prefix", &self.prefix])
            .args(extra);
        let proc = self.spawn(id, cmd);
        self.coordinators.push(Coordinator { http: http.clone(), proc });
        if wait {
            let t0 = Instant::now();
            while !matches!(common::try_request(&http, "GET", "/ready", &[], b""), Ok((200, _))) {
                let c = self.coordinators.last().unwrap();
                assert!(t0.elapsed() < DEADLINE, "{id} never became ready:\n{}", c.proc.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn http_addrs(&self) -> Vec<String> {
        self.coordinators.iter().map(|c| c.http.clone()).collect()
    }

    async fn store(&self) -> Arc<dyn PlacementStore> {
        self.etcd.store(&self.prefix).await.unwrap()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for c in &self.coordinators {
            s += &format!("--- coordinator {}\n{}\n", c.http, tail(&c.proc.log()));
        }
        for w in &self.workers {
            s += &format!("--- worker {}\n{}\n", w.id, tail(&w.proc.log()));
        }
        s
    }
}

/// The log lines that matter (panics, warnings, errors, recoveries), then the last few.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.starts_with("  ")).collect();
    let key: Vec<&str> = lines
        .iter()
        .filter(|l| ["panicked", "WARN", "ERROR", "epoch", "leading"].iter().any(|k| l.contains(k)))
        .copied()
        .collect();
    format!(
        "{}\n...\n{}",
        key[key.len().saturating_sub(30)..].join("\n"),
        lines[lines.len().saturating_sub(10)..].join("\n")
    )
}

fn prompts() -> Vec<Vec<u32>> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..CLIENTS)
        .map(|i| {
            (0..4 + i % 9)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 998) as u32 + 2
                })
                .collect()
        })
        .collect()
}

/// Runs the 16 requests concurrently (each retried on the other coordinators while its own is
/// unreachable); `inject` runs once `after` has passed, and must find requests still running.
fn run_load(addrs: &[String], after: Duration, inject: impl FnOnce()) -> Vec<Vec<u32>> {
    let done = Arc::new(AtomicUsize::new(0));
    let outs = Arc::new(Mutex::new(vec![None; CLIENTS]));
    let threads: Vec<_> = prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let (addrs, done, outs) = (addrs.to_vec(), done.clone(), outs.clone());
            std::thread::spawn(move || {
                let body =
                    serde_json::json!({"prompt": p, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": true});
                let t0 = Instant::now();
                let mut tries = 0;
                let tokens = loop {
                    let addr = &addrs[tries % addrs.len()];
                    tries += 1;
                    match common::try_request(addr, "POST", "/v1/completions", &[], body.to_string().as_bytes()) {
                        Ok((200, b)) => {
                            let v = common::json_of(&b);
                            let t: Vec<u32> = v["choices"][0]["token_ids"]
                                .as_array()
                                .unwrap_or_else(|| panic!("no token_ids: {b}"))
                                .iter()
                                .map(|t| t.as_u64().unwrap() as u32)
                                .collect();
                            break t;
                        }
                        // Connection refused or reset (coordinator gone), 503 (standby or degraded).
                        Ok((s, b)) if s == 503 || s >= 500 => eprintln!("request {i}: {s} {b}; retrying"),
                        Ok((s, b)) => panic!("request {i}: {s} {b}"),
                        Err(e) => eprintln!("request {i}: {e}; retrying"),
                    }
                    assert!(t0.elapsed() < DEADLINE, "request {i} did not complete within {DEADLINE:?}");
                    std::thread::sleep(Duration::from_millis(200));
                };
                outs.lock().unwrap()[i] = Some(tokens);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::sleep(after);
    let finished = done.load(Ordering::SeqCst);
    assert!(finished < CLIENTS, "the failure must hit requests in flight; all {CLIENTS} had finished");
    inject();
    for t in threads {
        t.join().unwrap();
    }
    let outs = outs.lock().unwrap().clone();
    outs.into_iter().map(|o| o.unwrap()).collect()
}

/// Samples every worker's health every 100 ms, with the epoch in etcd, until stopped.
struct EpochWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl EpochWatch {
    fn start(h: &Harness) -> EpochWatch {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addrs: Vec<(String, String)> = h.workers.iter().map(|w| (w.id.clone(), w.addr.clone())).collect();
        let (endpoint, prefix, s) = (h.etcd.endpoint().to_string(), h.prefix.clone(), stop.clone());
        let thread = std::thread::spawn(move || rt().block_on(watch_epochs(endpoint, prefix, addrs, s)));
        EpochWatch { stop, thread: Some(thread) }
    }

    /// Stops sampling; returns the violations seen.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

async fn watch_epochs(
    endpoint: String,
    prefix: String,
    workers: Vec<(String, String)>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let store = emesh_store::connect_etcd(&emesh_store::EtcdOptions {
        endpoints: vec![endpoint],
        prefix,
        ..Default::default()
    })
    .await
    .unwrap();
    // Per worker: steps served when the newest published epoch was first seen newer than the
    // worker's last served epoch.
    let mut published = 0u64;
    let mut baseline: Vec<Option<(u64, u64)>> = vec![None; workers.len()];
    let mut violations = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(Some(p)) = store.placement().await {
            published = published.max(p.epoch.0);
        }
        for (i, (id, addr)) in workers.iter().enumerate() {
            let health = async {
                let mut c = WorkerClient::connect(format!("http://{addr}")).await.ok()?;
                c.health(HealthRequest {}).await.ok().map(|h| h.into_inner())
            };
            let Ok(Some(h)) = tokio::time::timeout(Duration::from_millis(300), health).await else { continue };
            match baseline[i] {
                // Served more steps since, all of them for an epoch older than one published.
                Some((epoch, served)) if h.steps_served > served && h.last_served_epoch < epoch => violations.push(
                    format!("{id} answered a step of epoch {} after epoch {epoch} was published", h.last_served_epoch),
                ),
                _ => {}
            }
            if h.last_served_epoch < published && baseline[i].is_none_or(|(e, _)| e < published) {
                baseline[i] = Some((published, h.steps_served));
            } else if h.last_served_epoch >= published {
                baseline[i] = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    violations
}

/// The recovery lines of a coordinator's log: (epoch, seconds from failure to the next step,
/// unix ms of that step).
fn recoveries(log: &str) -> Vec<(u64, f64, u128)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("first step after epoch ").nth(1)?;
            let epoch = rest.split_whitespace().next()?.parse().ok()?;
            let secs = rest.split(" completed ").nth(1)?.split('s').next()?.parse().ok()?;
            let at = rest.split("unix_ms=").nth(1)?.trim_end_matches(')').parse().ok()?;
            Some((epoch, secs, at))
        })
        .collect()
}

/// Experts and bytes read from the checkpoint by recoveries, from a coordinator's log.
fn reloads(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split(" experts promoted, ").nth(1)?;
            let experts = rest.split_whitespace().next()?.parse().ok()?;
            let bytes = rest.split(" reloaded, ").nth(1)?.split_whitespace().next()?.parse().ok()?;
            Some((experts, bytes))
        })
        .collect()
}

async fn world(store: &dyn PlacementStore) -> (u64, usize) {
    let p = store.placement().await.unwrap().unwrap();
    let plan: serde_json::Value = serde_json::from_str(&p.plan_json).unwrap();
    (p.epoch.0, plan["ranks"].as_array().unwrap().len())
}

/// Waits until the placement has `n` ranks.
async fn wait_world(h: &Harness, n: usize) -> u64 {
    let store = h.store().await;
    let t0 = Instant::now();
    loop {
        let (e, w) = world(&*store).await;
        if w == n {
            return e;
        }
        assert!(t0.elapsed() < DEADLINE, "the placement has {w} ranks, not {n}, after {DEADLINE:?}\n{}", h.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Greedy generation of every prompt by the engine alone, in one process.
fn reference(model: &Path) -> Vec<Vec<u32>> {
    let engine = emesh_model::Engine::load(model, &Default::default()).unwrap();
    prompts()
        .iter()
        .map(|p| {
            let mut cache = engine.new_cache();
            let mut feed = p.clone();
            let mut out = Vec::new();
            while out.len() < MAX_TOKENS {
                let mut seqs =
                    [emesh_model::Seq { tokens: &feed, cache: &mut cache, logits: emesh_model::Logits::Last }];
                let logits = engine.forward(&mut seqs, None).unwrap().remove(0);
                let t = emesh_model::argmax(&logits);
                out.push(t);
                feed = vec![t];
            }
            out
        })
        .collect()
}

/// Three workers, two coordinators (the first leads), and what one process generates.
async fn cluster(
    test: &str,
    worker_env: &[(&str, &str)],
    coord: &[&str],
    netns: Option<Netns>,
) -> Option<(Harness, Vec<Vec<u32>>)> {
    cluster_with(test, worker_env, &[], coord, netns).await
}

async fn cluster_with(
    test: &str,
    worker_env: &[(&str, &str)],
    worker_args: &[&str],
    coord: &[&str],
    netns: Option<Netns>,
) -> Option<(Harness, Vec<Vec<u32>>)> {
    let mut h = Harness::start(test, netns).await?;
    h.worker_args = worker_args.iter().map(|s| s.to_string()).collect();
    let in_ns = h.netns.is_some();
    h.start_worker("w0", false, &[]);
    h.start_worker("w1", false, worker_env);
    h.start_worker("w2", in_ns, &[]);
    h.start_coordinator("c0", coord, true);
    h.start_coordinator("c1", coord, false);
    let reference = reference(&h.dir.path().join("model"));
    Some((h, reference))
}

fn check(h: &Harness, reference: &[Vec<u32>], got: &[Vec<u32>], watch: EpochWatch, what: &str) {
    for (i, (r, g)) in reference.iter().zip(got).enumerate() {
        assert_eq!(r, g, "{what}: request {i} differs from the failure-free run\n{}", h.logs());
        assert_eq!(g.len(), MAX_TOKENS, "{what}: request {i} is short");
    }
    let violations = watch.finish();
    assert!(violations.is_empty(), "{what}: stale epochs served: {violations:?}\n{}", h.logs());
}

fn report(what: &str, h: &Harness, c: usize, failed_at_ms: u128) {
    let log = h.coordinators[c].proc.log();
    let rec = recoveries(&log);
    let rel = reloads(&log);
    let from_failure: Vec<f64> = rec
        .iter()
        .map(|(_, _, at)| if failed_at_ms == 0 { f64::NAN } else { (*at as f64 - failed_at_ms as f64) / 1000.0 })
        .collect();
    eprintln!(
        "CHAOS {what}: recoveries (epoch, s from detection, s from the failure) {:?}; reloads (experts, bytes) {rel:?}",
        rec.iter().zip(&from_failure).map(|((e, s, _), f)| (e, s, f)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_worker_with_replicas() {
    let Some((mut h, reference)) =
        cluster("kill_9_a_worker_with_replicas", &[], &["--redundant-experts", "8"], None).await
    else {
        return;
    };
    let watch = EpochWatch::start(&h);
    let mut at = 0;
    let addrs = h.http_addrs();
    let victim = &h.workers[2].proc;
    let got = tokio::task::block_in_place(|| {
        run_load(&addrs, Duration::from_millis(500), || {
            at = unix_ms();
            victim.signal("-KILL");
        })
    });
    check(&h, &reference, &got, watch, "kill -9");
    report("kill -9 (replicas)", &h, 0, at);
    let rel = reloads(&h.coordinators[0].proc.log());
    assert!(rel.iter().any(|&(e, _)| e == 0), "with a replica of every expert nothing is reloaded: {rel:?}");
    // A new worker takes the free role.
    h.workers.remove(2);
    h.start_worker("w3", false, &[]);
    wait_world(&h, 3).await;
    let again = tokio::task::block_in_place(|| run_load(&h.http_addrs(), Duration::ZERO, || {}));
    assert_eq!(again, reference, "after the new worker joined\n{}", h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_a_worker_past_its_lease() {
    let Some((h, reference)) = cluster("sigstop_a_worker_past_its_lease", &[], &[], None).await else { return };
    let watch = EpochWatch::start(&h);
    let mut at = 0;
    let addrs = h.http_addrs();
    let victim = &h.workers[1].proc;
    let got = tokio::task::block_in_place(|| {
        run_load(&addrs, Duration::from_millis(500), || {
            at = unix_ms();
            victim.signal("-STOP");
        })
    });
    report("SIGSTOP (no replicas: reload)", &h, 0, at);
    // Resumed: it finds its lease gone, fences itself, registers again and takes its role back.
    victim.signal("-CONT");
    wait_world(&h, 3).await;
    check(&h, &reference, &got, watch, "SIGSTOP");
    let rel = reloads(&h.coordinators[0].proc.log());
    assert!(rel.iter().any(|&(e, b)| e > 0 && b > 0), "without replicas the lost experts are read again: {rel:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_leader_coordinator() {
    let Some((h, reference)) = cluster("kill_the_leader_coordinator", &[], &[], None).await else { return };
    let watch = EpochWatch::start(&h);
    let mut at = 0;
    let addrs = h.http_addrs();
    let leader = &h.coordinators[0].proc;
    let standby = h.coordinators[1].http.clone();
    let mut took = Duration::ZERO;
    let got = tokio::task::block_in_place(|| {
        run_load(&addrs, Duration::from_millis(500), || {
            at = unix_ms();
            let t0 = Instant::now();
            leader.signal("-KILL");
            while !matches!(common::try_request(&standby, "GET", "/ready", &[], b""), Ok((200, _))) {
                assert!(t0.elapsed() < DEADLINE, "the standby never became ready");
                std::thread::sleep(Duration::from_millis(20));
            }
            took = t0.elapsed();
        })
    });
    check(&h, &reference, &got, watch, "leader killed");
    let standby = h.coordinators[1].proc.log();
    assert!(standby.contains("leading"), "the standby took the lead:\n{standby}");
    eprintln!(
        "CHAOS leader kill: the standby was ready {:.2}s after the leader was killed (at unix_ms={at}) and served every request",
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_etcd_under_load() {
    let Some((mut h, reference)) = cluster("restart_etcd_under_load", &[], &[], None).await else { return };
    let (epoch, _) = world(&*h.store().await).await;
    let addrs = h.http_addrs();
    let watch = EpochWatch::start(&h);
    let etcd = &mut h.etcd;
    let restart = || {
        let r = rt();
        r.block_on(etcd.restart(Duration::from_millis(300))).unwrap();
    };
    let got = tokio::task::block_in_place(|| run_load(&addrs, Duration::from_millis(500), restart));
    check(&h, &reference, &got, watch, "etcd restart");
    let (after, w) = world(&*h.store().await).await;
    eprintln!("CHAOS etcd restart: placement epoch {epoch} -> {after}, {w} ranks");
    assert_eq!(w, 3, "every worker still serves after etcd came back\n{}", h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_points_mid_dispatch_and_mid_load() {
    // w1 fails one dispatch (of 5 per step) after 100 good ones, then the load of the repair.
    let env = [("FAILPOINTS", "worker::dispatch=100*off->1*return->off;worker::load=1*off->1*return->off")];
    let Some((h, reference)) = cluster("fault_points_mid_dispatch_and_mid_load", &env, &[], None).await else { return };
    let watch = EpochWatch::start(&h);
    let got = tokio::task::block_in_place(|| run_load(&h.http_addrs(), Duration::from_millis(1), || {}));
    check(&h, &reference, &got, watch, "fault points");
    let log = h.workers[1].proc.log();
    assert!(
        log.contains("fail point worker::dispatch")
            || h.coordinators[0].proc.log().contains("fail point worker::dispatch"),
        "the dispatch fault fired\n{}",
        h.logs()
    );
    assert!(h.coordinators[0].proc.log().contains("fail point worker::load"), "the load fault fired\n{}", h.logs());
    let (_, w) = world(&*h.store().await).await;
    assert_eq!(w, 3, "a worker that failed and answers keeps its role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_a_worker_off_the_network() {
    let Some(ns) = Netns::create() else {
        // The same failure without a namespace: `cut_off_by_fault_point` (always run).
        eprintln!("cut_a_worker_off_the_network: no network namespaces here; see cut_off_by_fault_point");
        return;
    };
    let Some((h, reference)) = cluster("cut_a_worker_off_the_network", &[], &[], Some(ns)).await else { return };
    let watch = EpochWatch::start(&h);
    let mut at = 0;
    let addrs = h.http_addrs();
    let ns = h.netns.as_ref().unwrap();
    let got = tokio::task::block_in_place(|| {
        run_load(&addrs, Duration::from_millis(500), || {
            at = unix_ms();
            ns.link(false);
        })
    });
    report("link down", &h, 0, at);
    ns.link(true);
    wait_world(&h, 3).await;
    check(&h, &reference, &got, watch, "link down");
}

/// A network cut without a namespace (the fallback where `ip netns` is unavailable, run
/// everywhere): the `worker::cut_off` fault point makes w1 answer nothing and renew nothing for
/// 4 s, 40 steps into the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_by_fault_point() {
    let env = [("FAILPOINTS", "worker::cut_off=40*off->1*return(4000)->off")];
    let Some((h, reference)) = cluster("cut_off_by_fault_point", &env, &[], None).await else { return };
    let watch = EpochWatch::start(&h);
    let got = tokio::task::block_in_place(|| run_load(&h.http_addrs(), Duration::from_millis(1), || {}));
    report("cut off (fault point)", &h, 0, 0);
    assert!(h.workers[1].proc.log().contains("fail point worker::cut_off"), "the cut happened\n{}", h.logs());
    wait_world(&h, 3).await;
    check(&h, &reference, &got, watch, "cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_follows_the_observed_load() {
    let coord = ["--redundant-experts", "1", "--rebalance-every", "1"];
    let Some((h, reference)) = cluster("rebalance_follows_the_observed_load", &[], &coord, None).await else { return };
    let (before, _) = world(&*h.store().await).await;
    let watch = EpochWatch::start(&h);
    let got = tokio::task::block_in_place(|| run_load(&h.http_addrs(), Duration::from_millis(1), || {}));
    check(&h, &reference, &got, watch, "rebalance");
    // The rebalance comes at a step boundary, or while idle, once a second of load was seen.
    let t0 = Instant::now();
    let after = loop {
        let (after, w) = world(&*h.store().await).await;
        assert_eq!(w, 3);
        if after > before && h.coordinators[0].proc.log().contains("rebalanced by observed load") {
            break after;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no rebalance happened\n{}", h.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let again = tokio::task::block_in_place(|| run_load(&h.http_addrs(), Duration::ZERO, || {}));
    assert_eq!(again, reference, "after the rebalance");
    let (status, metrics) = common::try_request(&h.coordinators[0].http, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    for name in [
        "emesh:rank_tokens_received_total{rank=\"2\"}",
        "emesh:layer_load_imbalance{layer=\"4\"}",
        "emesh:placement_epoch",
        "emesh:live_workers 3",
        "emesh:degraded 0",
        "emesh:dispatch_latency_seconds",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    eprintln!("CHAOS rebalance: epoch {before} -> {after} while serving, outputs unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_too_small_degrade_then_a_new_worker_restores() {
    // Each worker's budget holds its own shard but not a third of the experts of a dead one.
    let Some((h, reference)) = cluster_with(
        "survivors_too_small_degrade_then_a_new_worker_restores",
        &[],
        &["--memory-budget", "7200000"],
        &[],
        None,
    )
    .await
    else {
        return;
    };
    let addrs = h.http_addrs();
    let leader = h.coordinators[0].http.clone();
    let victim = &h.workers[2].proc;
    let mut extra = None;
    let got = tokio::task::block_in_place(|| {
        run_load(&addrs, Duration::from_millis(500), || {
            victim.signal("-KILL");
            let t0 = Instant::now();
            let reason = loop {
                if let Ok((503, b)) = common::try_request(&leader, "GET", "/ready", &[], b"") {
                    if b.contains("degraded") {
                        break b;
                    }
                }
                assert!(t0.elapsed() < DEADLINE, "never degraded\n{}", h.logs());
                std::thread::sleep(Duration::from_millis(100));
            };
            assert!(reason.contains("cannot"), "the reason says the survivors cannot hold the model: {reason}");
            let (_, metrics) = common::try_request(&leader, "GET", "/metrics", &[], b"").unwrap();
            assert!(metrics.contains("emesh:degraded 1"), "the degraded gauge is set:\n{metrics}");
            eprintln!("CHAOS degraded: {reason}");
            // A new worker takes the free role and the cluster serves again.
            extra = Some(h.worker("w3", false, &[]));
        })
    });
    check(&h, &reference, &got, EpochWatch::start(&h), "degraded then restored");
    let (_, w) = world(&*h.store().await).await;
    assert_eq!(w, 3);
    assert!(h.coordinators[0].proc.log().contains("cluster degraded"), "a log line says so");
    let log = h.coordinators[0].proc.log();
    assert!(log.contains("serving again"), "the first coordinator itself recovered\n{}", h.logs());
    drop(extra);
}

/// `cluster/local.sh` with `ETCD=1` (the recipe users run by hand) starts the same failover
/// setup: it serves, and keeps serving the same tokens after a worker is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_script_runs_a_failover_cluster() {
    if emesh_store::etcd_server::find_etcd().is_none() || !emesh_store::HAS_ETCD {
        assert!(!emesh_store::etcd_server::etcd_required(), "etcd is required (EMESH_REQUIRE_ETCD=1) but absent");
        eprintln!("SKIPPED: the_local_script_runs_a_failover_cluster needs etcd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let cfg = emesh_model::gen::preset("tiny").unwrap();
    emesh_model::gen::generate(&model, &cfg, emesh_model::gen::GenDtype::F32, 7, 1 << 30, |_| {}).unwrap();
    let reference = reference(&model);
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster/local.sh");
    struct Script(Child);
    impl Drop for Script {
        fn drop(&mut self) {
            // SIGTERM: the script's trap stops everything it started.
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new("bash")
        .arg(&script)
        .args(["ep3", "--model", model.to_str().unwrap(), "--max-seqs", "16"])
        .env("ETCD", "1")
        .env("HTTP_PORT", port.to_string())
        .env("EMESH", env!("CARGO_BIN_EXE_emesh"))
        .env("EMESH_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _script = Script(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut procs = Vec::new();
    while procs.iter().filter(|v: &&serde_json::Value| v["role"] == "coordinator").count() < 2 {
        let line = lines.next().expect("local.sh ended early").unwrap();
        procs.push(serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    let http = format!("127.0.0.1:{port}");
    let standby = format!("127.0.0.1:{}", port + 1);
    let t0 = Instant::now();
    while !matches!(common::try_request(&http, "GET", "/ready", &[], b""), Ok((200, _))) {
        assert!(t0.elapsed() < DEADLINE, "the local cluster never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    while !matches!(common::try_request(&standby, "GET", "/health", &[], b""), Ok((200, _))) {
        assert!(t0.elapsed() < DEADLINE, "the standby never answered /health");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(common::try_request(&standby, "GET", "/ready", &[], b""), Ok((503, _))), "and not ready");
    let worker = procs.iter().find(|v| v["role"] == "worker" && v["id"] == "w2").unwrap();
    let addrs = vec![http.clone(), standby];
    let got = tokio::task::block_in_place(|| {
        run_load(&addrs, Duration::from_millis(300), || {
            let pid = worker["pid"].to_string();
            assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        })
    });
    assert_eq!(got, reference, "through local.sh, with a worker killed");
}

/// Tensor-parallel groups: 4 workers as 2 groups of tp=2. Killing one rank takes its whole group
/// out (a group cannot run attention without all its heads); the other group serves every
/// request, token for token; a new worker then pairs with the freed one to restore the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_a_rank_of_a_tensor_parallel_group() {
    let Some(mut h) = Harness::start("kill_a_rank_of_a_tensor_parallel_group", None).await else { return };
    for i in 0..4 {
        h.start_worker(&format!("w{i}"), false, &[]);
    }
    h.start_coordinator("c0", &["--tp", "2"], true);
    let reference = reference(&h.dir.path().join("model"));
    let watch = EpochWatch::start(&h);
    let mut at = 0;
    let addrs = h.http_addrs();
    let victim = &h.workers[3].proc;
    let got = tokio::task::block_in_place(|| {
        run_load(&addrs, Duration::from_millis(500), || {
            at = unix_ms();
            victim.signal("-KILL");
        })
    });
    report("kill -9 in a tp=2 group", &h, 0, at);
    check(&h, &reference, &got, watch, "tp group");
    let log = h.coordinators[0].proc.log();
    assert!(log.contains("on 2 ranks (left: [\"w2\", \"w3\"]"), "the broken group left whole\n{}", h.logs());
    h.workers.remove(3);
    h.start_worker("w4", false, &[]);
    wait_world(&h, 4).await;
    let again = tokio::task::block_in_place(|| run_load(&h.http_addrs(), Duration::ZERO, || {}));
    assert_eq!(again, reference, "with the group restored\n{}", h.logs());
}
