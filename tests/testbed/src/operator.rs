//! The operator's test bed, one builder for every operator test and benchmark: a real API
//! server with the operator's CRDs (as `tunnel crds` prints them, the way a user installs
//! them), optionally the internet/VPS/cluster network of [`crate::network`] with the VPS
//! booted and its SSH Secret created, and `tunnel run` processes started against it with the
//! flags, credentials and environment a test asks for.
//!
//! ```ignore
//! let bed = OperatorBed::builder().vps(1).ssh_secret("vps-ssh-secret").start().await?;
//! let operator = bed.operator().flags(&["--resync-period", "20s"]).start()?;
//! let uplinks = Uplinks::start(&bed.client, "tunnel", "edge-node", &bed.net().pods).await?;
//! ```
//!
//! The operator binary is the workspace's `tunnel` next to the running test
//! ([`crate::tools::agent_binary`]); without a VPS it runs on the host with a stand-in relay
//! agent (never pushed anywhere), with a VPS it runs in the internet namespace, reaching the
//! API server through a loopback relay, with the real `tunnelctl` and Envoy to push.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use serde::Deserialize;

use crate::apiserver::ApiServer;
use crate::network::{Network, relay_loopback_into, serve_greeting};
use crate::objects::{service, ssh_secret};
use crate::process::Process;
use crate::tools::{agent_binary, envoy, envoy_gz};
use crate::vps::{Vps, VpsOptions};
use crate::{TestbedError, free_port};

/// The uplink image flags the chart's Deployment gives with its default values: an operator
/// run "as the chart runs it" passes them, since the chart's admission policy on the uplink
/// template admits only that image.
/// `helm install` of the chart as the README does it: release `tunnel` in `tunnel-system`.
pub const CHART_INSTALL: [&str; 6] = [
    "install",
    "tunnel",
    "charts/tunnel",
    "--namespace",
    "tunnel-system",
    "--create-namespace",
];

/// The chart's ServiceAccount (release `tunnel` in `tunnel-system`) as a user name, and its
/// groups, to impersonate it.
pub const CHART_SA_USER: &str = "system:serviceaccount:tunnel-system:tunnel";
/// See [`CHART_SA_USER`].
pub const CHART_SA_GROUPS: [&str; 3] = [
    "system:serviceaccounts",
    "system:serviceaccounts:tunnel-system",
    "system:authenticated",
];

pub const CHART_UPLINK_IMAGE: [&str; 4] = [
    "--image-repo",
    "ghcr.io/achetronic/tunnel",
    "--image-tag",
    "0.1.0",
];

/// How long the VPS may take to boot.
const VPS_BOOT: Duration = Duration::from_secs(90);

/// What [`OperatorBed::builder`] is asked to start.
#[derive(Debug)]
pub struct OperatorBedBuilder {
    crds: bool,
    pods: Option<usize>,
    ssh_secrets: Vec<String>,
    my_web: bool,
    more_vpses: usize,
}

impl OperatorBedBuilder {
    /// Leaves the CRDs out (the operator's refusal to start without them).
    #[must_use]
    pub fn without_crds(mut self) -> Self {
        self.crds = false;
        self
    }

    /// The internet/VPS/cluster network with `pods` pod namespaces; the operator then runs in
    /// the internet namespace, and [`OperatorBedBuilder::start`] returns once the VPS is up.
    #[must_use]
    pub fn vps(mut self, pods: usize) -> Self {
        self.pods = Some(pods);
        self
    }

    /// `n` more VPSes on the same internet, booted beside the first
    /// ([`OperatorBed::more_vpses`]).
    #[must_use]
    pub fn more_vpses(mut self, n: usize) -> Self {
        self.more_vpses = n;
        self
    }

    /// An SSH Secret `default/<name>` for the (first) VPS, as a user would create it.
    #[must_use]
    pub fn ssh_secret(mut self, name: &str) -> Self {
        self.ssh_secrets.push(name.to_owned());
        self
    }

