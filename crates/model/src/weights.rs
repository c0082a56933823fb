//! The V4 weights one process holds, and how they are loaded from a checkpoint.
//!
//! A [`Shard`] says which part of the model to hold: a range of attention heads (whole output
//! groups), a set of routed experts per layer, and whether to hold the embedding and head. The
//! single-process engine holds [`Shard::full`]; a worker of a cluster holds its slice. Only the
//! tensors the shard needs are read from disk.

use crate::checkpoint::{Checkpoint, RawTensor};
use crate::convert;
use crate::error::{ModelError, Result};
use emesh_common::{AttnKind, ModelConfig, MoeKind};
use emesh_compute::Weight;
use rayon::prelude::*;
use std::ops::Range;

/// Which part of the model a process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Output groups held (heads follow: group g holds heads `g*H/G .. (g+1)*H/G`).
    pub groups: Range<usize>,
    /// Per layer, the routed experts held (ascending).
    pub experts: Vec<Vec<u32>>,
    /// Whether the embedding and the attention/mHC/router weights are held (false for a process
    /// that only serves experts).
    pub dense: bool,
}

impl Shard {
    pub fn full(cfg: &ModelConfig) -> Self {
        Shard {
            groups: 0..cfg.o_groups,
            experts: vec![(0..cfg.n_routed_experts as u32).collect(); cfg.num_layers],
            dense: true,
        }
    }

    pub fn heads(&self, cfg: &ModelConfig) -> Range<usize> {
        let hpg = cfg.heads_per_group();
        self.groups.start * hpg..self.groups.end * hpg
    }
}

#[derive(Clone, Debug)]
pub struct HcWeights {
    /// `[n_out, hc*d]`.
    pub fn_: Weight,
    pub base: Vec<f32>,
    pub scale: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct CompressorWeights {
    pub ratio: usize,
    pub overlap: bool,
    /// Output width `c` (head_dim for the main compressor, index_head_dim for the indexer's).
    pub width: usize,
    /// `[o*c, d]` each.
    pub wkv: Weight,
    pub wgate: Weight,
    /// `[ratio, o*c]`.
    pub ape: Vec<f32>,
    pub norm: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct IndexerWeights {
    /// `[H_I * D_I, q_lora_rank]`.
    pub wq_b: Weight,
    /// `[H_I, d]`.
    pub weights_proj: Weight,
    pub compressor: CompressorWeights,
}

#[derive(Clone, Debug)]
pub struct AttnWeights {
    pub kind: AttnKind,
    pub wq_a: Weight,
    pub q_norm: Vec<f32>,
    /// Rows of the held heads only.
    pub wq_b: Weight,
    pub wkv: Weight,
    pub kv_norm: Vec<f32>,
    /// One `[o_lora_rank, hpg*head_dim]` matrix per held output group.
    pub wo_a: Vec<Weight>,
    /// One `[d, o_lora_rank]` column block of `wo_b` per held output group.
    pub wo_b: Vec<Weight>,
    /// Sink logits of the held heads.
    pub sink: Vec<f32>,
    pub compressor: Option<CompressorWeights>,
    pub indexer: Option<IndexerWeights>,
}

#[derive(Clone, Debug)]
pub struct ExpertWeights {
    pub w1: Weight,
    pub w2: Weight,
    pub w3: Weight,
}

impl ExpertWeights {
    pub fn bytes(&self) -> usize {
        self.w1.bytes() + self.w2.bytes() + self.w3.bytes()
    }
}

#[derive(Clone, Debug)]
pub struct MoeWeights {
    pub kind: MoeKind,
    /// `[E, d]`.
    pub gate: Weight,
    pub bias: Option<Vec<f32>>,
    /// `[vocab, k]` for hash layers.
    pub tid2eid: Option<Vec<u32>>,
    pub shared: ExpertWeights,
    /// Routed experts held, by expert id (`None` when another process holds it).
    pub experts: Vec<Option<ExpertWeights>>,
}

#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub hc_attn: HcWeights,
    pub hc_ffn: HcWeights,
    pub attn: AttnWeights,
    pub moe: MoeWeights,
}

#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub embed: Weight,
    pub layers: Vec<LayerWeights>,
    pub hc_head: HcWeights,
    pub norm: Vec<f32>,
    pub head: Weight,
}

