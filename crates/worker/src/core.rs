//! The worker's state and its step, independent of how messages travel.

use crate::cluster_comm::{ClusterComm, ExchangeStats};
use emesh_comm::{PayloadDtype, Transport};
use emesh_common::{Epoch, ModelConfig, Rank};
use emesh_model::checkpoint::Checkpoint;
use emesh_model::weights::{self, Shard};
use emesh_model::{Engine, Logits, Numerics, Seq, SeqCache};
use emesh_placement::Plan;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Model(#[from] emesh_model::ModelError),
    #[error("{rank}: shard needs {need} bytes of weights, the memory budget is {budget}")]
    Budget { rank: Rank, need: u64, budget: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{rank}: step for epoch {got} refused (current epoch {current})")]
    StaleEpoch { rank: Rank, got: Epoch, current: Epoch },
}

/// One sequence's part of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqWork {
    pub id: u64,
    pub tokens: Vec<u32>,
    /// Position of the first token (must equal the cache's position).
    pub pos: usize,
    pub logits: Logits,
}

/// The same for every rank: each group's batch.
#[derive(Clone, Debug, Default)]
pub struct StepInput {
    pub epoch: Epoch,
    pub step: u64,
    pub groups: Vec<Vec<SeqWork>>,
    /// Sequences whose caches can be dropped.
    pub free: Vec<u64>,
}

/// Logits of the group's sequences, returned by the group's position-0 rank.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    pub logits: Vec<(u64, Vec<f32>)>,
}

pub struct WorkerCore {
    pub rank: Rank,
    /// The checkpoint folder the shard came from (a later epoch may reuse the shard).
    pub model_dir: std::path::PathBuf,
    pub plan: Plan,
    pub engine: Engine,
    transport: Arc<dyn Transport>,
    caches: HashMap<u64, SeqCache>,
    group: Vec<Rank>,
    position: usize,
    group_index: usize,
    pub dispatch_dtype: PayloadDtype,
    /// Summed over every step, shared with whoever reports it (never held during a step).
    pub stats: Arc<Mutex<ExchangeStats>>,
}

/// Where a rank's shard comes from and how it is held.
#[derive(Clone, Debug)]
pub struct ShardSource {
    pub model_dir: std::path::PathBuf,
    pub numerics: Numerics,
    /// Refuse a shard whose weights exceed this many bytes.
    pub memory_budget: Option<u64>,
    pub progress: bool,
}

/// What a [`WorkerCore::load_reusing`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// Whether the previous shard was kept (else everything was read).
    pub reused: bool,
    /// Routed experts read from the checkpoint (0 when nothing was reused: see `bytes`).
    pub experts: u64,
    /// Bytes read from the checkpoint.
    pub bytes: u64,
}

/// The model shard a rank's plan asks for.
pub fn shard_of(cfg: &ModelConfig, plan: &Plan, rank: Rank) -> Result<Shard, WorkerError> {
    let rp = plan.rank(rank).ok_or_else(|| WorkerError::Invalid(format!("{rank} is not in the placement")))?;
    if rp.experts.len() != cfg.num_layers {
        return Err(WorkerError::Invalid(format!(
            "placement lists experts for {} layers, the model has {}",
            rp.experts.len(),
            cfg.num_layers
        )));
    }
    Ok(Shard {
        groups: rp.out_groups.clone(),
        experts: rp.experts.iter().map(|l| l.iter().map(|e| e.0).collect()).collect(),
        dense: true,
    })
}

impl WorkerCore {
    /// Loads this rank's shard from `model_dir` (only its tensors are read).
    pub fn load(src: &ShardSource, plan: Plan, rank: Rank, transport: Arc<dyn Transport>) -> Result<Self, WorkerError> {
        let cfg = ModelConfig::from_file(&src.model_dir.join("config.json")).map_err(emesh_model::ModelError::from)?;
        let ck = Checkpoint::open(&src.model_dir)?;
        let shard = shard_of(&cfg, &plan, rank)?;
        let need = ck.bytes_of(&weights::tensor_names(&cfg, &shard, &ck));
        if let Some(budget) = src.memory_budget {
            if need > budget {
                return Err(WorkerError::Budget { rank, need, budget });
            }
        }
        let w = weights::load(&cfg, &shard, &ck, src.progress)?;
        let engine = Engine::new(cfg, w, src.numerics);
        let mut core = Self::new(engine, plan, rank, transport)?;
        core.model_dir = src.model_dir.clone();
        Ok(core)
    }

