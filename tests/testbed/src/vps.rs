//! A disposable VPS: a copy of the cached Debian root file system booted with
//! `systemd-nspawn --boot` in its own network namespace (real systemd, real sshd, real reboots).
//!
//! Each VPS gets a fresh ed25519 host key (so two VPSes are two identities), a fresh client key
//! in root's `authorized_keys`, and a veth link to a namespace the test chooses (the "internet"
//! side, where the SSH client runs), IPv4 and IPv6 ([`Vps::address`], [`Vps::address6`]). Writes land in an overlay upper directory that lives as long
//! as the handle, so a reboot keeps the disk. Booting raises root's inotify limit when the
//! VPSes running would not fit in it (their processes all count as the host's root).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cgroup::Cgroups;
use crate::netns::{self, End, Netns};
use crate::process::Process;
use crate::{TestbedError, tools, unique_name};

/// inotify instances one VPS takes, with room to spare: measured on a VPS enrolled by the
/// operator, its systemd holds 5, dbus-daemon 1, systemd-logind 1, Envoy 2 (its file watches).
const INOTIFY_PER_VPS: u64 = 12;
/// What the limit keeps for the host's own processes beside the VPSes.
const INOTIFY_HOST: u64 = 64;
/// The per-user limit on inotify instances. The VPSes' processes run as the host's root (no
/// user namespace), so they all count against root's: the kernel's default of 128 is spent by
/// about a dozen enrolled VPSes, after which their systemd and Envoy fail to watch files.
const INOTIFY_LIMIT: &str = "/proc/sys/fs/inotify/max_user_instances";

/// VPSes of this process running now.
static LIVE: AtomicU64 = AtomicU64::new(0);

/// Raises root's inotify limit, if it is lower, to what `count` VPSes and the host need
/// (`INOTIFY_HOST + count × INOTIFY_PER_VPS`), in steps of 16 VPSes; never lowers it.
fn make_room_for(count: u64) -> Result<(), TestbedError> {
    let need = |count: u64| INOTIFY_HOST + count * INOTIFY_PER_VPS;
    let now: u64 = std::fs::read_to_string(INOTIFY_LIMIT)
        .map_err(TestbedError::io(format!("reading {INOTIFY_LIMIT}")))?
        .trim()
        .parse()
        .unwrap_or(0);
    if now < need(count) {
        let room = count.next_multiple_of(16);
        let new = need(room);
        std::fs::write(INOTIFY_LIMIT, new.to_string()).map_err(TestbedError::io(format!(
            "raising {INOTIFY_LIMIT} to {new}"
        )))?;
        eprintln!("raised fs.inotify.max_user_instances from {now} to {new} ({room} VPSes)");
    }
    Ok(())
}

/// How to attach the VPS.
#[derive(Debug, Clone, Default)]
pub struct VpsOptions {
    /// Address of the VPS on its link (a /24 is assumed); default `10.99.<n>.2`.
    pub address: Option<Ipv4Addr>,
    /// Address of the peer side of the link; default `.1` of the VPS's /24.
    pub peer_address: Option<Ipv4Addr>,
    /// Interface name on the peer side (at most 15 bytes); default `vps<n>`.
    pub peer_ifname: Option<String>,
}

/// A booted VPS, powered off and removed on drop.
#[derive(Debug)]
pub struct Vps {
    name: String,
    ns: Netns,
    address: Ipv4Addr,
    address6: Ipv6Addr,
    dir: tempfile::TempDir,
    process: Option<Process>,
    cgroups: Option<Cgroups>,
    boots: u32,
}

