//! `openclaw-node bench`: load programs that print figures (being written).

/// Options of `openclaw-node bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Run the benchmark; returns the exit code.
pub async fn run(_args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the bench command is being written")
}
