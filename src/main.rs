//! The `tunnel` binary: the operator, and the `crds` helper that prints the CRDs.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tunnel",
    version,
    about = "Publish in-cluster services on a VPS over WireGuard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the EdgeNode and PortBinding CRDs as YAML (what the Helm chart installs).
    Crds,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            let yaml = tunnel::crd::crds_yaml().context("rendering the CRDs")?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("writing to stdout")?;
        }
    }
    Ok(())
}
