use anyhow::Result;
use emesh_worker::WorkerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Address to serve the Worker and Exchange gRPC services on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Model folder on this host (default: the one the coordinator names).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Refuse a shard whose weights exceed this many bytes (also reported to the planner).
    #[arg(long)]
    memory_budget: Option<u64>,
    /// Name reported to the coordinator.
    #[arg(long, default_value = "worker")]
    id: String,
    /// Seconds a collective waits for a peer before failing the step.
    #[arg(long, default_value_t = 60)]
    exchange_timeout: u64,
    /// Address the coordinator and peers reach this worker at (default: the bound address).
    #[arg(long)]
    advertise: Option<String>,
    /// With etcd, the worker registers itself under a lease and fences itself when it loses it.
    #[command(flatten)]
    etcd: crate::etcd_args::EtcdArgs,
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Serves until interrupted; prints `{"listening": ADDR}` once bound.
pub fn run(a: Args) -> Result<i32> {
    let rt = crate::local_cluster::runtime()?;
    let registration = if a.etcd.enabled() {
        let store = rt.block_on(a.etcd.store())?;
        Some(emesh_worker::Registration { store, advertise: a.advertise.clone(), ttl: a.etcd.ttl()? })
    } else {
        None
    };
    let cfg = WorkerConfig {
        registration,
        worker_id: a.id,
        memory_budget: a.memory_budget,
        model_dir: a.model,
        exchange_timeout: Duration::from_secs(a.exchange_timeout),
        progress: false,
    };
    rt.block_on(emesh_worker::run(
        cfg,
        a.listen,
        |addr| println!("{}", serde_json::json!({ "listening": addr.to_string() })),
        shutdown_signal(),
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(0)
}
