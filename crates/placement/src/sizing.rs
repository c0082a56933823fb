//! `emesh plan`: can this cluster hold the model, in which layouts, and how fast might it run.
//!
//! For every layout (tp dividing the model's tensor-parallel unit and fitting in a node, dp the
//! rest, experts over all ranks) it gives the per-GPU memory breakdown, the sequences whose
//! caches fit, the all-to-all traffic of one decode step and a roofline estimate of prefill
//! and decode throughput. It also finds the smallest cluster of this hardware that holds the
//! model with one sequence at the requested context.
//!
//! The roofline model, per GPU and per step:
//! - memory time = (weights streamed + cache bytes read) / (HBM bandwidth x `hbm_efficiency`);
//!   weights streamed are the rank's attention slice, replicated tensors (not the embedding)
//!   and the expert copies that receive at least one token;
//! - compute time = linear FLOPs / (FP8 or BF16 peak x `gemm_efficiency`) + attention FLOPs /
//!   (BF16 peak x `attention_efficiency`); tensor-parallel ranks repeat the replicated work;
//! - communication time = all-to-all bytes / (link bandwidth x efficiency): dispatch sends each
//!   token once per distinct destination rank in FP8 with per-128 scales, combine returns one
//!   BF16 vector per expert; ranks on the same node use NVLink, others the network;
//! - step time = max(work, comm) + (1 - overlap) x min(work, comm), with work the larger of
//!   memory and compute time;
//! - throughput = tokens per step / step time x `utilization`; prefill additionally counts
//!   prefix-cache hits as served tokens.
//!
//! Every factor is an [`Assumptions`] field, so a report can be rerun with other beliefs.

use crate::error::{input, PlanError};
use crate::hardware::Hardware;
use crate::profile::ModelProfile;
use crate::units::{gib, GIB};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The factors between hardware peaks and what serving achieves.
///
/// Defaults come from DeepSeek's published kernel numbers on H800: DeepGEMM reaches about
/// 1,350-1,550 of 1,979 FP8 TFLOP/s on large shapes (0.7); FlashMLA about 660 of 989 BF16
/// TFLOP/s when compute-bound (0.65) and up to 3,000 of 3,350 GB/s when memory-bound (0.85);
/// DeepEP about 40-46 of 50 GB/s per GPU over RDMA and 150-160 GB/s over NVLink (0.8).
/// Prefill overlaps communication completely with two micro-batches; decode overlaps half of
/// it (its steps are too short to hide the latency-bound all-to-all). `utilization` is the
/// day-average fraction of capacity in use; the default 1.0 gives the capacity of a full
/// cluster.
///
/// Check against published data (tests/sizing.rs): DeepSeek's V3/R1 service figures on H800
/// are day averages (tokens served over node-seconds, prefix-cache hits counted as input).
/// With these defaults, the published 56.3% cache-hit rate and `utilization = 0.67` (the one
/// fitted factor) the model gives prefill 67.2k input tok/s per node (published 73.7k, -9%)
/// and decode 16.3k output tok/s per node (published 14.8k, +10%); its per-sequence decode
/// speed, which no fitted factor touches, is 23.8 tok/s (published 20-22). The traffic model
/// is ExpertMesh's: one dispatch per destination rank. DeepSeek's kernels send one copy per
/// destination node over the network and route at most 4 nodes per token, so their prefill
/// moves about half these bytes; the published prefill rate sits well below that roofline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assumptions {
    pub gemm_efficiency: f64,
    pub attention_efficiency: f64,
    pub hbm_efficiency: f64,
    pub network_efficiency: f64,
    pub nvlink_efficiency: f64,
    pub prefill_overlap: f64,
    pub decode_overlap: f64,
    /// Device memory kept off weights and caches (runtime, activations, comm buffers).
    pub overhead_fraction: f64,
    /// Share of prompt tokens served from a prefix cache instead of computed.
    pub prefill_cache_hit: f64,
    pub utilization: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            gemm_efficiency: 0.7,
            attention_efficiency: 0.65,
            hbm_efficiency: 0.85,
            network_efficiency: 0.8,
            nvlink_efficiency: 0.8,
            prefill_overlap: 1.0,
            decode_overlap: 0.5,
            overhead_fraction: 0.08,
            prefill_cache_hit: 0.0,
            utilization: 1.0,
        }
    }
}

