//! Every metric name ExpertMesh exports, in one place. vLLM's names where a vLLM meaning exists
//! (with the `emesh:` namespace); labels are bounded (`rank`, `layer`, never a request id).

// Serving (coordinator HTTP front).
pub const NUM_REQUESTS_RUNNING: &str = "emesh:num_requests_running";
pub const NUM_REQUESTS_WAITING: &str = "emesh:num_requests_waiting";
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "emesh:time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY_SECONDS: &str = "emesh:inter_token_latency_seconds";
pub const E2E_REQUEST_LATENCY_SECONDS: &str = "emesh:e2e_request_latency_seconds";
pub const PROMPT_TOKENS_TOTAL: &str = "emesh:prompt_tokens_total";
pub const GENERATION_TOKENS_TOTAL: &str = "emesh:generation_tokens_total";
pub const CACHE_USAGE_RATIO: &str = "emesh:cache_usage_ratio";

// Expert parallelism.
/// Counter, label `rank`: tokens dispatched to that rank's experts.
pub const RANK_TOKENS_RECEIVED_TOTAL: &str = "emesh:rank_tokens_received_total";
/// Gauge, label `layer`: max over ranks / mean over ranks of the tokens a layer's experts got.
pub const LAYER_LOAD_IMBALANCE: &str = "emesh:layer_load_imbalance";
pub const DISPATCH_LATENCY_SECONDS: &str = "emesh:dispatch_latency_seconds";
pub const COMBINE_LATENCY_SECONDS: &str = "emesh:combine_latency_seconds";

// Placement and failover.
pub const PLACEMENT_EPOCH: &str = "emesh:placement_epoch";
pub const LIVE_WORKERS: &str = "emesh:live_workers";
pub const FAILOVERS_TOTAL: &str = "emesh:failovers_total";
pub const EXPERTS_RELOADED_TOTAL: &str = "emesh:experts_reloaded_total";
pub const RELOADED_BYTES_TOTAL: &str = "emesh:reloaded_bytes_total";
pub const RECOVERY_SECONDS: &str = "emesh:recovery_seconds";
/// Gauge: 1 while the survivors cannot hold the model (the API answers 503).
pub const DEGRADED: &str = "emesh:degraded";
/// Gauge: 1 on the coordinator that holds the leader key.
pub const IS_LEADER: &str = "emesh:is_leader";