    /// README Example 1's target: `my-web: <what it read>` answered at `10.96.0.10:8080` in
    /// the cluster, and the Service `default/my-web` (port 8080, named `p8080-tcp`) there.
    #[must_use]
    pub fn my_web(mut self) -> Self {
        self.my_web = true;
        self
    }

    /// Starts it all: the network first (the VPS boots meanwhile), then the API server with
    /// the CRDs, then waits for the VPS.
    pub async fn start(self) -> Result<OperatorBed, TestbedError> {
        if self.pods.is_none()
            && (self.more_vpses > 0 || !self.ssh_secrets.is_empty() || self.my_web)
        {
            return Err(TestbedError::Command {
                command: "OperatorBed::builder()".into(),
                detail: "more_vpses, ssh_secret and my_web need .vps(pods)".into(),
            });
        }
        let binary = agent_binary("tunnel")?;
        let net = self.pods.map(Network::new).transpose()?;
        let more_vpses = match &net {
            Some(net) => (0..self.more_vpses)
                .map(|_| Vps::boot(&net.internet, &VpsOptions::default()))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let server = ApiServer::start().await?;
        if self.crds {
            install_crds(&server, &binary).await?;
        }
        let client = server.client().await?;
        let dir = tempfile::tempdir().map_err(TestbedError::io("creating the bed's dir"))?;
        let (tunnelctl, envoy_dir) = artefacts(dir.path(), net.is_some())?;
        if let Some(net) = &net {
            relay_loopback_into(&net.internet, api_port(&server)?)?;
            // Booted in parallel: the cap grows a little with their number.
            let boot = VPS_BOOT
                + Duration::from_secs(10) * u32::try_from(more_vpses.len()).unwrap_or(u32::MAX);
            for vps in std::iter::once(&net.vps).chain(&more_vpses) {
                vps.wait_ready(&net.internet, boot)?;
            }
            for name in &self.ssh_secrets {
                ssh_secret(&client, "default", name, &net.vps).await?;
            }
            if self.my_web {
                serve_greeting(&net.cluster, "10.96.0.10:8080", b"my-web: ")?;
                service(&client, "default", "my-web", "10.96.0.10", &[(8080, "TCP")]).await?;
            }
        }
        Ok(OperatorBed {
            server,
            client,
            net,
            more_vpses,
            dir,
            binary,
            tunnelctl,
            envoy: envoy_dir,
            started: AtomicUsize::new(0),
        })
    }
}

/// A running bed: the API server, an admin client, the network when asked for. Everything
/// stops when it drops.
pub struct OperatorBed {
    /// The API server, with the CRDs unless built `without_crds`.
    pub server: ApiServer,
    /// A client with cluster-admin rights.
    pub client: Client,
    /// The internet, the VPS (up) and the cluster's pods, when built with `vps`.
    pub net: Option<Network>,
    /// The VPSes beyond the network's own, when built with `more_vpses`.
    pub more_vpses: Vec<Vps>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    tunnelctl: PathBuf,
    envoy: Option<PathBuf>,
    started: AtomicUsize,
}

impl std::fmt::Debug for OperatorBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorBed")
            .field("server", &self.server.url())
            .field("net", &self.net)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl OperatorBed {
    /// What to start; by default the API server with the CRDs, no VPS.
    pub fn builder() -> OperatorBedBuilder {
        OperatorBedBuilder {
            crds: true,
            pods: None,
            ssh_secrets: Vec::new(),
            my_web: false,
            more_vpses: 0,
        }
    }

    /// README Example 1's bed, the most common: the network with `pods` pod namespaces and the
    /// VPS up, its SSH Secret `default/vps-ssh-secret` and the target `my-web`
    /// ([`OperatorBedBuilder::my_web`]).
    pub async fn example_1(pods: usize) -> Result<Self, TestbedError> {
        Self::builder()
            .vps(pods)
            .my_web()
            .ssh_secret("vps-ssh-secret")
            .start()
            .await
    }

    /// The network of a bed built with `vps`.
    #[allow(clippy::panic)] // a test helper: asking a bed without a VPS for it is a test bug
    pub fn net(&self) -> &Network {
        self.net
            .as_ref()
            .unwrap_or_else(|| panic!("this bed was built without .vps(..)"))
    }

    /// Installs the CRDs (into a bed built `without_crds`).
    pub async fn install_crds(&self) -> Result<(), TestbedError> {
        install_crds(&self.server, &self.binary).await
    }

    /// The `tunnel` binary the operators run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// A directory that lives as long as the bed (logs, files a test writes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `tunnel run` to configure and start.
    pub fn operator(&self) -> OperatorBuilder<'_> {
        OperatorBuilder {
            bed: self,
            name: "operator".into(),
            flags: Vec::new(),
            env: BTreeMap::from([
                ("LOG_FORMAT".to_owned(), "text".to_owned()),
                ("LOG_LEVEL".to_owned(), "info".to_owned()),
            ]),
            kubeconfig: None,
            metrics: false,
            binary: None,
        }
    }
}

