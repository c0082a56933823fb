//! `emesh`: the one binary of ExpertMesh.

mod cmd_chat_template;
mod cmd_coordinator;
mod cmd_gen;
mod cmd_generate;
mod cmd_plan;
mod cmd_simulate;
mod cmd_up;
mod cmd_verify;
mod cmd_worker;
mod etcd_args;
mod local_cluster;
mod models;
mod serve;

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
    /// Size a cluster for a model: layouts, memory per GPU, throughput, the smallest cluster.
    Plan(cmd_plan::Args),
    /// Simulate worker failures on a planned cluster and compare recovery policies.
    Simulate(cmd_simulate::Args),
    /// Place the model on running `emesh worker`s and drive them.
    Coordinator(Box<cmd_coordinator::Args>),
    /// Start a coordinator and N workers in this process and generate through them.
    Up(cmd_up::Args),
    /// Check the engine (or a cluster) against a golden fixture folder; prints one JSON line.
    Verify(cmd_verify::Args),
    /// Serve one worker rank over gRPC until interrupted.
    Worker(cmd_worker::Args),
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env(emesh_common::names::ENV_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    emesh_compute::init_threads(cli.threads);
    // Fault injection for failover tests: named points configured by $FAILPOINTS, if set.
    let _faults = fail::FailScenario::setup();
    let res: Result<i32> = match cli.cmd {
        Command::ChatTemplate(a) => cmd_chat_template::run(a),
        Command::GenModel(a) => cmd_gen::run(a),
        Command::Generate(a) => cmd_generate::run(a),
        Command::Plan(a) => cmd_plan::run(a),
        Command::Simulate(a) => cmd_simulate::run(a),
        Command::Up(a) => cmd_up::run(a),
        Command::Coordinator(a) => cmd_coordinator::run(*a),
        Command::Verify(a) => cmd_verify::run(a),
        Command::Worker(a) => cmd_worker::run(a),
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
