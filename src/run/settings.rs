//! The settings of `tunnel run`: its flags (the seed's names and defaults), parsed by clap,
//! and the artefacts they point at (the agent binaries the operator pushes to each VPS, and
//! Envoy: pushed too when the operator carries it, else downloaded by the VPS against a
//! pinned digest).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::enroll::{Arch, Blob, ENVOY_RELEASE_URL_TEMPLATE, EnvoyInstall};
use crate::plan::CrossNamespaceTargets;

/// The flags of `tunnel run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Address of the liveness/readiness probes (`/healthz`, `/readyz`); `:8081` means every
    /// interface.
    #[arg(long, default_value = ":8081", value_parser = parse_bind_address)]
    pub health_probe_bind_address: SocketAddr,
    /// Directory with the relay agent per architecture (`tunnelctl-linux-amd64`,
    /// `tunnelctl-linux-arm64`), pushed to each VPS.
    #[arg(long, default_value = "/opt/tunnelctl")]
    pub tunnelctl_dir: PathBuf,
    /// Envoy version installed on the VPSes.
    #[arg(long, default_value = "1.40.0")]
    pub envoy_version: String,
    /// Directory with Envoy binaries to push (`envoy-linux-amd64`, `envoy-linux-arm64`). When
    /// it has none, each VPS downloads Envoy from `--envoy-download-url` and checks it against
    /// the SHA-256 pinned for that version and architecture.
    #[arg(long, default_value = "/opt/envoy")]
    pub envoy_dir: PathBuf,
    /// Download URL template of the download mode (`{version}`, `{arch}`); a mirror works.
    #[arg(long, default_value = ENVOY_RELEASE_URL_TEMPLATE)]
    pub envoy_download_url: String,
    /// The SHA-256 a download must have, as `amd64=<hex>` or `arm64=<hex>` (repeat for each
    /// architecture); takes precedence over the digests this build ships for the version.
    #[arg(long = "envoy-sha256", value_name = "ARCH=SHA256", value_parser = parse_digest)]
    pub envoy_sha256: Vec<(Arch, String)>,
    /// Uplink image repository; the image is `<repo>/uplink:<tag>`.
    #[arg(long, default_value = "ghcr.io/achetronic/tunnel")]
    pub image_repo: String,
    /// Uplink image tag.
    #[arg(long, default_value = "latest")]
    pub image_tag: String,
    /// PriorityClass of the uplink pods (default: none, the cluster's default priority).
    #[arg(long, value_name = "NAME", value_parser = parse_object_name)]
    pub uplink_priority_class_name: Option<String>,
    /// Secrets the kubelet uses to pull the uplink image, in the uplink namespace
    /// (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NAME", value_parser = parse_object_name)]
    pub uplink_image_pull_secrets: Vec<String>,
    /// `nodeSelector` entries of every uplink pod, as `key=value` (comma-separated). An
    /// EdgeNode may add entries (with `--edge-node-placement`), never change these.
    #[arg(long, value_delimiter = ',', value_name = "KEY=VALUE", value_parser = parse_selector_entry)]
    pub uplink_node_selector: Vec<(String, String)>,
    /// Tolerations of every uplink pod, as a JSON list of Kubernetes tolerations (e.g.
    /// `[{"key":"dedicated","operator":"Equal","value":"edge","effect":"NoSchedule"}]`).
    #[arg(long, value_name = "JSON", value_parser = parse_tolerations)]
    pub uplink_tolerations: Option<Tolerations>,
    /// Uplink namespaces and the EdgeNode namespaces that may use each: `NAME` (every
    /// namespace) or `NAME=NAMESPACE[,NAMESPACE...]`; repeat for each uplink namespace. When
    /// given, an EdgeNode whose `spec.uplink.namespace` is not open to its namespace is
    /// refused (`UplinkNamespaceNotAllowed`); when not, any namespace the operator may write.
    #[arg(long = "uplink-namespace", value_name = "NAME[=NAMESPACES]")]
    pub uplink_namespaces: Vec<crate::workload::UplinkNamespaceRule>,
    /// Label keys taken from `spec.uplink.labels`: key prefixes (comma-separated); `*` is any
    /// key outside the kubernetes.io, k8s.io and CNI domains; empty: none.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "*",
        value_name = "PREFIXES"
    )]
    pub uplink_pod_label_prefixes: Vec<String>,
    /// Annotation keys taken from `spec.uplink.annotations`, as for labels. AppArmor, seccomp
    /// and CNI annotations (network attachments, fixed IPs) need a prefix of their own here.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "*",
        value_name = "PREFIXES"
    )]
    pub uplink_pod_annotation_prefixes: Vec<String>,
    /// Taint keys `spec.uplink.tolerations` may tolerate, as for labels: with `*` not the
    /// kubernetes.io ones (control-plane, unhealthy nodes); a toleration without a key never.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "*",
        value_name = "PREFIXES"
    )]
    pub uplink_pod_toleration_keys: Vec<String>,
    /// Take `spec.uplink.nodeSelector` and `spec.uplink.affinity` from EdgeNodes (they only
    /// narrow where the pods may run); `false` refuses them and places uplink pods by the
    /// operator's `--uplink-node-selector` and `--uplink-tolerations` alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub edge_node_placement: bool,
    /// At most this many SSH passes run at once, across all EdgeNodes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
    /// How often the API server is asked whether Gateway API's CRDs came or went since the
    /// start (Go duration); when they did, the operator exits to be restarted, and watches
    /// what is served then.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub gateway_api_discovery_period: Duration,
    /// How often every EdgeNode is checked for drift on its VPS (Go duration).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub resync_period: Duration,
    /// Keepalive interval of the SSH connection kept to each VPS (Go duration). Three
    /// unanswered keepalives declare the VPS unreachable, and its EdgeNode is checked at once.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub ssh_keepalive_interval: Duration,
    /// Let targets be loopback, link-local or other cloud metadata addresses, the EdgeNode's
    /// tunnel network, or the API server (its ClusterIP and endpoints), whether given as an
    /// address or resolved from a Service; refused (`RestrictedTarget`) otherwise.
    #[arg(long)]
    pub allow_restricted_targets: bool,
    /// Target Services in another namespace than their PortBinding's: `allow` (README
    /// Examples 2 and 3) or `require-grant` (only with a ReferenceGrant in the Service's
    /// namespace, from kind PortBinding to kind Service: for clusters shared by tenants).
    /// Restricted targets are refused either way.
    #[arg(long, default_value = "allow", value_name = "allow|require-grant",
          value_parser = parse_cross_namespace_targets)]
    pub cross_namespace_targets: CrossNamespaceTargets,
    /// Also serve Services of `type: LoadBalancer` that have no `spec.loadBalancerClass`
    /// (default: only those of class `tunnel.achetronic.com/edge-node`, so Tunnel never fights
    /// another load-balancer controller over a Service).
    #[arg(long)]
    pub load_balancer_classless: bool,
    /// Watch Secrets and Services only in these namespaces (comma-separated; default: every
    /// namespace). SSH and TLS Secrets and target Services elsewhere are then not found.
    #[arg(long, value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Leader election on a Lease: only the holder runs the tree, so several replicas can run
    /// (`--leader-elect=false` for one replica that needs no Lease).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace from
    /// `POD_NAMESPACE` or the ServiceAccount, else `default`; set it when running outside a
    /// cluster).
    #[arg(long)]
    pub leader_elect_namespace: Option<String>,
    /// How long a Lease stays held after its last renewal (whole seconds, Go duration).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// The leader stops when it could not renew the Lease for this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Between two attempts to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// Address of the metrics endpoint (`/metrics`): `0` is off, `:8443` (HTTPS with
    /// `--metrics-secure`) or `:8080` (plain HTTP with `--metrics-secure=false`).
    #[arg(long, default_value = "0", value_parser = parse_optional_bind_address)]
    pub metrics_bind_address: OptionalAddress,
    /// Serve metrics over HTTPS, each scrape authenticated (TokenReview) and authorized
    /// (SubjectAccessReview, `get` on the non-resource URL `/metrics`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub metrics_secure: bool,
    /// Directory with the metrics server's certificate; unset or empty: a self-signed one
    /// is made at start.
    #[arg(long)]
    pub metrics_cert_path: Option<PathBuf>,
    /// File name of the certificate (PEM chain) in `--metrics-cert-path`.
    #[arg(long, default_value = "tls.crt")]
    pub metrics_cert_name: String,
    /// File name of the private key (PEM) in `--metrics-cert-path`.
    #[arg(long, default_value = "tls.key")]
    pub metrics_cert_key: String,
    /// Offer HTTP/2 on the metrics server (off by default: HTTP/2 rapid-reset and stream
    /// floods, CVE-2023-44487 and CVE-2023-39325).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub enable_http2: bool,
}

