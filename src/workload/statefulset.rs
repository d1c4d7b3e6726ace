//! The uplink StatefulSet: one pod per replica, each owning one tunnel and one key.
//!
//! Least privilege (DESIGN.md §4, "Trust boundaries"; docs/security.md):
//! - a short-lived privileged init container (`uplink init`) turns on IPv4 forwarding in the
//!   pod's own network namespace (`/proc/sys` is read-only for anything unprivileged) and
//!   copies this replica's key, and only it, from the keys Secret into an in-memory
//!   `emptyDir`;
//! - the long-running `uplink` container has only `NET_ADMIN` (TUN device, netlink), no
//!   privilege escalation, seccomp `RuntimeDefault`, a read-only root file system, default
//!   resource requests and a memory limit, and mounts neither the keys Secret nor any other
//!   replica's key: a compromised agent holds one tunnel's key, not all of them;
//! - a liveness probe (`/healthz`) restarts a wedged agent; readiness stays `/ready`.
//!
//! A key is read once per pod: a changed key reaches a running replica by restarting it.
//!
//! Pod settings of the operator's flags (`--uplink-priority-class-name`,
//! `--uplink-image-pull-secrets`, `--uplink-node-selector`, `--uplink-tolerations`) come with
//! the workload ([`UplinkWorkload::pod_options`]) and apply to every uplink pod. The
//! EdgeNode's labels, annotations, tolerations, `nodeSelector` and `affinity` are added as
//! they are: the pass checked them against the operator's [`TenantPolicy`] first
//! ([`super::pod_policy::check`]); `nodeSelector` and `affinity` are taken only when the
//! policy allows placement from EdgeNodes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource, LocalObjectReference,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Toleration, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod_policy::TenantPolicy;
use super::{
    ADMIN_BRIDGE_PORT, ALL_KEYS_DIR, CONFIG_DIR, KEYS_DIR, READY_PORT, UplinkNames, UplinkWorkload,
    labels, selector_labels,
};

/// Default requests and limits when `spec.uplink.resources` is not set. No CPU limit: CFS
/// throttling would stall the packet loop in bursts; memory is what a hostile peer could try
/// to grow, and it is capped.
fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("50m")),
            ("memory".to_string(), q("32Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q("256Mi"))])),
        ..ResourceRequirements::default()
    }
}

/// The long-running agent: `NET_ADMIN` only, nothing else.
fn agent_security_context() -> SecurityContext {
    SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            add: Some(vec!["NET_ADMIN".into()]),
            drop: Some(vec!["ALL".into()]),
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Pod settings that come from the operator's flags, not from the EdgeNode, and what the
/// operator takes from the EdgeNode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UplinkPodOptions {
    /// `priorityClassName` of the uplink pods.
    pub priority_class_name: Option<String>,
    /// `imagePullSecrets` of the uplink pods (Secret names in the uplink namespace).
    pub image_pull_secrets: Vec<String>,
    /// `nodeSelector` entries of every uplink pod (an EdgeNode may add others).
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of every uplink pod (an EdgeNode's allowed ones are added).
    pub tolerations: Vec<Toleration>,
    /// What the operator takes from an EdgeNode's `spec.uplink`.
    pub tenant: TenantPolicy,
}

/// Applies `options` to an uplink pod spec.
pub fn apply_pod_options(pod: &mut PodSpec, options: &UplinkPodOptions) {
    pod.priority_class_name
        .clone_from(&options.priority_class_name);
    pod.image_pull_secrets = (!options.image_pull_secrets.is_empty()).then(|| {
        options
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    });
}

/// The StatefulSet for the EdgeNode described by `w`, with its pod options.
pub fn statefulset(w: &UplinkWorkload<'_>) -> StatefulSet {
    let mut sts = statefulset_base(w);
    if let Some(pod) = sts.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        apply_pod_options(pod, w.pod_options);
    }
    sts
}

