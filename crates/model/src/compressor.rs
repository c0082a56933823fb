//! The KV compressor (spec §6.3, §7.3) as a streaming state machine.
//!
//! Window boundaries are absolute multiples of the ratio, so any chunking of a sequence (whole
//! prefill, chunked prefill, token by token) produces identical entries.

use crate::cache::CompressorState;
use crate::weights::CompressorWeights;

/// Feeds the projections of `n` consecutive tokens starting at position `p0` and appends every
/// entry they complete. `kv` and `gate` are `[n, o*c]`. `finish(entry, index)` post-processes
/// each new entry (norm, RoPE, quantization simulation) before it is stored.
pub fn update(
    w: &CompressorWeights,
    kv: &[f32],
    gate: &[f32],
    p0: usize,
    st: &mut CompressorState,
    finish: &mut dyn FnMut(&mut [f32], usize),
) {
    let oc = if w.overlap { 2 * w.width } else { w.width };
    let m = w.ratio;
    let n = kv.len() / oc;
    for i in 0..n {
        let p = p0 + i;
        st.cur.extend_from_slice(&kv[i * oc..(i + 1) * oc]);
        let ape = &w.ape[(p % m) * oc..(p % m + 1) * oc];
        st.cur.extend(gate[i * oc..(i + 1) * oc].iter().zip(ape).map(|(g, a)| g + a));
        if st.cur.len() == m * 2 * oc {
            let idx = st.n_entries(w.width);
            let mut e = pool(w, &st.cur, st.prev.as_deref());
            finish(&mut e, idx);
            st.entries.extend_from_slice(&e);
            let cur = std::mem::take(&mut st.cur);
            if w.overlap {
                st.prev = Some(cur);
            }
        }
    }
}

/// Per-channel softmax pooling of one complete window.
fn pool(w: &CompressorWeights, cur: &[f32], prev: Option<&[f32]>) -> Vec<f32> {
    let c = w.width;
    let oc = if w.overlap { 2 * c } else { c };
    let row = 2 * oc;
    let mut slots_kv = Vec::with_capacity(2 * w.ratio);
    let mut slots_g = Vec::with_capacity(2 * w.ratio);
    let mut out = vec![0.0; c];
    for (t, o) in out.iter_mut().enumerate() {
        slots_kv.clear();
        slots_g.clear();
        if w.overlap {
            if let Some(prev) = prev {
                for r in prev.chunks_exact(row) {
                    slots_kv.push(r[t]);
                    slots_g.push(r[oc + t]);
                }
            }
            for r in cur.chunks_exact(row) {
                slots_kv.push(r[c + t]);
                slots_g.push(r[oc + c + t]);
            }
        } else {
            for r in cur.chunks_exact(row) {
                slots_kv.push(r[t]);
                slots_g.push(r[oc + t]);
            }
        }
        let mx = slots_g.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut z = 0.0;
        for g in slots_g.iter_mut() {
            *g = (*g - mx).exp();
            z += *g;
        }
        let mut acc = 0.0;
        for (k, g) in slots_kv.iter().zip(&slots_g) {
            acc += (g / z) * k;
        }
        *o = acc;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use emesh_compute::Weight;

    fn weights(ratio: usize, overlap: bool, width: usize) -> CompressorWeights {
        let oc = if overlap { 2 * width } else { width };
        let z = Weight::f32(oc, 1, vec![0.0; oc]).unwrap();
        CompressorWeights {
            ratio,
            overlap,
            width,
            wkv: z.clone(),
            wgate: z,
            ape: (0..ratio * oc).map(|i| (i % 7) as f32 * 0.1).collect(),
            norm: vec![1.0; width],
        }
    }

    fn proj(n: usize, oc: usize, seed: f32) -> Vec<f32> {
        (0..n * oc).map(|i| (i as f32 * 0.731 + seed).sin()).collect()
    }

    #[test]
    fn emission_timing_and_chunking_invariance() {
        for (ratio, overlap) in [(4, true), (16, false)] {
            let w = weights(ratio, overlap, 8);
            let oc = if overlap { 16 } else { 8 };
            let n = 50;
            let kv = proj(n, oc, 0.3);
            let g = proj(n, oc, 1.7);
            let mut whole = CompressorState::default();
            let mut emitted_at = vec![];
            let mut finish = |_: &mut [f32], _: usize| {};
            update(&w, &kv, &g, 0, &mut whole, &mut finish);
            // Token by token: entries appear exactly when (p+1) % ratio == 0.
            let mut step = CompressorState::default();
            for p in 0..n {
                let before = step.n_entries(8);
                let mut f = |_: &mut [f32], idx: usize| assert_eq!(idx, p / ratio);
                update(&w, &kv[p * oc..(p + 1) * oc], &g[p * oc..(p + 1) * oc], p, &mut step, &mut f);
                if step.n_entries(8) > before {
                    emitted_at.push(p);
                }
            }
            let expect: Vec<usize> = (0..n).filter(|p| (p + 1) % ratio == 0).collect();
            assert_eq!(emitted_at, expect);
            assert_eq!(whole.entries, step.entries, "token-by-token differs from whole");
            // Uneven chunks.
            let mut chunked = CompressorState::default();
            let mut p = 0;
            for len in [3, 7, 1, 13, 26] {
                update(&w, &kv[p * oc..(p + len) * oc], &g[p * oc..(p + len) * oc], p, &mut chunked, &mut finish);
                p += len;
            }
            assert_eq!(whole.entries, chunked.entries);
            assert_eq!(whole.cur, chunked.cur);
        }
    }

    #[test]
    fn first_overlap_window_ignores_missing_previous() {
        let w = weights(4, true, 2);
        // kv rows: a-half = 100 (must be ignored for entry 0), b-half = 1.
        let kv: Vec<f32> = (0..4).flat_map(|_| [100.0, 100.0, 1.0, 1.0]).collect();
        let g = vec![0.0; 16];
        let mut st = CompressorState::default();
        update(&w, &kv, &g, 0, &mut st, &mut |_, _| {});
        for v in &st.entries {
            assert!((v - 1.0).abs() < 1e-6, "{v}");
        }
    }
}
