//! The etcd backend: the placement store a real cluster shares.
//!
//! Every process of a cluster (the coordinator and each worker) talks to the same etcd, so the
//! placement must be written by a transaction that etcd itself checks: two coordinators racing to
//! publish an epoch cannot both win. All keys live under one prefix per cluster
//! (`/emesh/<cluster>/`):
//! - `workers/<id>`: the worker's record as JSON, optionally attached to a lease
//!   ([`EtcdStore::register_worker_with_lease`]) so that it vanishes when the worker stops
//!   renewing it;
//! - `placement`: `{"epoch": N, "plan_json": "..."}`, written only by [`PlacementStore::put_placement`];
//! - `ready/<epoch, 20 digits>/<worker>`: the epoch is zero-padded so that etcd's byte order is
//!   the numeric order, which lets one range delete drop the readiness of every older epoch;
//! - `leader`: the id of the coordinator that leads, attached to its lease and taken only by a
//!   transaction that checks the key does not exist.

use crate::{Lease, PlacementStore, StoreError, StoredPlacement, WorkerRecord};
use emesh_common::Epoch;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, LeaseClient, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long to wait for a TCP connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request may take before the store is called unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The placement as it is stored under `placement`.
#[derive(Serialize, Deserialize)]
struct PlacementValue {
    epoch: u64,
    plan_json: String,
}

