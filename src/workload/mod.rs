//! The uplink workload of one EdgeNode, as Kubernetes objects: the StatefulSet whose pods dial
//! the VPS, its headless Service, the ConfigMap with the uplink document, the Secret with the
//! replicas' WireGuard keys, and the namespace they live in (DESIGN.md §4, "In the cluster").
//!
//! Pure builders: they take the EdgeNode's data and return objects; applying them is the
//! controller's job.

mod labels;
mod objects;
mod statefulset;

pub use labels::{OWNER_NAMESPACE_LABEL, labels, selector_labels};
pub use objects::{config_map, headless_service, keys_secret, namespace};
pub use statefulset::statefulset;

/// Port of each uplink's `/ready` endpoint (Envoy health-checks it through the tunnel).
pub const READY_PORT: i32 = 40500;
/// Port of each uplink's bridge to Envoy's admin interface on the relay.
pub const ADMIN_BRIDGE_PORT: i32 = 40600;
/// Key of the uplink document in the ConfigMap (mounted at `/etc/tunnel/uplink.json`).
pub const CONFIG_KEY: &str = "uplink.json";
/// Where the ConfigMap is mounted in the uplink container.
pub const CONFIG_DIR: &str = "/etc/tunnel";
/// Where the uplink container finds its own key (`priv-<ordinal>`, an in-memory `emptyDir`
/// that the init container filled).
pub const KEYS_DIR: &str = "/etc/wireguard/keys";
/// Where the init container (only) mounts the keys Secret with every replica's key.
pub const ALL_KEYS_DIR: &str = "/etc/wireguard/all-keys";

/// Names of the objects that make up one EdgeNode's uplink workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkNames {
    /// StatefulSet and headless Service: `<node>-uplink`.
    pub workload: String,
    /// ConfigMap: `<node>-uplink-config`.
    pub config_map: String,
    /// Secret with the replicas' private keys: `<node>-uplink-keys`.
    pub keys_secret: String,
    /// Secret with the relay's private key: `<node>-vps-key`.
    pub vps_key_secret: String,
}

impl UplinkNames {
    /// The names for the EdgeNode called `node`.
    pub fn for_node(node: &str) -> Self {
        Self {
            workload: format!("{node}-uplink"),
            config_map: format!("{node}-uplink-config"),
            keys_secret: format!("{node}-uplink-keys"),
            vps_key_secret: format!("{node}-vps-key"),
        }
    }
}

/// What the builders need to know about the EdgeNode.
#[derive(Debug, Clone)]
pub struct UplinkWorkload<'a> {
    /// The EdgeNode's name.
    pub node: &'a str,
    /// The EdgeNode's namespace (the uplink objects may live in another one).
    pub node_namespace: &'a str,
    /// The EdgeNode's `spec.uplink`.
    pub spec: &'a crate::crd::UplinkSpec,
    /// The uplink image, e.g. `ghcr.io/achetronic/tunnel/uplink:0.1.0`.
    pub image: &'a str,
    /// `LOG_FORMAT` and `LOG_LEVEL` passed to the uplink agent.
    pub log_format: &'a str,
    /// See `log_format`.
    pub log_level: &'a str,
}
