//! `uplink`: the uplink pod agent. Takes its identity from `POD_NAME`'s ordinal and the
//! mounted key `priv-<ordinal>`, brings up `wg-uplink` toward the relay, programs the
//! forwarding NAT, serves `/ready` on :40500, follows the mounted config, and on SIGTERM
//! answers 503 for the drain window before stopping.
//!
//! Three threads, so that `/ready` never waits on I/O: the main loop reads the config and
//! resolves the relay with no lock held, then commits under the agent's lock; an observer
//! publishes what `/ready`, `/healthz` and `/status` report once a second; the HTTP server
//! answers from that published snapshot only. `/healthz` (the liveness probe) fails when the
//! observer could not publish for [`STUCK_AFTER`]: the agent is wedged and a restart helps.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tunnel_contract::document::{UPLINK_INTERFACE, ordinal_from_pod_name};
use uplink::http::Reply;
use uplink::readiness::{UplinkObservation, forward_ready, ready_query, uplink_ready};
use uplink::uplink_agent::{Identity, Prepared, UplinkAgent};
use uplink::watch::Watch;

/// How often the observer publishes a snapshot.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);
/// A snapshot older than this makes `/healthz` fail (liveness).
const STUCK_AFTER: Duration = Duration::from_secs(60);

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
    /// Seconds between two re-applies of an unchanged document (repairs drift, re-resolves
    /// the relay's name).
    #[arg(long, env = "RECONCILE_SECONDS", default_value_t = 30)]
    reconcile_seconds: u64,
    /// `init`: the pod's privileged init step instead of the agent.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Turn on IPv4 forwarding in the pod's network namespace and copy this replica's key
    /// (only) from the keys Secret to the agent's key directory, then exit.
    Init {
        /// The keys Secret's mount (every replica's `priv-<ordinal>`).
        #[arg(long)]
        keys_from: PathBuf,
        /// The agent's key directory (an in-memory volume).
        #[arg(long)]
        keys_to: PathBuf,
    },
}

/// The init step: forwarding on, own key copied.
fn init(cli: &Cli, keys_from: &std::path::Path, keys_to: &std::path::Path) -> anyhow::Result<()> {
    let Some(ordinal) = ordinal_from_pod_name(&cli.pod_name) else {
        bail!("POD_NAME {:?} does not end in -<ordinal>", cli.pod_name);
    };
    uplink::pod_init::enable_forwarding().context("enabling IPv4 forwarding")?;
    uplink::pod_init::copy_key(keys_from, keys_to, ordinal).context("copying the key")?;
    tracing::info!(pod = %cli.pod_name, ordinal, "forwarding on, key in place");
    Ok(())
}

