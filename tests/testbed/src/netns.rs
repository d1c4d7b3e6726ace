//! Network namespaces and veth links made by a test, removed when the handle drops.
//!
//! Names come from [`crate::unique_name`], so tests running in parallel never collide, and
//! veth pairs are created directly inside their namespaces, so the host sees no interface.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::process::Process;
use crate::{TestbedError, unique_name};

/// A network namespace owned by the test.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace (`ip netns add`) with `lo` up.
    pub fn new(label: &str) -> Result<Self, TestbedError> {
        let name = unique_name(label);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind-mount path, for `setns` or `--network-namespace-path`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `args` inside the namespace and returns its output; a non-zero exit is an error.
    pub fn run(&self, args: &[&str]) -> Result<Output, TestbedError> {
        let (program, rest) = args.split_first().ok_or_else(|| TestbedError::Command {
            command: String::new(),
            detail: "empty command".into(),
        })?;
        run(self.command(program).args(rest))
    }

    /// Spawns a long-running process inside the namespace, stopped when the handle drops.
    pub fn spawn(
        &self,
        name: &str,
        args: &[&str],
        log: Option<&std::path::Path>,
    ) -> Result<Process, TestbedError> {
        let (program, rest) = args.split_first().ok_or_else(|| TestbedError::Command {
            command: String::new(),
            detail: "empty command".into(),
        })?;
        Process::spawn(name, self.command(program).args(rest), log)
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    /// Sockets made inside `f` stay in the namespace after it returns, so a test can bind a
    /// listener here and hand it to tokio (`from_std`).
    pub fn enter<F, R>(&self, f: F) -> Result<R, TestbedError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = std::fs::File::open(self.path()).map_err(TestbedError::io(format!(
            "opening {}",
            self.path().display()
        )))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |e| TestbedError::Io {
                            context: "setns".into(),
                            source: e.into(),
                        },
                    )?;
                    Ok(f())
                })
                .join()
                .map_err(|_| TestbedError::Command {
                    command: "netns thread".into(),
                    detail: "panicked".into(),
                })?
        })
    }

    /// Adds an address (`10.0.0.1/24`) to an interface and brings it up.
    pub fn addr(&self, ifname: &str, cidr: &str) -> Result<(), TestbedError> {
        self.run(&["ip", "addr", "add", cidr, "dev", ifname])?;
        self.run(&["ip", "link", "set", ifname, "up"])?;
        Ok(())
    }

    /// Adds a default route via `gateway`.
    pub fn default_route(&self, gateway: Ipv4Addr) -> Result<(), TestbedError> {
        self.run(&[
            "ip",
            "route",
            "replace",
            "default",
            "via",
            &gateway.to_string(),
        ])?;
        Ok(())
    }

    /// Turns on IPv4 forwarding inside the namespace (for routers).
    pub fn enable_forwarding(&self) -> Result<(), TestbedError> {
        self.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Stop what still runs inside (only processes of this test can be in it), then delete.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs blocking network I/O `f` inside `ns` from an async test without stalling the
/// runtime's other tasks, and returns what `f` returns.
#[allow(clippy::panic)] // a test helper: a namespace that cannot be entered (or `f` panicking) fails the test
pub fn in_ns<R: Send>(ns: &Netns, f: impl FnOnce() -> R + Send) -> R {
    tokio::task::block_in_place(|| {
        ns.enter(f)
            .unwrap_or_else(|e| panic!("running in {}: {e}", ns.name()))
    })
}

/// Retries `f` inside `ns` every 500 ms, for 60 s at most, until it holds; whether it did.
pub fn until_in(ns: &Netns, f: impl Fn() -> bool + Send) -> bool {
    in_ns(ns, move || {
        crate::wait::poll(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(500),
            f,
        )
    })
}

/// One end of a veth link.
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    /// The namespace holding this end.
    pub ns: &'a Netns,
    /// Interface name inside that namespace (at most 15 bytes).
    pub ifname: &'a str,
    /// Address with prefix, e.g. `192.0.2.1/24`.
    pub cidr: &'a str,
}

/// Links two namespaces with a veth pair, addresses both ends and brings them up.
pub fn veth(a: End<'_>, b: End<'_>) -> Result<(), TestbedError> {
    run(Command::new("ip").args([
        "link",
        "add",
        "name",
        a.ifname,
        "netns",
        a.ns.name(),
        "type",
        "veth",
        "peer",
        "name",
        b.ifname,
        "netns",
        b.ns.name(),
    ]))?;
    a.ns.addr(a.ifname, a.cidr)?;
    b.ns.addr(b.ifname, b.cidr)?;
    Ok(())
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub fn run(command: &mut Command) -> Result<Output, TestbedError> {
    let out = command.output().map_err(|e| TestbedError::Command {
        command: format!("{command:?}"),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(TestbedError::Command {
            command: format!("{command:?}"),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}
