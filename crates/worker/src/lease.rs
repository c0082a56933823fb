//! Self-fencing: a worker serves only while it may.
//!
//! A registered worker keeps a lease in the placement store and renews it every quarter TTL. It
//! refuses steps (1) while its last confirmed renewal is older than the TTL (the lease may have
//! expired and the coordinator may have given its role away), (2) for good once the store says
//! the lease is gone (it then registers again, as a new worker waiting for a role), and (3) for
//! any epoch older than the newest it knows of (from loads, or the placement in the store).
//! While the store is unreachable a worker with a fresh renewal keeps serving: no new placement
//! can be published without the store either, so no one else can hold its role.

use crate::server::{lock, WorkerService};
use emesh_common::Epoch;
use emesh_store::{PlacementStore, WorkerRecord};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Status;

/// Where and how a worker registers.
#[derive(Clone)]
pub struct Registration {
    pub store: Arc<dyn PlacementStore>,
    /// Address peers and the coordinator reach this worker at (default: the bound address).
    pub advertise: Option<String>,
    pub ttl: Duration,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("advertise", &self.advertise).field("ttl", &self.ttl).finish()
    }
}

/// What decides whether a step may be served.
#[derive(Clone, Debug)]
pub struct Fence {
    ttl: Option<Duration>,
    /// The last renewal the store confirmed.
    renewed: Option<Instant>,
    pub newest: Epoch,
    /// The epoch this worker has loaded.
    pub loaded: Epoch,
    pub stale_refused: u64,
    pub steps_served: u64,
    pub last_served: Epoch,
}

impl Fence {
    pub fn new(ttl: Option<Duration>) -> Self {
        Fence {
            ttl,
            renewed: None,
            newest: Epoch(0),
            loaded: Epoch(0),
            stale_refused: 0,
            steps_served: 0,
            last_served: Epoch(0),
        }
    }

    pub fn saw_epoch(&mut self, e: Epoch) {
        self.newest = self.newest.max(e);
    }

    pub fn loaded(&mut self, e: Epoch) {
        self.loaded = e;
        self.saw_epoch(e);
    }

    /// Why steps are refused now, if they are.
    pub fn reason(&self) -> Option<String> {
        if let Some(ttl) = self.ttl {
            match self.renewed {
                None => return Some("not registered in the placement store yet".into()),
                Some(t) if t.elapsed() > ttl => {
                    return Some(format!(
                        "lease not renewed for {:.1}s (ttl {:.1}s)",
                        t.elapsed().as_secs_f64(),
                        ttl.as_secs_f64()
                    ))
                }
                Some(_) => {}
            }
        }
        (self.newest > self.loaded)
            .then(|| format!("placement epoch {} is newer than the loaded {}", self.newest.0, self.loaded.0))
    }

    /// Checks a step of `epoch` may start.
    pub fn admit(&mut self, epoch: Epoch) -> Result<(), Status> {
        if epoch < self.newest {
            self.stale_refused += 1;
            return Err(Status::failed_precondition(format!(
                "step for epoch {} refused: epoch {} is newer",
                epoch.0, self.newest.0
            )));
        }
        match self.reason() {
            Some(r) => Err(Status::unavailable(format!("self-fenced: {r}"))),
            None => Ok(()),
        }
    }

    /// Checks a finished step of `epoch` may be answered, and counts it.
    pub fn served(&mut self, epoch: Epoch) -> Result<(), Status> {
        self.admit(epoch)?;
        self.steps_served += 1;
        self.last_served = epoch;
        Ok(())
    }
}

/// Registers `svc` with a lease and keeps it; fences and registers again when the lease is lost.
/// Runs until aborted.
pub async fn keep_registered(svc: WorkerService, reg: Registration, bound: String) {
    let record = WorkerRecord {
        id: svc.worker_id().to_string(),
        addr: reg.advertise.clone().unwrap_or(bound),
        memory_budget: svc.memory_budget(),
    };
    let every = reg.ttl / 4;
    loop {
        let lease = match register(&*reg.store, &record, reg.ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("{}: registering: {e}; retrying", record.id);
                tokio::time::sleep(every).await;
                continue;
            }
        };
        lock(&svc.inner.fence).renewed = Some(Instant::now());
        tracing::info!("{}: registered at {} (lease {lease:x})", record.id, record.addr);
        loop {
            if svc.is_cut_off() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let sent = Instant::now();
            match reg.store.keep_alive(lease).await {
                Ok(true) => lock(&svc.inner.fence).renewed = Some(sent),
                Ok(false) => {
                    svc.fence("the lease expired", None);
                    break;
                }
                Err(e) => tracing::warn!("{}: renewing the lease: {e}", record.id),
            }
            if let Ok(Some(p)) = reg.store.placement().await {
                lock(&svc.inner.fence).saw_epoch(p.epoch);
                svc.fence(&format!("placement epoch {} was published", p.epoch.0), Some(p.epoch));
            }
            // Renew faster while the store does not answer.
            let pause = if sent.elapsed() > every { Duration::from_millis(100) } else { every };
            tokio::time::sleep(pause).await;
        }
    }
}

async fn register(store: &dyn PlacementStore, record: &WorkerRecord, ttl: Duration) -> Result<i64, String> {
    let lease = store.grant_lease(ttl).await.map_err(|e| e.to_string())?;
    store.register_worker_leased(record.clone(), lease.id).await.map_err(|e| e.to_string())?;
    Ok(lease.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_serves_only_its_newest_epoch_with_a_fresh_lease() {
        let mut f = Fence::new(Some(Duration::from_millis(200)));
        f.loaded(Epoch(3));
        assert!(f.admit(Epoch(3)).is_err(), "never registered: refused");
        f.renewed = Some(Instant::now());
        assert!(f.admit(Epoch(3)).is_ok());
        assert!(f.served(Epoch(3)).is_ok());
        assert_eq!((f.steps_served, f.last_served), (1, Epoch(3)));
        f.saw_epoch(Epoch(4));
        assert!(f.admit(Epoch(3)).is_err(), "a newer epoch was published");
        assert_eq!(f.stale_refused, 1);
        assert!(f.reason().is_some_and(|r| r.contains("newer")));
        f.loaded(Epoch(4));
        assert!(f.served(Epoch(4)).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        let e = f.admit(Epoch(4)).unwrap_err();
        assert!(e.message().contains("lease not renewed"), "{}", e.message());
        f.renewed = Some(Instant::now());
        assert!(f.admit(Epoch(4)).is_ok(), "a renewal lifts the fence");
        // Without a store there is no lease to check.
        let mut free = Fence::new(None);
        free.loaded(Epoch(1));
        assert!(free.admit(Epoch(1)).is_ok());
    }
}
