//! The in-memory backend: one process, no durability. Leases expire on the clock like etcd's:
//! expired leases and their records are swept before every operation.

use crate::{Lease, PlacementStore, StoreError, StoredPlacement, WorkerRecord};
use emesh_common::Epoch;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Each record with the lease it is attached to, if any.
    workers: BTreeMap<String, (WorkerRecord, Option<i64>)>,
    placement: Option<StoredPlacement>,
    ready: BTreeMap<Epoch, BTreeSet<String>>,
    leader: Option<(String, i64)>,
    /// Lease id -> (ttl, deadline).
    leases: HashMap<i64, (Duration, Instant)>,
    next_lease: i64,
}

impl State {
    fn sweep(&mut self) {
        let now = Instant::now();
        self.leases.retain(|_, (_, deadline)| *deadline > now);
        let leases = &self.leases;
        self.workers.retain(|_, (_, l)| l.is_none_or(|l| leases.contains_key(&l)));
        if self.leader.as_ref().is_some_and(|(_, l)| !leases.contains_key(l)) {
            self.leader = None;
        }
    }

    fn live_lease(&self, lease: i64) -> Result<(), StoreError> {
        if self.leases.contains_key(&lease) {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("lease {lease:x} has expired or does not exist")))
        }
    }
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
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.sweep();
        s
    }
}

fn check_id(w: &WorkerRecord) -> Result<(), StoreError> {
    if w.id.is_empty() {
        return Err(StoreError::Invalid("worker id is empty".into()));
    }
    Ok(())
}

#[async_trait::async_trait]
impl PlacementStore for MemoryStore {
    async fn register_worker(&self, w: WorkerRecord) -> Result<(), StoreError> {
        check_id(&w)?;
        self.lock().workers.insert(w.id.clone(), (w, None));
        Ok(())
    }

    async fn remove_worker(&self, id: &str) -> Result<(), StoreError> {
        self.lock().workers.remove(id);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        Ok(self.lock().workers.values().map(|(w, _)| w.clone()).collect())
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
        if worker.is_empty() {
            return Err(StoreError::Invalid("worker id is empty".into()));
        }
        self.lock().ready.entry(epoch).or_default().insert(worker.to_string());
        Ok(())
    }

    async fn ready(&self, epoch: Epoch) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().ready.get(&epoch).map(|s| s.iter().cloned().collect()).unwrap_or_default())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease ttl must be positive".into()));
        }
        let mut s = self.lock();
        s.next_lease += 1;
        let id = s.next_lease;
        s.leases.insert(id, (ttl, Instant::now() + ttl));
        Ok(Lease { id, ttl })
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        let mut s = self.lock();
        Ok(match s.leases.get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + *ttl;
                true
            }
            None => false,
        })
    }

    async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let mut s = self.lock();
        s.leases.remove(&lease);
        s.sweep();
        Ok(())
    }

    async fn register_worker_leased(&self, w: WorkerRecord, lease: i64) -> Result<(), StoreError> {
        check_id(&w)?;
        let mut s = self.lock();
        s.live_lease(lease)?;
        s.workers.insert(w.id.clone(), (w, Some(lease)));
        Ok(())
    }

    async fn campaign(&self, id: &str, lease: i64) -> Result<bool, StoreError> {
        if id.is_empty() {
            return Err(StoreError::Invalid("candidate id is empty".into()));
        }
        let mut s = self.lock();
        s.live_lease(lease)?;
        match &s.leader {
            Some((holder, _)) => Ok(holder == id),
            None => {
                s.leader = Some((id.to_string(), lease));
                Ok(true)
            }
        }
    }

    async fn leader(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock().leader.as_ref().map(|(id, _)| id.clone()))
    }
}
