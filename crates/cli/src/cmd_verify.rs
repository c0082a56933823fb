use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Fixture folder (model*.safetensors, config.json, expected*.safetensors).
    dir: PathBuf,
    /// Only this weights file of the folder (e.g. model.fp8.safetensors).
    #[arg(long)]
    weights: Option<String>,
}

pub fn run(a: Args) -> Result<i32> {
    let report = emesh_model::verify::verify_dir(&a.dir, a.weights.as_deref())?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.pass { 0 } else { 1 })
}
