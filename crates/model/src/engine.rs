//! The single-process engine: a batch of sequences of any lengths through every layer.
//!
//! Tokens of all sequences are flattened into one matrix for the matmuls (which are
//! batch-invariant), while attention and the compressors run per sequence on its own cache.

use crate::attention::{self, AttnCtx, Span};
use crate::cache::SeqCache;
use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::hc;
use crate::moe::{self, Route};
use crate::numerics::Numerics;
use crate::parallel::{Local, ModelComm};
use crate::weights::{self, ModelWeights, Shard};
use emesh_common::ModelConfig;
use emesh_compute::{matmul, ops, RopeTable};
use std::path::{Path, PathBuf};

/// Which positions of a sequence need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// One sequence's part of a batch.
pub struct Seq<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
    pub logits: Logits,
}

/// Intermediate values recorded for golden tests (flattened over the batch).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub embed: Vec<f32>,
    pub layers: Vec<LayerTrace>,
    pub after_hc_head: Vec<f32>,
    pub after_final_norm: Vec<f32>,
}

#[derive(Clone, Debug, Default)]
pub struct LayerTrace {
    pub attn_out: Vec<f32>,
    pub moe_out: Vec<f32>,
    /// Streams after the layer, `[T, hc, d]`.
    pub streams: Vec<f32>,
    pub routes: Vec<Route>,
    /// CSA layers: `[T, index_topk]`, ascending, `-1` padded.
    pub indexer: Vec<i64>,
}

pub struct Engine {
    pub cfg: ModelConfig,
    pub weights: ModelWeights,
    pub numerics: Numerics,
    main_rope: RopeTable,
    compress_rope: RopeTable,
}

/// Where to load a model from.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Config file (default `DIR/config.json`).
    pub config: Option<PathBuf>,
    /// Explicit safetensors files (default: the folder's index or `model.safetensors`).
    pub files: Option<Vec<PathBuf>>,
    pub numerics: Numerics,
    pub progress: bool,
    /// Refuse to load more than this many bytes of weights.
    pub memory_budget: Option<u64>,
}

impl Engine {
    pub fn new(cfg: ModelConfig, weights: ModelWeights, numerics: Numerics) -> Self {
        let main_rope = RopeTable::new(cfg.rope_dim, cfg.main_rope.theta, cfg.main_rope.yarn);
        let compress_rope = RopeTable::new(cfg.rope_dim, cfg.compress_rope.theta, cfg.compress_rope.yarn);
        Engine { cfg, weights, numerics, main_rope, compress_rope }
    }

