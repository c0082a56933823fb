//! Coordinator election: one leader, standbys waiting.
//!
//! Each candidate holds a lease and campaigns for the store's `leader` key, which only a
//! transaction that finds it absent can take. The leader renews its lease every quarter TTL;
//! standbys campaign again at the same pace and win when the leader's lease lapses (it died or
//! was cut off). A leader that learns its lease is gone steps down at once: it stops driving the
//! cluster, and the workers refuse its steps anyway once the new leader publishes a newer epoch.

use emesh_common::metrics as m;
use emesh_store::PlacementStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Held while leading. `lost` turns true when the lease is known gone.
pub struct Leadership {
    pub lease: i64,
    pub lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn PlacementStore>,
}

impl Leadership {
    /// Gives the lead up at once (revokes the lease) so a standby takes over without waiting for
    /// the TTL.
    pub async fn resign(self) {
        self.task.abort();
        let _ = self.store.revoke(self.lease).await;
        metrics::gauge!(m::IS_LEADER).set(0.0);
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Campaigns until `id` leads; retries while the store is unreachable. `on_standby` is called
/// once if somebody else leads when we start.
pub async fn lead(
    store: Arc<dyn PlacementStore>,
    id: &str,
    ttl: Duration,
    on_standby: impl FnOnce(&str),
) -> Leadership {
    let every = ttl / 4;
    let mut told = Some(on_standby);
    let mut lease: Option<i64> = None;
    loop {
        let l = match lease {
            Some(l) => l,
            None => match store.grant_lease(ttl).await {
                Ok(l) => *lease.insert(l.id),
                Err(e) => {
                    tracing::warn!("{id}: granting a lease: {e}");
                    tokio::time::sleep(every).await;
                    continue;
                }
            },
        };
        match store.campaign(id, l).await {
            Ok(true) => break,
            Ok(false) => {
                if let Some(f) = told.take() {
                    let holder = store.leader().await.ok().flatten().unwrap_or_default();
                    f(&holder);
                }
                if !matches!(store.keep_alive(l).await, Ok(true)) {
                    lease = None;
                }
            }
            Err(e) => {
                tracing::warn!("{id}: campaigning: {e}");
                lease = None;
            }
        }
        tokio::time::sleep(every).await;
    }
    let lease = lease.unwrap_or_default();
    tracing::info!("{id}: leading (lease {lease:x})");
    metrics::gauge!(m::IS_LEADER).set(1.0);
    let (tx, rx) = watch::channel(false);
    let keeper = store.clone();
    let name = id.to_string();
    let task = tokio::spawn(async move {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match keeper.keep_alive(lease).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::error!("{name}: the leader lease is gone; stepping down");
                    metrics::gauge!(m::IS_LEADER).set(0.0);
                    let _ = tx.send(true);
                    return;
                }
                Err(e) => tracing::warn!(
                    "{name}: renewing the leader lease ({:.1}s since the last renewal): {e}",
                    renewed.elapsed().as_secs_f64()
                ),
            }
        }
    });
    Leadership { lease, lost: rx, task, store }
}
