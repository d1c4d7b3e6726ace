//! `tunnelctl`: the VPS agent. `run` is the resident relay owning `wg-relay` (systemd unit
//! `tunnel-relay.service`); `apply` installs a relay document and asks the running relay to
//! load it; `status` prints the relay's state as JSON (exit 1 when not ready). Under systemd,
//! `run` supports `Type=notify`: READY=1 once `wg-relay` is up with its address.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tunnel_contract::document::{RELAY_INTERFACE, RelayDocument};
use uplink::readiness::RelayReport;
use uplink::relay::Relay;
use uplink::watch::Watch;

#[derive(Parser, Debug)]
#[command(name = "tunnelctl", version, about = "Tunnel relay agent (VPS side)")]
struct Cli {
    /// The relay document.
    #[arg(
        long,
        global = true,
        default_value = "/etc/tunnel/relay.json",
        env = "TUNNEL_RELAY_CONFIG"
    )]
    config: PathBuf,
    /// The running relay's control socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/tunnel/relay.sock",
        env = "TUNNEL_RELAY_SOCKET"
    )]
    control: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay: bring up the interface, follow the document, stop cleanly on SIGTERM.
    Run {
        /// Interface to own.
        #[arg(long, default_value = RELAY_INTERFACE)]
        interface: String,
    },
    /// Validate a document, install it as --config (0600, atomically) and have the relay load it.
    Apply {
        /// The document to install (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the running relay's status as JSON; exit 1 when not ready.
    Status,
    /// Validate a document without installing it.
    Check {
        /// The document (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    if let Err(e) = tunnel_contract::logging::init_from_env() {
        eprintln!("tunnelctl: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run { interface } => run(&cli, interface),
        Command::Apply { file } => apply(&cli, file),
        Command::Status => status(&cli),
        Command::Check { file } => read_doc(file).map(|_| println!("ok")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn read_doc(file: &Path) -> anyhow::Result<RelayDocument> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    RelayDocument::parse(&text).with_context(|| format!("{} refused", file.display()))
}

fn run(cli: &Cli, interface: &str) -> anyhow::Result<()> {
    let signals = uplink::signals::install().context("signals")?;
    let doc = read_doc(&cli.config)?;
    let relay = Arc::new(Mutex::new(Relay::new(interface)));
    lock(&relay).apply(doc)?;
    let listener = bind_control(&cli.control)?;
    let control = {
        let relay = Arc::clone(&relay);
        let config = cli.config.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || serve_control(&listener, &relay, &config))?
    };
    drop(control);
    uplink::notify::notify("READY=1");
    let mut watch = Watch::new([cli.config.clone()]);
    watch.changed();
    loop {
        match signals.recv_timeout(uplink::watch::POLL_EVERY) {
            Ok(signal) => {
                tracing::info!(?signal, "stopping");
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("signal thread ended"),
        }
        // A changed document, or a loop that stopped (its interface deleted under it): apply.
        let stopped = !lock(&relay).is_running();
        if watch.changed() || stopped {
            if stopped {
                tracing::warn!("the relay's loop stopped; rebuilding it");
            }
            let _ = reload(&relay, &cli.config);
        }
    }
    uplink::notify::notify("STOPPING=1");
    lock(&relay).stop();
    let _ = std::fs::remove_file(&cli.control);
    tracing::info!("relay stopped");
    Ok(())
}

fn lock(relay: &Mutex<Relay>) -> std::sync::MutexGuard<'_, Relay> {
    relay
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Re-reads the document; a refused one is logged and the running state kept.
fn reload(relay: &Mutex<Relay>, config: &Path) -> Result<(), String> {
    let result =
        read_doc(config).and_then(|doc| lock(relay).apply(doc).map_err(anyhow::Error::from));
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(error = %message, "document refused; the previous one keeps running");
            Err(message)
        }
    }
}

fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// One request line per connection (`status` or `reload`), one JSON line back.
fn serve_control(listener: &UnixListener, relay: &Mutex<Relay>, config: &Path) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim() {
            "status" => serde_json::to_string(&lock(relay).report()).unwrap_or_default(),
            "reload" => match reload(relay, config) {
                Ok(()) => serde_json::json!({"ok": true}).to_string(),
                Err(e) => serde_json::json!({"ok": false, "error": e}).to_string(),
            },
            other => {
                serde_json::json!({"ok": false, "error": format!("unknown request {other:?}")})
                    .to_string()
            }
        };
        let mut stream = stream;
        let _ = writeln!(stream, "{answer}");
    }
}

fn request(control: &Path, what: &str) -> anyhow::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(control)
        .with_context(|| format!("connecting to the relay at {}", control.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(stream, "{what}")?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    serde_json::from_str(&line).context("the relay's answer is not JSON")
}

fn apply(cli: &Cli, file: &Path) -> anyhow::Result<()> {
    let doc = read_doc(file)?;
    install(&cli.config, &doc.to_json())?;
    tracing::info!(config = %cli.config.display(), "document installed");
    // A socket nobody listens on (a relay that was killed) means no relay runs.
    if UnixStream::connect(&cli.control).is_err() {
        tracing::info!("no relay running; `tunnelctl run` will load it");
        return Ok(());
    }
    let answer = request(&cli.control, "reload")?;
    if answer["ok"] != serde_json::Value::Bool(true) {
        bail!("the relay refused the document: {}", answer["error"]);
    }
    tracing::info!("the running relay applied it");
    Ok(())
}

/// Writes `text` to `path` atomically with mode 0600.
fn install(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("relay.json")
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    Ok(())
}

fn status(cli: &Cli) -> anyhow::Result<()> {
    let report = match request(&cli.control, "status") {
        Ok(value) => value,
        Err(e) => serde_json::to_value(RelayReport::down(RELAY_INTERFACE, format!("{e:#}")))?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report["ready"] == serde_json::Value::Bool(true) {
        Ok(())
    } else {
        bail!(
            "not ready: {}",
            report["detail"].as_str().unwrap_or("unknown")
        )
    }
}