/// A `nodeSelector` entry, `key=value`.
fn parse_selector_entry(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// The tolerations of `--uplink-tolerations`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tolerations(pub Vec<k8s_openapi::api::core::v1::Toleration>);

/// A JSON list of tolerations.
fn parse_tolerations(text: &str) -> Result<Tolerations, String> {
    serde_json::from_str(text)
        .map(Tolerations)
        .map_err(|e| format!("not a JSON list of tolerations: {e}"))
}

impl RunArgs {
    /// The uplink pods' settings from these flags.
    pub fn uplink_pod_options(&self) -> crate::workload::UplinkPodOptions {
        let prefixes = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        };
        crate::workload::UplinkPodOptions {
            priority_class_name: self.uplink_priority_class_name.clone(),
            image_pull_secrets: self.uplink_image_pull_secrets.clone(),
            node_selector: self.uplink_node_selector.iter().cloned().collect(),
            tolerations: self.uplink_tolerations.clone().unwrap_or_default().0,
            tenant: crate::workload::TenantPolicy {
                namespaces: self.uplink_namespaces.clone(),
                label_prefixes: prefixes(&self.uplink_pod_label_prefixes),
                annotation_prefixes: prefixes(&self.uplink_pod_annotation_prefixes),
                toleration_keys: prefixes(&self.uplink_pod_toleration_keys),
                placement: self.edge_node_placement,
            },
        }
    }
}

