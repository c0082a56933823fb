use anyhow::{bail, Context, Result};
use emesh_model::{argmax, Engine, LoadOptions, Logits, Numerics, Seq};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (config.json + safetensors). Without it, a `--preset` model is generated
    /// once into `models/<preset>` (or `$EMESH_MODELS_DIR/<preset>`) and reused.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Preset generated when no --model is given: tiny, small, medium.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Prompt as comma-separated token ids.
    #[arg(long, conflicts_with = "prompt")]
    prompt_ids: Option<String>,
    /// Prompt as text (needs tokenizer.json in the model folder).
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// Run this many copies of the prompt as one batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// exact (float32 reference) or official (DeepSeek's quantization simulation).
    #[arg(long, default_value = "exact")]
    numerics: Numerics,
    /// Refuse to load more than this many bytes of weights.
    #[arg(long)]
    memory_budget: Option<u64>,
    /// Stop at the end-of-sentence token.
    #[arg(long)]
    stop_at_eos: bool,
}

pub fn run(a: Args) -> Result<i32> {
    let model = match &a.model {
        Some(m) => m.clone(),
        None => crate::models::ensure_preset(&a.preset)?,
    };
    let tok_path = model.join("tokenizer.json");
    let tokenizer = if tok_path.exists() { Some(emesh_chat::Tokenizer::from_file(&tok_path)?) } else { None };
    let prompt: Vec<u32> = match (&a.prompt_ids, &a.prompt) {
        (Some(ids), _) => ids
            .split(',')
            .map(|s| s.trim().parse::<u32>().with_context(|| format!("--prompt-ids: `{s}` is not a token id")))
            .collect::<Result<_>>()?,
        (None, Some(text)) => match &tokenizer {
            Some(t) => t.encode(text)?,
            None => bail!("--prompt needs {} (or use --prompt-ids)", tok_path.display()),
        },
        (None, None) => bail!("give --prompt-ids or --prompt"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let t_load = Instant::now();
    let engine = Engine::load(
        &model,
        &LoadOptions {
            numerics: a.numerics,
            progress: std::io::stderr().is_terminal(),
            memory_budget: a.memory_budget,
            ..Default::default()
        },
    )?;
    let load_s = t_load.elapsed().as_secs_f64();
    let mut caches: Vec<_> = (0..a.batch).map(|_| engine.new_cache()).collect();
    let t0 = Instant::now();
    let mut seqs: Vec<Seq> =
        caches.iter_mut().map(|c| Seq { tokens: &prompt, cache: c, logits: Logits::Last }).collect();
    let out = engine.forward(&mut seqs, None)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut next: Vec<u32> = out.iter().map(|l| argmax(l)).collect();
    let mut generated: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    let t1 = Instant::now();
    let mut steps = 0;
    while generated[0].len() < a.max_tokens {
        if a.stop_at_eos && next[0] == engine.cfg.eos_token_id {
            break;
        }
        let toks: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut seqs: Vec<Seq> =
            caches.iter_mut().zip(&toks).map(|(c, t)| Seq { tokens: t, cache: c, logits: Logits::Last }).collect();
        let out = engine.forward(&mut seqs, None)?;
        next = out.iter().map(|l| argmax(l)).collect();
        for (g, &t) in generated.iter_mut().zip(&next) {
            g.push(t);
        }
        steps += 1;
    }
    let decode_s = t1.elapsed().as_secs_f64();
    let text = tokenizer.as_ref().map(|t| t.decode(&generated[0], false)).transpose()?;
    println!(
        "{}",
        serde_json::json!({
            "prompt_tokens": prompt.len(),
            "batch": a.batch,
            "tokens": generated[0],
            "text": text,
            "load_seconds": load_s,
            "prefill_tokens_per_second": (prompt.len() * a.batch) as f64 / prefill_s,
            "decode_tokens_per_second": if steps > 0 { (steps * a.batch) as f64 / decode_s } else { 0.0 },
            "numerics": format!("{:?}", a.numerics).to_lowercase(),
        })
    );
    Ok(0)
}
