//! The etcd flags every long-running command shares (`worker`, `coordinator`), as the Helm
//! chart renders them.

use anyhow::{Context, Result};
use emesh_common::names::ENV_ETCD_PASSWORD;
use emesh_store::{EtcdOptions, MemoryStore, PlacementStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct EtcdArgs {
    /// etcd endpoints (comma-separated, `http://host:2379`); without them the placement lives in
    /// this process only (no leases, no standby coordinators).
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of this cluster in etcd.
    #[arg(long, default_value = "/emesh/default/")]
    pub etcd_prefix: String,
    /// CA bundle (PEM) to verify etcd with; enables TLS.
    #[arg(long)]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --etcd-key.
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
    /// etcd user; the password comes from $EMESH_ETCD_PASSWORD.
    #[arg(long)]
    pub etcd_user: Option<String>,
    /// Seconds a lease lives without renewal: how fast a dead worker or leader is noticed.
    #[arg(long, default_value_t = 5.0)]
    pub lease_ttl: f64,
}

impl EtcdArgs {
    pub fn enabled(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    pub fn ttl(&self) -> Result<Duration> {
        if !(self.lease_ttl.is_finite() && self.lease_ttl >= 1.0) {
            anyhow::bail!("--lease-ttl must be at least 1 second, got {}", self.lease_ttl);
        }
        Ok(Duration::from_secs_f64(self.lease_ttl))
    }

    /// The store: etcd when endpoints are given, else a fresh in-memory one.
    pub async fn store(&self) -> Result<Arc<dyn PlacementStore>> {
        if !self.enabled() {
            return Ok(Arc::new(MemoryStore::new()));
        }
        let opts = EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            ca: self.etcd_cacert.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
            password: std::env::var(ENV_ETCD_PASSWORD).ok(),
        };
        emesh_store::connect_etcd(&opts).await.with_context(|| format!("connecting to etcd ({})", self.etcd_prefix))
    }
}
