//! The attention sublayer (spec §6): low-rank queries, one shared K=V head, a sliding window
//! plus compressed entries (CSA: indexer-selected; HCA: all visible), sinks, inverse RoPE on the
//! output, and the grouped low-rank output projection.
//!
//! The output is returned per output group; the caller sums groups in ascending order, which is
//! what keeps tensor-parallel runs bit-identical to one process.

use crate::cache::LayerCache;
use crate::compressor;
use crate::numerics::Numerics;
use crate::weights::AttnWeights;
use emesh_common::{AttnKind, ModelConfig};
use emesh_compute::formats::{fp4_qdq, fp8_qdq, hadamard};
use emesh_compute::{dot::dot, ops, RopeTable};
use rayon::prelude::*;

/// A run of consecutive tokens of one sequence inside a flattened batch.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Index of the first token in the batch.
    pub start: usize,
    pub len: usize,
    /// Absolute position of the first token.
    pub pos0: usize,
}

pub struct AttnCtx<'a> {
    pub cfg: &'a ModelConfig,
    pub rope: &'a RopeTable,
    pub numerics: Numerics,
}

/// Indexer selections recorded for tests: per token, `index_topk` ids ascending, `-1` padded.
pub type IndexerTrace = Vec<i64>;

/// Runs attention for all tokens; returns one `[T, d]` partial per held output group.
pub fn forward(
    ctx: &AttnCtx,
    w: &AttnWeights,
    x: &[f32],
    spans: &[Span],
    caches: &mut [&mut LayerCache],
    mut trace: Option<&mut IndexerTrace>,
) -> Vec<Vec<f32>> {
    let cfg = ctx.cfg;
    let nx = ctx.numerics;
    let eps = cfg.rms_norm_eps as f32;
    let d = cfg.hidden_size;
    let hd = cfg.head_dim;
    let nope = cfg.nope_dim();
    let t_all = x.len() / d;
    let n_heads = w.sink.len();
    let rope = ctx.rope;

    // Queries.
    let mut cq = nx.linear(&w.wq_a, x, t_all);
    ops::rms_norm_rows(&mut cq, cfg.q_lora_rank, Some(&w.q_norm), eps);
    let mut q = nx.linear(&w.wq_b, &cq, t_all);
    // Window KV.
    let mut kv = nx.linear(&w.wkv, x, t_all);
    ops::rms_norm_rows(&mut kv, hd, Some(&w.kv_norm), eps);
    for s in spans {
        for i in 0..s.len {
            let t = s.start + i;
            let p = (s.pos0 + i) as f64;
            for h in q[t * n_heads * hd..(t + 1) * n_heads * hd].chunks_exact_mut(hd) {
                ops::rms_norm(h, None, eps);
                rope.apply(h, p);
            }
            let k = &mut kv[t * hd..(t + 1) * hd];
            rope.apply(k, p);
            if nx.official() {
                fp8_qdq(&mut k[..nope], 64);
            }
        }
    }

    // Compressor and indexer projections for the whole batch.
    let comp = w.compressor.as_ref().map(|c| (nx.linear(&c.wkv, x, t_all), nx.linear(&c.wgate, x, t_all)));
    let idx = w.indexer.as_ref().map(|ix| {
        let (hi, di) = (cfg.index_n_heads, cfg.index_head_dim);
        let mut qi = nx.linear(&ix.wq_b, &cq, t_all);
        for s in spans {
            for i in 0..s.len {
                let t = s.start + i;
                for h in qi[t * hi * di..(t + 1) * hi * di].chunks_exact_mut(di) {
                    rope.apply(h, (s.pos0 + i) as f64);
                    if nx.official() {
                        hadamard(h);
                        fp4_qdq(h, 32);
                    }
                }
            }
        }
        let mut weights = nx.linear(&ix.weights_proj, x, t_all);
        let sc = 1.0 / ((di as f32).sqrt() * (hi as f32).sqrt());
        for v in weights.iter_mut() {
            *v *= sc;
        }
        (qi, weights, nx.linear(&ix.compressor.wkv, x, t_all), nx.linear(&ix.compressor.wgate, x, t_all))
    });

    let mut o = vec![0.0f32; t_all * n_heads * hd];
    let topk = cfg.index_topk;
    if let Some(tr) = trace.as_deref_mut() {
        if idx.is_some() {
            tr.resize(t_all * topk, -1);
        }
    }
    for (s, cache) in spans.iter().zip(caches.iter_mut()) {
        let (t0, t1) = (s.start, s.start + s.len);
        // Extend the compressed caches with what this span completes.
        if let (Some(cw), Some((ckv, cg))) = (&w.compressor, &comp) {
            let oc = ckv.len() / t_all;
            let mut finish = |e: &mut [f32], i: usize| {
                ops::rms_norm(e, Some(&cw.norm), eps);
                rope.apply(e, (i * cw.ratio) as f64);
                if nx.official() {
                    fp8_qdq(&mut e[..nope], 64);
                }
            };
            compressor::update(
                cw,
                &ckv[t0 * oc..t1 * oc],
                &cg[t0 * oc..t1 * oc],
                s.pos0,
                &mut cache.compressor,
                &mut finish,
            );
        }
        if let (Some(iw), Some((_, _, ikv, ig))) = (&w.indexer, &idx) {
            let cw = &iw.compressor;
            let oc = ikv.len() / t_all;
            let mut finish = |e: &mut [f32], i: usize| {
                ops::rms_norm(e, Some(&cw.norm), eps);
                rope.apply(e, (i * cw.ratio) as f64);
                if nx.official() {
                    hadamard(e);
                    fp4_qdq(e, 32);
                }
            };
            compressor::update(
                cw,
                &ikv[t0 * oc..t1 * oc],
                &ig[t0 * oc..t1 * oc],
                s.pos0,
                &mut cache.indexer,
                &mut finish,
            );
        }

        // Keys of the window: cached positions then this span's.
        let mut keys = std::mem::take(&mut cache.window);
        let base = s.pos0 - keys.len() / hd;
        keys.extend_from_slice(&kv[t0 * hd..t1 * hd]);
        let cache_ro: &LayerCache = cache;
        let win = cfg.sliding_window;
        let ratio = w.kind.ratio();
        let scale = 1.0 / (hd as f32).sqrt();
        let rows: Vec<(Vec<f32>, Vec<i64>)> = (0..s.len)
            .into_par_iter()
            .map(|i| {
                let t = t0 + i;
                let p = s.pos0 + i;
                let mut keyset: Vec<&[f32]> = Vec::with_capacity(win + topk);
                for pos in (p + 1).saturating_sub(win)..=p {
                    keyset.push(&keys[(pos - base) * hd..(pos - base + 1) * hd]);
                }
                let mut sel = Vec::new();
                let n_vis = (p + 1).checked_div(ratio).unwrap_or(0);
                let entries = &cache_ro.compressor.entries;
                match w.kind {
                    AttnKind::Sliding => {}
                    AttnKind::Hca { .. } => {
                        for e in 0..n_vis {
                            keyset.push(&entries[e * hd..(e + 1) * hd]);
                        }
                    }
                    AttnKind::Csa { .. } => {
                        if let Some((qi, wts, _, _)) = &idx {
                            sel = select(
                                cfg,
                                &qi[t * cfg.index_n_heads * cfg.index_head_dim..],
                                &wts[t * cfg.index_n_heads..(t + 1) * cfg.index_n_heads],
                                &cache_ro.indexer.entries,
                                n_vis,
                            );
                            for &e in &sel {
                                keyset.push(&entries[e as usize * hd..(e as usize + 1) * hd]);
                            }
                        }
                    }
                }
                let mut out = vec![0.0; n_heads * hd];
                for h in 0..n_heads {
                    let qh = &q[(t * n_heads + h) * hd..(t * n_heads + h + 1) * hd];
                    attend(qh, &keyset, scale, w.sink[h], &mut out[h * hd..(h + 1) * hd]);
                    rope.apply(&mut out[h * hd..(h + 1) * hd], -(p as f64));
                }
                (out, sel)
            })
            .collect();
        for (i, (out, sel)) in rows.into_iter().enumerate() {
            let t = t0 + i;
            o[t * n_heads * hd..(t + 1) * n_heads * hd].copy_from_slice(&out);
            if let Some(tr) = trace.as_deref_mut() {
                for (j, &e) in sel.iter().enumerate() {
                    tr[t * topk + j] = e;
                }
            }
        }
        let keep = keys.len() / hd - (keys.len() / hd).min(win);
        keys.drain(..keep * hd);
        cache.window = keys;
    }

    // Grouped output projection, one partial per held group.
    let hpg = cfg.heads_per_group();
    w.wo_a
        .iter()
        .zip(&w.wo_b)
        .enumerate()
        .map(|(g, (wa, wb))| {
            let mut og = Vec::with_capacity(t_all * hpg * hd);
            for t in 0..t_all {
                let b = t * n_heads * hd + g * hpg * hd;
                og.extend_from_slice(&o[b..b + hpg * hd]);
            }
            let z = Numerics::Exact.linear(wa, &og, t_all);
            nx.linear(wb, &z, t_all)
        })
        .collect()
}

