//! `uplink`: the uplink pod agent. Takes its identity from `POD_NAME`'s ordinal and the
//! mounted key `priv-<ordinal>`, brings up `wg-uplink` toward the relay, programs the
//! forwarding NAT, serves `/ready` on :40500, follows the mounted config, and on SIGTERM
//! answers 503 for the drain window before stopping.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use uplink::document::{UPLINK_INTERFACE, ordinal_from_pod_name};
use uplink::readiness::uplink_ready;
use uplink::uplink_agent::{Identity, UplinkAgent};
use uplink::watch::Watch;

/// How often an applied document is re-applied to repair drift.
const RECONCILE: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(name = "uplink", version, about = "Tunnel uplink agent (pod side)")]
struct Cli {
    /// The pod's name; its last `-` token is the StatefulSet ordinal.
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    /// The uplink document (a ConfigMap mount).
    #[arg(long, env = "UPLINK_CONFIG", default_value = "/etc/tunnel/uplink.json")]
    config: PathBuf,
    /// Directory of the `priv-<ordinal>` key files (a Secret mount).
    #[arg(long, env = "KEYS_DIR", default_value = "/etc/wireguard/keys")]
    keys_dir: PathBuf,
    /// Address of the readiness server.
    #[arg(long, env = "READY_ADDR", default_value = "0.0.0.0:40500")]
    ready_addr: SocketAddr,
    /// Seconds `/ready` answers 503 after SIGTERM before the tunnel stops.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 15)]
    drain_seconds: u64,
    /// Tunnel interface name.
    #[arg(long, default_value = UPLINK_INTERFACE)]
    interface: String,
}

fn main() -> std::process::ExitCode {
    uplink::logging::init();
    match run(&Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What `/ready` and `/status` look at.
struct Probe {
    agent: Arc<Mutex<UplinkAgent>>,
    draining: Arc<AtomicBool>,
}

impl uplink::http::Handler for Probe {
    fn ready(&self) -> Result<(), String> {
        uplink_ready(&lock(&self.agent).observe(self.draining.load(Ordering::Relaxed)))
    }

    fn status(&self) -> String {
        let report = lock(&self.agent).report(self.draining.load(Ordering::Relaxed));
        format!("{report:#}\n")
    }
}

fn lock(agent: &Mutex<UplinkAgent>) -> std::sync::MutexGuard<'_, UplinkAgent> {
    agent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let signals = uplink::signals::install().context("signals")?;
    let Some(ordinal) = ordinal_from_pod_name(&cli.pod_name) else {
        bail!("POD_NAME {:?} does not end in -<ordinal>", cli.pod_name);
    };
    // DNAT to the targets forwards packets from wg-uplink to the pod network.
    if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
        tracing::warn!(error = %e, "cannot enable IPv4 forwarding in the pod's namespace");
    }
    let identity = Identity {
        ordinal,
        keys_dir: cli.keys_dir.clone(),
        interface: cli.interface.clone(),
        ready_port: cli.ready_addr.port(),
    };
    tracing::info!(pod = %cli.pod_name, ordinal, config = %cli.config.display(), "uplink starting");
    let mut watch = Watch::new([cli.config.clone(), identity.key_path()]);
    let agent = Arc::new(Mutex::new(UplinkAgent::new(identity)));
    let draining = Arc::new(AtomicBool::new(false));

    let listener =
        TcpListener::bind(cli.ready_addr).with_context(|| format!("binding {}", cli.ready_addr))?;
    uplink::http::serve(
        listener,
        Probe {
            agent: Arc::clone(&agent),
            draining: Arc::clone(&draining),
        },
    )?;

    // Retry a failed apply with backoff even when nothing changed (e.g. DNS not ready yet).
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Duration::from_secs(1);
    let mut reconciled = Instant::now();
    loop {
        let changed = watch.changed();
        let due = retry_at.is_some_and(|t| Instant::now() >= t);
        // Now and then, re-apply the same document: repairs drift, re-resolves the relay.
        let reconcile = reconciled.elapsed() >= RECONCILE && lock(&agent).is_applied();
        if changed || due || reconcile {
            reconciled = Instant::now();
            let result = lock(&agent).apply_file(&cli.config);
            match result {
                Ok(()) => {
                    retry_at = None;
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    let applied = lock(&agent).is_applied();
                    tracing::error!(error = %e, category = e.category(), keeps_previous = applied,
                        "cannot apply the uplink document");
                    if !applied {
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        match signals.recv_timeout(Duration::from_secs(1)) {
            Ok(signal) => {
                tracing::info!(?signal, drain_seconds = cli.drain_seconds, "draining");
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("signal thread ended"),
        }
    }
    draining.store(true, Ordering::Relaxed);
    // A second signal cuts the drain short.
    let _ = signals.recv_timeout(Duration::from_secs(cli.drain_seconds));
    lock(&agent).stop();
    tracing::info!("uplink stopped");
    Ok(())
}