impl Assumptions {
    fn validate(&self) -> Result<(), PlanError> {
        let unit = [
            ("gemm_efficiency", self.gemm_efficiency, false),
            ("attention_efficiency", self.attention_efficiency, false),
            ("hbm_efficiency", self.hbm_efficiency, false),
            ("network_efficiency", self.network_efficiency, false),
            ("nvlink_efficiency", self.nvlink_efficiency, false),
            ("utilization", self.utilization, false),
            ("prefill_overlap", self.prefill_overlap, true),
            ("decode_overlap", self.decode_overlap, true),
            ("overhead_fraction", self.overhead_fraction, true),
        ];
        for (name, v, zero_ok) in unit {
            if !(v.is_finite() && v <= 1.0 && (v > 0.0 || (zero_ok && v == 0.0))) {
                return Err(input(name, format!("must be in {}0, 1], got {v}", if zero_ok { "[" } else { "(" })));
            }
        }
        if !(self.prefill_cache_hit.is_finite() && (0.0..1.0).contains(&self.prefill_cache_hit)) {
            return Err(input("prefill_cache_hit", format!("must be in [0, 1), got {}", self.prefill_cache_hit)));
        }
        Ok(())
    }
}

/// What to size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizingRequest {
    pub hardware: Hardware,
    pub nodes: usize,
    pub gpus_per_node: usize,
    /// Tokens in each sequence's cache during decode.
    pub context: usize,
    /// Prompt length for prefill (0: same as `context`).
    pub prompt: usize,
    /// Decode sequences per attention group (0: as many as fit).
    pub batch: usize,
    /// Prompt tokens per GPU in one prefill step.
    pub prefill_tokens_per_gpu: usize,
    /// Extra expert copies per MoE layer, over the whole cluster.
    pub redundant_experts: usize,
    pub assumptions: Assumptions,
}

impl SizingRequest {
    pub fn new(hardware: Hardware, nodes: usize, gpus_per_node: usize, context: usize) -> Self {
        SizingRequest {
            hardware,
            nodes,
            gpus_per_node,
            context,
            prompt: 0,
            batch: 0,
            prefill_tokens_per_gpu: 16384,
            redundant_experts: 0,
            assumptions: Assumptions::default(),
        }
    }
}

/// One GPU's memory, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuMemory {
    pub attention: u64,
    pub shared_expert: u64,
    pub replicated: u64,
    pub experts: u64,
    pub overhead: u64,
    /// What is left for caches (0 when the weights do not fit).
    pub cache: u64,
    pub capacity: u64,
}

impl GpuMemory {
    pub fn weights(&self) -> u64 {
        self.attention.saturating_add(self.shared_expert).saturating_add(self.replicated).saturating_add(self.experts)
    }
}

/// What limits a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bound {
    Memory,
    Compute,
    Network,
    NvLink,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
            Bound::Network => "network",
            Bound::NvLink => "nvlink",
        })
    }
}

/// Time split of one step on one GPU, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    pub memory: f64,
    pub compute: f64,
    pub network: f64,
    pub nvlink: f64,
    pub step: f64,
}

