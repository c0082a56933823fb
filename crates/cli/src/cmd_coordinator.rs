use anyhow::{bail, Result};
use emesh_store::PlacementStore;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Worker addresses (`emesh worker --listen ...`), in rank order. With etcd, may be left out:
    /// then the first --expect-workers workers registered in etcd are used (by id).
    #[arg(long, value_delimiter = ',')]
    workers: Vec<String>,
    /// With etcd and no --workers: how many registered workers to wait for.
    #[arg(long)]
    expect_workers: Option<usize>,
    /// This coordinator's name in the leader election (default: host name and pid).
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    etcd: crate::etcd_args::EtcdArgs,
    #[command(flatten)]
    drive: crate::cmd_up::DriveArgs,
}

/// Places the model on running workers and drives them. With etcd it first wins the leader
/// election (standbys wait here), and exits when it loses the lead.
pub fn run(a: Args) -> Result<i32> {
    if a.workers.is_empty() && !(a.etcd.enabled() && a.expect_workers.is_some()) {
        bail!("give --workers ADDR,..., or --etcd-endpoints with --expect-workers N");
    }
    let rt = crate::local_cluster::runtime()?;
    let store = rt.block_on(a.etcd.store())?;
    let leadership = if a.etcd.enabled() {
        let id = a.id.clone().unwrap_or_else(default_id);
        let ttl = a.etcd.ttl()?;
        let standby = match a.drive.http_addr() {
            Some(addr) => Some(crate::serve::standby_http(&rt, addr, id.clone())?),
            None => None,
        };
        let lead = rt.block_on(emesh_coordinator::leader::lead(store.clone(), &id, ttl, |holder| {
            eprintln!("{id}: standby; {holder} leads");
        }));
        if let Some(stop) = standby {
            drop(stop);
            // Let the standby server release the address before the real one binds it.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(lead)
    } else {
        None
    };
    let addrs = if a.workers.is_empty() {
        rt.block_on(discover(&*store, a.expect_workers.unwrap_or(1)))?
    } else {
        a.workers.clone()
    };
    crate::cmd_up::drive(&rt, &addrs, &a.drive, store, leadership)
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "coordinator" } else { &host }, std::process::id())
}

/// Waits until `n` workers are registered; their addresses by worker id.
async fn discover(store: &dyn PlacementStore, n: usize) -> Result<Vec<String>> {
    let t0 = Instant::now();
    let mut said = false;
    loop {
        let ws = store.workers().await?;
        if ws.len() >= n {
            return Ok(ws.into_iter().take(n).map(|w| w.addr).collect());
        }
        if !said && t0.elapsed() > Duration::from_secs(5) {
            eprintln!("waiting for workers: {} of {n} registered", ws.len());
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
