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
        let listener = tokio::net::TcpListener::bind(addr).await?;
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
