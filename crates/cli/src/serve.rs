//! `emesh up` / `emesh coordinator` serving the OpenAI-compatible API over a placed cluster.

use crate::cmd_up::DriveArgs;
use anyhow::Result;
use emesh_coordinator::leader::Leadership;
use emesh_coordinator::{Batcher, Driver, SchedulerConfig};
use std::sync::Arc;

/// Serves the HTTP API over `cluster` until Ctrl-C or SIGTERM.
pub fn serve_http(
    rt: &tokio::runtime::Runtime,
    driver: Driver,
    model: &std::path::Path,
    tokenizer: Option<emesh_chat::Tokenizer>,
    addr: std::net::SocketAddr,
    a: &DriveArgs,
    leadership: Option<Leadership>,
) -> Result<i32> {
    let cluster = &driver.cluster;
    let cfg = cluster.config.clone();
    let name = std::fs::canonicalize(model)?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "emesh".into());
    let handle = emesh_server::metrics::install()?;
    emesh_server::metrics::set_placement(cluster.plan.epoch.0, cluster.plan.ranks.len());
    driver.export_gauges();
    let sched = SchedulerConfig {
        max_per_group: a.max_seqs.max(1),
        step_tokens: a.step_tokens.max(1),
        cache_tokens: a.cache_tokens.max(2),
        max_context: cfg.max_position_embeddings,
    };
    let cache_total = sched.cache_tokens.saturating_mul(cluster.dp());
    let (tx, rx) = tokio::sync::mpsc::channel(a.max_queue.max(1));
    let degraded = Arc::new(std::sync::RwLock::new(None));
    rt.spawn(emesh_server::engine_loop_with(driver, Batcher::with_config(sched), rx, cache_total, degraded.clone()));
    let mut state = emesh_server::AppState::new(
        name,
        tokenizer.map(Arc::new),
        tx,
        cfg.max_position_embeddings,
        cfg.vocab_size,
        cfg.eos_token_id,
    );
    state.api_key = a.api_key.clone().filter(|k| !k.is_empty()).map(Arc::from);
    state.metrics = Some(handle);
    state.degraded = degraded;
    rt.block_on(async move {
        // A standby server may still be letting go of the address.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        println!("{}", serde_json::json!({ "http": listener.local_addr()?.to_string() }));
        let mut lost = leadership.as_ref().map(|l| l.lost.clone());
        let lost = async move {
            match lost.as_mut() {
                Some(rx) => {
                    let _ = rx.wait_for(|l| *l).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = axum::serve(listener, emesh_server::router(state))
                .with_graceful_shutdown(crate::cmd_worker::shutdown_signal()) => r?,
            _ = lost => anyhow::bail!("lost the leader lease: another coordinator leads now"),
        }
        if let Some(l) = leadership {
            l.resign().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

/// While a coordinator waits for the lead it still answers on its HTTP address, so that
/// Kubernetes keeps it alive and out of the Service: `/health` 200, everything else 503 saying
/// it is a standby. Stopped (and the address freed) by dropping the returned sender.
pub fn standby_http(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    id: String,
) -> Result<tokio::sync::oneshot::Sender<()>> {
    use axum::routing::get;
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let reason = format!("{id} is a standby coordinator; another one leads");
    let app = axum::Router::new().route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) })).fallback(
        move || {
            let reason = reason.clone();
            async move {
                let body = serde_json::json!({"error": {"message": reason, "type": "service_unavailable", "param": null, "code": 503}});
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
            }
        },
    );
    rt.spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(tx)
}