impl Vps {
    /// Boots a fresh VPS linked to `peer`, and waits until SSH answers with its host key.
    pub fn boot(peer: &Netns, options: &VpsOptions) -> Result<Self, TestbedError> {
        use std::sync::atomic::AtomicU8;
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let address = options.address.unwrap_or(Ipv4Addr::new(10, 99, n, 2));
        let [a, b, c, _] = address.octets();
        let peer_address = options.peer_address.unwrap_or(Ipv4Addr::new(a, b, c, 1));
        let peer_ifname = options
            .peer_ifname
            .clone()
            .unwrap_or_else(|| format!("vps{n}"));

        make_room_for(LIVE.load(Ordering::Relaxed) + 1)?;
        let ns = Netns::new("vps")?;
        netns::veth(
            End {
                ns: peer,
                ifname: &peer_ifname,
                cidr: &format!("{peer_address}/24"),
            },
            End {
                ns: &ns,
                ifname: "eth0",
                cidr: &format!("{address}/24"),
            },
        )?;
        ns.default_route(peer_address)?;
        // IPv6 on the same link, from the documentation range: 2001:db8:99:<n>::2/64 for the
        // VPS, ::1 for the peer (no duplicate address detection, so both are usable at once).
        let address6 = Ipv6Addr::new(0x2001, 0xdb8, 0x99, u16::from(n), 0, 0, 0, 2);
        let peer_address6 = Ipv6Addr::new(0x2001, 0xdb8, 0x99, u16::from(n), 0, 0, 0, 1);
        peer.run(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{peer_address6}/64"),
            "dev",
            &peer_ifname,
            "nodad",
        ])?;
        ns.run(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{address6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ns.run(&[
            "ip",
            "-6",
            "route",
            "replace",
            "default",
            "via",
            &peer_address6.to_string(),
        ])?;

        let runs = tools::cache_dir().join("run");
        std::fs::create_dir_all(&runs).map_err(TestbedError::io("creating the run dir"))?;
        let dir = tempfile::Builder::new()
            .prefix("vps-")
            .tempdir_in(&runs)
            .map_err(TestbedError::io("creating the VPS dir"))?;
        let name = unique_name("vps").replace('-', "");
        let mut vps = Self {
            name,
            ns,
            address,
            address6,
            dir,
            process: None,
            cgroups: None,
            boots: 0,
        };
        vps.prepare_upper()?;
        vps.start()?;
        LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(vps)
    }

    /// The VPS's address on its link.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The VPS's IPv6 address on its link (`2001:db8:99:<n>::2`; its peer is `::1`).
    pub fn address6(&self) -> Ipv6Addr {
        self.address6
    }

    /// The VPS's own network namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The machine name given to systemd-nspawn.
    pub fn machine_name(&self) -> &str {
        &self.name
    }

    /// The client's private key (OpenSSH format, ed25519, unencrypted), authorized for root.
    pub fn client_private_key(&self) -> Result<String, TestbedError> {
        std::fs::read_to_string(self.client_key_path())
            .map_err(TestbedError::io("reading the client key"))
    }

    /// Path of the client's private key file (for the `ssh` command line).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// The known_hosts line pinning this VPS's host key: `<address> ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> Result<String, TestbedError> {
        let public = std::fs::read_to_string(self.upper().join("etc/ssh/ssh_host_ed25519_key.pub"))
            .map_err(TestbedError::io("reading the host key"))?;
        let mut parts = public.split_whitespace();
        let (Some(kind), Some(key)) = (parts.next(), parts.next()) else {
            return Err(TestbedError::Command {
                command: "host key".into(),
                detail: "malformed .pub".into(),
            });
        };
        Ok(format!("{} {kind} {key}", self.address))
    }

    /// The overlay's upper directory: every file the VPS wrote, as seen from the host.
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// Runs `command` on the VPS as root over SSH (host key pinned), from the `from` namespace.
    pub fn ssh(&self, from: &Netns, command: &str) -> Result<Output, TestbedError> {
        let known = self.dir.path().join("known_hosts");
        std::fs::write(&known, format!("{}\n", self.known_hosts_line()?))
            .map_err(TestbedError::io("writing known_hosts"))?;
        self.ssh_pinned(from, &known, command)
    }

    /// Runs `command` over SSH with the host keys pinned by the `known_hosts` file given, so a
    /// test can pin another host's key and watch the client refuse this one.
    pub fn ssh_pinned(
        &self,
        from: &Netns,
        known_hosts: &Path,
        command: &str,
    ) -> Result<Output, TestbedError> {
        netns::run(
            from.command("ssh")
                .arg("-i")
                .arg(self.client_key_path())
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
                .args([
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ConnectTimeout=5",
                ])
                .arg(format!("root@{}", self.address))
                .arg(command),
        )
    }

