//! Runs a golden fixture folder (the layout of `fixtures/tiny-a`) through the engine.
//!
//! For each checkpoint (`model.safetensors` with `expected.safetensors`,
//! `model.fp8.safetensors` with `expected.fp8.safetensors`): full prefill logits, cached greedy
//! decode (teacher-forced on the expected tokens so every step is compared), the batched
//! prefill, and, where the fixture has debug tensors, router and indexer choices.

use crate::cache::SeqCache;
use crate::checkpoint::{Checkpoint, Dtype, RawTensor};
use crate::engine::{argmax, Engine, LoadOptions, Logits, Seq, Trace};
use crate::error::{ModelError, Result};
use crate::numerics::Numerics;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Something that runs batches of sequences with per-sequence caches (one engine, or a cluster).
pub trait Forward {
    /// Runs `(sequence id, new tokens, which logits)` for every item in one batch; sequences
    /// keep their caches between calls under their id.
    fn forward(&mut self, batch: &[(u64, &[u32], Logits)]) -> Result<Vec<Vec<f32>>>;
}

/// [`Forward`] on one engine.
pub struct LocalForward<'a> {
    pub engine: &'a Engine,
    caches: HashMap<u64, SeqCache>,
}

impl<'a> LocalForward<'a> {
    pub fn new(engine: &'a Engine) -> Self {
        LocalForward { engine, caches: HashMap::new() }
    }
}

impl Forward for LocalForward<'_> {
    fn forward(&mut self, batch: &[(u64, &[u32], Logits)]) -> Result<Vec<Vec<f32>>> {
        let mut caches: Vec<SeqCache> =
            batch.iter().map(|(id, _, _)| self.caches.remove(id).unwrap_or_else(|| self.engine.new_cache())).collect();
        let mut seqs: Vec<Seq> = caches
            .iter_mut()
            .zip(batch)
            .map(|(c, (_, tokens, logits))| Seq { tokens, cache: c, logits: *logits })
            .collect();
        let out = self.engine.forward(&mut seqs, None)?;
        for ((id, _, _), c) in batch.iter().zip(caches) {
            self.caches.insert(*id, c);
        }
        Ok(out)
    }
}

/// Logit tolerance the fixtures state (about 20x the observed float32 rounding).
pub const LOGIT_TOLERANCE: f32 = 1e-4;

#[derive(Clone, Debug, Serialize)]
pub struct CheckpointReport {
    pub weights: String,
    pub prompts: usize,
    pub prefill_max_abs_diff: f32,
    pub decode_max_abs_diff: f32,
    pub batch_max_abs_diff: f32,
    pub greedy_tokens_match: bool,
    /// `None` when the fixture holds no router/indexer debug tensors for this checkpoint.
    pub router_ids_match: Option<bool>,
    pub indexer_ids_match: Option<bool>,
    pub hidden_max_abs_diff: Option<f32>,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub fixture: String,
    pub tolerance: f32,
    pub prefill_max_abs_diff: f32,
    pub decode_max_abs_diff: f32,
    pub greedy_tokens_match: bool,
    pub router_ids_match: bool,
    pub indexer_ids_match: bool,
    pub checkpoints: Vec<CheckpointReport>,
    pub pass: bool,
}

/// The (weights, expected) pairs a fixture folder holds.
pub fn fixture_pairs(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    [("model.safetensors", "expected.safetensors"), ("model.fp8.safetensors", "expected.fp8.safetensors")]
        .iter()
        .map(|(m, e)| (dir.join(m), dir.join(e)))
        .filter(|(m, e)| m.exists() && e.exists())
        .collect()
}

/// Verifies every checkpoint of a fixture folder (or only `only`, a weights file name).
pub fn verify_dir(dir: &Path, only: Option<&str>) -> Result<Report> {
    verify_dir_with(dir, only, &mut |_, _| Ok(None)).map(|(r, _)| r)
}

/// Makes the [`Forward`] under test for a checkpoint (`None`: the single-process engine).
pub type MakeForward<'a> = dyn FnMut(&Path, &Engine) -> Result<Option<Box<dyn Forward + 'a>>> + 'a;