/// A [`PlacementStore`] kept in etcd under one key prefix.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Ends with `/`.
    prefix: String,
    /// The endpoints, comma-separated, for error messages.
    endpoints: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("prefix", &self.prefix).finish()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`) and checks that it answers.
    /// Every key is written under `prefix` (a `/` is appended when it lacks one).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        Self::connect_with(&crate::EtcdOptions {
            endpoints: endpoints.to_vec(),
            prefix: prefix.to_string(),
            ..Default::default()
        })
        .await
    }

    /// Connects with TLS and authentication as `o` says.
    pub async fn connect_with(o: &crate::EtcdOptions) -> Result<EtcdStore, StoreError> {
        let (endpoints, prefix) = (&o.endpoints, o.prefix.as_str());
        let joined = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable("etcd: no endpoint given".into()));
        }
        if prefix.is_empty() {
            return Err(StoreError::Invalid("etcd key prefix is empty".into()));
        }
        let prefix = if prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        let mut options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT).with_timeout(REQUEST_TIMEOUT);
        if let Some(user) = &o.user {
            options = options.with_user(user.clone(), o.password.clone().unwrap_or_default());
        }
        if o.ca.is_some() || o.cert.is_some() {
            options = options.with_tls(tls_options(o)?);
        }
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Unavailable(format!("etcd at {joined}: connect: {e}")))?;
        // The channel connects lazily: ask for the server's status so that a wrong address fails
        // here rather than at the first write.
        client.status().await.map_err(|e| StoreError::Unavailable(format!("etcd at {joined}: status: {e}")))?;
        Ok(EtcdStore { client, prefix, endpoints: joined })
    }

    /// The key prefix, ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn unavailable(&self, what: &str, e: etcd_client::Error) -> StoreError {
        StoreError::Unavailable(format!("etcd at {}: {what}: {e}", self.endpoints))
    }

    fn worker_key(&self, id: &str) -> String {
        format!("{}workers/{id}", self.prefix)
    }

    fn leader_key(&self) -> String {
        format!("{}leader", self.prefix)
    }

    fn placement_key(&self) -> String {
        format!("{}placement", self.prefix)
    }

    fn ready_prefix(&self, epoch: Epoch) -> String {
        format!("{}ready/{:020}/", self.prefix, epoch.0)
    }

    fn worker_value(w: &WorkerRecord) -> Result<String, StoreError> {
        if w.id.is_empty() {
            return Err(StoreError::Invalid("worker id is empty".into()));
        }
        serde_json::to_string(w).map_err(|e| StoreError::Invalid(format!("worker {}: {e}", w.id)))
    }

    /// Reads the placement and the revision it was last written at.
    async fn placement_with_revision(&self) -> Result<Option<(StoredPlacement, i64)>, StoreError> {
        let key = self.placement_key();
        let resp =
            self.client.kv_client().get(key.as_str(), None).await.map_err(|e| self.unavailable("get placement", e))?;
        let Some(kv) = resp.kvs().first() else { return Ok(None) };
        let v: PlacementValue = serde_json::from_slice(kv.value())
            .map_err(|e| StoreError::Invalid(format!("{key} holds no placement: {e}")))?;
        Ok(Some((StoredPlacement { epoch: Epoch(v.epoch), plan_json: v.plan_json }, kv.mod_revision())))
    }

    /// Like [`PlacementStore::register_worker`], but the record is attached to a new lease of
    /// `ttl_secs` seconds: it is deleted by etcd unless the lease is kept alive
    /// ([`LeaseHandle::keep_alive`]) or when it is revoked ([`LeaseHandle::revoke`]).
    pub async fn register_worker_with_lease(&self, w: WorkerRecord, ttl_secs: i64) -> Result<LeaseHandle, StoreError> {
        let value = Self::worker_value(&w)?;
        if ttl_secs <= 0 {
            return Err(StoreError::Invalid(format!("lease ttl must be positive, got {ttl_secs}")));
        }
        let mut leases = self.client.lease_client();
        let grant = leases.grant(ttl_secs, None).await.map_err(|e| self.unavailable("grant lease", e))?;
        let id = grant.id();
        let put = self
            .client
            .kv_client()
            .put(self.worker_key(&w.id), value, Some(PutOptions::new().with_lease(id)))
            .await
            .map_err(|e| self.unavailable(&format!("put worker {}", w.id), e));
        if let Err(e) = put {
            // Best effort: a lease nobody uses would expire on its own anyway.
            let _ = leases.revoke(id).await;
            return Err(e);
        }
        Ok(LeaseHandle { id, ttl_secs: grant.ttl(), leases, stream: None, endpoints: self.endpoints.clone() })
    }
}

/// A lease a worker's record is attached to. Call [`LeaseHandle::keep_alive`] well within the
/// TTL (every third of it is customary); dropping the handle stops nothing by itself, the lease
/// simply expires.
pub struct LeaseHandle {
    id: i64,
    ttl_secs: i64,
    leases: LeaseClient,
    /// The keep-alive stream, opened at the first [`LeaseHandle::keep_alive`].
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    endpoints: String,
}

impl std::fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHandle").field("id", &self.id).field("ttl_secs", &self.ttl_secs).finish()
    }
}

impl LeaseHandle {
    /// The etcd lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted (it may raise a too short one).
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("etcd at {}: {what} (lease {:x}): {e}", self.endpoints, self.id))
    }

    /// Renews the lease once; returns the TTL it was renewed for. Fails when the lease has
    /// already expired (the record is gone then: register again).
    pub async fn keep_alive(&mut self) -> Result<i64, StoreError> {
        if self.stream.is_none() {
            // Opening the stream renews the lease once already.
            let opened = self.leases.keep_alive(self.id).await.map_err(|e| self.unavailable("keep alive", e))?;
            self.stream = Some(opened);
            return Ok(self.ttl_secs);
        }
        let sent = match self.stream.as_mut() {
            Some((keeper, stream)) => match keeper.keep_alive().await {
                Ok(()) => stream.message().await,
                Err(e) => Err(e),
            },
            None => return Err(self.unavailable("keep alive", "no keep-alive stream")),
        };
        match sent {
            Ok(Some(resp)) if resp.ttl() > 0 => Ok(resp.ttl()),
            Ok(Some(_)) => {
                self.stream = None;
                Err(self.unavailable("keep alive", "the lease has expired"))
            }
            Ok(None) => {
                self.stream = None;
                Err(self.unavailable("keep alive", "the server closed the keep-alive stream"))
            }
            Err(e) => {
                self.stream = None;
                Err(self.unavailable("keep alive", e))
            }
        }
    }

    /// Revokes the lease: etcd deletes the records attached to it at once.
    pub async fn revoke(mut self) -> Result<(), StoreError> {
        self.stream = None;
        let id = self.id;
        self.leases.revoke(id).await.map_err(|e| self.unavailable("revoke", e))?;
        Ok(())
    }
}

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| StoreError::Invalid(format!("etcd {what} {}: {e}", path.display())))
}

fn tls_options(o: &crate::EtcdOptions) -> Result<etcd_client::TlsOptions, StoreError> {
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &o.ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem(ca, "CA file")?));
    }
    match (&o.cert, &o.key) {
        (Some(c), Some(k)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(read_pem(c, "certificate")?, read_pem(k, "key")?))
        }
        (None, None) => {}
        _ => return Err(StoreError::Invalid("etcd client TLS needs both a certificate and a key".into())),
    }
    Ok(tls)
}

/// A prefix range, explicitly sorted by key (etcd's default order, but the callers rely on it).
fn by_key() -> GetOptions {
    GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Ascend)
}

fn utf8(kv: &KeyValue) -> Result<&str, StoreError> {
    kv.key_str().map_err(|e| StoreError::Invalid(format!("key {:?} is not UTF-8: {e}", kv.key())))
}

#[async_trait::async_trait]
impl PlacementStore for EtcdStore {
    async fn register_worker(&self, w: WorkerRecord) -> Result<(), StoreError> {
        let value = Self::worker_value(&w)?;
        self.client
            .kv_client()
            .put(self.worker_key(&w.id), value, None)
            .await
            .map_err(|e| self.unavailable(&format!("put worker {}", w.id), e))?;
        Ok(())
    }

    async fn remove_worker(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .kv_client()
            .delete(self.worker_key(id), None)
            .await
            .map_err(|e| self.unavailable(&format!("delete worker {id}"), e))?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let prefix = self.worker_key("");
        let resp = self
            .client
            .kv_client()
            .get(prefix.as_str(), Some(by_key()))
            .await
            .map_err(|e| self.unavailable("list workers", e))?;
        // Sorted by key, so by id.
        resp.kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| {
                    StoreError::Invalid(format!("{} holds no worker record: {e}", kv.key_str().unwrap_or("?")))
                })
            })
            .collect()
    }

    async fn placement(&self) -> Result<Option<StoredPlacement>, StoreError> {
        Ok(self.placement_with_revision().await?.map(|(p, _)| p))
    }

    async fn put_placement(&self, expected: Option<Epoch>, next: StoredPlacement) -> Result<bool, StoreError> {
        let current = self.placement_with_revision().await?;
        // The epoch rules are checked on the value read; the transaction below then checks that
        // this very value is still the one stored (its mod_revision), so nobody wrote in between.
        let compare = match (&current, expected) {
            (None, None) => Compare::create_revision(self.placement_key(), CompareOp::Equal, 0),
            (Some((p, rev)), Some(e)) if p.epoch == e && next.epoch > p.epoch => {
                Compare::mod_revision(self.placement_key(), CompareOp::Equal, *rev)
            }
            _ => return Ok(false),
        };
        let value = serde_json::to_string(&PlacementValue { epoch: next.epoch.0, plan_json: next.plan_json })
            .map_err(|e| StoreError::Invalid(format!("placement: {e}")))?;
        // Readiness of every older epoch no longer matters: `ready/` up to `ready/<next>/`.
        let ready_from = format!("{}ready/", self.prefix);
        let ready_to = self.ready_prefix(next.epoch);
        let txn = Txn::new().when([compare]).and_then([
            TxnOp::put(self.placement_key(), value, None),
            TxnOp::delete(ready_from, Some(DeleteOptions::new().with_range(ready_to))),
        ]);
        let resp = self.client.kv_client().txn(txn).await.map_err(|e| self.unavailable("put placement", e))?;
        Ok(resp.succeeded())
    }

    async fn set_ready(&self, epoch: Epoch, worker: &str) -> Result<(), StoreError> {
        if worker.is_empty() {
            return Err(StoreError::Invalid("worker id is empty".into()));
        }
        let key = format!("{}{worker}", self.ready_prefix(epoch));
        self.client
            .kv_client()
            .put(key, "", None)
            .await
            .map_err(|e| self.unavailable(&format!("set ready {worker} for {epoch}"), e))?;
        Ok(())
    }

    async fn ready(&self, epoch: Epoch) -> Result<Vec<String>, StoreError> {
        let prefix = self.ready_prefix(epoch);
        let resp = self
            .client
            .kv_client()
            .get(prefix.as_str(), Some(by_key().with_keys_only()))
            .await
            .map_err(|e| self.unavailable(&format!("list ready for {epoch}"), e))?;
        // Sorted by key, so by worker id.
        resp.kvs()
            .iter()
            .map(|kv| {
                let key = utf8(kv)?;
                key.strip_prefix(prefix.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| StoreError::Invalid(format!("{key} is not under {prefix}")))
            })
            .collect()
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let secs = ttl.as_millis().div_ceil(1000) as i64;
        if secs <= 0 {
            return Err(StoreError::Invalid("lease ttl must be positive".into()));
        }
        let grant =
            self.client.lease_client().grant(secs, None).await.map_err(|e| self.unavailable("grant lease", e))?;
        Ok(Lease { id: grant.id(), ttl: Duration::from_secs(grant.ttl().max(0) as u64) })
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        let mut leases = self.client.lease_client();
        // Opening the stream sends one renewal and reads its answer: a lease with no TTL left
        // comes back as an error.
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, leases.keep_alive(lease)).await;
        match opened {
            Err(_) => {
                Err(StoreError::Unavailable(format!("etcd at {}: keep alive: no answer in time", self.endpoints)))
            }
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.to_string().contains("lease not found") => Ok(false),
            Ok(Err(e)) => Err(self.unavailable("keep alive", e)),
        }
    }

    async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        match self.client.lease_client().revoke(lease).await {
            Ok(_) => Ok(()),
            // Already gone is what revoking asks for.
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(self.unavailable("revoke", e)),
        }
    }

    async fn register_worker_leased(&self, w: WorkerRecord, lease: i64) -> Result<(), StoreError> {
        let value = Self::worker_value(&w)?;
        match self
            .client
            .kv_client()
            .put(self.worker_key(&w.id), value, Some(PutOptions::new().with_lease(lease)))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("lease not found") => {
                Err(StoreError::Invalid(format!("lease {lease:x} has expired or does not exist")))
            }
            Err(e) => Err(self.unavailable(&format!("put worker {}", w.id), e)),
        }
    }

    async fn campaign(&self, id: &str, lease: i64) -> Result<bool, StoreError> {
        if id.is_empty() {
            return Err(StoreError::Invalid("candidate id is empty".into()));
        }
        let key = self.leader_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), id, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = match self.client.kv_client().txn(txn).await {
            Ok(r) => r,
            Err(e) if e.to_string().contains("lease not found") => {
                return Err(StoreError::Invalid(format!("lease {lease:x} has expired or does not exist")))
            }
            Err(e) => return Err(self.unavailable("campaign", e)),
        };
        if resp.succeeded() {
            return Ok(true);
        }
        let holder = resp.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        Ok(holder.is_some_and(|h| h == id.as_bytes()))
    }

    async fn leader(&self) -> Result<Option<String>, StoreError> {
        let key = self.leader_key();
        let resp =
            self.client.kv_client().get(key.as_str(), None).await.map_err(|e| self.unavailable("get leader", e))?;
        Ok(resp.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}