fn main() -> std::process::ExitCode {
    if let Err(e) = tunnel_contract::logging::init_from_env() {
        eprintln!("uplink: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Init { keys_from, keys_to }) => init(&cli, keys_from, keys_to),
        None => run(&cli),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What the observer saw last, and when.
#[derive(Debug, Clone)]
struct Snapshot {
    taken: Instant,
    observation: UplinkObservation,
    report: serde_json::Value,
}

/// The latest [`Snapshot`]; its lock is only ever held to swap or clone an `Arc`.
type Published = Arc<Mutex<Arc<Snapshot>>>;

/// What `/ready`, `/healthz` and `/status` answer from: the published snapshot and the
/// draining flag, never the agent.
struct Probe {
    published: Published,
    draining: Arc<AtomicBool>,
}

impl Probe {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The observation as of now: draining from the flag, the handshake aged since the
    /// snapshot was taken.
    fn observation(&self, snap: &Snapshot) -> UplinkObservation {
        let mut o = snap.observation.clone();
        o.draining = self.draining.load(Ordering::Relaxed);
        o.last_handshake = o.last_handshake.map(|age| age + snap.taken.elapsed());
        o
    }
}

impl uplink::http::Handler for Probe {
    fn get(&self, path: &str, query: Option<&str>) -> Reply {
        let snap = self.snapshot();
        match path {
            "/ready" => match ready_query(query) {
                Ok(port) => match forward_ready(&self.observation(&snap), port) {
                    Ok(()) => Reply::text(200, "ok\n"),
                    Err(reason) => Reply::text(503, format!("{reason}\n")),
                },
                Err(reason) => Reply::text(400, format!("{reason}\n")),
            },
            "/healthz" => {
                let age = snap.taken.elapsed();
                if age < STUCK_AFTER {
                    Reply::text(200, "ok\n")
                } else {
                    Reply::text(
                        503,
                        format!("agent observed nothing for {}s\n", age.as_secs()),
                    )
                }
            }
            "/status" => {
                let mut report = snap.report.clone();
                let o = self.observation(&snap);
                report["draining"] = o.draining.into();
                report["ready"] = uplink_ready(&o)
                    .map_or_else(|reason| reason, |()| "ok".into())
                    .into();
                report["observedSecondsAgo"] = snap.taken.elapsed().as_secs().into();
                Reply::json(format!("{report:#}\n"))
            }
            _ => Reply::not_found(),
        }
    }
}

/// Takes a snapshot of the agent (under its lock, which is never held across DNS).
fn observe(agent: &Mutex<UplinkAgent>) -> Snapshot {
    let a = lock(agent);
    Snapshot {
        taken: Instant::now(),
        observation: a.observe(false),
        report: a.report(false),
    }
}

/// Publishes a snapshot every [`OBSERVE_EVERY`], forever.
fn spawn_observer(agent: Arc<Mutex<UplinkAgent>>, published: Published) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("observe".into())
        .spawn(move || {
            loop {
                let snap = Arc::new(observe(&agent));
                *published
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = snap;
                std::thread::sleep(OBSERVE_EVERY);
            }
        })
        .map(|_| ())
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
    // DNAT to the targets forwards packets from wg-uplink to the pod network. In a pod the
    // init step turned it on (/proc/sys is read-only here); elsewhere, try.
    if !uplink::pod_init::forwarding_enabled()
        && let Err(e) = uplink::pod_init::enable_forwarding()
    {
        tracing::warn!(error = %e, "IPv4 forwarding is off and cannot be turned on: forwards will not work");
    }
    let identity = Identity {
        ordinal,
        keys_dir: cli.keys_dir.clone(),
        interface: cli.interface.clone(),
        ready_port: cli.ready_addr.port(),
    };
    tracing::info!(pod = %cli.pod_name, ordinal, config = %cli.config.display(), "uplink starting");
    let mut watch = Watch::new([cli.config.clone(), identity.key_path()]);
    let agent = Arc::new(Mutex::new(UplinkAgent::new(identity.clone())));
    let draining = Arc::new(AtomicBool::new(false));

    let published: Published = Arc::new(Mutex::new(Arc::new(observe(&agent))));
    let published_now = Arc::clone(&published);
    spawn_observer(Arc::clone(&agent), Arc::clone(&published)).context("observer thread")?;
    let listener =
        TcpListener::bind(cli.ready_addr).with_context(|| format!("binding {}", cli.ready_addr))?;
    uplink::http::spawn(
        listener,
        Probe {
            published,
            draining: Arc::clone(&draining),
        },
        uplink::http::Limits::default(),
    )?;
    let reconcile_every = Duration::from_secs(cli.reconcile_seconds.max(1));

    // Retry a failed apply with backoff even when nothing changed (e.g. DNS not ready yet).
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Duration::from_secs(1);
    let mut reconciled = Instant::now();
    loop {
        let changed = watch.changed();
        let due = retry_at.is_some_and(|t| Instant::now() >= t);
        // Now and then, re-apply the same document: repairs drift, re-resolves the relay.
        let reconcile = reconciled.elapsed() >= reconcile_every && lock(&agent).is_applied();
        if changed || due || reconcile {
            reconciled = Instant::now();
            // Files and DNS first, with no lock held: /ready never waits on them.
            let prepared = Prepared::load(&identity, &cli.config);
            let result = lock(&agent).commit(prepared);
            // Publish now, not at the observer's next tick: a new forward is ready at once.
            *published_now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(observe(&agent));
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
        match signals.recv_timeout(uplink::watch::POLL_EVERY) {
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
