//! The etcd backend against a real etcd server, started by each test on free loopback ports with
//! its own data folder and killed when the test ends.
//!
//! Without `etcd` on PATH these tests skip, saying so on stderr; with `EMESH_REQUIRE_ETCD=1` (as
//! CI sets it) they fail instead, so that a missing install cannot pass as green. The same holds
//! for a build without the `etcd` feature (see `without_the_feature` below).

#![cfg(feature = "etcd")]

use emesh_common::Epoch;
use emesh_store::etcd_server::{free_port, unique_prefix, EtcdServer};
use emesh_store::{EtcdStore, PlacementStore, StoreError, StoredPlacement, WorkerRecord};
use std::time::{Duration, Instant};

async fn etcd_or_skip(test: &str) -> Option<Etcd> {
    EtcdServer::start_or_skip(test).await.map(Etcd)
}

struct Etcd(EtcdServer);

impl Etcd {
    async fn store(&self, prefix: &str) -> EtcdStore {
        match EtcdStore::connect(&self.0.endpoints()[..1], prefix).await {
            Ok(s) => s,
            Err(e) => panic!("connecting to the test etcd at {}: {e}", self.0.endpoint()),
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

/// With authentication enabled in etcd, `--etcd-user` and its password (from
/// `$EMESH_ETCD_PASSWORD` in the binary) get in; a wrong password or no user does not.
#[tokio::test]
async fn etcd_with_authentication() {
    let Some(etcd) = etcd_or_skip("etcd_with_authentication").await else { return };
    let mut admin = etcd_client::Client::connect([etcd.0.endpoint()], None).await.unwrap();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    let prefix = unique_prefix();
    let opts = |user: Option<&str>, password: Option<&str>| emesh_store::EtcdOptions {
        user: user.map(str::to_string),
        password: password.map(str::to_string),
        ..etcd.0.options(&prefix)
    };
    let store = emesh_store::connect_etcd(&opts(Some("root"), Some("s3cret"))).await.unwrap();
    store.register_worker(worker("w1")).await.unwrap();
    assert_eq!(store.workers().await.unwrap(), [worker("w1")]);
    assert!(emesh_store::connect_etcd(&opts(Some("root"), Some("wrong"))).await.is_err(), "a wrong password");
    // Without a user the connection opens, but etcd refuses every request.
    match emesh_store::connect_etcd(&opts(None, None)).await {
        Err(_) => {}
        Ok(s) => assert!(s.workers().await.is_err(), "an anonymous client reads nothing"),
    }
}
