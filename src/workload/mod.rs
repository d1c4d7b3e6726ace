//! The uplink workload of one EdgeNode, as Kubernetes objects: the StatefulSet whose pods dial
//! the VPS, its headless Service, the ConfigMap with the uplink document, the Secret with the
//! replicas' WireGuard keys, and the namespace they live in (DESIGN.md §4, "In the cluster").
//!
//! The one owner of these objects: pure builders (the EdgeNode's data in, objects out) and
//! [`read_existing`] / [`apply`](apply_workload) / [`delete`](delete_workload), called by the
//! EdgeNode pass's gather and apply stages and its teardown. Names come from
//! [`UplinkNames::for_node`], selectors from [`selector_labels`]: both include the EdgeNode's
//! namespace, so EdgeNodes of different namespaces sharing an uplink namespace never touch each
//! other's objects; and an object under one of its names is used only if its labels say it is
//! the EdgeNode's own ([`owns`]).

mod apply;
mod labels;
mod names;
mod objects;
mod ownership;
pub mod pod_policy;
mod pods;
mod rollout;
mod statefulset;

pub use apply::{
    FIELD_MANAGER, StoredKeys, UplinkObjects, apply_config, apply_keys, apply_workload,
    ensure_namespace,
};
pub use labels::{OWNER_NAMESPACE_LABEL, labels, selector_labels};
pub use names::{MAX_WORKLOAD_NAME, UplinkNames};
pub use objects::{config_map, headless_service, keys_secret, namespace, relay_key_secret};
pub use ownership::{
    Existing, ExistingError, Found, Kind, LeftAlone, delete_owned, delete_workload, owns,
    read_existing,
};
pub use pod_policy::{PolicyError, TenantPolicy, UplinkNamespaceRule};
pub use pods::{PodState, uplink_pods};
pub use rollout::Unblock;
pub use statefulset::{UplinkPodOptions, apply_pod_options, statefulset};

/// Port of each uplink's `/ready` endpoint (Envoy health-checks it through the tunnel).
pub const READY_PORT: i32 = 40500;
/// Port of each uplink's bridge to Envoy's admin interface on the relay.
pub const ADMIN_BRIDGE_PORT: i32 = 40600;
/// Key of the uplink document in the ConfigMap (mounted at `/etc/tunnel/uplink.json`).
pub const CONFIG_KEY: &str = "uplink.json";
/// On each uplink pod: the hash of the configuration it should have. The operator sets it when
/// the configuration changes, so the kubelet refreshes the ConfigMap volume at once.
pub const CONFIG_HASH_ANNOTATION: &str = "tunnel.achetronic.com/uplink-config";
/// Where the ConfigMap is mounted in the uplink container.
pub const CONFIG_DIR: &str = "/etc/tunnel";
/// Where the uplink container finds its own key (`priv-<ordinal>`, an in-memory `emptyDir`
/// that the init container filled).
pub const KEYS_DIR: &str = "/etc/wireguard/keys";
/// Where the init container (only) mounts the keys Secret with every replica's key.
pub const ALL_KEYS_DIR: &str = "/etc/wireguard/all-keys";

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
    /// Pod settings from the operator's flags (priority class, image pull Secrets).
    pub pod_options: &'a UplinkPodOptions,
}
