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
}