fn statefulset_base(w: &UplinkWorkload<'_>) -> StatefulSet {
    let names = UplinkNames::for_node(w.node_namespace, w.node);
    // User labels first, then ours: a user label can never break the selector.
    let mut pod_labels: BTreeMap<String, String> = w.spec.labels.clone();
    pod_labels.extend(labels(w.node, w.node_namespace));
    let placement = w.pod_options.tenant.placement;
    let affinity = w
        .spec
        .affinity
        .clone()
        .filter(|_| placement)
        .unwrap_or_else(|| default_affinity(w.node, w.node_namespace));
    let mut node_selector = w.pod_options.node_selector.clone();
    if placement {
        for (k, v) in &w.spec.node_selector {
            node_selector.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let tolerations: Vec<Toleration> = w
        .pod_options
        .tolerations
        .iter()
        .chain(&w.spec.tolerations)
        .cloned()
        .collect();

    let env = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    };
    let pod_name = EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // Short-lived and privileged: forwarding on in the pod's namespace, this replica's key
    // copied out of the Secret. It runs the agent's own binary (the image has no shell).
    let init = Container {
        name: "init".into(),
        image: Some(w.image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "init".into(),
            "--keys-from".into(),
            ALL_KEYS_DIR.into(),
            "--keys-to".into(),
            KEYS_DIR.into(),
        ]),
        env: Some(vec![
            pod_name.clone(),
            env("LOG_FORMAT", w.log_format),
            env("LOG_LEVEL", w.log_level),
        ]),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            read_only_root_filesystem: Some(true),
            ..SecurityContext::default()
        }),
        resources: Some(default_resources()),
        volume_mounts: Some(vec![
            mount("all-keys", ALL_KEYS_DIR, true),
            mount("key", KEYS_DIR, false),
        ]),
        ..Container::default()
    };
    let container = Container {
        name: "uplink".into(),
        image: Some(w.image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![
            pod_name,
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
        // Restarts an agent whose observer stopped publishing (see the uplink's /healthz).
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::Int(READY_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        resources: Some(w.spec.resources.clone().unwrap_or_else(default_resources)),
        // The agent creates a TUN device and programs NAT in the pod's own network namespace:
        // NET_ADMIN, and /dev/net/tun, nothing more. Forwarding was turned on by `init`.
        security_context: Some(agent_security_context()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("key", KEYS_DIR, true),
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
                match_labels: Some(selector_labels(w.node, w.node_namespace)),
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
                    init_containers: Some(vec![init]),
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    affinity: Some(affinity),
                    node_selector: (!node_selector.is_empty()).then_some(node_selector),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
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
                            name: "all-keys".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.keys_secret.clone()),
                                default_mode: Some(0o400),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        // This replica's key only, in memory, written by `init`.
                        Volume {
                            name: "key".into(),
                            empty_dir: Some(EmptyDirVolumeSource {
                                medium: Some("Memory".into()),
                                size_limit: Some(Quantity("1Mi".into())),
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
/// Weight of the default anti-affinity: the scheduler's highest, so spreading outweighs the
/// other scores whenever another node can take the pod.
const SPREAD_WEIGHT: i32 = 100;

/// Without `spec.uplink.affinity`: replicas *prefer* distinct nodes (`kubernetes.io/hostname`).
/// Preferred, not required: on a cluster with fewer nodes than replicas the extra replicas
/// still run beside the others (a second tunnel on the same node survives a pod restart or a
/// rolling update, and `replicas: 2` on a one-node k3s or kind cluster runs instead of staying
/// Pending); where nodes exist, the scheduler spreads them. The strict form (one per node, the
/// rest Pending and named so in `UplinksReady`) is an explicit `affinity` with the same term
/// under `requiredDuringSchedulingIgnoredDuringExecution` (docs/user-guide.md, Placement).
fn default_affinity(node: &str, node_namespace: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: SPREAD_WEIGHT,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(node, node_namespace)),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_options_reach_the_pod_spec() {
        let spec: crate::crd::UplinkSpec = serde_json::from_str("{}").unwrap();
        let w = UplinkWorkload {
            node: "edge-node",
            node_namespace: "default",
            spec: &spec,
            image: "ghcr.io/achetronic/tunnel/uplink:0.1.0",
            log_format: "json",
            log_level: "info",
            pod_options: &UplinkPodOptions::default(),
        };
        let mut sts = statefulset_base(&w);
        let pod = sts
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .unwrap();
        assert!(pod.priority_class_name.is_none() && pod.image_pull_secrets.is_none());
        apply_pod_options(
            pod,
            &UplinkPodOptions {
                priority_class_name: Some("edge-critical".into()),
                image_pull_secrets: vec!["regcred".into(), "mirror".into()],
                ..UplinkPodOptions::default()
            },
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("edge-critical"));
        let secrets: Vec<&str> = pod
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(secrets, ["regcred", "mirror"]);
        apply_pod_options(pod, &UplinkPodOptions::default());
        assert!(pod.priority_class_name.is_none() && pod.image_pull_secrets.is_none());
    }

    #[test]
    fn the_operators_placement_comes_first_and_the_edge_nodes_only_when_allowed() {
        let spec: crate::crd::UplinkSpec = serde_yaml::from_str(
            "{nodeSelector: {zone: a, pool: mine}, tolerations: [{key: dedicated, operator: Exists}], affinity: {}}",
        )
        .unwrap();
        let mut options = UplinkPodOptions {
            node_selector: BTreeMap::from([("pool".into(), "edge".into())]),
            tolerations: vec![Toleration {
                key: Some("edge".into()),
                operator: Some("Exists".into()),
                ..Toleration::default()
            }],
            ..UplinkPodOptions::default()
        };
        let pod_of = |options: &UplinkPodOptions| {
            let w = UplinkWorkload {
                node: "edge-node",
                node_namespace: "default",
                spec: &spec,
                image: "uplink",
                log_format: "json",
                log_level: "info",
                pod_options: options,
            };
            statefulset(&w).spec.unwrap().template.spec.unwrap()
        };
        let pod = pod_of(&options);
        let selector = pod.node_selector.unwrap();
        assert_eq!(selector["pool"], "edge", "the operator's value holds");
        assert_eq!(selector["zone"], "a");
        let keys: Vec<_> = pod
            .tolerations
            .unwrap()
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert_eq!(keys, [Some("edge".into()), Some("dedicated".into())]);
        assert_eq!(pod.affinity, Some(Affinity::default()), "the EdgeNode's");
        options.tenant.placement = false;
        let pod = pod_of(&options);
        assert_eq!(
            pod.node_selector.unwrap(),
            BTreeMap::from([("pool".into(), "edge".into())])
        );
        assert_eq!(pod.affinity, Some(default_affinity("edge-node", "default")));
    }

    #[test]
    fn by_default_replicas_prefer_distinct_nodes_but_may_share_one() {
        let spec: crate::crd::UplinkSpec = serde_json::from_str("{}").unwrap();
        let w = UplinkWorkload {
            node: "edge-node",
            node_namespace: "default",
            spec: &spec,
            image: "uplink",
            log_format: "json",
            log_level: "info",
            pod_options: &UplinkPodOptions::default(),
        };
        let anti = statefulset(&w)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none(),
            "nothing required: replicas: 2 runs on a one-node cluster"
        );
        let [preferred] = anti
            .preferred_during_scheduling_ignored_during_execution
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(preferred.weight, 100);
        let term = preferred.pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        assert_eq!(
            term.label_selector.unwrap().match_labels.unwrap(),
            selector_labels("edge-node", "default"),
            "this EdgeNode's replicas only"
        );
    }
}