    /// Waits until the VPS accepts SSH from `from` and systemd reports a booted system.
    /// On timeout the error carries the last attempt's outcome and the tail of the boot log.
    pub fn wait_ready(&self, from: &Netns, timeout: Duration) -> Result<(), TestbedError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.ssh(from, "systemctl is-system-running --wait; true") {
                Ok(out) => {
                    let state = String::from_utf8_lossy(&out.stdout);
                    // `is-system-running` exits 1 for `degraded`, hence the `; true` above: a
                    // failed unit that tests do not use must not hold up the boot.
                    if state.trim() == "running" {
                        return Ok(());
                    }
                    if state.trim() == "degraded" {
                        let failed = self
                            .ssh(from, "systemctl --failed --no-legend --no-pager; for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); do journalctl -b -u $u --no-pager | tail -n 5; done")
                            .map_or_else(
                                |e| e.to_string(),
                                |out| String::from_utf8_lossy(&out.stdout).into_owned(),
                            );
                        eprintln!("VPS {} booted degraded; failed units:\n{failed}", self.name);
                        return Ok(());
                    }
                    format!(
                        "system state {:?}, stderr {:?}",
                        state.trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                let jobs = self
                    .ssh(
                        from,
                        "systemctl is-system-running; systemctl list-jobs --no-pager | head -n 15; ls -l /run/nologin; true",
                    )
                    .map_or_else(
                        |e| e.to_string(),
                        |out| String::from_utf8_lossy(&out.stdout).into_owned(),
                    );
                return Err(TestbedError::NotReady {
                    what: format!("VPS {} (boot {})", self.name, self.boots),
                    last: format!("{last}; jobs: {jobs}"),
                    log_tail: self.boot_log_tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The last `lines` lines of the current boot's console log (systemd-nspawn's output).
    pub fn boot_log_tail(&self, lines: usize) -> String {
        let log = self
            .dir
            .path()
            .join(format!("boot-{}.log", self.boots.saturating_sub(1)));
        let text = std::fs::read_to_string(&log).unwrap_or_else(|e| format!("({e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// How many times this VPS has booted.
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// Reboots from inside (`systemctl reboot`), starts the machine again with the same disk
    /// (as a host's firmware would), and returns once the container has come back up.
    pub fn reboot(&mut self, from: &Netns) -> Result<(), TestbedError> {
        // The SSH session may be cut while systemd goes down: its result does not matter.
        let _ = self.ssh(from, "systemctl reboot");
        if let Some(process) = self.process.as_mut() {
            let code = process.wait_exit(Duration::from_secs(60))?;
            if code != Some(133) {
                return Err(TestbedError::Command {
                    command: "systemctl reboot".into(),
                    detail: format!("systemd-nspawn exited with {code:?}, expected 133 (reboot)"),
                });
            }
        }
        self.process = None;
        self.start()?;
        self.wait_ready(from, Duration::from_secs(60))
    }

    /// Powers a stopped VPS on again, with its disk as it was, and waits for SSH.
    pub fn power_on(&mut self, from: &Netns) -> Result<(), TestbedError> {
        if self.process.is_none() {
            self.start()?;
        }
        self.wait_ready(from, Duration::from_secs(90))
    }

    /// Powers the VPS off (SIGTERM to systemd-nspawn, which shuts systemd down).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(30));
        }
        self.cgroups = None;
    }

    fn start(&mut self) -> Result<(), TestbedError> {
        let root = tools::vps_rootfs()?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg(format!("--directory={}", root.display()))
            .arg(format!(
                "--overlay={}:{}:/",
                root.display(),
                self.upper().display()
            ))
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=passive",
            ])
            .arg(format!(
                "--network-namespace-path={}",
                self.ns.path().display()
            ))
            .args([
                "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
                "--bind=/dev/net/tun",
            ])
            .arg(format!("--machine={}", self.name))
            // Arguments for the container's systemd: its unit status lines go to the console
            // log, so a boot that hangs says where.
            .args(["systemd.show_status=true"]);
        let log = self.dir.path().join(format!("boot-{}.log", self.boots));
        // A cgroup of its own (see `cgroup`): a shell moves itself in, then becomes
        // systemd-nspawn (same PID).
        self.cgroups = None;
        let cgroups = Cgroups::create(&format!("{}-{}", self.name, self.boots))?;
        let procs: Vec<String> = cgroups
            .procs_files()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut wrapped = Command::new("sh");
        wrapped
            .arg("-c")
            .arg(r#"for f in $TB_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@""#)
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env("TB_CGROUP_PROCS", procs.join(" "));
        self.cgroups = Some(cgroups);
        self.process = Some(Process::spawn("systemd-nspawn", &mut wrapped, Some(&log))?);
        self.boots += 1;
        Ok(())
    }

    fn prepare_upper(&self) -> Result<(), TestbedError> {
        let upper = self.upper();
        let ssh_dir = upper.join("etc/ssh");
        let root_ssh = upper.join("root/.ssh");
        for dir in [&ssh_dir, &root_ssh, &upper.join("etc/ssh/sshd_config.d")] {
            std::fs::create_dir_all(dir)
                .map_err(TestbedError::io(format!("creating {}", dir.display())))?;
        }
        set_mode(&root_ssh, 0o700)?;
        keygen(
            &ssh_dir.join("ssh_host_ed25519_key"),
            &format!("root@{}", self.name),
        )?;
        keygen(&self.client_key_path(), "testbed-client")?;
        std::fs::write(
            upper.join("etc/ssh/sshd_config.d/00-hostkey.conf"),
            "HostKey /etc/ssh/ssh_host_ed25519_key\n",
        )
        .map_err(TestbedError::io("writing sshd config"))?;
        let public = std::fs::read_to_string(self.dir.path().join("client_ed25519.pub"))
            .map_err(TestbedError::io("reading the client public key"))?;
        let keys = root_ssh.join("authorized_keys");
        std::fs::write(&keys, public).map_err(TestbedError::io("writing authorized_keys"))?;
        set_mode(&keys, 0o600)?;
        std::fs::write(upper.join("etc/hostname"), format!("{}\n", self.name))
            .map_err(TestbedError::io("writing hostname"))?;
        Ok(())
    }
}

impl Drop for Vps {
    fn drop(&mut self) {
        self.stop();
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

fn keygen(path: &Path, comment: &str) -> Result<(), TestbedError> {
    netns::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(TestbedError::io(format!("chmod {}", path.display())))
}
