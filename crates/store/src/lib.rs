//! The placement store: the worker registry, the placement with its epoch, readiness per epoch.
//!
//! Keys follow one prefix per cluster (`/emesh/<cluster>/`): `workers/<id>` (attached to the
//! worker's lease, so it vanishes when the worker stops renewing it), `placement` (written by
//! compare-and-swap on its epoch), `ready/<epoch>/<worker>`, and `leader` (the coordinator
//! election, attached to the leader's lease). The trait has an
//! in-memory backend ([`MemoryStore`], for `emesh up` and tests) and an etcd one ([`EtcdStore`],
//! what a real cluster shares); both must pass [`conformance::run`].

pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd;
mod memory;

pub mod etcd_server;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdStore, LeaseHandle};
pub use memory::MemoryStore;

use emesh_common::Epoch;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Whether this build has the etcd backend (feature `etcd`).
pub const HAS_ETCD: bool = cfg!(feature = "etcd");

/// How to reach etcd.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// `http://host:port` (or `https://` with TLS), several for a cluster.
    pub endpoints: Vec<String>,
    /// Every key lives under it (`/emesh/<cluster>/`).
    pub prefix: String,
    /// PEM CA bundle to verify the servers with; enables TLS.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// etcd authentication.
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Connects to etcd as `opts` says; an error names the endpoints, or says this build lacks etcd.
pub async fn connect_etcd(opts: &EtcdOptions) -> Result<Arc<dyn PlacementStore>, StoreError> {
    #[cfg(feature = "etcd")]
    {
        Ok(Arc::new(EtcdStore::connect_with(opts).await?))
    }
    #[cfg(not(feature = "etcd"))]
    {
        Err(StoreError::Unavailable(format!(
            "etcd at {}: this emesh was built without etcd support (build with `--features etcd`)",
            opts.endpoints.join(",")
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// A worker as registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    pub addr: String,
    pub memory_budget: u64,
}

/// A lease: records attached to it vanish when it is not renewed within its TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// The TTL granted (a backend may raise a too short one).
    pub ttl: std::time::Duration,
}

/// The placement as stored: its epoch and the plan (JSON of `emesh_placement::Plan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPlacement {
    pub epoch: Epoch,
    pub plan_json: String,
}

#[async_trait::async_trait]
pub trait PlacementStore: Send + Sync {
    /// Adds or replaces a worker's record.
    async fn register_worker(&self, w: WorkerRecord) -> Result<(), StoreError>;
    async fn remove_worker(&self, id: &str) -> Result<(), StoreError>;
    /// Registered workers, by id.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError>;
    async fn placement(&self) -> Result<Option<StoredPlacement>, StoreError>;
    /// Writes `next` only if the stored epoch is `expected` (`None`: nothing stored yet) and
    /// `next.epoch` is newer. Returns whether it was written.
    async fn put_placement(&self, expected: Option<Epoch>, next: StoredPlacement) -> Result<bool, StoreError>;
    /// Records that `worker` has loaded what `epoch` asks of it.
    async fn set_ready(&self, epoch: Epoch, worker: &str) -> Result<(), StoreError>;
    /// Workers ready for `epoch`, by id.
    async fn ready(&self, epoch: Epoch) -> Result<Vec<String>, StoreError>;

    /// Grants a lease of at least `ttl`.
    async fn grant_lease(&self, ttl: std::time::Duration) -> Result<Lease, StoreError>;
    /// Renews `lease` once. `Ok(false)` when it has expired or was revoked (its records are gone);
    /// `Err` when the store cannot be reached (the lease may well still be alive).
    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError>;
    /// Revokes `lease`: its records are deleted at once.
    async fn revoke(&self, lease: i64) -> Result<(), StoreError>;
    /// Adds or replaces a worker's record, attached to `lease`.
    async fn register_worker_leased(&self, w: WorkerRecord, lease: i64) -> Result<(), StoreError>;
    /// Takes the `leader` key for `id` if nobody holds it (attached to `lease`). Returns whether
    /// `id` is the leader now (also when it already was).
    async fn campaign(&self, id: &str, lease: i64) -> Result<bool, StoreError>;
    /// The current leader's id.
    async fn leader(&self) -> Result<Option<String>, StoreError>;
}
