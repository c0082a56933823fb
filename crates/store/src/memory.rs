//! The in-memory backend: one process, no durability.

use crate::{PlacementStore, StoreError, StoredPlacement, WorkerRecord};
use emesh_common::Epoch;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Default)]
struct State {
    workers: BTreeMap<String, WorkerRecord>,
    placement: Option<StoredPlacement>,
    ready: BTreeMap<Epoch, BTreeSet<String>>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl PlacementStore for MemoryStore {
    async fn register_worker(&self, w: WorkerRecord) -> Result<(), StoreError> {
        if w.id.is_empty() {
            return Err(StoreError::Invalid("worker id is empty".into()));
        }
        self.lock().workers.insert(w.id.clone(), w);
        Ok(())
    }

    async fn remove_worker(&self, id: &str) -> Result<(), StoreError> {
        self.lock().workers.remove(id);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        Ok(self.lock().workers.values().cloned().collect())
    }

    async fn placement(&self) -> Result<Option<StoredPlacement>, StoreError> {
        Ok(self.lock().placement.clone())
    }

    async fn put_placement(&self, expected: Option<Epoch>, next: StoredPlacement) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let current = s.placement.as_ref().map(|p| p.epoch);
        if current != expected || current.is_some_and(|c| next.epoch <= c) {
            return Ok(false);
        }
        // Readiness of older epochs no longer matters.
        let e = next.epoch;
        s.ready.retain(|k, _| *k >= e);
        s.placement = Some(next);
        Ok(true)
    }

    async fn set_ready(&self, epoch: Epoch, worker: &str) -> Result<(), StoreError> {
        self.lock().ready.entry(epoch).or_default().insert(worker.to_string());
        Ok(())
    }

    async fn ready(&self, epoch: Epoch) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().ready.get(&epoch).map(|s| s.iter().cloned().collect()).unwrap_or_default())
    }
}
