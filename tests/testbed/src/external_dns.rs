//! DNS publishing as users run it (issue 20): an unmodified external-dns (built from its Go
//! module by `setup.d/60-external-dns.sh`) with its RFC2136 provider, updating a real Knot DNS
//! server (Debian's `knotd`) over TSIG-signed dynamic updates, and reading the zone back with
//! AXFR. [`DnsServer`] runs `knotd` on a free loopback port serving one zone; [`ExternalDns`]
//! runs external-dns against a test bed API server (or a real node's) with the sources a test picks; the
//! DNS server's answers are read with Knot's `kdig`. Both stop (by PID) when dropped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::apiserver::ApiServer;
use crate::netns::run;
use crate::process::Process;
use crate::{TestbedError, free_port, tools, unique_name};

/// The zone the tests publish in, unless they pick another.
pub const ZONE: &str = "edge.test";

/// The annotation prefix external-dns is started with (`--annotation-prefix`): the classic one
/// users and most guides write. external-dns v0.22 reads `external-dns.kubernetes.io/` by
/// default and no longer the `.alpha.` one.
pub const ANNOTATION_PREFIX: &str = "external-dns.alpha.kubernetes.io/";

/// The annotation that names a Service's (or Gateway's) DNS name, with [`ANNOTATION_PREFIX`].
pub const HOSTNAME_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/hostname";

/// The name of the TSIG key external-dns signs its updates and transfers with.
const TSIG_KEY_NAME: &str = "external-dns";

/// How the DNS server's answers are awaited between checks.
const POLL: Duration = Duration::from_millis(500);

/// A Debian tool (`knotd`, `kdig`), installed by the set-up script.
fn debian_tool(name: &str) -> Result<PathBuf, TestbedError> {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| TestbedError::MissingTool {
            tool: format!("{name} (Debian's knot / knot-dnsutils)"),
            path: PathBuf::from("/usr/sbin").join(name),
        })
}

/// The last `lines` lines of a log file (empty when it cannot be read).
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running Knot DNS server on `127.0.0.1:<port>`, authoritative for one zone that accepts
/// dynamic updates (RFC 2136) and zone transfers signed with a TSIG key (hmac-sha256) and
/// nothing unsigned. Stopped, and its files removed, when dropped.
#[derive(Debug)]
pub struct DnsServer {
    // Field order is drop order: the server stops before its files go.
    process: Process,
    dir: tempfile::TempDir,
    port: u16,
    zone: String,
    tsig_secret: String,
}

