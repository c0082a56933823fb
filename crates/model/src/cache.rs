//! Per-sequence caches: everything a decode step needs so it costs O(window + selected entries).
//!
//! Every cached quantity is a deterministic function of the tokens it covers and is written by
//! position, so a step can be replayed (after a failure) with identical results.

use emesh_common::ModelConfig;

/// Streaming state of one compressor (spec §7.3): projections of the current, incomplete window
/// and, for overlapping compressors, of the last complete window.
#[derive(Clone, Debug, Default)]
pub struct CompressorState {
    /// Rows of `[kv (o*c) | gate (o*c)]` for the tokens of the current window.
    pub cur: Vec<f32>,
    /// The last complete window's rows (overlap only).
    pub prev: Option<Vec<f32>>,
    /// Finished entries, `width` values each.
    pub entries: Vec<f32>,
}

impl CompressorState {
    pub fn n_entries(&self, width: usize) -> usize {
        self.entries.len() / width
    }
}

#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    /// The last `min(window, pos)` KV vectors, oldest first.
    pub window: Vec<f32>,
    pub compressor: CompressorState,
    pub indexer: CompressorState,
}

/// All caches of one sequence.
#[derive(Clone, Debug, Default)]
pub struct SeqCache {
    /// Number of tokens already processed (the next token's position).
    pub pos: usize,
    pub layers: Vec<LayerCache>,
}

impl SeqCache {
    pub fn new(cfg: &ModelConfig) -> Self {
        SeqCache { pos: 0, layers: vec![LayerCache::default(); cfg.num_layers] }
    }

    /// Bytes held (f32 everywhere).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let c = |s: &CompressorState| s.cur.len() + s.prev.as_ref().map_or(0, Vec::len) + s.entries.len();
                (l.window.len() + c(&l.compressor) + c(&l.indexer)) * 4
            })
            .sum()
    }
}
