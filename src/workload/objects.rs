//! The small objects around the StatefulSet: namespace, headless Service, ConfigMap, keys
//! Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{CONFIG_KEY, UplinkNames, UplinkWorkload, labels, selector_labels};

/// The uplink namespace, created when missing. It admits privileged pods: the uplink pod's
/// short-lived init container is privileged (IP forwarding in the pod's own network
/// namespace) and the agent mounts `/dev/net/tun` from the host; the agent itself runs with
/// `NET_ADMIN` only.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "tunnel".to_string(),
                ),
                (
                    "pod-security.kubernetes.io/enforce".to_string(),
                    "privileged".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn meta(w: &UplinkWorkload<'_>, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(w.spec.namespace.clone()),
        labels: Some(labels(w.node, w.node_namespace)),
        ..ObjectMeta::default()
    }
}

/// The headless Service that gives each uplink pod a stable DNS name.
pub fn headless_service(w: &UplinkWorkload<'_>) -> Service {
    Service {
        metadata: meta(w, UplinkNames::for_node(w.node_namespace, w.node).workload),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(w.node, w.node_namespace)),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The ConfigMap holding the uplink document shared by every replica.
pub fn config_map(w: &UplinkWorkload<'_>, uplink_document: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(
            w,
            UplinkNames::for_node(w.node_namespace, w.node).config_map,
        ),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            uplink_document.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

/// The Secret holding each replica's private key as `priv-<ordinal>` (base64 WireGuard keys).
pub fn keys_secret(w: &UplinkWorkload<'_>, private_keys: &BTreeMap<u32, String>) -> Secret {
    Secret {
        metadata: meta(
            w,
            UplinkNames::for_node(w.node_namespace, w.node).keys_secret,
        ),
        type_: Some("Opaque".into()),
        data: Some(
            private_keys
                .iter()
                .map(|(ordinal, key)| {
                    (
                        format!("priv-{ordinal}"),
                        ByteString(key.clone().into_bytes()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The Secret holding the relay's private key (the VPS's WireGuard identity), kept in the
/// cluster so the VPS's key survives a re-enrollment.
pub fn relay_key_secret(w: &UplinkWorkload<'_>, data: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta(
            w,
            UplinkNames::for_node(w.node_namespace, w.node).vps_key_secret,
        ),
        type_: Some("Opaque".into()),
        string_data: Some(data.clone()),
        ..Secret::default()
    }
}
