//! The DeepSeek-V4 forward pass on CPU.
//!
//! Start at [`engine::Engine`]: it loads a checkpoint ([`checkpoint`], [`weights`]) and runs
//! batches of sequences through the layers ([`hc`], [`attention`], [`compressor`], [`moe`]) with
//! per-sequence caches ([`cache`]). [`gen`] writes random-weight checkpoints in the official
//! format; [`verify`] checks the engine against a golden fixture folder.

pub mod attention;
pub mod cache;
pub mod checkpoint;
pub mod compressor;
pub mod convert;
pub mod engine;
pub mod error;
pub mod gen;
pub mod hc;
pub mod moe;
pub mod numerics;
pub mod parallel;
pub mod verify;
pub mod weights;
pub mod writer;

pub use cache::SeqCache;
pub use engine::{argmax, Engine, LoadOptions, Logits, Seq, Trace};
pub use error::{ModelError, Result};
pub use numerics::Numerics;
pub use parallel::{Local, ModelComm};
pub use weights::Shard;
