//! The uplink StatefulSet: one pod per replica, each owning one tunnel and one key.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity,
    PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ADMIN_BRIDGE_PORT, CONFIG_DIR, KEYS_DIR, READY_PORT, UplinkNames, UplinkWorkload, labels,
    selector_labels,
};

/// The StatefulSet for the EdgeNode described by `w`.
pub fn statefulset(w: &UplinkWorkload<'_>) -> StatefulSet {
    let names = UplinkNames::for_node(w.node);
    // User labels first, then ours: a user label can never break the selector.
    let mut pod_labels: BTreeMap<String, String> = w.spec.labels.clone();
    pod_labels.extend(labels(w.node, w.node_namespace));
    let affinity = w
        .spec
        .affinity
        .clone()
        .unwrap_or_else(|| default_affinity(w.node));

    let env = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    };
    let container = Container {
        name: "uplink".into(),
        image: Some(w.image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            env("LOG_FORMAT", w.log_format),
            env("LOG_LEVEL", w.log_level),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("ready".into()),
                container_port: READY_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: ADMIN_BRIDGE_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(READY_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        resources: w.spec.resources.clone(),
        // The agent creates a TUN device, programs NAT and enables forwarding in the pod's
        // own network namespace; /proc/sys is only writable for privileged containers.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "keys".into(),
                mount_path: KEYS_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tun".into(),
                mount_path: "/dev/net/tun".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };

    StatefulSet {
        metadata: ObjectMeta {
            name: Some(names.workload.clone()),
            namespace: Some(w.spec.namespace.clone()),
            labels: Some(labels(w.node, w.node_namespace)),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(w.spec.replicas),
            service_name: Some(names.workload.clone()),
            // Replicas are independent tunnels: start and replace them in parallel.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(w.node)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!w.spec.annotations.is_empty())
                        .then(|| w.spec.annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    affinity: Some(affinity),
                    node_selector: (!w.spec.node_selector.is_empty())
                        .then(|| w.spec.node_selector.clone()),
                    tolerations: (!w.spec.tolerations.is_empty())
                        .then(|| w.spec.tolerations.clone()),
                    automount_service_account_token: Some(false),
                    // Long enough for the agent's drain (503 on /ready, Envoy ejects it).
                    termination_grace_period_seconds: Some(30),
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: names.config_map.clone(),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "keys".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.keys_secret.clone()),
                                default_mode: Some(0o400),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "tun".into(),
                            host_path: Some(HostPathVolumeSource {
                                path: "/dev/net/tun".into(),
                                type_: Some("CharDevice".into()),
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// One uplink per node: a node failure takes out at most one tunnel.
fn default_affinity(node: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(node)),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}
