//! `emesh up` / `emesh coordinator` serving the OpenAI-compatible API over a placed cluster.

use crate::cmd_up::DriveArgs;
use anyhow::Result;
use emesh_coordinator::{Batcher, Cluster, SchedulerConfig};
use std::sync::Arc;

/// Serves the HTTP API over `cluster` until Ctrl-C or SIGTERM.
pub fn serve_http(
    rt: &tokio::runtime::Runtime,
    cluster: Cluster,
    model: &std::path::Path,
    tokenizer: Option<emesh_chat::Tokenizer>,
    addr: std::net::SocketAddr,
    a: &DriveArgs,
) -> Result<i32> {
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
    rt.spawn(emesh_server::engine_loop(cluster, Batcher::with_config(sched), rx, cache_total));
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
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("{}", serde_json::json!({ "http": listener.local_addr()?.to_string() }));
        axum::serve(listener, emesh_server::router(state))
            .with_graceful_shutdown(crate::cmd_worker::shutdown_signal())
            .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