/// Names of every tensor `shard` needs, with `.scale` companions that the checkpoint has.
pub fn tensor_names(cfg: &ModelConfig, shard: &Shard, ck: &Checkpoint) -> Vec<String> {
    let mut names = Vec::new();
    let lin = |names: &mut Vec<String>, base: String| {
        let scale = base.trim_end_matches(".weight").to_string() + ".scale";
        if ck.contains(&scale) {
            names.push(scale);
        }
        names.push(base);
    };
    if shard.dense {
        for n in ["embed.weight", "norm.weight", "hc_head_fn", "hc_head_base", "hc_head_scale"] {
            names.push(n.to_string());
        }
        lin(&mut names, "head.weight".into());
    }
    for i in 0..cfg.num_layers {
        let p = format!("layers.{i}.");
        if shard.dense {
            for n in
                ["attn_norm.weight", "ffn_norm.weight", "attn.q_norm.weight", "attn.kv_norm.weight", "attn.attn_sink"]
            {
                names.push(format!("{p}{n}"));
            }
            for hc in ["hc_attn", "hc_ffn"] {
                for s in ["fn", "base", "scale"] {
                    names.push(format!("{p}{hc}_{s}"));
                }
            }
            for l in ["wq_a", "wq_b", "wkv", "wo_a", "wo_b"] {
                lin(&mut names, format!("{p}attn.{l}.weight"));
            }
            let kind = cfg.attn_kind(i);
            let comp = |names: &mut Vec<String>, c: &str| {
                for n in ["wkv.weight", "wgate.weight", "ape", "norm.weight"] {
                    names.push(format!("{p}attn.{c}.{n}"));
                }
            };
            if kind.has_compressor() {
                comp(&mut names, "compressor");
            }
            if kind.has_indexer() {
                comp(&mut names, "indexer.compressor");
                lin(&mut names, format!("{p}attn.indexer.wq_b.weight"));
                names.push(format!("{p}attn.indexer.weights_proj.weight"));
            }
            names.push(format!("{p}ffn.gate.weight"));
            match cfg.moe_kind(i) {
                MoeKind::Hash => names.push(format!("{p}ffn.gate.tid2eid")),
                MoeKind::Learned => names.push(format!("{p}ffn.gate.bias")),
            }
            for w in ["w1", "w2", "w3"] {
                lin(&mut names, format!("{p}ffn.shared_experts.{w}.weight"));
            }
        }
        for &e in &shard.experts[i] {
            for w in ["w1", "w2", "w3"] {
                lin(&mut names, format!("{p}ffn.experts.{e}.{w}.weight"));
            }
        }
    }
    names
}

/// Reads tensors on demand: each is converted and its raw bytes dropped at once, so loading
/// peaks at the loaded weights plus the tensors in flight, not twice the shard.
struct Tensors<'a> {
    ck: &'a Checkpoint,
    bar: Option<&'a indicatif::ProgressBar>,
}

impl<'a> Tensors<'a> {
    fn get(&self, name: &str) -> Result<RawTensor> {
        let t = self.ck.read_one(name)?;
        if let Some(b) = self.bar {
            b.inc(t.data.len() as u64);
        }
        Ok(t)
    }
    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        convert::floats(&self.get(name)?, shape)
    }
    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        let scale = name.trim_end_matches(".weight").to_string() + ".scale";
        let s = if self.ck.contains(&scale) { Some(self.get(&scale)?) } else { None };
        convert::linear(self.get(name)?, s, rows, cols)
    }
    fn hc(&self, prefix: &str, n_out: usize, cols: usize, n_scale: usize) -> Result<HcWeights> {
        let f = self.floats(&format!("{prefix}_fn"), &[n_out, cols])?;
        Ok(HcWeights {
            fn_: Weight::f32(n_out, cols, f).map_err(|e| ModelError::Invalid(e.to_string()))?,
            base: self.floats(&format!("{prefix}_base"), &[n_out])?,
            scale: self.floats(&format!("{prefix}_scale"), &[n_scale])?,
        })
    }
    fn compressor(
        &self,
        prefix: &str,
        ratio: usize,
        overlap: bool,
        width: usize,
        d: usize,
    ) -> Result<CompressorWeights> {
        let oc = if overlap { 2 * width } else { width };
        Ok(CompressorWeights {
            ratio,
            overlap,
            width,
            wkv: self.linear(&format!("{prefix}.wkv.weight"), oc, d)?,
            wgate: self.linear(&format!("{prefix}.wgate.weight"), oc, d)?,
            ape: self.floats(&format!("{prefix}.ape"), &[ratio, oc])?,
            norm: self.floats(&format!("{prefix}.norm.weight"), &[width])?,
        })
    }
    fn expert(&self, prefix: &str, d: usize, inter: usize) -> Result<ExpertWeights> {
        Ok(ExpertWeights {
            w1: self.linear(&format!("{prefix}.w1.weight"), inter, d)?,
            w2: self.linear(&format!("{prefix}.w2.weight"), d, inter)?,
            w3: self.linear(&format!("{prefix}.w3.weight"), inter, d)?,
        })
    }
}