    /// Loads the shard of a new epoch, keeping what `old` already holds when the rank's
    /// attention role (position, heads, output groups) is unchanged: then only the routed
    /// experts it lacks are read from the checkpoint, and experts it no longer serves are
    /// dropped. Otherwise the whole shard is read. Caches never carry over (the coordinator
    /// re-prefills after a placement change).
    pub fn load_reusing(
        old: Option<WorkerCore>,
        src: &ShardSource,
        plan: Plan,
        rank: Rank,
        transport: Arc<dyn Transport>,
    ) -> Result<(Self, Reload), WorkerError> {
        let (model_dir, numerics, memory_budget) = (src.model_dir.as_path(), src.numerics, src.memory_budget);
        let reusable = old.filter(|o| {
            let (a, b) = (o.plan.rank(o.rank), plan.rank(rank));
            o.model_dir == model_dir
                && o.engine.numerics == numerics
                && a.zip(b).is_some_and(|(a, b)| {
                    (a.position, &a.heads, &a.out_groups) == (b.position, &b.heads, &b.out_groups)
                })
        });
        let Some(old) = reusable else {
            let core = Self::load(src, plan, rank, transport)?;
            let bytes = core.weight_bytes() as u64;
            return Ok((core, Reload { reused: false, experts: 0, bytes }));
        };
        let mut engine = old.engine;
        let cfg = engine.cfg.clone();
        let shard = shard_of(&cfg, &plan, rank)?;
        let mut wanted = Vec::new();
        for (li, held) in shard.experts.iter().enumerate() {
            let layer = &mut engine.weights.layers[li].moe.experts;
            let mut next: Vec<Option<weights::ExpertWeights>> = vec![None; layer.len()];
            for &e in held {
                let slot = next.get_mut(e as usize).ok_or_else(|| {
                    WorkerError::Invalid(format!("placement asks for expert {e} of layer {li}; the model has fewer"))
                })?;
                match layer[e as usize].take() {
                    Some(w) => *slot = Some(w),
                    None => wanted.push((li, e)),
                }
            }
            *layer = next;
        }
        let mut bytes = 0u64;
        if !wanted.is_empty() {
            let ck = Checkpoint::open(model_dir)?;
            let loaded = weights::load_experts(&cfg, &ck, &wanted)?;
            for (&(li, e), w) in wanted.iter().zip(loaded) {
                bytes += w.bytes() as u64;
                engine.weights.layers[li].moe.experts[e as usize] = Some(w);
            }
        }
        let total = engine.weights.bytes() as u64;
        if let Some(budget) = memory_budget {
            if total > budget {
                return Err(WorkerError::Budget { rank, need: total, budget });
            }
        }
        let mut core = Self::new(engine, plan, rank, transport)?;
        core.model_dir = model_dir.to_path_buf();
        Ok((core, Reload { reused: true, experts: wanted.len() as u64, bytes }))
    }

    pub fn new(engine: Engine, plan: Plan, rank: Rank, transport: Arc<dyn Transport>) -> Result<Self, WorkerError> {
        let rp = plan.rank(rank).ok_or_else(|| WorkerError::Invalid(format!("{rank} is not in the placement")))?;
        let mut group: Vec<(usize, Rank)> =
            plan.ranks.iter().filter(|r| r.group == rp.group).map(|r| (r.position, r.rank)).collect();
        group.sort();
        let position = rp.position;
        let group_index = rp.group;
        Ok(WorkerCore {
            rank,
            model_dir: Default::default(),
            group: group.into_iter().map(|(_, r)| r).collect(),
            position,
            group_index,
            plan,
            engine,
            transport,
            caches: HashMap::new(),
            dispatch_dtype: PayloadDtype::F32,
            stats: Arc::default(),
        })
    }

    pub fn group_index(&self) -> usize {
        self.group_index
    }

    pub fn position(&self) -> usize {
        self.position
    }

    pub fn weight_bytes(&self) -> usize {
        self.engine.weights.bytes()
    }

    pub fn drop_caches(&mut self) {
        self.caches.clear();
    }

    pub fn cached_sequences(&self) -> usize {
        self.caches.len()
    }

    /// Runs one step. Every rank of the cluster must run every step (an empty batch still takes
    /// part in each exchange). On failure the caches of this group's batch are dropped: those
    /// sequences must be prefilled again.
    pub fn step(&mut self, input: &StepInput) -> Result<StepOutput, WorkerError> {
        if input.epoch != self.plan.epoch {
            return Err(WorkerError::StaleEpoch { rank: self.rank, got: input.epoch, current: self.plan.epoch });
        }
        for id in &input.free {
            self.caches.remove(id);
        }
        let empty = Vec::new();
        let batch = input.groups.get(self.group_index).unwrap_or(&empty);
        let mut taken: Vec<(u64, SeqCache)> = Vec::with_capacity(batch.len());
        for s in batch {
            let cache = match self.caches.remove(&s.id) {
                Some(c) => c,
                None if s.pos == 0 => self.engine.new_cache(),
                None => {
                    return Err(WorkerError::Invalid(format!(
                        "{}: sequence {} starts at position {} but has no cache here",
                        self.rank, s.id, s.pos
                    )))
                }
            };
            if cache.pos != s.pos {
                return Err(WorkerError::Invalid(format!(
                    "{}: sequence {} is at position {}, the step says {}",
                    self.rank, s.id, cache.pos, s.pos
                )));
            }
            taken.push((s.id, cache));
        }
        let mut comm = ClusterComm {
            transport: self.transport.as_ref(),
            plan: &self.plan,
            epoch: input.epoch,
            step: input.step,
            group: self.group.clone(),
            position: self.position,
            dispatch_dtype: self.dispatch_dtype,
            stats: ExchangeStats::default(),
        };
        let lead = self.position == 0;
        let mut seqs: Vec<Seq> = taken
            .iter_mut()
            .zip(batch)
            .map(|((_, c), s)| Seq { tokens: &s.tokens, cache: c, logits: if lead { s.logits } else { Logits::None } })
            .collect();
        let out = self.engine.forward_with(&mut comm, &mut seqs, None);
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).add(&comm.stats);
        let out = out?;
        drop(seqs);
        let mut logits = Vec::new();
        for ((id, cache), l) in taken.into_iter().zip(out) {
            self.caches.insert(id, cache);
            if lead {
                logits.push((id, l));
            }
        }
        Ok(StepOutput { logits })
    }
}