    /// Loads the whole model from a checkpoint folder.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let cfg_path = opts.config.clone().unwrap_or_else(|| dir.join("config.json"));
        let cfg = ModelConfig::from_file(&cfg_path)?;
        let ck = match &opts.files {
            Some(f) => Checkpoint::open_files(f)?,
            None => Checkpoint::open(dir)?,
        };
        let shard = Shard::full(&cfg);
        if let Some(budget) = opts.memory_budget {
            let need = ck.bytes_of(&weights::tensor_names(&cfg, &shard, &ck));
            if need > budget {
                return Err(ModelError::Budget { what: format!("the model in {}", dir.display()), need, budget });
            }
        }
        let w = weights::load(&cfg, &shard, &ck, opts.progress)?;
        Ok(Engine::new(cfg, w, opts.numerics))
    }

    pub fn new_cache(&self) -> SeqCache {
        SeqCache::new(&self.cfg)
    }

    /// Runs one forward over a batch; returns, per sequence, its requested logits
    /// (`[rows, vocab]` flattened; empty for `Logits::None`).
    pub fn forward(&self, seqs: &mut [Seq], trace: Option<&mut Trace>) -> Result<Vec<Vec<f32>>> {
        self.forward_with(&mut Local, seqs, trace)
    }

    /// [`Engine::forward`] with the cross-rank parts of each layer going through `comm`.
    pub fn forward_with(
        &self,
        comm: &mut dyn ModelComm,
        seqs: &mut [Seq],
        mut trace: Option<&mut Trace>,
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let (d, hcm) = (cfg.hidden_size, cfg.hc_mult);
        let (eps, hc_eps) = (cfg.rms_norm_eps as f32, cfg.hc_eps as f32);
        let mut tokens = Vec::new();
        let mut spans = Vec::with_capacity(seqs.len());
        for s in seqs.iter() {
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(ModelError::Invalid(format!(
                    "token id {bad} is outside the vocabulary (0..{})",
                    cfg.vocab_size
                )));
            }
            if s.cache.layers.len() != cfg.num_layers {
                return Err(ModelError::Invalid("sequence cache was made for another model".into()));
            }
            spans.push(Span { start: tokens.len(), len: s.tokens.len(), pos0: s.cache.pos });
            tokens.extend_from_slice(s.tokens);
        }
        let n = tokens.len();
        let dims = hc::HcDims { hc: hcm, d, iters: cfg.hc_sinkhorn_iters, hc_eps, norm_eps: eps };
        let mut x = vec![0.0f32; n * hcm * d];
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &mut x[t * hcm * d..(t + 1) * hcm * d];
            self.weights.embed.decode_row(tok as usize, &mut row[..d]);
            for j in 1..hcm {
                row.copy_within(0..d, j * d);
            }
        }
        if let Some(tr) = trace.as_deref_mut() {
            tr.embed = x.chunks_exact(hcm * d).flat_map(|r| r[..d].to_vec()).collect();
            tr.layers.clear();
        }
        for (li, lw) in self.weights.layers.iter().enumerate() {
            let mut lt = trace.is_some().then(LayerTrace::default);
            let (mut a, mix) = hc::pre(&x, n, dims, &lw.hc_attn);
            ops::rms_norm_rows(&mut a, d, Some(&lw.attn_norm), eps);
            let rope = if lw.attn.kind.has_compressor() { &self.compress_rope } else { &self.main_rope };
            let ctx = AttnCtx { cfg, rope, numerics: self.numerics };
            let mut caches: Vec<&mut crate::cache::LayerCache> =
                seqs.iter_mut().map(|s| &mut s.cache.layers[li]).collect();
            let partials =
                attention::forward(&ctx, &lw.attn, &a, &spans, &mut caches, lt.as_mut().map(|l| &mut l.indexer));
            let u = comm.reduce_attention(li, partials, n * d)?;
            hc::post(&mut x, &u, &mix, hcm, d);
            let (mut b, mix) = hc::pre(&x, n, dims, &lw.hc_ffn);
            ops::rms_norm_rows(&mut b, d, Some(&lw.ffn_norm), eps);
            let routes = moe::route(cfg, &lw.moe, &b, &tokens, self.numerics);
            let mut v = comm.routed_experts(cfg, li, &lw.moe, &b, &routes, self.numerics)?;
            moe::add_shared(&mut v, &moe::expert_forward(cfg, &lw.moe.shared, &b, n, None, self.numerics));
            hc::post(&mut x, &v, &mix, hcm, d);
            if let (Some(tr), Some(mut l)) = (trace.as_deref_mut(), lt) {
                l.attn_out = u;
                l.moe_out = v;
                l.streams = x.clone();
                l.routes = routes;
                tr.layers.push(l);
            }
        }
        for (s, sp) in seqs.iter_mut().zip(&spans) {
            s.cache.pos += sp.len;
        }
        // Final head on the rows that need logits.
        let mut rows = Vec::new();
        for (s, sp) in seqs.iter().zip(&spans) {
            match s.logits {
                Logits::None => {}
                Logits::Last if sp.len > 0 => rows.push(sp.start + sp.len - 1),
                Logits::Last => {}
                Logits::All => rows.extend(sp.start..sp.start + sp.len),
            }
        }
        let mut xs = Vec::with_capacity(rows.len() * hcm * d);
        for &r in &rows {
            xs.extend_from_slice(&x[r * hcm * d..(r + 1) * hcm * d]);
        }
        let mut y = hc::head(&xs, rows.len(), hcm, d, &self.weights.hc_head, hc_eps, eps);
        if let Some(tr) = trace.as_deref_mut() {
            tr.after_hc_head = y.clone();
        }
        ops::rms_norm_rows(&mut y, d, Some(&self.weights.norm), eps);
        if let Some(tr) = trace {
            tr.after_final_norm = y.clone();
        }
        let v = cfg.vocab_size;
        let mut logits = vec![0.0; rows.len() * v];
        matmul(&self.weights.head, &y, rows.len(), &mut logits);
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for (s, sp) in seqs.iter().zip(&spans) {
            let k = match s.logits {
                Logits::None => 0,
                Logits::Last => usize::from(sp.len > 0),
                Logits::All => sp.len,
            };
            out.push(logits[at * v..(at + k) * v].to_vec());
            at += k;
        }
        Ok(out)
    }
}

/// Index of the largest logit (lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
