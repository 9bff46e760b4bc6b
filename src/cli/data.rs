//! `insar-mm data ...`: annotations, frames, patches, splits, statistics.

use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Count labels, activity types, intensities, flags, frames, dates and caption statistics.
    Stats {
        /// A directory of annotation `*.json` files, or a `.tar.gz`/`.zip` of them.
        path: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DataCommand, _global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Stats { .. } => anyhow::bail!("`data stats` is not implemented yet"),
    }
}