impl DnsServer {
    /// Starts `knotd` serving `zone` (e.g. [`ZONE`]) with only its SOA and NS records, on a
    /// free loopback port, with a fresh random TSIG key; waits until it answers for the zone.
    pub async fn start(zone: &str) -> Result<Self, TestbedError> {
        let zone = zone.trim_end_matches('.').to_owned();
        let dir = tempfile::Builder::new()
            .prefix("knot-")
            .tempdir()
            .map_err(TestbedError::io("a directory for knotd"))?;
        let d = dir.path();
        let mut key = [0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(TestbedError::io("/dev/urandom"))?,
            &mut key,
        )
        .map_err(TestbedError::io("reading /dev/urandom"))?;
        let tsig_secret = base64::engine::general_purpose::STANDARD.encode(key);
        let port = free_port()?;
        let config = format!(
            r#"server:
    rundir: "{dir}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{dir}"
key:
  - id: {TSIG_KEY_NAME}
    algorithm: hmac-sha256
    secret: {tsig_secret}
acl:
  - id: {TSIG_KEY_NAME}
    key: {TSIG_KEY_NAME}
    action: [transfer, update]
template:
  - id: default
    storage: "{dir}"
    file: "%s.zone"
    zonefile-sync: -1
zone:
  - domain: {zone}
    acl: {TSIG_KEY_NAME}
"#,
            dir = d.display()
        );
        let zone_file = format!(
            "$ORIGIN {zone}.\n$TTL 60\n@ SOA ns hostmaster 1 60 60 3600 60\n@ NS ns\nns A 127.0.0.1\n"
        );
        std::fs::write(d.join("knot.conf"), config)
            .map_err(TestbedError::io("writing knot.conf"))?;
        std::fs::write(d.join(format!("{zone}.zone")), zone_file)
            .map_err(TestbedError::io("writing the zone file"))?;
        let process = Process::spawn(
            "knotd",
            Command::new(debian_tool("knotd")?)
                .arg("-c")
                .arg(d.join("knot.conf")),
            Some(&d.join("knotd.log")),
        )?;
        let mut server = Self {
            process,
            dir,
            port,
            zone,
            tsig_secret,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), TestbedError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match self.records(&self.zone, "SOA") {
                Ok(soa) if !soa.is_empty() => return Ok(()),
                Ok(_) => "no SOA".to_owned(),
                Err(e) => e.to_string(),
            };
            if !self.process.is_running() || Instant::now() > deadline {
                return Err(TestbedError::NotReady {
                    what: format!("knotd to serve {}", self.zone),
                    last,
                    log_tail: self.log_tail(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The loopback port it answers on (UDP and TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The zone it serves, without the trailing dot (e.g. `edge.test`).
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The records of `rtype` (`A`, `AAAA`, `TXT`, ...) at `name`, as `kdig +short` prints
    /// them, sorted; empty when there are none (or the name does not exist).
    pub fn records(&self, name: &str, rtype: &str) -> Result<Vec<String>, TestbedError> {
        let out = run(Command::new(debian_tool("kdig")?)
            .arg("@127.0.0.1")
            .args(["-p", &self.port.to_string()])
            .args(["+short", "+norecurse", "+timeout=2", "+retry=1"])
            .args([name, rtype]))?;
        let mut records: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(";;"))
            .map(str::to_owned)
            .collect();
        records.sort();
        Ok(records)
    }

    /// The addresses at `name`: its A and AAAA records, sorted (IPv4 first).
    pub fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, TestbedError> {
        let mut addresses = Vec::new();
        for rtype in ["A", "AAAA"] {
            for record in self.records(name, rtype)? {
                let address = record
                    .parse::<IpAddr>()
                    .map_err(|e| TestbedError::Command {
                        command: format!("kdig {name} {rtype}"),
                        detail: format!("answer {record:?} is not an address: {e}"),
                    })?;
                addresses.push(address);
            }
        }
        addresses.sort();
        Ok(addresses)
    }

    /// Waits up to `timeout` until the addresses at `name` are exactly `expected` (in any
    /// order; empty: the name has none); the error says what the server answered last.
    pub async fn wait_for_addresses(
        &self,
        name: &str,
        expected: &[IpAddr],
        timeout: Duration,
    ) -> Result<(), TestbedError> {
        let mut expected = expected.to_vec();
        expected.sort();
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.addresses(name);
            if matches!(&last, Ok(got) if *got == expected) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestbedError::NotReady {
                    what: format!("{name} to resolve to {expected:?} (A and AAAA)"),
                    last: match last {
                        Ok(got) => format!("the DNS server answered {got:?}"),
                        Err(e) => e.to_string(),
                    },
                    log_tail: self.log_tail(20),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The end of knotd's log (its updates and transfers), for a failure's message.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.path().join("knotd.log"), lines)
    }
}

/// What external-dns reads endpoints from (its `--source` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Services (`type: LoadBalancer`: `status.loadBalancer.ingress`).
    Service,
    /// `DNSEndpoint` objects (`externaldns.k8s.io/v1alpha1`); its CRD is installed.
    Crd,
    /// Gateways through their TCPRoutes (external-dns reads `v1alpha2`).
    GatewayTcpRoute,
    /// Gateways through their UDPRoutes (external-dns reads `v1alpha2`).
    GatewayUdpRoute,
    /// Gateways through their TLSRoutes (`v1`).
    GatewayTlsRoute,
}

impl Source {
    /// The `--source` value.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Crd => "crd",
            Self::GatewayTcpRoute => "gateway-tcproute",
            Self::GatewayUdpRoute => "gateway-udproute",
            Self::GatewayTlsRoute => "gateway-tlsroute",
        }
    }
}

/// A running external-dns (`--provider=rfc2136 --registry=txt --policy=sync`), stopped when
/// dropped.
#[derive(Debug)]
pub struct ExternalDns {
    process: Process,
    dir: tempfile::TempDir,
    owner_id: String,
    metrics_port: u16,
}

impl ExternalDns {
    /// Installs the CRDs `sources` need (the DNSEndpoint CRD for [`Source::Crd`]; the Gateway
    /// API's GatewayClass, Gateway and route CRDs for the gateway sources, the TCP and UDP
    /// routes from the Experimental channel, which also serves the `v1alpha2` external-dns
    /// reads) and starts external-dns against `server` (its admin kubeconfig) and `dns`:
    /// `--provider=rfc2136` with the TSIG key (passed in the environment, not on the command
    /// line), AXFR, `--registry=txt` with a unique `--txt-owner-id`, `--policy=sync` (records
    /// are removed too), `--domain-filter` on the zone, `--annotation-prefix` [`ANNOTATION_PREFIX`],
    /// `--interval=2s --events`. Waits until it has completed a synchronisation (so a test's
    /// first change is not raced by its start-up).
    pub async fn start(
        server: &ApiServer,
        dns: &DnsServer,
        sources: &[Source],
    ) -> Result<Self, TestbedError> {
        Self::start_with_kubeconfig(&server.kubeconfig_path(), dns, sources).await
    }

    /// [`ExternalDns::start`] against the API server of the admin kubeconfig at `kubeconfig`
    /// (a real node's, say).
    pub async fn start_with_kubeconfig(
        kubeconfig: &Path,
        dns: &DnsServer,
        sources: &[Source],
    ) -> Result<Self, TestbedError> {
        install_crds(kubeconfig, sources).await?;
        let dir = tempfile::Builder::new()
            .prefix("external-dns-")
            .tempdir()
            .map_err(TestbedError::io("a directory for external-dns"))?;
        let owner_id = unique_name("external-dns");
        let metrics_port = free_port()?;
        let mut cmd = Command::new(tools::bin("external-dns")?);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(sources.iter().map(|s| format!("--source={}", s.flag())))
            .args(["--provider=rfc2136", "--rfc2136-host=127.0.0.1"])
            .arg(format!("--rfc2136-port={}", dns.port()))
            .arg(format!("--rfc2136-zone={}", dns.zone()))
            .arg(format!("--rfc2136-tsig-keyname={TSIG_KEY_NAME}"))
            .args(["--rfc2136-tsig-secret-alg=hmac-sha256", "--rfc2136-axfr"])
            .env("EXTERNAL_DNS_RFC2136_TSIG_SECRET", &dns.tsig_secret)
            .args(["--registry=txt", "--policy=sync"])
            .arg(format!("--txt-owner-id={owner_id}"))
            .arg(format!("--domain-filter={}", dns.zone()))
            .arg(format!("--annotation-prefix={ANNOTATION_PREFIX}"))
            .args(["--interval=2s", "--min-event-sync-interval=1s", "--events"])
            .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
            .arg("--log-level=debug");
        let process = Process::spawn(
            "external-dns",
            &mut cmd,
            Some(&dir.path().join("external-dns.log")),
        )?;
        let mut external_dns = Self {
            process,
            dir,
            owner_id,
            metrics_port,
        };
        external_dns.wait_synced().await?;
        Ok(external_dns)
    }

    /// Waits until external-dns has completed a synchronisation (its
    /// `external_dns_controller_last_sync_timestamp_seconds` is set): its sources' caches are
    /// filled and it has read the zone. A source whose API is not served makes it exit after a
    /// minute ("failed to sync ..."), which the error then shows.
    async fn wait_synced(&mut self) -> Result<(), TestbedError> {
        const SYNCED: &str = "external_dns_controller_last_sync_timestamp_seconds ";
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = Command::new("curl")
                .args(["-sf", "--max-time", "2"])
                .arg(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
                .output();
            let last = match out {
                Ok(out) if out.status.success() => {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    let synced = text
                        .lines()
                        .filter_map(|l| l.strip_prefix(SYNCED))
                        .any(|v| v.trim().parse::<f64>().is_ok_and(|t| t > 0.0));
                    if synced {
                        return Ok(());
                    }
                    "no synchronisation completed yet".to_owned()
                }
                Ok(out) => format!("/metrics: {}", out.status),
                Err(e) => format!("curl: {e}"),
            };
            if !self.process.is_running() || Instant::now() > deadline {
                return Err(TestbedError::NotReady {
                    what: "external-dns to complete a synchronisation".into(),
                    last,
                    log_tail: self.log_tail(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its `--txt-owner-id` (the owner its TXT registry records carry).
    pub fn owner_id(&self) -> &str {
        &self.owner_id
    }

    /// Whether it is still running (it exits on a fatal error, e.g. a source that cannot
    /// sync).
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The end of its log (debug level: what it read and what it changed).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.path().join("external-dns.log"), lines)
    }
}

/// The CRDs `sources` need, from the test bed's cache, installed on the API server of
/// `kubeconfig`.
async fn install_crds(kubeconfig: &Path, sources: &[Source]) -> Result<(), TestbedError> {
    let read = |path: PathBuf| -> Result<CustomResourceDefinition, TestbedError> {
        let text = std::fs::read_to_string(&path)
            .map_err(TestbedError::io(format!("reading {}", path.display())))?;
        serde_yaml::from_str(&text)
            .map_err(|e| TestbedError::Kube(format!("parsing {}: {e}", path.display())))
    };
    let cache = tools::cache_dir().join("external-dns");
    let mut files = Vec::new();
    if sources.contains(&Source::Crd) {
        files.push(cache.join("dnsendpoints.externaldns.k8s.io.yaml"));
    }
    let gateway = |kind: &str| format!("gateway.networking.k8s.io_{kind}.yaml");
    let routes = [
        (Source::GatewayTcpRoute, "tcproutes", true),
        (Source::GatewayUdpRoute, "udproutes", true),
        (Source::GatewayTlsRoute, "tlsroutes", false),
    ];
    if routes.iter().any(|(s, ..)| sources.contains(s)) {
        let (standard, _) = tools::gateway_api_crds()?;
        files.push(standard.join(gateway("gatewayclasses")));
        files.push(standard.join(gateway("gateways")));
        for (source, kind, experimental) in routes {
            if sources.contains(&source) {
                let dir = if experimental {
                    cache.join("gateway-experimental")
                } else {
                    standard.clone()
                };
                files.push(dir.join(gateway(kind)));
            }
        }
    }
    if files.is_empty() {
        return Ok(());
    }
    for file in &files {
        if !file.is_file() {
            return Err(TestbedError::MissingTool {
                tool: "external-dns's CRDs".into(),
                path: file.clone(),
            });
        }
    }
    let crds = files.into_iter().map(read).collect::<Result<Vec<_>, _>>()?;
    crate::apiserver::install_crds(kubeconfig, &crds).await
}
