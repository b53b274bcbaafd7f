//! `fhirlake bench`: synthetic Bulk data, a fresh lake, throughput per stage.

use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Size of the synthetic dataset, e.g. 200MB, 1GB, 4GB.
    #[arg(long, default_value = "1GB")]
    pub size: String,
}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench: not built yet")
}