fn slice_err(name: &str) -> impl Fn(emesh_compute::WeightError) -> ModelError + '_ {
    move |e| ModelError::Invalid(format!("slicing `{name}`: {e}"))
}

/// Loads what `shard` needs from `ck`, validating every shape and dtype.
pub fn load(cfg: &ModelConfig, shard: &Shard, ck: &Checkpoint, progress: bool) -> Result<ModelWeights> {
    if shard.experts.len() != cfg.num_layers {
        return Err(ModelError::Invalid(format!(
            "shard lists experts for {} layers, the model has {}",
            shard.experts.len(),
            cfg.num_layers
        )));
    }
    if shard.groups.end > cfg.o_groups || shard.groups.start >= shard.groups.end {
        return Err(ModelError::Invalid(format!("shard groups {:?} outside 0..{}", shard.groups, cfg.o_groups)));
    }
    let names = tensor_names(cfg, shard, ck);
    for n in &names {
        if !ck.contains(n) {
            return Err(ModelError::Missing { name: n.clone(), hint: format!(" (files: {:?})", ck.files) });
        }
    }
    let bar = progress.then(|| crate::checkpoint::progress_bar(ck.bytes_of(&names)));
    let t = Tensors { ck, bar: bar.as_ref() };
    let d = cfg.hidden_size;
    let hc = cfg.hc_mult;

    let (embed, norm, hc_head, head) = if shard.dense {
        (
            t.linear("embed.weight", cfg.vocab_size, d)?,
            t.floats("norm.weight", &[d])?,
            t.hc("hc_head", hc, hc * d, 1)?,
            t.linear("head.weight", cfg.vocab_size, d)?,
        )
    } else {
        let empty = || Weight::f32(0, d, vec![]).map_err(|e| ModelError::Invalid(e.to_string()));
        let empty_hc = HcWeights {
            fn_: Weight::f32(0, hc * d, vec![]).map_err(|e| ModelError::Invalid(e.to_string()))?,
            base: vec![],
            scale: vec![],
        };
        (empty()?, vec![], empty_hc, empty()?)
    };

    let layers: Vec<LayerWeights> =
        (0..cfg.num_layers).into_par_iter().map(|i| load_layer(cfg, shard, &t, i)).collect::<Result<_>>()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(ModelWeights { embed, layers, hc_head, norm, head })
}

