use crate::local_cluster::{runtime, ClusterForward, LocalWorkers};
use anyhow::Result;
use emesh_coordinator::ClusterOptions;
use emesh_model::verify::{self, Forward};
use emesh_worker::WorkerConfig;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Fixture folder (model*.safetensors, config.json, expected*.safetensors).
    dir: PathBuf,
    /// Only this weights file of the folder (e.g. model.fp8.safetensors).
    #[arg(long)]
    weights: Option<String>,
    /// Run through a cluster of this many workers (gRPC servers on loopback in this process).
    #[arg(long, conflicts_with = "connect")]
    workers: Option<usize>,
    /// Run through running `emesh worker` processes at these addresses (rank order).
    #[arg(long, value_delimiter = ',')]
    connect: Vec<String>,
    /// Tensor-parallel size of each attention group (workers / tp data-parallel groups).
    #[arg(long, default_value_t = 1)]
    tp: usize,
    /// Dispatch payload precision: f32 (exact), bf16 or fp8.
    #[arg(long, default_value = "f32")]
    dispatch_dtype: String,
}

/// A folder where the checkpoint under test is `model.safetensors` (what a worker loads).
fn staging(fixture: &Path, weights: &Path) -> Result<tempfile::TempDir> {
    let tmp = tempfile::tempdir()?;
    std::os::unix::fs::symlink(std::fs::canonicalize(fixture.join("config.json"))?, tmp.path().join("config.json"))?;
    std::os::unix::fs::symlink(std::fs::canonicalize(weights)?, tmp.path().join("model.safetensors"))?;
    Ok(tmp)
}

pub fn run(a: Args) -> Result<i32> {
    let cluster = a.workers.is_some() || !a.connect.is_empty();
    if !cluster {
        let report = verify::verify_dir(&a.dir, a.weights.as_deref())?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(if report.pass { 0 } else { 1 });
    }
    let rt = runtime()?;
    let mut stages = Vec::new();
    let mut make = |weights: &Path, engine: &emesh_model::Engine| -> emesh_model::Result<Option<Box<dyn Forward>>> {
        let stage = staging(&a.dir, weights).map_err(|e| emesh_model::ModelError::Invalid(e.to_string()))?;
        let opts = ClusterOptions {
            tp: a.tp,
            model_dir: stage.path().display().to_string(),
            dispatch_dtype: a.dispatch_dtype.clone(),
            ..Default::default()
        };
        let (addrs, local) = match a.workers {
            Some(n) => {
                let w = LocalWorkers::start(&rt, n, &WorkerConfig::default())
                    .map_err(|e| emesh_model::ModelError::Invalid(e.to_string()))?;
                (w.addrs.clone(), Some(w))
            }
            None => (a.connect.clone(), None),
        };
        stages.push(stage);
        let f = ClusterForward::start(rt.clone(), &addrs, engine.cfg.clone(), &opts, local)
            .map_err(|e| emesh_model::ModelError::Invalid(format!("{e:#}")))?;
        Ok(Some(Box::new(f)))
    };
    let (report, bitwise) = verify::verify_dir_with(&a.dir, a.weights.as_deref(), &mut make)?;
    let mut v = serde_json::to_value(&report)?;
    let world = a.workers.unwrap_or(a.connect.len());
    v["workers"] = world.into();
    v["tp"] = a.tp.into();
    v["dp"] = (world / a.tp.max(1)).into();
    v["bitwise_equal_single"] = bitwise.unwrap_or(false).into();
    println!("{}", serde_json::to_string(&v)?);
    Ok(if report.pass && bitwise == Some(true) { 0 } else { 1 })
}
