use anyhow::{bail, Result};
use emesh_model::gen::{self, GenDtype};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model size: tiny (~2.4M parameters), small (~300M), medium (~1.1B).
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Any V4 config.json (official, HF or inference spelling) instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// f32, bf16, or fp8 (the release layout: FP8 linears, FP4 experts).
    #[arg(long, default_value = "f32")]
    dtype: GenDtype,
    /// A tokenizer.json (or a folder holding one) to copy in, so the model serves text.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Largest shard in MiB.
    #[arg(long, default_value_t = 2048)]
    shard_size_mib: u64,
}

pub fn run(a: Args) -> Result<i32> {
    let cfg = match &a.config {
        Some(p) => emesh_common::ModelConfig::from_file(p)?,
        None => gen::preset(&a.preset)?,
    };
    let tok_src = match &a.tokenizer {
        None => None,
        Some(p) if p.is_dir() => Some(p.join("tokenizer.json")),
        Some(p) => Some(p.clone()),
    };
    if let Some(t) = &tok_src {
        if !t.exists() {
            bail!("tokenizer {} does not exist", t.display());
        }
    }
    let total = gen::parameter_count(&cfg);
    let bar = indicatif::ProgressBar::new(0);
    if std::io::stderr().is_terminal() {
        bar.set_style(indicatif::ProgressStyle::with_template(
            "writing {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec}",
        )?);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let t0 = std::time::Instant::now();
    let mut done = 0;
    let report = gen::generate(&a.out, &cfg, a.dtype, a.seed, a.shard_size_mib << 20, |b| {
        done += b;
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if let Some(t) = tok_src {
        let dst = a.out.join("tokenizer.json");
        crate::models::copy_file(&t, &dst)?;
        if let Some(cfg_file) = t.parent().map(|p| p.join("tokenizer_config.json")).filter(|p| p.exists()) {
            crate::models::copy_file(&cfg_file, &a.out.join("tokenizer_config.json"))?;
        }
        if cfg.vocab_size < 128000 {
            eprintln!(
                "warning: preset {} has a {}-token vocabulary; the tokenizer's ids may not fit it",
                a.preset, cfg.vocab_size
            );
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "out": a.out.display().to_string(), "preset": a.preset, "parameters": total,
            "tensors": report.tensors, "bytes": report.bytes, "shards": report.shards,
            "seconds": t0.elapsed().as_secs_f64(),
        })
    );
    Ok(0)
}
