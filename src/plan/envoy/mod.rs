//! Envoy's configuration on the VPS, file-based xDS: an immutable bootstrap (`envoy.yaml`)
//! that points at `lds.yaml` and `cds.yaml` (swapped by atomic rename and hot-reloaded), and
//! one SDS file per TLS Secret under `tls/` (rotated the same way, no restart).
//!
//! Every document is built as a `serde_json::Value` and printed as YAML; map keys are sorted
//! and inputs are sorted, so the same plan gives the same bytes.

pub mod bootstrap;
pub mod cds;
pub mod lds;
pub mod names;
pub mod sds;

use std::net::Ipv4Addr;

use crate::duration::GoDuration;

/// Port of each uplink's `/ready` endpoint, on its tunnel address.
pub const READY_PORT: u16 = 40500;
/// Port of Envoy's admin on the VPS's loopback, and of its read-only bridge listener on the
/// relay address (what the uplinks' admin bridge reaches).
pub const ADMIN_PORT: u16 = 40600;

/// What Envoy buffers per connection and direction before it stops reading from the other
/// side (its edge recommendation; Envoy's default is 1 MiB), on every listener and cluster.
pub const BUFFER_LIMIT_BYTES: u32 = 32 * 1024;
/// How long a client may take over the SNI peek of a passthrough port (`tls_inspector`)
/// before Envoy closes the connection.
pub const LISTENER_FILTERS_TIMEOUT: &str = "5s";
/// How long a client may take over the TLS handshake of an offload or mutual port.
pub const TLS_HANDSHAKE_TIMEOUT: &str = "10s";

/// Where the files live on the VPS. Tests render into a temporary directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Envoy's configuration directory (`/etc/envoy`).
    pub dir: String,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            dir: "/etc/envoy".to_owned(),
        }
    }
}

impl Layout {
    /// The bootstrap file.
    pub fn bootstrap(&self) -> String {
        format!("{}/envoy.yaml", self.dir)
    }
    /// The listeners file.
    pub fn lds(&self) -> String {
        format!("{}/lds.yaml", self.dir)
    }
    /// The clusters file.
    pub fn cds(&self) -> String {
        format!("{}/cds.yaml", self.dir)
    }
    /// The directory of the SDS files.
    pub fn tls_dir(&self) -> String {
        format!("{}/tls", self.dir)
    }
    /// The SDS file of one TLS Secret.
    pub fn sds(&self, file_stem: &str) -> String {
        format!("{}/tls/{file_stem}.sds.yaml", self.dir)
    }
}

/// Active health checking of the uplinks, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Between two probes.
    pub interval: GoDuration,
    /// For one probe.
    pub timeout: GoDuration,
    /// Successes before a replica is back in rotation.
    pub healthy_threshold: u32,
    /// Failures before a replica is taken out.
    pub unhealthy_threshold: u32,
}

/// Passive outlier detection, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive connection failures before an ejection.
    pub consecutive_failures: u32,
    /// Between two sweeps.
    pub interval: GoDuration,
    /// Base ejection time.
    pub base_ejection_time: GoDuration,
    /// Largest share of uplinks ejected at once, in percent.
    pub max_ejection_percent: u32,
}

/// What every listener and cluster shares: the node's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// The relay's tunnel address (the read-only admin bridge listener binds it).
    pub relay: Ipv4Addr,
    /// The tunnel network: the only sources the admin bridge accepts.
    pub tunnel_network: super::Ipam,
    /// The uplinks' tunnel addresses, by ordinal.
    pub uplinks: Vec<Ipv4Addr>,
    /// Health checking.
    pub health_check: HealthCheck,
    /// Outlier detection, if on.
    pub outlier_detection: Option<OutlierDetection>,
    /// Whether the public listeners also accept IPv6 (`::`): the node lists an IPv6 public
    /// address.
    pub ipv6: bool,
    /// SO_RCVBUF/SO_SNDBUF of UDP listeners, in bytes.
    pub udp_socket_buffer: i64,
    /// File locations.
    pub layout: Layout,
}

/// Why an Envoy document could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    /// YAML serialization failed.
    #[error("serializing {what} to YAML: {source}")]
    Yaml {
        /// Which document.
        what: &'static str,
        /// The serializer's error.
        source: serde_yaml::Error,
    },
}

impl EnvoyError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Yaml { .. } => "EnvoyRenderFailed",
        }
    }
}

/// Prints a document as YAML.
pub(crate) fn to_yaml(what: &'static str, value: &serde_json::Value) -> Result<String, EnvoyError> {
    serde_yaml::to_string(value).map_err(|source| EnvoyError::Yaml { what, source })
}

/// An xDS file: `resources:` holding the given resources.
pub(crate) fn resources(items: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({ "resources": items })
}

/// A `config_source` reading a file in a watched directory.
pub(crate) fn file_source(path: &str, dir: &str) -> serde_json::Value {
    serde_json::json!({
        "path_config_source": {
            "path": path,
            "watched_directory": { "path": dir },
        },
        "resource_api_version": "V3",
    })
}
