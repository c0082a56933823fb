//! The etcd backend against a real etcd server, started by each test on free loopback ports with
//! its own data folder and killed when the test ends.
//!
//! Without `etcd` on PATH these tests skip, saying so on stderr; with `EMESH_REQUIRE_ETCD=1` (as
//! CI sets it) they fail instead, so that a missing install cannot pass as green. The same holds
//! for a build without the `etcd` feature (see `without_the_feature` below).

#![cfg(feature = "etcd")]

use emesh_common::names::ENV_REQUIRE_ETCD;
use emesh_common::Epoch;
use emesh_store::{EtcdStore, PlacementStore, StoreError, StoredPlacement, WorkerRecord};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a started etcd has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name no other test of any process uses: pid, time, counter.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{what}-{}-{nanos}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

fn unique_prefix() -> String {
    format!("/emesh/{}/", unique("test"))
}

/// A running etcd; killed, and its data folder removed, on drop.
struct Etcd {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Etcd {
    fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    async fn store(&self, prefix: &str) -> EtcdStore {
        match EtcdStore::connect(&self.endpoints(), prefix).await {
            Ok(s) => s,
            Err(e) => panic!("connecting to the test etcd at {}: {e}", self.endpoint),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}

/// Starts etcd, or returns `None` (after saying so) when it is not installed and not required.
async fn etcd_or_skip(test: &str) -> Option<Etcd> {
    let Some(bin) = find_etcd() else {
        let required = std::env::var(ENV_REQUIRE_ETCD).is_ok_and(|v| v == "1");
        assert!(!required, "etcd not found on PATH; install etcd-server ({ENV_REQUIRE_ETCD}=1 is set, so this fails instead of skipping)");
        // Straight to stderr: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: etcd not found on PATH ({test}); install etcd-server, or set {ENV_REQUIRE_ETCD}=1 to fail instead"
        );
        return None;
    };
    // Free ports can be taken between picking and binding them: try a few times.
    let mut last = String::new();
    for _ in 0..3 {
        match start(&bin).await {
            Ok(etcd) => return Some(etcd),
            Err(e) => last = e,
        }
    }
    panic!("could not start {}: {last}", bin.display());
}

async fn start(bin: &Path) -> Result<Etcd, String> {
    let dir = std::env::temp_dir().join(unique("emesh-etcd"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| format!("creating the log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("cloning the log: {e}"))?;
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .arg("--name=emesh-test")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=emesh-test={peer_url}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("spawning: {e}"))?;
    let mut etcd = Etcd { child, dir, endpoint: client_url };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = etcd.child.try_wait() {
            return Err(format!("etcd exited with {status}; its log:\n{}", etcd.log()));
        }
        match EtcdStore::connect(&etcd.endpoints(), "/emesh/probe/").await {
            Ok(_) => return Ok(etcd),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("no answer within {START_TIMEOUT:?}: {e}; its log:\n{}", etcd.log()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn placement(epoch: u64) -> StoredPlacement {
    StoredPlacement { epoch: Epoch(epoch), plan_json: format!("{{\"plan\":{epoch}}}") }
}

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord { id: id.into(), addr: format!("{id}:7000"), memory_budget: 1 << 30 }
}

#[tokio::test]
async fn etcd_store_conforms() {
    let Some(etcd) = etcd_or_skip("etcd_store_conforms").await else { return };
    let store = etcd.store(&unique_prefix()).await;
    emesh_store::conformance::run(&store).await;

    // Publishing an epoch drops the readiness of older ones, not of itself or newer ones.
    store.set_ready(Epoch(4), "a").await.unwrap();
    store.set_ready(Epoch(9), "b").await.unwrap();
    assert!(store.put_placement(Some(Epoch(3)), placement(4)).await.unwrap());
    assert!(store.ready(Epoch(3)).await.unwrap().is_empty(), "readiness of older epochs is deleted");
    assert_eq!(store.ready(Epoch(4)).await.unwrap(), ["a"]);
    assert_eq!(store.ready(Epoch(9)).await.unwrap(), ["b"]);
    // Zero-padded epochs keep numeric order: epoch 10 sorts after 9, so 9 is dropped by 10.
    assert!(store.put_placement(Some(Epoch(4)), placement(10)).await.unwrap());
    assert!(store.ready(Epoch(9)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_one_wins() {
    let Some(etcd) = etcd_or_skip("racing_writers_one_wins").await else { return };
    for round in 0..20 {
        let prefix = unique_prefix();
        let (a, b) = (etcd.store(&prefix).await, etcd.store(&prefix).await);
        // Nothing stored: both expect nothing.
        let (wa, wb) = tokio::join!(a.put_placement(None, placement(1)), b.put_placement(None, placement(2)));
        let (wa, wb) = (wa.unwrap(), wb.unwrap());
        assert!(wa ^ wb, "round {round}: exactly one first writer wins (a: {wa}, b: {wb})");
        let stored = a.placement().await.unwrap().map(|p| p.epoch);
        assert_eq!(stored, Some(Epoch(if wa { 1 } else { 2 })), "round {round}: the winner's placement is stored");
        // Both expect the stored epoch and move it on.
        let now = stored;
        let (wa, wb) = tokio::join!(a.put_placement(now, placement(5)), b.put_placement(now, placement(6)));
        let (wa, wb) = (wa.unwrap(), wb.unwrap());
        assert!(wa ^ wb, "round {round}: exactly one writer of the next epoch wins (a: {wa}, b: {wb})");
        assert_eq!(b.placement().await.unwrap().map(|p| p.epoch), Some(Epoch(if wa { 5 } else { 6 })));
    }
}

#[tokio::test]
async fn a_second_store_sees_the_first() {
    let Some(etcd) = etcd_or_skip("a_second_store_sees_the_first").await else { return };
    let prefix = unique_prefix();
    let first = etcd.store(&prefix).await;
    first.register_worker(worker("w1")).await.unwrap();
    assert!(first.put_placement(None, placement(7)).await.unwrap());
    first.set_ready(Epoch(7), "w1").await.unwrap();

    // Same prefix, given without its trailing slash: the same keys.
    let second = etcd.store(prefix.trim_end_matches('/')).await;
    assert_eq!(second.workers().await.unwrap(), [worker("w1")]);
    assert_eq!(second.placement().await.unwrap(), Some(placement(7)));
    assert_eq!(second.ready(Epoch(7)).await.unwrap(), ["w1"]);
    assert!(!second.put_placement(None, placement(8)).await.unwrap(), "the second store sees the epoch is taken");
    assert!(second.put_placement(Some(Epoch(7)), placement(8)).await.unwrap());
    assert_eq!(first.placement().await.unwrap(), Some(placement(8)));

    // Another cluster's prefix sees none of it.
    let other = etcd.store(&unique_prefix()).await;
    assert!(other.workers().await.unwrap().is_empty());
    assert_eq!(other.placement().await.unwrap(), None);
    assert!(other.ready(Epoch(7)).await.unwrap().is_empty());
}

#[tokio::test]
async fn leased_workers_go_with_their_lease() {
    let Some(etcd) = etcd_or_skip("leased_workers_go_with_their_lease").await else { return };
    let store = etcd.store(&unique_prefix()).await;

    // Kept alive, then revoked: gone at once.
    let mut kept = store.register_worker_with_lease(worker("kept"), 30).await.unwrap();
    assert!(kept.keep_alive().await.unwrap() > 0);
    assert!(kept.keep_alive().await.unwrap() > 0, "a second renewal goes through the open stream");
    assert_eq!(store.workers().await.unwrap(), [worker("kept")]);
    kept.revoke().await.unwrap();
    assert!(store.workers().await.unwrap().is_empty(), "revoking the lease deletes the record");

    // Never renewed: etcd deletes it when the TTL runs out.
    let lapsed = store.register_worker_with_lease(worker("lapsed"), 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(lapsed.ttl_secs() as u64 + 5);
    while !store.workers().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "a lapsed lease's record is still there after {}s", lapsed.ttl_secs() + 5);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(store.register_worker_with_lease(worker("bad"), 0).await.is_err(), "a zero TTL is refused");
}

/// Needs no etcd: nothing listens on the port.
#[tokio::test]
async fn an_unreachable_etcd_is_unavailable() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    match EtcdStore::connect(std::slice::from_ref(&endpoint), "/emesh/x/").await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains(&endpoint), "the error names the endpoint: {msg}"),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(s) => panic!("connected to nothing: {s:?}"),
    }
}