impl StepTimes {
    fn finish(mut self, overlap: f64) -> (StepTimes, Bound) {
        let work = self.memory.max(self.compute);
        let comm = self.network.max(self.nvlink);
        self.step = work.max(comm) + (1.0 - overlap) * work.min(comm);
        let bound = [
            (self.memory, Bound::Memory),
            (self.compute, Bound::Compute),
            (self.network, Bound::Network),
            (self.nvlink, Bound::NvLink),
        ]
        .into_iter()
        .fold((f64::MIN, Bound::Memory), |a, b| if b.0 > a.0 { b } else { a })
        .1;
        (self, bound)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeEstimate {
    /// Sequences per attention group in the step.
    pub batch: usize,
    pub times: StepTimes,
    pub bound: Bound,
    pub tokens_per_s_gpu: f64,
    pub tokens_per_s_node: f64,
    /// Tokens per second each sequence sees.
    pub tokens_per_s_seq: f64,
    /// All-to-all bytes one GPU sends per step (dispatch + combine), and the part that
    /// leaves the node.
    pub a2a_bytes_per_step: f64,
    pub a2a_network_bytes_per_step: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefillEstimate {
    pub tokens_per_gpu: usize,
    pub times: StepTimes,
    pub bound: Bound,
    /// Prompt tokens served per second (prefix-cache hits included).
    pub tokens_per_s_gpu: f64,
    pub tokens_per_s_node: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayoutReport {
    pub tp: usize,
    pub dp: usize,
    pub ep: usize,
    /// Expert slots per GPU per MoE layer.
    pub expert_slots: usize,
    pub memory: GpuMemory,
    pub fits: bool,
    /// Why it does not fit.
    pub problem: Option<String>,
    pub sequences_per_group: u64,
    pub sequences_total: u64,
    pub decode: Option<DecodeEstimate>,
    pub prefill: Option<PrefillEstimate>,
}

/// The smallest cluster of this hardware that holds the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinCluster {
    pub nodes: usize,
    pub gpus: usize,
    pub tp: usize,
    pub sequences_total: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizingReport {
    pub model: String,
    pub hardware: Hardware,
    pub nodes: usize,
    pub gpus_per_node: usize,
    pub context: usize,
    pub prompt: usize,
    pub weight_bytes: u64,
    pub active_params: f64,
    pub kv_bytes_per_sequence: u64,
    pub layouts: Vec<LayoutReport>,
    /// Index in `layouts` of the fitting layout with the highest decode throughput.
    pub best: Option<usize>,
    pub min_cluster: Option<MinCluster>,
    pub assumptions: Assumptions,
}

/// Sizes `profile` on the cluster of `req`.
pub fn size(profile: &ModelProfile, req: &SizingRequest) -> Result<SizingReport, PlanError> {
    req.assumptions.validate()?;
    if req.nodes == 0 || req.gpus_per_node == 0 {
        return Err(input("nodes", "nodes and gpus_per_node must be positive"));
    }
    if req.context == 0 || req.prefill_tokens_per_gpu == 0 {
        return Err(input("context", "context and prefill tokens must be positive"));
    }
    let bounds = [
        ("nodes", req.nodes, 1 << 20),
        ("gpus_per_node", req.gpus_per_node, 1 << 12),
        ("context", req.context, 1 << 32),
        ("prompt", req.prompt, 1 << 32),
        ("batch", req.batch, 1 << 32),
        ("prefill_tokens_per_gpu", req.prefill_tokens_per_gpu, 1 << 32),
        ("redundant_experts", req.redundant_experts, 1 << 24),
    ];
    for (field, v, max) in bounds {
        if v > max {
            return Err(input(field, format!("{v} exceeds the supported maximum {max}")));
        }
    }
    let world = req.nodes.checked_mul(req.gpus_per_node).ok_or_else(|| input("nodes", "too many GPUs"))?;
    let layouts: Vec<LayoutReport> = tp_choices(profile, req.gpus_per_node, world)
        .into_iter()
        .map(|tp| layout_report(profile, req, tp, world))
        .collect();
    let best = layouts
        .iter()
        .enumerate()
        .filter(|(_, l)| l.fits)
        .max_by(|a, b| {
            let t = |l: &LayoutReport| l.decode.as_ref().map_or(0.0, |d| d.tokens_per_s_gpu);
            t(a.1).total_cmp(&t(b.1)).then(b.0.cmp(&a.0))
        })
        .map(|(i, _)| i);
    Ok(SizingReport {
        model: profile.name.clone(),
        hardware: req.hardware.clone(),
        nodes: req.nodes,
        gpus_per_node: req.gpus_per_node,
        context: req.context,
        prompt: prompt_len(req),
        weight_bytes: profile.weight_bytes(),
        active_params: profile.active_params(),
        kv_bytes_per_sequence: profile.kv_bytes(req.context),
        layouts,
        best,
        min_cluster: min_cluster(profile, req),
        assumptions: req.assumptions.clone(),
    })
}

fn prompt_len(req: &SizingRequest) -> usize {
    if req.prompt == 0 {
        req.context
    } else {
        req.prompt
    }
}

fn tp_choices(profile: &ModelProfile, gpus_per_node: usize, world: usize) -> Vec<usize> {
    (1..=gpus_per_node.min(profile.tp_unit))
        .filter(|&t| profile.tp_unit.checked_rem(t) == Some(0) && world.checked_rem(t) == Some(0))
        .collect()
}

/// Memory of one GPU of a `tp`-group in a `world`-rank cluster.
pub fn gpu_memory(
    profile: &ModelProfile,
    hw: &Hardware,
    a: &Assumptions,
    tp: usize,
    world: usize,
    redundant: usize,
) -> GpuMemory {
    let slots = profile.experts.saturating_add(redundant).div_ceil(world.max(1)) as u64;
    let capacity = hw.hbm_bytes();
    let mut m = GpuMemory {
        attention: profile.split_bytes.div_ceil(tp as u64),
        shared_expert: profile.shared_bytes.div_ceil(tp as u64),
        replicated: profile.replicated_bytes,
        experts: slots.saturating_mul(profile.moe_layers as u64).saturating_mul(profile.expert_bytes),
        overhead: (capacity as f64 * a.overhead_fraction) as u64,
        cache: 0,
        capacity,
    };
    m.cache = capacity.saturating_sub(m.weights().saturating_add(m.overhead));
    m
}

fn layout_report(profile: &ModelProfile, req: &SizingRequest, tp: usize, world: usize) -> LayoutReport {
    let a = &req.assumptions;
    let dp = world / tp;
    let memory = gpu_memory(profile, &req.hardware, a, tp, world, req.redundant_experts);
    let kv = profile.kv_bytes(req.context).max(1);
    let per_group = memory.cache / kv;
    let mut r = LayoutReport {
        tp,
        dp,
        ep: world,
        expert_slots: (profile.experts + req.redundant_experts).div_ceil(world),
        memory,
        fits: per_group > 0,
        problem: None,
        sequences_per_group: per_group,
        sequences_total: per_group * dp as u64,
        decode: None,
        prefill: None,
    };
    if !r.fits {
        let need = memory.weights() + memory.overhead + kv;
        r.problem = Some(format!(
            "needs {:.1} GiB per GPU (weights {:.1}, overhead {:.1}, one sequence {:.2}) of {:.1}",
            gib(need),
            gib(memory.weights()),
            gib(memory.overhead),
            gib(kv),
            gib(memory.capacity)
        ));
        return r;
    }
    let batch = if req.batch == 0 { per_group } else { (req.batch as u64).min(per_group) } as usize;
    r.decode = Some(decode(profile, req, tp, world, batch, &memory));
    r.prefill = Some(prefill(profile, req, tp, world, &memory));
    r
}

/// Per-token all-to-all bytes of one MoE layer: (network, nvlink).
fn a2a_per_token(profile: &ModelProfile, world: usize, gpn: usize) -> (f64, f64) {
    let d = profile.hidden as f64;
    let k = profile.top_k as f64;
    let hosts = world.min(profile.experts).max(1) as f64;
    let distinct = hosts * (1.0 - (1.0 - 1.0 / hosts).powf(k));
    let w = world as f64;
    let node = gpn.min(world) as f64;
    let (remote, local) = ((w - node) / w, (node - 1.0) / w);
    let dispatch = d + 4.0 * (d / 128.0).ceil();
    let combine = 2.0 * d;
    (distinct * remote * dispatch + k * remote * combine, distinct * local * dispatch + k * local * combine)
}

fn linear_peak(profile: &ModelProfile, hw: &Hardware) -> f64 {
    1e12 * if profile.fp8 { hw.fp8_tflops } else { hw.bf16_tflops }
}

fn decode(
    profile: &ModelProfile,
    req: &SizingRequest,
    tp: usize,
    world: usize,
    batch: usize,
    mem: &GpuMemory,
) -> DecodeEstimate {
    let (a, hw) = (&req.assumptions, &req.hardware);
    let (b, tpf) = (batch as f64, tp as f64);
    let dp = (world / tp) as f64;
    let tokens = b / tpf;
    let k = profile.top_k as f64;
    let e = profile.experts as f64;
    let copies = (profile.experts + req.redundant_experts) as f64 / e;
    let p_active = 1.0 - (1.0 - k / (e * copies)).powf(b * dp);
    let experts_read = mem.experts as f64 * p_active;
    let weights_read =
        (mem.attention + mem.shared_expert + mem.replicated - profile.embed_bytes.min(mem.replicated)) as f64;
    let attn = profile.decode_attention(req.context);
    let hbm = weights_read + experts_read + b * attn.bytes;
    let linear = b * (profile.split_flops / tpf + profile.replicated_flops + profile.shared_flops / tpf)
        + tokens * (profile.head_flops + k * profile.expert_flops);
    let attn_flops = b * (attn.split_flops / tpf + attn.replicated_flops);
    let (net_tok, nvl_tok) = a2a_per_token(profile, world, req.gpus_per_node);
    let layers = profile.moe_layers as f64;
    let tp_bytes = b * profile.layers as f64 * 4.0 * profile.hidden as f64 * (tpf - 1.0) / tpf;
    let net = tokens * layers * net_tok;
    let nvl = tokens * layers * nvl_tok + tp_bytes;
    let (times, bound) = StepTimes {
        memory: hbm / (hw.hbm_tbps * 1e12 * a.hbm_efficiency),
        compute: linear / (linear_peak(profile, hw) * a.gemm_efficiency)
            + attn_flops / (hw.bf16_tflops * 1e12 * a.attention_efficiency),
        network: net / (hw.network_gbps * 1e9 * a.network_efficiency),
        nvlink: nvl / (hw.nvlink_gbps * 1e9 * a.nvlink_efficiency),
        step: 0.0,
    }
    .finish(a.decode_overlap);
    let per_gpu = tokens / times.step * a.utilization;
    DecodeEstimate {
        batch,
        times,
        bound,
        tokens_per_s_gpu: per_gpu,
        tokens_per_s_node: per_gpu * req.gpus_per_node as f64,
        tokens_per_s_seq: 1.0 / times.step,
        a2a_bytes_per_step: net + tokens * layers * nvl_tok,
        a2a_network_bytes_per_step: net,
    }
}

fn prefill(profile: &ModelProfile, req: &SizingRequest, tp: usize, world: usize, mem: &GpuMemory) -> PrefillEstimate {
    let (a, hw) = (&req.assumptions, &req.hardware);
    let n = req.prefill_tokens_per_gpu as f64;
    let tpf = tp as f64;
    let k = profile.top_k as f64;
    let prompt = prompt_len(req);
    let attn = profile.prefill_attention(prompt);
    let linear = n
        * (profile.split_flops + tpf * profile.replicated_flops + profile.shared_flops + k * profile.expert_flops)
        + n / prompt as f64 * profile.head_flops;
    let attn_flops = n * (attn.split_flops + tpf * attn.replicated_flops);
    let (net_tok, nvl_tok) = a2a_per_token(profile, world, req.gpus_per_node);
    let layers = profile.moe_layers as f64;
    let tp_bytes = n * tpf * profile.layers as f64 * 4.0 * profile.hidden as f64 * (tpf - 1.0) / tpf;
    let (times, bound) = StepTimes {
        memory: mem.weights() as f64 / (hw.hbm_tbps * 1e12 * a.hbm_efficiency),
        compute: linear / (linear_peak(profile, hw) * a.gemm_efficiency)
            + attn_flops / (hw.bf16_tflops * 1e12 * a.attention_efficiency),
        network: n * layers * net_tok / (hw.network_gbps * 1e9 * a.network_efficiency),
        nvlink: (n * layers * nvl_tok + tp_bytes) / (hw.nvlink_gbps * 1e9 * a.nvlink_efficiency),
        step: 0.0,
    }
    .finish(a.prefill_overlap);
    let per_gpu = n / times.step * a.utilization / (1.0 - a.prefill_cache_hit);
    PrefillEstimate {
        tokens_per_gpu: req.prefill_tokens_per_gpu,
        times,
        bound,
        tokens_per_s_gpu: per_gpu,
        tokens_per_s_node: per_gpu * req.gpus_per_node as f64,
    }
}

/// Smallest node count (up to 4096) at which some layout holds the weights plus one sequence.
pub fn min_cluster(profile: &ModelProfile, req: &SizingRequest) -> Option<MinCluster> {
    let kv = profile.kv_bytes(req.context).max(1);
    (1..=4096usize).find_map(|nodes| {
        let world = nodes.checked_mul(req.gpus_per_node)?;
        tp_choices(profile, req.gpus_per_node, world)
            .into_iter()
            .map(|tp| {
                let m = gpu_memory(profile, &req.hardware, &req.assumptions, tp, world, req.redundant_experts);
                (tp, m.cache / kv * (world / tp) as u64)
            })
            .filter(|&(_, seqs)| seqs > 0)
            .max_by_key(|&(tp, seqs)| (seqs, std::cmp::Reverse(tp)))
            .map(|(tp, seqs)| MinCluster { nodes, gpus: world, tp, sequences_total: seqs })
    })
}

/// `1 node`, `2 nodes`.
pub fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

impl fmt::Display for SizingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model     {}: {:.1} GiB of weights, {:.1}B active parameters per token",
            self.model,
            gib(self.weight_bytes),
            self.active_params / 1e9
        )?;
        writeln!(f, "hardware  {}", self.hardware)?;
        writeln!(
            f,
            "cluster   {} x {} GPUs = {} GPUs; context {} tokens ({:.2} GiB of cache per sequence); prompt {}",
            count(self.nodes, "node"),
            self.gpus_per_node,
            self.nodes.saturating_mul(self.gpus_per_node),
            self.context,
            self.kv_bytes_per_sequence as f64 / GIB,
            self.prompt
        )?;
        writeln!(
            f,
            "(seqs: caches that fit; batch: decode sequences per step; tok/s: whole cluster; \
             a2a: MB one GPU sends per decode step; * best decode layout)"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>3} {:>5} {:>5} {:>5} {:>9} {:>9} {:>8} {:>8} {:>10} {:>8} {:>8} {:>10} {:>10}",
            "tp",
            "dp",
            "ep",
            "slots",
            "wts GiB",
            "cache GiB",
            "seqs",
            "batch",
            "decode/s",
            "per seq",
            "bound",
            "a2a MB",
            "prefill/s"
        )?;
        for (i, l) in self.layouts.iter().enumerate() {
            let mark = if Some(i) == self.best { "*" } else { " " };
            write!(
                f,
                "{:>3} {:>5} {:>5} {:>5} {:>9.1} {:>9.1} {:>8}",
                l.tp,
                l.dp,
                l.ep,
                l.expert_slots,
                gib(l.memory.weights()),
                gib(l.memory.cache),
                l.sequences_total
            )?;
            match (&l.decode, &l.prefill) {
                (Some(d), Some(p)) => writeln!(
                    f,
                    " {:>8} {:>10} {:>8.1} {:>8} {:>10.1} {:>10}{mark}",
                    d.batch * l.dp,
                    fmt_rate(d.tokens_per_s_gpu * (l.tp * l.dp) as f64),
                    d.tokens_per_s_seq,
                    d.bound.to_string(),
                    d.a2a_bytes_per_step / 1e6,
                    fmt_rate(p.tokens_per_s_gpu * (l.tp * l.dp) as f64),
                )?,
                _ => writeln!(f, "  does not fit: {}", l.problem.as_deref().unwrap_or(""))?,
            }
        }
        if let Some(l) = self.best.and_then(|i| self.layouts.get(i)) {
            let m = &l.memory;
            writeln!(f)?;
            writeln!(
                f,
                "per GPU at tp={} (GiB): attention {:.2}, shared experts {:.2}, replicated {:.2}, \
                 routed experts {:.2} ({} slots per layer), overhead {:.2}, caches {:.2} of {:.1}",
                l.tp,
                gib(m.attention),
                gib(m.shared_expert),
                gib(m.replicated),
                gib(m.experts),
                l.expert_slots,
                gib(m.overhead),
                gib(m.cache),
                gib(m.capacity)
            )?;
        }
        match &self.min_cluster {
            Some(c) => writeln!(
                f,
                "smallest cluster holding the model: {} ({} GPUs, tp={}), {} at this context",
                count(c.nodes, "node"),
                c.gpus,
                c.tp,
                count(c.sequences_total as usize, "sequence")
            ),
            None => writeln!(f, "no cluster of up to 4096 nodes of this hardware holds the model"),
        }
    }
}