/// `allow` or `require-grant`.
pub fn parse_cross_namespace_targets(text: &str) -> Result<CrossNamespaceTargets, String> {
    text.parse()
}

/// Accepts `host:port`, `:port` (every interface) and `port`.
pub fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    let full = if let Some(port) = text.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        format!("0.0.0.0:{text}")
    } else {
        text.to_owned()
    };
    full.parse()
        .map_err(|_| format!("{text:?} is not an address like :8081 or 127.0.0.1:8081"))
}

/// A bind address that may be off (`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddress(pub Option<SocketAddr>);

/// Accepts `0` (off) and the forms of [`parse_bind_address`].
pub fn parse_optional_bind_address(text: &str) -> Result<OptionalAddress, String> {
    if text == "0" {
        return Ok(OptionalAddress(None));
    }
    parse_bind_address(text).map(|a| OptionalAddress(Some(a)))
}

/// Reads `amd64=<64 hex digits>` (or `arm64=`, `x86_64=`, `aarch64=`).
pub fn parse_digest(text: &str) -> Result<(Arch, String), String> {
    let (arch, hex) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ARCH=SHA256, e.g. amd64=<64 hex digits>"))?;
    let arch = Arch::from_uname(arch)
        .map_err(|_| format!("{arch:?} is not an architecture Tunnel supports (amd64, arm64)"))?;
    let hex = hex.to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the SHA-256 for {arch:?} must be 64 hex digits, got {} characters",
            hex.len()
        ));
    }
    Ok((arch, hex))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::GoDuration::parse_positive(text)
        .map(crate::duration::GoDuration::to_std)
        .map_err(|e| e.to_string())
}

/// Why the artefacts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A directory or binary could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No relay agent for any architecture.
    #[error("--tunnelctl-dir {dir} holds neither tunnelctl-linux-amd64 nor tunnelctl-linux-arm64")]
    NoTunnelctl {
        /// The directory.
        dir: PathBuf,
    },
}

impl SettingsError {
    /// A stable UpperCamelCase label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "SettingsUnreadable",
            Self::NoTunnelctl { .. } => "TunnelctlMissing",
        }
    }
}

/// The SHA-256 of Envoy's release assets, per version and architecture, for the download
/// mode. Empty in this build: the digests of GitHub's release assets could not be verified
/// from this build's network (docs/operations.md); operators that download use
/// `--envoy-dir` with their own binaries, or add the digests of the versions they verified.
pub const PINNED_ENVOY_DIGESTS: &[(&str, Arch, &str)] = &[];