fn load_layer(cfg: &ModelConfig, shard: &Shard, t: &Tensors, i: usize) -> Result<LayerWeights> {
    let d = cfg.hidden_size;
    let hc = cfg.hc_mult;
    let hd = cfg.head_dim;
    let heads = shard.heads(cfg);
    let hpg = cfg.heads_per_group();
    let n_hc = hc * (hc + 2);
    {
        let p = format!("layers.{i}.");
        let kind = cfg.attn_kind(i);
        let moe_kind = cfg.moe_kind(i);
        let mut experts: Vec<Option<ExpertWeights>> = vec![None; cfg.n_routed_experts];
        for &e in &shard.experts[i] {
            let slot = experts.get_mut(e as usize).ok_or_else(|| {
                ModelError::Invalid(format!(
                    "shard asks for expert {e} of layer {i}; the model has {}",
                    cfg.n_routed_experts
                ))
            })?;
            *slot = Some(t.expert(&format!("{p}ffn.experts.{e}"), d, cfg.moe_intermediate_size)?);
        }
        if !shard.dense {
            return expert_only_layer(cfg, i, experts);
        }
        let wq_b_name = format!("{p}attn.wq_b.weight");
        let wq_b = t.linear(&wq_b_name, cfg.num_heads * hd, cfg.q_lora_rank)?;
        let wq_b = if heads.len() == cfg.num_heads {
            wq_b
        } else {
            wq_b.slice_rows(heads.start * hd, heads.end * hd).map_err(slice_err(&wq_b_name))?
        };
        let wo_a_name = format!("{p}attn.wo_a.weight");
        let wo_a = t.linear(&wo_a_name, cfg.o_groups * cfg.o_lora_rank, hpg * hd)?;
        let wo_b_name = format!("{p}attn.wo_b.weight");
        let wo_b = t.linear(&wo_b_name, d, cfg.o_groups * cfg.o_lora_rank)?;
        let r = cfg.o_lora_rank;
        let wo_a: Vec<Weight> = shard
            .groups
            .clone()
            .map(|g| wo_a.slice_rows(g * r, (g + 1) * r).map_err(slice_err(&wo_a_name)))
            .collect::<Result<_>>()?;
        let wo_b: Vec<Weight> = shard
            .groups
            .clone()
            .map(|g| wo_b.slice_cols(g * r, (g + 1) * r).map_err(slice_err(&wo_b_name)))
            .collect::<Result<_>>()?;
        let sink = t.floats(&format!("{p}attn.attn_sink"), &[cfg.num_heads])?[heads.clone()].to_vec();
        let compressor = match kind {
            AttnKind::Sliding => None,
            AttnKind::Csa { ratio } => Some(t.compressor(&format!("{p}attn.compressor"), ratio, true, hd, d)?),
            AttnKind::Hca { ratio } => Some(t.compressor(&format!("{p}attn.compressor"), ratio, false, hd, d)?),
        };
        let indexer = match kind {
            AttnKind::Csa { ratio } => Some(IndexerWeights {
                wq_b: t.linear(
                    &format!("{p}attn.indexer.wq_b.weight"),
                    cfg.index_n_heads * cfg.index_head_dim,
                    cfg.q_lora_rank,
                )?,
                weights_proj: t.linear(&format!("{p}attn.indexer.weights_proj.weight"), cfg.index_n_heads, d)?,
                compressor: t.compressor(&format!("{p}attn.indexer.compressor"), ratio, true, cfg.index_head_dim, d)?,
            }),
            _ => None,
        };
        let attn = AttnWeights {
            kind,
            wq_a: t.linear(&format!("{p}attn.wq_a.weight"), cfg.q_lora_rank, d)?,
            q_norm: t.floats(&format!("{p}attn.q_norm.weight"), &[cfg.q_lora_rank])?,
            wq_b,
            wkv: t.linear(&format!("{p}attn.wkv.weight"), hd, d)?,
            kv_norm: t.floats(&format!("{p}attn.kv_norm.weight"), &[hd])?,
            wo_a,
            wo_b,
            sink,
            compressor,
            indexer,
        };
        let moe = MoeWeights {
            kind: moe_kind,
            gate: t.linear(&format!("{p}ffn.gate.weight"), cfg.n_routed_experts, d)?,
            bias: match moe_kind {
                MoeKind::Learned => Some(t.floats(&format!("{p}ffn.gate.bias"), &[cfg.n_routed_experts])?),
                MoeKind::Hash => None,
            },
            tid2eid: match moe_kind {
                MoeKind::Hash => Some(convert::tid2eid(
                    &t.get(&format!("{p}ffn.gate.tid2eid"))?,
                    cfg.vocab_size,
                    cfg.num_experts_per_tok,
                    cfg.n_routed_experts,
                )?),
                MoeKind::Learned => None,
            },
            shared: t.expert(&format!("{p}ffn.shared_experts"), d, cfg.moe_intermediate_size)?,
            experts,
        };
        Ok(LayerWeights {
            attn_norm: t.floats(&format!("{p}attn_norm.weight"), &[d])?,
            ffn_norm: t.floats(&format!("{p}ffn_norm.weight"), &[d])?,
            hc_attn: t.hc(&format!("{p}hc_attn"), n_hc, hc * d, 3)?,
            hc_ffn: t.hc(&format!("{p}hc_ffn"), n_hc, hc * d, 3)?,
            attn,
            moe,
        })
    }
}

