//! Every environment variable ExpertMesh reads, in one place.

/// Colon-separated list of golden fixture folders (default: every folder under
/// `../shared/fixtures` that holds an `expected.safetensors`).
pub const ENV_FIXTURES: &str = "EMESH_FIXTURES";
/// Root of the shared fixtures folder (default `../shared/fixtures` from the workspace root).
pub const ENV_FIXTURES_DIR: &str = "EMESH_FIXTURES_DIR";
/// Path of the V4 tokenizer folder used by tests (default `../shared/models/deepseek-v4-tokenizer`).
pub const ENV_TOKENIZER_DIR: &str = "EMESH_TOKENIZER_DIR";
/// When set to `1`, tests that need etcd fail instead of skipping when it is absent.
pub const ENV_REQUIRE_ETCD: &str = "EMESH_REQUIRE_ETCD";
/// Number of compute threads (default: all cores).
pub const ENV_THREADS: &str = "EMESH_THREADS";
/// Log filter, as `RUST_LOG` (e.g. `info,emesh_model=debug`).
pub const ENV_LOG: &str = "EMESH_LOG";
/// Folder where `emesh` keeps generated preset models (default `./models`).
pub const ENV_MODELS_DIR: &str = "EMESH_MODELS_DIR";
/// When set, the portable kernels are used instead of AVX2 (results are bit-identical).
pub const ENV_NO_SIMD: &str = "EMESH_NO_SIMD";
/// Password for etcd authentication (with `--etcd-user`); never taken on the command line.
pub const ENV_ETCD_PASSWORD: &str = "EMESH_ETCD_PASSWORD";
/// Fault injection at named points (the `fail` crate's syntax, e.g. `worker::step=3*off->return`).
pub const ENV_FAILPOINTS: &str = "FAILPOINTS";
/// API key the HTTP front requires as `Authorization: Bearer KEY` on `/v1/*`, `/tokenize` and
/// `/detokenize` (same as `emesh up --api-key`).
pub const ENV_API_KEY: &str = "EMESH_API_KEY";
/// When set to `1`, the OpenAI Python client test fails instead of skipping when Python or the
/// `openai` package is missing.
pub const ENV_REQUIRE_PYTHON: &str = "EMESH_REQUIRE_PYTHON";
/// Python interpreter with the `openai` package for that test (default `python3`).
pub const ENV_PYTHON: &str = "EMESH_PYTHON";
