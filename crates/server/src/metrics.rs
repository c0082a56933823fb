//! The Prometheus exposition of `/metrics`: one recorder for the process, histograms with
//! explicit buckets for the latencies, every serving name registered from the start so a scrape
//! sees them before the first request.

use emesh_common::metrics as m;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];

/// Installs the process-wide recorder; returns the handle `/metrics` renders.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let mut b = PrometheusBuilder::new();
    for name in [m::TIME_TO_FIRST_TOKEN_SECONDS, m::INTER_TOKEN_LATENCY_SECONDS, m::E2E_REQUEST_LATENCY_SECONDS] {
        b = b.set_buckets_for_metric(Matcher::Full(name.to_string()), LATENCY_BUCKETS)?;
    }
    let handle = b.install_recorder()?;
    metrics::describe_gauge!(m::NUM_REQUESTS_RUNNING, "Requests running on the cluster.");
    metrics::describe_gauge!(m::NUM_REQUESTS_WAITING, "Requests waiting for a slot.");
    metrics::describe_histogram!(m::TIME_TO_FIRST_TOKEN_SECONDS, "Arrival to first token, seconds.");
    metrics::describe_histogram!(m::INTER_TOKEN_LATENCY_SECONDS, "Time between two tokens of a request, seconds.");
    metrics::describe_histogram!(m::E2E_REQUEST_LATENCY_SECONDS, "Arrival to last token, seconds.");
    metrics::describe_counter!(m::PROMPT_TOKENS_TOTAL, "Prompt tokens admitted.");
    metrics::describe_counter!(m::GENERATION_TOKENS_TOTAL, "Tokens generated.");
    metrics::describe_gauge!(m::CACHE_USAGE_RATIO, "Cache tokens held over the cache token budget.");
    metrics::describe_gauge!(m::PLACEMENT_EPOCH, "Epoch of the placement being served.");
    metrics::describe_gauge!(m::LIVE_WORKERS, "Worker ranks in the placement being served.");
    metrics::describe_gauge!(m::DEGRADED, "1 while the API answers 503 (degraded).");
    metrics::gauge!(m::NUM_REQUESTS_RUNNING).set(0.0);
    metrics::gauge!(m::NUM_REQUESTS_WAITING).set(0.0);
    metrics::gauge!(m::CACHE_USAGE_RATIO).set(0.0);
    metrics::gauge!(m::DEGRADED).set(0.0);
    metrics::counter!(m::PROMPT_TOKENS_TOTAL).increment(0);
    metrics::counter!(m::GENERATION_TOKENS_TOTAL).increment(0);
    for name in [m::TIME_TO_FIRST_TOKEN_SECONDS, m::INTER_TOKEN_LATENCY_SECONDS, m::E2E_REQUEST_LATENCY_SECONDS] {
        let _ = metrics::histogram!(name);
    }
    Ok(handle)
}

/// Records what the coordinator knows of the placement.
pub fn set_placement(epoch: u64, workers: usize) {
    metrics::gauge!(m::PLACEMENT_EPOCH).set(epoch as f64);
    metrics::gauge!(m::LIVE_WORKERS).set(workers as f64);
}