/// [`verify_dir`] through another [`Forward`] (e.g. a cluster): also reports whether it gave
/// exactly the single-process engine's logits.
pub fn verify_dir_with(dir: &Path, only: Option<&str>, make: &mut MakeForward) -> Result<(Report, Option<bool>)> {
    let mut pairs = fixture_pairs(dir);
    if let Some(o) = only {
        pairs.retain(|(m, _)| m.file_name().and_then(|f| f.to_str()) == Some(o));
    }
    if pairs.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: no fixture found (expected model.safetensors + expected.safetensors, or the .fp8 pair)",
            dir.display()
        )));
    }
    let mut checkpoints = Vec::new();
    let mut bitwise: Option<bool> = None;
    for (m, e) in &pairs {
        let engine = Engine::load(
            dir,
            &LoadOptions { files: Some(vec![m.clone()]), numerics: Numerics::Exact, ..Default::default() },
        )?;
        let (single, single_logits) = verify_checkpoint(&engine, &mut LocalForward::new(&engine), m, e)?;
        match make(m, &engine)? {
            None => checkpoints.push(single),
            Some(mut f) => {
                let (mut other, logits) = verify_checkpoint(&engine, f.as_mut(), m, e)?;
                let same = logits.len() == single_logits.len()
                    && logits
                        .iter()
                        .zip(&single_logits)
                        .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
                bitwise = Some(bitwise.unwrap_or(true) && same);
                other.router_ids_match = single.router_ids_match;
                other.indexer_ids_match = single.indexer_ids_match;
                other.hidden_max_abs_diff = single.hidden_max_abs_diff;
                other.pass &= same && single.pass;
                checkpoints.push(other);
            }
        }
    }
    let fold = |f: fn(&CheckpointReport) -> f32| checkpoints.iter().map(f).fold(0.0f32, f32::max);
    let report = Report {
        fixture: dir.display().to_string(),
        tolerance: LOGIT_TOLERANCE,
        prefill_max_abs_diff: fold(|c| c.prefill_max_abs_diff.max(c.batch_max_abs_diff)),
        decode_max_abs_diff: fold(|c| c.decode_max_abs_diff),
        greedy_tokens_match: checkpoints.iter().all(|c| c.greedy_tokens_match),
        router_ids_match: checkpoints.iter().all(|c| c.router_ids_match != Some(false)),
        indexer_ids_match: checkpoints.iter().all(|c| c.indexer_ids_match != Some(false)),
        pass: checkpoints.iter().all(|c| c.pass),
        checkpoints,
    };
    Ok((report, bitwise))
}

struct Expected {
    t: HashMap<String, RawTensor>,
}

