//! What every backend must do. Run by each backend's tests against a fresh store (each run under
//! its own key prefix for shared backends).

use crate::{PlacementStore, StoredPlacement, WorkerRecord};
use emesh_common::Epoch;

fn placement(epoch: u64) -> StoredPlacement {
    StoredPlacement { epoch: Epoch(epoch), plan_json: format!("{{\"epoch\":{epoch}}}") }
}

/// Panics with a message naming the first broken rule.
pub async fn run(store: &dyn PlacementStore) {
    // Registry.
    assert!(store.workers().await.unwrap().is_empty(), "a fresh store has no workers");
    let w = |id: &str| WorkerRecord { id: id.into(), addr: format!("{id}:1"), memory_budget: 7 };
    store.register_worker(w("b")).await.unwrap();
    store.register_worker(w("a")).await.unwrap();
    store.register_worker(WorkerRecord { memory_budget: 9, ..w("a") }).await.unwrap();
    let ws = store.workers().await.unwrap();
    assert_eq!(ws.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["a", "b"], "workers are listed by id, once");
    assert_eq!(ws[0].memory_budget, 9, "registering again replaces the record");
    store.remove_worker("b").await.unwrap();
    assert_eq!(store.workers().await.unwrap().len(), 1);
    assert!(store.register_worker(w("")).await.is_err(), "an empty id is refused");

    // Placement by compare-and-swap on the epoch.
    assert_eq!(store.placement().await.unwrap(), None);
    assert!(!store.put_placement(Some(Epoch(1)), placement(2)).await.unwrap(), "CAS against a missing placement fails");
    assert!(store.put_placement(None, placement(1)).await.unwrap());
    assert!(!store.put_placement(None, placement(2)).await.unwrap(), "CAS expecting nothing fails once written");
    assert!(!store.put_placement(Some(Epoch(1)), placement(1)).await.unwrap(), "the epoch must grow");
    assert!(store.put_placement(Some(Epoch(1)), placement(3)).await.unwrap());
    assert_eq!(store.placement().await.unwrap(), Some(placement(3)));
    assert!(!store.put_placement(Some(Epoch(1)), placement(4)).await.unwrap(), "a stale writer loses");

    // Readiness per epoch.
    store.set_ready(Epoch(3), "a").await.unwrap();
    store.set_ready(Epoch(3), "a").await.unwrap();
    store.set_ready(Epoch(3), "c").await.unwrap();
    assert_eq!(store.ready(Epoch(3)).await.unwrap(), ["a", "c"]);
    assert!(store.ready(Epoch(4)).await.unwrap().is_empty(), "readiness is per epoch");

    // Leases: records attached to one vanish when it is revoked or not renewed.
    let ttl = std::time::Duration::from_secs(2);
    let lease = store.grant_lease(ttl).await.unwrap();
    assert!(lease.ttl >= ttl, "the granted ttl is at least the one asked for");
    let short = store.grant_lease(ttl).await.unwrap();
    assert_ne!(lease.id, short.id, "leases are distinct");
    store.register_worker_leased(w("l1"), lease.id).await.unwrap();
    store.register_worker_leased(w("l2"), short.id).await.unwrap();
    let ids = |ws: Vec<WorkerRecord>| ws.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(ids(store.workers().await.unwrap()), ["a", "l1", "l2"]);
    assert!(store.campaign("c1", lease.id).await.unwrap(), "the first candidate leads");
    assert!(store.campaign("c1", lease.id).await.unwrap(), "campaigning again keeps the lead");
    assert!(!store.campaign("c2", short.id).await.unwrap(), "a second candidate waits");
    assert_eq!(store.leader().await.unwrap().as_deref(), Some("c1"));
    store.revoke(short.id).await.unwrap();
    assert_eq!(ids(store.workers().await.unwrap()), ["a", "l1"], "revoking deletes the records at once");
    assert!(!store.keep_alive(short.id).await.unwrap(), "a revoked lease cannot be renewed");
    assert!(store.register_worker_leased(w("l3"), short.id).await.is_err(), "a dead lease takes no records");
    // Keep one lease alive past its ttl; stop renewing, and it expires with its records.
    let until = std::time::Instant::now() + lease.ttl + std::time::Duration::from_millis(500);
    while std::time::Instant::now() < until {
        assert!(store.keep_alive(lease.id).await.unwrap(), "a renewed lease lives");
        tokio::time::sleep(lease.ttl / 4).await;
    }
    assert_eq!(ids(store.workers().await.unwrap()), ["a", "l1"], "renewal keeps the records");
    assert_eq!(store.leader().await.unwrap().as_deref(), Some("c1"));
    let gone = std::time::Instant::now() + lease.ttl * 3;
    while store.leader().await.unwrap().is_some() {
        assert!(std::time::Instant::now() < gone, "an unrenewed lease expires");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ids(store.workers().await.unwrap()), ["a"], "its records go with it");
    assert!(!store.keep_alive(lease.id).await.unwrap());
    let next = store.grant_lease(ttl).await.unwrap();
    assert!(store.campaign("c2", next.id).await.unwrap(), "the lead is free again");
    store.revoke(next.id).await.unwrap();
}
