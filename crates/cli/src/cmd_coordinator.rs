use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Worker addresses (`emesh worker --listen ...`), in rank order.
    #[arg(long, value_delimiter = ',', required = true)]
    workers: Vec<String>,
    #[command(flatten)]
    drive: crate::cmd_up::DriveArgs,
}

/// Places the model on running workers and drives them.
pub fn run(a: Args) -> Result<i32> {
    if a.workers.is_empty() {
        bail!("--workers needs at least one address");
    }
    let rt = crate::local_cluster::runtime()?;
    crate::cmd_up::drive(&rt, &a.workers, &a.drive)
}
