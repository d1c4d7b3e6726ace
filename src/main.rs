//! The `tunnel` binary: the operator, and its helpers: `crds` prints the CRDs, `render` plans
//! from files, `migrate-grants` converts our deprecated ReferenceGrants to Gateway API's.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod migrate_grants_cmd;
mod render_cmd;

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
    /// Dry run: plan EdgeNodes from YAML files (EdgeNode, PortBindings, Services, Secrets) and
    /// print every file the VPS and the uplinks would get, with each binding's outcome.
    Render {
        /// YAML files to read (multi-document); `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<std::path::PathBuf>,
        /// Print private keys (SDS files, relay.json) instead of redacting them.
        #[arg(long)]
        show_secrets: bool,
        /// As the operator's flag: let targets be restricted addresses.
        #[arg(long)]
        allow_restricted_targets: bool,
        /// As the operator's flag: `allow` or `require-grant` (target Services in another
        /// namespace need a ReferenceGrant there).
        #[arg(long, default_value = "allow", value_name = "allow|require-grant",
              value_parser = tunnel::run::settings::parse_cross_namespace_targets)]
        cross_namespace_targets: tunnel::plan::CrossNamespaceTargets,
    },
    /// Print the Gateway API ReferenceGrants (gateway.networking.k8s.io/v1) that replace our
    /// deprecated ones (tunnel.achetronic.com/v1alpha1), read as YAML: `kubectl get
    /// referencegrants.tunnel.achetronic.com -A -o yaml | tunnel migrate-grants | kubectl apply
    /// -f -`. Same namespaces, names and consent.
    MigrateGrants {
        /// YAML files to read (a List, or grants as documents); `-` or none reads standard
        /// input.
        #[arg(short = 'f', long = "filename")]
        files: Vec<std::path::PathBuf>,
    },
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<tunnel::run::settings::RunArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            tunnel::telemetry::init_from_env()?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime
                .block_on(tunnel::run::run(*args))
                .map_err(|e| anyhow::anyhow!("[{}] {e}", e.category()))?;
        }
        Command::Render {
            files,
            show_secrets,
            allow_restricted_targets,
            cross_namespace_targets,
        } => {
            let report = render_cmd::render(&render_cmd::RenderOptions {
                files,
                show_secrets,
                allow_restricted_targets,
                cross_namespace_targets,
            })
            .map_err(|e| anyhow::anyhow!("render [{}]: {e}", e.category()))?;
            std::io::stdout()
                .write_all(report.as_bytes())
                .context("writing to stdout")?;
        }
        Command::MigrateGrants { files } => {
            let (yaml, count) = migrate_grants_cmd::migrate_grants(&files)
                .map_err(|e| anyhow::anyhow!("migrate-grants [{}]: {e}", e.category()))?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("writing to stdout")?;
            eprintln!(
                "{count} ReferenceGrant(s) converted; apply them, check the references, then delete the old ones"
            );
        }
        Command::Crds => {
            let yaml = tunnel::crd::crds_yaml().context("rendering the CRDs")?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("writing to stdout")?;
        }
    }
    Ok(())
}