/// One `tunnel run` against an [`OperatorBed`]: `--health-probe-bind-address` on a free
/// loopback port, `--tunnelctl-dir` (and, with a VPS, `--envoy-dir`) from the bed unless the
/// flags give their own, the admin kubeconfig unless told otherwise, `LOG_FORMAT=text` and
/// `LOG_LEVEL=info` unless set.
#[derive(Debug)]
pub struct OperatorBuilder<'a> {
    bed: &'a OperatorBed,
    name: String,
    flags: Vec<String>,
    env: BTreeMap<String, String>,
    kubeconfig: Option<PathBuf>,
    metrics: bool,
    binary: Option<PathBuf>,
}

impl OperatorBuilder<'_> {
    /// Runs another build of `tunnel` than the bed's (an older commit's, for an A/B bench).
    #[must_use]
    pub fn binary(mut self, binary: &Path) -> Self {
        self.binary = Some(binary.to_owned());
        self
    }

    /// The process's name in its log file's name (`<name>-<n>.log`).
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// More flags after `tunnel run`.
    #[must_use]
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| (*f).to_owned()));
        self
    }

    /// An environment variable (replaces a default of the same name).
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Runs with the credentials of `kubeconfig` (a ServiceAccount token, say).
    #[must_use]
    pub fn kubeconfig(mut self, kubeconfig: &Path) -> Self {
        self.kubeconfig = Some(kubeconfig.to_owned());
        self
    }

    /// Runs as user `user` in `system:masters` (impersonation), so the API server's audit log
    /// tells this process's writes apart.
    pub fn user(mut self, user: &str) -> Result<Self, TestbedError> {
        self.kubeconfig = Some(self.bed.server.kubeconfig_as(user, &["system:masters"])?);
        Ok(self)
    }

    /// Serves metrics on a free loopback port ([`Operator::metrics_port`]); add
    /// `--metrics-secure=false` for plain HTTP.
    #[must_use]
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    fn has(&self, flag: &str) -> bool {
        self.flags
            .iter()
            .any(|f| f == flag || f.starts_with(&format!("{flag}=")))
    }

    /// The command, its health and metrics ports.
    fn prepared(&self) -> Result<(Command, u16, Option<u16>), TestbedError> {
        let bed = self.bed;
        let binary = self.binary.as_ref().unwrap_or(&bed.binary);
        let mut command = match &bed.net {
            Some(net) => net.internet.command(binary),
            None => Command::new(binary),
        };
        command.arg("run");
        let health = free_port()?;
        if !self.has("--health-probe-bind-address") {
            command.args([
                "--health-probe-bind-address".to_owned(),
                format!("127.0.0.1:{health}"),
            ]);
        }
        if !self.has("--tunnelctl-dir") {
            command.arg("--tunnelctl-dir").arg(&bed.tunnelctl);
        }
        if let Some(envoy) = &bed.envoy
            && !self.has("--envoy-dir")
        {
            command.arg("--envoy-dir").arg(envoy);
        }
        let metrics = if self.metrics {
            let port = free_port()?;
            command.args([
                "--metrics-bind-address".to_owned(),
                format!("127.0.0.1:{port}"),
            ]);
            Some(port)
        } else {
            None
        };
        command.args(&self.flags);
        command.env(
            "KUBECONFIG",
            self.kubeconfig
                .clone()
                .unwrap_or_else(|| bed.server.kubeconfig_path()),
        );
        command.envs(&self.env);
        Ok((command, health, metrics))
    }

    /// Runs it to its end (for the refusals at start-up).
    pub fn output(self) -> Result<Output, TestbedError> {
        let (mut command, _, _) = self.prepared()?;
        command.output().map_err(|e| TestbedError::Command {
            command: format!("{command:?}"),
            detail: e.to_string(),
        })
    }

    /// Starts it; it is stopped when the handle drops.
    pub fn start(self) -> Result<Operator, TestbedError> {
        let (mut command, health_port, metrics_port) = self.prepared()?;
        let n = self.bed.started.fetch_add(1, Ordering::Relaxed) + 1;
        let log = self.bed.dir.path().join(format!("{}-{n}.log", self.name));
        let process = Process::spawn(&self.name, &mut command, Some(&log))?;
        Ok(Operator {
            process,
            log,
            health_port,
            metrics_port,
        })
    }
}