impl Expected {
    fn open(path: &Path) -> Result<Self> {
        let ck = Checkpoint::open_files(&[path.to_path_buf()])?;
        let names: Vec<String> = ck.names().cloned().collect();
        Ok(Expected { t: ck.read(&names, false)? })
    }
    fn has(&self, name: &str) -> bool {
        self.t.contains_key(name)
    }
    fn get(&self, name: &str) -> Result<&RawTensor> {
        self.t.get(name).ok_or_else(|| ModelError::Missing { name: name.into(), hint: " (expected outputs)".into() })
    }
    fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.dtype != Dtype::F32 {
            return Err(t.err("expected F32"));
        }
        Ok(t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    fn ints(&self, name: &str) -> Result<Vec<i64>> {
        let t = self.get(name)?;
        match t.dtype {
            Dtype::I64 => {
                Ok(t.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
            }
            Dtype::I32 => {
                Ok(t.data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            _ => Err(t.err("expected I64/I32")),
        }
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.get(name)?.shape.clone())
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

fn to_tokens(ids: &[i64], vocab: usize) -> Result<Vec<u32>> {
    ids.iter()
        .map(|&i| {
            if i < 0 || i as usize >= vocab {
                Err(ModelError::Invalid(format!("fixture token id {i} outside 0..{vocab}")))
            } else {
                Ok(i as u32)
            }
        })
        .collect()
}

/// Runs the fixture flow through `fwd`; returns the report and every logit row produced, in
/// order (for bitwise comparison between implementations). `engine` supplies the config and the
/// traced run for router/indexer checks.
fn verify_checkpoint(
    engine: &Engine,
    fwd: &mut dyn Forward,
    weights: &Path,
    expected: &Path,
) -> Result<(CheckpointReport, Vec<Vec<f32>>)> {
    let exp = Expected::open(expected)?;
    let mut produced: Vec<Vec<f32>> = Vec::new();
    let mut next_id = 0u64;
    let vocab = engine.cfg.vocab_size;
    let (mut prefill, mut decode, mut batch) = (0.0f32, 0.0f32, 0.0f32);
    let mut greedy = true;
    let mut prompts = 0;
    let mut router = None;
    let mut indexer = None;
    let mut hidden = None;
    while exp.has(&format!("prompt{prompts}.input_ids")) {
        let p = format!("prompt{prompts}.");
        let ids = to_tokens(&exp.ints(&format!("{p}input_ids"))?, vocab)?;
        let want_prefill = exp.f32s(&format!("{p}prefill_logits"))?;
        let gen = to_tokens(&exp.ints(&format!("{p}gen_tokens"))?, vocab)?;
        let want_steps = exp.f32s(&format!("{p}gen_step_logits"))?;
        if prompts == 0 && exp.has("debug.p0.hidden.embed") {
            let mut trace = Trace::default();
            let mut cache = engine.new_cache();
            engine.forward(&mut [Seq { tokens: &ids, cache: &mut cache, logits: Logits::All }], Some(&mut trace))?;
            let (r, i, h) = compare_debug(engine, &exp, &trace)?;
            router = Some(r);
            indexer = Some(i);
            hidden = Some(h);
        }
        let id = next_id;
        next_id += 1;
        let out = fwd.forward(&[(id, &ids, Logits::All)])?;
        produced.push(out[0].clone());
        prefill = prefill.max(max_abs(&out[0], &want_prefill));
        // Step 0 is the prefill's last position; later steps decode one token with the cache.
        let mut steps = out[0][(ids.len() - 1) * vocab..].to_vec();
        for k in 1..gen.len() {
            let o = fwd.forward(&[(id, &gen[k - 1..k], Logits::Last)])?;
            produced.push(o[0].clone());
            steps.extend_from_slice(&o[0]);
        }
        decode = decode.max(max_abs(&steps, &want_steps));
        for (k, &g) in gen.iter().enumerate() {
            greedy &= argmax(&steps[k * vocab..(k + 1) * vocab]) == g;
        }
        prompts += 1;
    }
    if exp.has("batch.input_ids") {
        let shape = exp.shape("batch.input_ids")?;
        let ids = to_tokens(&exp.ints("batch.input_ids")?, vocab)?;
        let want = exp.f32s("batch.prefill_logits")?;
        let len = shape.get(1).copied().unwrap_or(0);
        let rows = shape.first().copied().unwrap_or(0);
        let items: Vec<(u64, &[u32], Logits)> =
            (0..rows).map(|b| (next_id + b as u64, &ids[b * len..(b + 1) * len], Logits::All)).collect();
        let out = fwd.forward(&items)?;
        produced.extend(out.iter().cloned());
        batch = max_abs(&out.concat(), &want);
    }
    let pass = prompts > 0
        && prefill <= LOGIT_TOLERANCE
        && decode <= LOGIT_TOLERANCE
        && batch <= LOGIT_TOLERANCE
        && greedy
        && router != Some(false)
        && indexer != Some(false);
    let report = CheckpointReport {
        weights: weights.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        prompts,
        prefill_max_abs_diff: prefill,
        decode_max_abs_diff: decode,
        batch_max_abs_diff: batch,
        greedy_tokens_match: greedy,
        router_ids_match: router,
        indexer_ids_match: indexer,
        hidden_max_abs_diff: hidden,
        pass,
    };
    Ok((report, produced))
}

/// Router and indexer choices must match exactly; hidden states are reported.
fn compare_debug(engine: &Engine, exp: &Expected, tr: &Trace) -> Result<(bool, bool, f32)> {
    let cfg = &engine.cfg;
    let mut router = true;
    let mut indexer = true;
    let mut hidden = max_abs(&tr.embed, &exp.f32s("debug.p0.hidden.embed")?);
    for (i, l) in tr.layers.iter().enumerate() {
        let name = format!("debug.p0.router.layer{i}.expert_ids");
        if exp.has(&name) {
            let want = exp.ints(&name)?;
            let got: Vec<i64> = l.routes.iter().flat_map(|r| r.experts.iter().map(|&e| e as i64)).collect();
            router &= got == want;
        }
        let name = format!("debug.p0.indexer.layer{i}.topk_ids");
        if exp.has(&name) {
            indexer &= l.indexer == exp.ints(&name)?;
        }
        let name = format!("debug.p0.hidden.after_layer{i}");
        if exp.has(&name) {
            hidden = hidden.max(max_abs(&l.streams, &exp.f32s(&name)?));
        }
        for (what, got) in [("attn_out", &l.attn_out), ("moe_out", &l.moe_out)] {
            let name = format!("debug.p0.layer{i}.{what}");
            if exp.has(&name) {
                hidden = hidden.max(max_abs(got, &exp.f32s(&name)?));
            }
        }
    }
    if exp.has("debug.p0.hidden.after_final_norm") {
        hidden = hidden.max(max_abs(&tr.after_final_norm, &exp.f32s("debug.p0.hidden.after_final_norm")?));
    }
    let _ = cfg;
    Ok((router, indexer, hidden))
}