/// Reads `<dir>/<stem>-linux-{amd64,arm64}` when present, or its gzipped form
/// `<stem>-linux-<arch>.gz`, which is then preferred: it is uploaded packed and unpacked on
/// the VPS (about a third of Envoy's bytes).
fn per_arch(dir: &Path, stem: &str) -> Result<BTreeMap<Arch, Blob>, SettingsError> {
    let mut found = BTreeMap::new();
    for (arch, suffix) in [(Arch::X86_64, "amd64"), (Arch::Aarch64, "arm64")] {
        let plain = dir.join(format!("{stem}-linux-{suffix}"));
        let packed = dir.join(format!("{stem}-linux-{suffix}.gz"));
        for (path, read) in [
            (
                packed,
                Blob::from_gzip_file as fn(&Path) -> std::io::Result<Blob>,
            ),
            (plain, Blob::from_file),
        ] {
            match read(&path) {
                Ok(blob) => {
                    found.insert(arch, blob);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SettingsError::Read { path, source }),
            }
        }
    }
    Ok(found)
}

/// The relay agents to push, by architecture.
pub fn load_tunnelctl(dir: &Path) -> Result<BTreeMap<Arch, Blob>, SettingsError> {
    let found = per_arch(dir, "tunnelctl")?;
    if found.is_empty() {
        return Err(SettingsError::NoTunnelctl {
            dir: dir.to_owned(),
        });
    }
    Ok(found)
}

/// How Envoy is installed: pushed when `dir` has binaries, else downloaded.
/// `pinned` (from `--envoy-sha256`) overrides the digests shipped for `version`.
pub fn load_envoy(
    dir: &Path,
    version: &str,
    url_template: &str,
    pinned: &[(Arch, String)],
) -> Result<EnvoyInstall, SettingsError> {
    let binaries = per_arch(dir, "envoy")?;
    if !binaries.is_empty() {
        return Ok(EnvoyInstall::Push {
            version: version.to_owned(),
            binaries,
        });
    }
    let sha256 = PINNED_ENVOY_DIGESTS
        .iter()
        .filter(|(v, _, _)| *v == version)
        .map(|(_, arch, digest)| (*arch, (*digest).to_owned()))
        .chain(pinned.iter().cloned())
        .collect();
    Ok(EnvoyInstall::Download {
        version: version.to_owned(),
        url_template: url_template.to_owned(),
        sha256,
    })
}