/// Lightning-indexer selection for one query: the top `index_topk` of the `n_vis` visible
/// entries, ascending ids.
fn select(cfg: &ModelConfig, q: &[f32], weights: &[f32], keys: &[f32], n_vis: usize) -> Vec<i64> {
    let di = cfg.index_head_dim;
    if n_vis == 0 {
        return vec![];
    }
    let scores: Vec<f32> = (0..n_vis)
        .map(|e| {
            let k = &keys[e * di..(e + 1) * di];
            let mut s = 0.0;
            for (h, &wh) in weights.iter().enumerate() {
                s += wh * dot(&q[h * di..(h + 1) * di], k).max(0.0);
            }
            s
        })
        .collect();
    ops::topk_indices(&scores, cfg.index_topk).into_iter().map(|i| i as i64).collect()
}

/// Softmax attention of one head over `keys` (K = V) with a sink logit in the denominator.
fn attend(q: &[f32], keys: &[&[f32]], scale: f32, sink: f32, out: &mut [f32]) {
    let logits: Vec<f32> = keys.iter().map(|k| dot(q, k) * scale).collect();
    let m = logits.iter().fold(sink, |a, &b| a.max(b));
    let mut z = (sink - m).exp();
    let ex: Vec<f32> = logits.iter().map(|&l| (l - m).exp()).collect();
    for &e in &ex {
        z += e;
    }
    out.fill(0.0);
    for (k, &e) in keys.iter().zip(&ex) {
        let p = e / z;
        for (o, &v) in out.iter_mut().zip(k.iter()) {
            *o += p * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexer_selects_only_visible_entries_and_ignores_the_future() {
        let cfg = crate::gen::preset("tiny").unwrap();
        let (hi, di) = (cfg.index_n_heads, cfg.index_head_dim);
        let q: Vec<f32> = (0..hi * di).map(|i| ((i as f32) * 0.37).sin()).collect();
        let w: Vec<f32> = (0..hi).map(|h| 0.5 + h as f32 * 0.1).collect();
        let n_entries = 20;
        let keys: Vec<f32> = (0..n_entries * di).map(|i| ((i as f32) * 0.11).cos()).collect();
        for n_vis in 0..=n_entries {
            let sel = select(&cfg, &q, &w, &keys, n_vis);
            assert_eq!(sel.len(), n_vis.min(cfg.index_topk), "n_vis {n_vis}");
            assert!(sel.iter().all(|&e| (0..n_vis as i64).contains(&e)), "n_vis {n_vis}: {sel:?}");
            assert!(sel.windows(2).all(|p| p[0] < p[1]), "ascending and distinct");
            // Entries past the visible ones (the future) cannot change the choice.
            let mut future = keys[..n_vis * di].to_vec();
            future.extend(std::iter::repeat_n(100.0, (n_entries - n_vis) * di));
            assert_eq!(select(&cfg, &q, &w, &future, n_vis), sel);
        }
    }
}
