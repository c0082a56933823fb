//! `emesh`: the one binary of ExpertMesh.

mod cmd_chat_template;
mod cmd_gen;
mod cmd_generate;
mod cmd_verify;
mod models;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "emesh", version, about = "Serve DeepSeek-V4 across many machines", propagate_version = true)]
struct Cli {
    /// Compute threads (default: all cores; env EMESH_THREADS).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the exact V4 prompt for an OpenAI chat request (FILE or stdin).
    ChatTemplate(cmd_chat_template::Args),
    /// Write a random-weight V4-architecture checkpoint in the official format.
    GenModel(cmd_gen::Args),
    /// Greedy generation on one process; prints tokens, text and tokens/s.
    Generate(cmd_generate::Args),
    /// Check the engine against a golden fixture folder; prints one JSON line.
    Verify(cmd_verify::Args),
}

fn main() {
    let cli = Cli::parse();
    emesh_compute::init_threads(cli.threads);
    let res: Result<i32> = match cli.cmd {
        Command::ChatTemplate(a) => cmd_chat_template::run(a),
        Command::GenModel(a) => cmd_gen::run(a),
        Command::Generate(a) => cmd_generate::run(a),
        Command::Verify(a) => cmd_verify::run(a),
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