fn expert_only_layer(cfg: &ModelConfig, i: usize, experts: Vec<Option<ExpertWeights>>) -> Result<LayerWeights> {
    let z = |r: usize, c: usize| Weight::f32(r, c, vec![0.0; r * c]).map_err(|e| ModelError::Invalid(e.to_string()));
    let hc = HcWeights { fn_: z(0, 0)?, base: vec![], scale: vec![] };
    let empty_expert = ExpertWeights { w1: z(0, 0)?, w2: z(0, 0)?, w3: z(0, 0)? };
    Ok(LayerWeights {
        attn_norm: vec![],
        ffn_norm: vec![],
        hc_attn: hc.clone(),
        hc_ffn: hc,
        attn: AttnWeights {
            kind: cfg.attn_kind(i),
            wq_a: z(0, 0)?,
            q_norm: vec![],
            wq_b: z(0, 0)?,
            wkv: z(0, 0)?,
            kv_norm: vec![],
            wo_a: vec![],
            wo_b: vec![],
            sink: vec![],
            compressor: None,
            indexer: None,
        },
        moe: MoeWeights {
            kind: cfg.moe_kind(i),
            gate: z(0, 0)?,
            bias: None,
            tid2eid: None,
            shared: empty_expert,
            experts,
        },
    })
}

impl ModelWeights {
    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        let hc = |h: &HcWeights| h.fn_.bytes() + (h.base.len() + h.scale.len()) * 4;
        let comp = |c: &CompressorWeights| c.wkv.bytes() + c.wgate.bytes() + (c.ape.len() + c.norm.len()) * 4;
        let mut b = self.embed.bytes() + self.head.bytes() + hc(&self.hc_head) + self.norm.len() * 4;
        for l in &self.layers {
            let a = &l.attn;
            b += (l.attn_norm.len() + l.ffn_norm.len()) * 4 + hc(&l.hc_attn) + hc(&l.hc_ffn);
            b +=
                a.wq_a.bytes() + a.wq_b.bytes() + a.wkv.bytes() + (a.q_norm.len() + a.kv_norm.len() + a.sink.len()) * 4;
            b += a.wo_a.iter().chain(&a.wo_b).map(Weight::bytes).sum::<usize>();
            b += a.compressor.as_ref().map_or(0, comp);
            b += a.indexer.as_ref().map_or(0, |i| i.wq_b.bytes() + i.weights_proj.bytes() + comp(&i.compressor));
            let m = &l.moe;
            b += m.gate.bytes()
                + m.bias.as_ref().map_or(0, |v| v.len() * 4)
                + m.tid2eid.as_ref().map_or(0, |v| v.len() * 4);
            b += m.shared.bytes() + m.experts.iter().flatten().map(ExpertWeights::bytes).sum::<usize>();
        }
        b
    }
}

/// Reads only the routed experts `(layer, expert)` listed (what a rank adds to its shard after a
/// failure), in parallel, validating each like [`load`].
pub fn load_experts(cfg: &ModelConfig, ck: &Checkpoint, wanted: &[(usize, u32)]) -> Result<Vec<ExpertWeights>> {
    let t = Tensors { ck, bar: None };
    wanted
        .par_iter()
        .map(|&(layer, e)| {
            if layer >= cfg.num_layers || e as usize >= cfg.n_routed_experts {
                return Err(ModelError::Invalid(format!(
                    "expert {e} of layer {layer} asked for; the model has {} layers of {} experts",
                    cfg.num_layers, cfg.n_routed_experts
                )));
            }
            t.expert(&format!("layers.{layer}.ffn.experts.{e}"), cfg.hidden_size, cfg.moe_intermediate_size)
        })
        .collect()
}