/// One running operator process.
#[derive(Debug)]
pub struct Operator {
    /// The process (in the internet namespace of a bed with a VPS: `ip netns exec` execs
    /// into `tunnel`, so this is its PID).
    pub process: Process,
    /// Its standard output and error.
    pub log: PathBuf,
    /// Its `/healthz` and `/readyz` port on loopback.
    pub health_port: u16,
    /// Its metrics port on loopback, when started with `metrics`.
    pub metrics_port: Option<u16>,
}

impl Operator {
    /// The log so far, without terminal colours.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Installs the CRDs as `tunnel crds` prints them.
async fn install_crds(server: &ApiServer, binary: &Path) -> Result<(), TestbedError> {
    server.install_crds(&crds(binary)?).await
}

/// The CRDs as `tunnel crds` prints them.
fn crds(binary: &Path) -> Result<Vec<CustomResourceDefinition>, TestbedError> {
    let out = Command::new(binary)
        .arg("crds")
        .output()
        .map_err(TestbedError::io("running `tunnel crds`"))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            command: "tunnel crds".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            CustomResourceDefinition::deserialize(doc).map_err(|e| TestbedError::Command {
                command: "tunnel crds".into(),
                detail: format!("not a CRD: {e}"),
            })
        })
        .collect()
}

/// The port of the API server's URL.
fn api_port(server: &ApiServer) -> Result<u16, TestbedError> {
    server
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| TestbedError::Kube(format!("no port in {}", server.url())))
}

/// The directories `--tunnelctl-dir` and `--envoy-dir` expect: with a VPS the real
/// `tunnelctl` and Envoy (linked; Envoy plain and gzipped, as the image ships it, which an
/// operator of this version prefers and an older one ignores), without one a stand-in relay
/// agent and no Envoy directory.
fn artefacts(dir: &Path, real: bool) -> Result<(PathBuf, Option<PathBuf>), TestbedError> {
    let tunnelctl = dir.join("tunnelctl");
    std::fs::create_dir_all(&tunnelctl).map_err(TestbedError::io("creating tunnelctl/"))?;
    let agent = tunnelctl.join("tunnelctl-linux-amd64");
    if !real {
        std::fs::write(&agent, b"relay agent").map_err(TestbedError::io("writing tunnelctl"))?;
        return Ok((tunnelctl, None));
    }
    std::os::unix::fs::symlink(agent_binary("tunnelctl")?, &agent)
        .map_err(TestbedError::io("linking tunnelctl"))?;
    let envoy_dir = dir.join("envoy");
    std::fs::create_dir_all(&envoy_dir).map_err(TestbedError::io("creating envoy/"))?;
    std::os::unix::fs::symlink(envoy()?, envoy_dir.join("envoy-linux-amd64"))
        .map_err(TestbedError::io("linking envoy"))?;
    std::os::unix::fs::symlink(envoy_gz()?, envoy_dir.join("envoy-linux-amd64.gz"))
        .map_err(TestbedError::io("linking envoy.gz"))?;
    Ok((tunnelctl, Some(envoy_dir)))
}