/// A Kubernetes object name (a DNS subdomain: lowercase alphanumerics, `-` and `.`, at most
/// 253 characters, starting and ending alphanumeric).
fn parse_object_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes object name (lowercase letters, digits, '-', '.')"
        ))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn object_names_are_checked() {
        assert_eq!(parse_object_name("edge-critical").unwrap(), "edge-critical");
        assert!(parse_object_name("reg.cred-1").is_ok());
        for bad in ["", "Regcred", "-x", "x-", "a_b", &"a".repeat(254)] {
            assert!(parse_object_name(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> crate::workload::UplinkPodOptions {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("tunnel").chain(args.iter().copied()))
            .unwrap()
            .run
            .uplink_pod_options()
    }

    #[test]
    fn the_uplink_pod_flags_make_the_tenant_policy() {
        use clap::Parser;
        let defaults = parse(&[]);
        assert_eq!(defaults, crate::workload::UplinkPodOptions::default());
        let set = parse(&[
            "--uplink-namespace=tunnel",
            "--uplink-namespace=tunnel-a=team-a,team-b",
            "--uplink-pod-label-prefixes=",
            "--uplink-pod-annotation-prefixes=*,k8s.v1.cni.cncf.io/",
            "--uplink-pod-toleration-keys=dedicated",
            "--edge-node-placement=false",
            "--uplink-node-selector=pool=edge,zone=a",
            r#"--uplink-tolerations=[{"key":"dedicated","operator":"Exists"}]"#,
        ]);
        let t = &set.tenant;
        assert_eq!(t.namespaces.len(), 2);
        assert_eq!(t.namespaces[1].edge_node_namespaces, ["team-a", "team-b"]);
        assert!(t.label_prefixes.is_empty(), "an empty value allows none");
        assert_eq!(t.annotation_prefixes, ["*", "k8s.v1.cni.cncf.io/"]);
        assert_eq!(t.toleration_keys, ["dedicated"]);
        assert!(!t.placement);
        assert_eq!(set.node_selector.len(), 2);
        assert_eq!(set.tolerations[0].key.as_deref(), Some("dedicated"));
        for bad in [
            "--uplink-namespace=Tunnel",
            "--uplink-node-selector=pool",
            "--uplink-tolerations=[{",
        ] {
            assert!(Cli::try_parse_from(["tunnel", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn bind_addresses_in_the_seeds_forms() {
        assert_eq!(
            parse_bind_address(":8081").unwrap(),
            "0.0.0.0:8081".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_bind_address("127.0.0.1:9000").unwrap(),
            "127.0.0.1:9000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_bind_address("8081").unwrap(),
            "0.0.0.0:8081".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_optional_bind_address("0").unwrap(),
            OptionalAddress(None)
        );
        assert_eq!(
            parse_optional_bind_address(":8443").unwrap(),
            OptionalAddress(Some("0.0.0.0:8443".parse().unwrap()))
        );
        assert!(
            parse_bind_address("localhost")
                .unwrap_err()
                .contains("localhost")
        );
    }

    #[test]
    fn artefacts_are_found_per_architecture() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_tunnelctl(dir.path()).unwrap_err().category(),
            "TunnelctlMissing"
        );
        std::fs::write(dir.path().join("tunnelctl-linux-amd64"), b"relay").unwrap();
        let found = load_tunnelctl(dir.path()).unwrap();
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), [Arch::X86_64]);
        // No Envoy binary: the download mode.
        assert!(matches!(
            load_envoy(dir.path(), "1.40.0", ENVOY_RELEASE_URL_TEMPLATE, &[]).unwrap(),
            EnvoyInstall::Download { .. }
        ));
        let digest = "ab".repeat(32);
        let EnvoyInstall::Download { sha256, .. } = load_envoy(
            dir.path(),
            "1.40.0",
            ENVOY_RELEASE_URL_TEMPLATE,
            &[(Arch::Aarch64, digest.clone())],
        )
        .unwrap() else {
            panic!("download mode")
        };
        assert_eq!(
            sha256.get(&Arch::Aarch64),
            Some(&digest),
            "the flag pins it"
        );
        std::fs::write(dir.path().join("envoy-linux-amd64"), b"envoy").unwrap();
        assert!(matches!(
            load_envoy(dir.path(), "1.40.0", ENVOY_RELEASE_URL_TEMPLATE, &[]).unwrap(),
            EnvoyInstall::Push { .. }
        ));
    }

    #[test]
    fn a_gzipped_binary_is_preferred_and_a_broken_one_is_named() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("envoy-linux-amd64"), b"plain").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(b"packed").unwrap();
        let packed = dir.path().join("envoy-linux-amd64.gz");
        std::fs::write(&packed, gz.finish().unwrap()).unwrap();
        let EnvoyInstall::Push { binaries, .. } =
            load_envoy(dir.path(), "1.40.0", ENVOY_RELEASE_URL_TEMPLATE, &[]).unwrap()
        else {
            panic!("push mode")
        };
        let blob = &binaries[&Arch::X86_64];
        assert_eq!(*blob, Blob::new(b"packed".to_vec()));
        assert!(matches!(
            blob.stored(),
            crate::enroll::blob::Stored::Gzip { .. }
        ));
        std::fs::write(&packed, b"not gzip").unwrap();
        let err = load_envoy(dir.path(), "1.40.0", ENVOY_RELEASE_URL_TEMPLATE, &[]).unwrap_err();
        assert!(err.to_string().contains("envoy-linux-amd64.gz"), "{err}");
    }

    #[test]
    fn envoy_digests_are_arch_equals_hex() {
        let hex = "AB".repeat(32);
        assert_eq!(
            parse_digest(&format!("amd64={hex}")).unwrap(),
            (Arch::X86_64, hex.to_ascii_lowercase())
        );
        assert_eq!(
            parse_digest(&format!("aarch64={hex}")).unwrap().0,
            Arch::Aarch64
        );
        assert!(parse_digest(&hex).unwrap_err().contains("ARCH=SHA256"));
        assert!(
            parse_digest(&format!("riscv64={hex}"))
                .unwrap_err()
                .contains("riscv64")
        );
        assert!(
            parse_digest("amd64=abc")
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert!(
            parse_digest(&format!("amd64={}", "zz".repeat(32)))
                .unwrap_err()
                .contains("64 hex digits")
        );
    }
}
