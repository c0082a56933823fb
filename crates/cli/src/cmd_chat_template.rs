use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// OpenAI chat request JSON (default: stdin).
    file: Option<PathBuf>,
}

/// Prints exactly the encoded prompt, nothing else.
pub fn run(a: Args) -> Result<i32> {
    let text = match &a.file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
            s
        }
    };
    let req: serde_json::Value = serde_json::from_str(&text).context("the request is not valid JSON")?;
    let prompt = emesh_chat::render_chat_request(&req)?;
    let mut out = std::io::stdout().lock();
    out.write_all(prompt.as_bytes())?;
    out.flush()?;
    Ok(0)
}
