//! The uplink workload of one EdgeNode, as Kubernetes objects: the StatefulSet whose pods dial
//! the VPS, its headless Service, the ConfigMap with the uplink document, the Secret with the
//! replicas' WireGuard keys, and the namespace they live in (DESIGN.md §4, "In the cluster").
//!
//! The one owner of these objects: pure builders (the EdgeNode's data in, objects out) and
//! [`apply`](apply_workload) / [`delete`](delete_workload), called by the EdgeNode pass's
//! apply stage and its teardown. Names come from [`UplinkNames::for_node`], selectors from
//! [`selector_labels`]: both include the EdgeNode's namespace, so EdgeNodes of different
//! namespaces sharing an uplink namespace never touch each other's objects.

mod apply;
mod labels;
mod objects;
pub mod pod_policy;
mod pods;
mod statefulset;

pub use apply::{
    FIELD_MANAGER, StoredKeys, UplinkObjects, apply_keys, apply_workload, delete_workload,
    ensure_namespace, read_keys,
};
pub use labels::{OWNER_NAMESPACE_LABEL, labels, selector_labels};
pub use objects::{config_map, headless_service, keys_secret, namespace, relay_key_secret};
pub use pod_policy::{PolicyError, TenantPolicy, UplinkNamespaceRule};
pub use pods::{PodState, uplink_pods};
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

/// Longest StatefulSet name: its pods' `controller-revision-hash` label is
/// `<name>-<10-char hash>`, and a label value is at most 63 characters.
pub const MAX_WORKLOAD_NAME: usize = 52;
/// Characters of the readable part of [`UplinkNames::base`].
const READABLE: usize = MAX_WORKLOAD_NAME - "-uplink".len() - 1 - HASH_CHARS;
/// Hex characters of the namespace/name digest in [`UplinkNames::base`].
const HASH_CHARS: usize = 8;

/// Names of the objects that make up one EdgeNode's uplink workload.
///
/// EdgeNodes of several namespaces may share one uplink namespace, so every name starts with
/// a base that identifies the EdgeNode by namespace *and* name and stays within Kubernetes'
/// limits: `<readable>-<hash>`, where `hash` is the first 8 hex digits of SHA-256 of
/// `<namespace>/<name>` (`/` cannot occur in either, so the input is unambiguous) and
/// `readable` is `<name>-<namespace>` with dots as dashes, cut to 36 characters (trailing
/// `-` trimmed). The
/// StatefulSet (and headless Service) is then at most 52 characters, the longest a
/// StatefulSet may be; the others are longer but far below the 253 of ConfigMaps and Secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkNames {
    /// `<readable>-<hash>`, shared by every name below.
    pub base: String,
    /// StatefulSet and headless Service: `<base>-uplink`.
    pub workload: String,
    /// ConfigMap: `<base>-uplink-config`.
    pub config_map: String,
    /// Secret with the replicas' private keys: `<base>-uplink-keys`.
    pub keys_secret: String,
    /// Secret with the relay's private key: `<base>-vps-key`.
    pub vps_key_secret: String,
}

impl UplinkNames {
    /// The names for the EdgeNode `namespace/name`.
    pub fn for_node(namespace: &str, name: &str) -> Self {
        let digest = crate::hash::sha256_hex(format!("{namespace}/{name}").as_bytes());
        // A Service name is a DNS label: no dots (EdgeNode names may have them).
        let readable: String = format!("{name}-{namespace}")
            .chars()
            .map(|c| if c == '.' { '-' } else { c })
            .take(READABLE)
            .collect();
        let base = format!(
            "{}-{}",
            readable.trim_end_matches('-'),
            &digest[..HASH_CHARS]
        );
        Self {
            workload: format!("{base}-uplink"),
            config_map: format!("{base}-uplink-config"),
            keys_secret: format!("{base}-uplink-keys"),
            vps_key_secret: format!("{base}-vps-key"),
            base,
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
    /// Pod settings from the operator's flags (priority class, image pull Secrets).
    pub pod_options: &'a UplinkPodOptions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_names_in_two_namespaces_do_not_collide() {
        let a = UplinkNames::for_node("team-a", "edge-node");
        let b = UplinkNames::for_node("team-b", "edge-node");
        assert_ne!(a.workload, b.workload);
        assert_ne!(a.keys_secret, b.keys_secret);
        assert!(
            a.workload.starts_with("edge-node-team-a-"),
            "{}",
            a.workload
        );
        // Dashes cannot make two pairs meet.
        assert_ne!(
            UplinkNames::for_node("b-c", "a").base,
            UplinkNames::for_node("c", "a-b").base
        );
        assert_eq!(a, UplinkNames::for_node("team-a", "edge-node"), "stable");
    }

    #[test]
    fn longest_names_stay_within_limits() {
        let long = "a".repeat(253);
        let ns = "n".repeat(63);
        let names = UplinkNames::for_node(&ns, &long);
        assert!(
            names.workload.len() <= MAX_WORKLOAD_NAME,
            "{}",
            names.workload
        );
        for name in [
            &names.workload,
            &names.config_map,
            &names.keys_secret,
            &names.vps_key_secret,
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
        }
        // A dotted EdgeNode name (a DNS subdomain) still gives a valid Service name.
        let dotted = UplinkNames::for_node("default", "edge.example");
        assert!(
            dotted.workload.starts_with("edge-example-default-"),
            "{}",
            dotted.workload
        );
    }
}
