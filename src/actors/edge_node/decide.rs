//! The decide stage of a pass, pure: from what the gather stage read, everything the pass
//! will write. The WireGuard keys (kept, or generated when missing), the plan (the renderer,
//! [`plan::plan`], is called here and nowhere else in a pass), the uplink objects, the VPS's
//! desired state, one report per PortBinding and the facts the status is made of. Nothing here
//! touches the API or the network; the table tests below check what a pass writes for given
//! specs and stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt;

use crate::crd::{ANNOTATION_RESTART_ENVOY, EdgeNode, PortBinding, UplinkStatus};
use crate::enroll::{Carried, DesiredState, HostTuning, Request};
use crate::hash::sha256_hex;
use crate::object_key::ObjectKey;
use crate::plan::{
    self, Layout, NodeInput, PlanInput, Resolver, SourceInput, SourceKey, load_balancer,
};
use crate::workload::{self, StoredKeys, UplinkNames, UplinkObjects, UplinkWorkload};

use super::super::Artefacts;
use super::super::error::ReconcileError;
use super::super::keys;
use super::super::status::SourceReport;

/// What the pass needs besides the EdgeNode and its inputs: the operator's settings.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// The uplink image, the relay agent and Envoy.
    pub artefacts: &'a Artefacts,
    /// `LOG_FORMAT` and `LOG_LEVEL` of the uplink pods.
    pub uplink_log: (&'a str, &'a str),
    /// Pod settings of the uplink pods from the flags.
    pub pod_options: &'a crate::workload::UplinkPodOptions,
}

/// The inputs of one pass that the decide stage reads.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The EdgeNode.
    pub node: &'a EdgeNode,
    /// The key Secrets as they are.
    pub stored_keys: &'a StoredKeys,
    /// The PortBindings that point at the EdgeNode.
    pub port_bindings: &'a [Arc<PortBinding>],
    /// The LoadBalancer Services it serves.
    pub services: &'a [Arc<Service>],
    /// The Gateways it serves, translated.
    pub gateways: &'a [super::super::gateway_api::SourceInput],
}

/// What a pass writes.
#[derive(Debug)]
pub struct Decision {
    /// Key Secrets that changed: written even when the rest of the pass stops, so the keys a
    /// later pass finds are the ones decided now.
    pub key_writes: Vec<Secret>,
    /// The rest, or why the pass stops here.
    pub outcome: Result<Planned, Refused>,
}

/// Why a pass stops before the uplink workload, with what the PortBindings learn.
#[derive(Debug)]
pub struct Refused {
    /// The error.
    pub error: ReconcileError,
    /// One report per PortBinding when a plan was made (empty otherwise).
    pub reports: BTreeMap<SourceKey, SourceReport>,
}

/// A pass that has a plan.
#[derive(Debug)]
pub struct Planned {
    /// The uplink workload to apply.
    pub workload: UplinkObjects,
    /// What the VPS gets, or why it cannot be assembled (the workload is applied anyway).
    pub desired: Result<Box<DesiredState>, ReconcileError>,
    /// Requests of this pass (restart Envoy).
    pub request: Request,
    /// The facts the status is made of.
    pub facts: PassFacts,
    /// One report per PortBinding of the EdgeNode.
    pub reports: BTreeMap<SourceKey, SourceReport>,
}

/// What a converge pass knows before SSH and writes into the status after it.
#[derive(Debug, Clone, PartialEq)]
pub struct PassFacts {
    /// The relay's public key.
    pub relay_public: String,
    /// Each uplink's tunnel address and public key.
    pub uplinks: Vec<UplinkStatus>,
    /// Hash of the plan.
    pub plan_hash: String,
    /// Each source the plan serves (`namespace/name`, `Service namespace/name`).
    pub applied: Vec<String>,
    /// TLS Secrets whose private keys go to the VPS (`namespace/name`).
    pub private_keys_on_edge: Vec<String>,
    /// Uplink replicas.
    pub replicas: usize,
    /// The restart-envoy annotation was set (and no drain holds it).
    pub restart_requested: bool,
    /// The restart-envoy annotation was set, but a drain holds it.
    pub restart_held: bool,
}

/// Decides a pass.
pub fn decide(inputs: &Inputs<'_>, resolver: &dyn Resolver, settings: &Settings<'_>) -> Decision {
    let node = inputs.node;
    let key = ObjectKey::of(node);
    let uplink_ns = node.spec.uplink.namespace.clone();
    let replicas = u32::try_from(node.spec.uplink.replicas.max(1)).unwrap_or(1);
    let names = UplinkNames::for_node(&key.namespace, &key.name);
    let refused = |error: ReconcileError| Decision {
        key_writes: Vec::new(),
        outcome: Err(Refused {
            error,
            reports: BTreeMap::new(),
        }),
    };
    // What the tenant asks of its uplink pods, before anything is written: a refused
    // setting leaves the running uplinks and the VPS as they are.
    let options = settings.pod_options;
    if let Err(e) = workload::pod_policy::check(
        &options.tenant,
        &options.node_selector,
        &key.namespace,
        &node.spec.uplink,
    ) {
        return refused(e.into());
    }
    let key_set = match keys::reconcile(
        &format!("{uplink_ns}/{}", names.vps_key_secret),
        inputs.stored_keys.relay.as_ref(),
        &format!("{uplink_ns}/{}", names.keys_secret),
        inputs.stored_keys.uplinks.as_ref(),
        replicas,
    ) {
        Ok(k) => k,
        Err(e) => return refused(e.into()),
    };
    let w = UplinkWorkload {
        node: &key.name,
        node_namespace: &key.namespace,
        spec: &node.spec.uplink,
        image: &settings.artefacts.uplink_image,
        log_format: settings.uplink_log.0,
        log_level: settings.uplink_log.1,
        pod_options: settings.pod_options,
    };
    let mut key_writes = Vec::new();
    // Keys adopted from the legacy names are written under the current ones, unchanged.
    if key_set.relay_changed || inputs.stored_keys.relay_from_legacy {
        key_writes.push(workload::relay_key_secret(&w, &key_set.relay_secret));
    }
    if key_set.uplink_changed || inputs.stored_keys.uplinks_from_legacy {
        key_writes.push(workload::keys_secret(&w, &key_set.uplink_private));
    }
    let outcome =
        plan_node(inputs, &key, &key_set, &w, resolver, settings, replicas).map_err(|e| *e);
    Decision {
        key_writes,
        outcome,
    }
}

fn plan_node(
    inputs: &Inputs<'_>,
    key: &ObjectKey,
    key_set: &keys::KeySet,
    w: &UplinkWorkload<'_>,
    resolver: &dyn Resolver,
    settings: &Settings<'_>,
    replicas: u32,
) -> Result<Planned, Box<Refused>> {
    let node = inputs.node;
    let input = PlanInput {
        node: NodeInput {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            spec: node.spec.clone(),
        },
        sources: inputs
            .port_bindings
            .iter()
            .map(|pb| SourceInput::of(pb, &key.namespace))
            .chain(
                inputs
                    .services
                    .iter()
                    .map(|svc| load_balancer::source(svc, key, &node.spec.address)),
            )
            .chain(inputs.gateways.iter().map(|g| g.input.clone()))
            .collect(),
        keys: key_set.keys.clone(),
        layout: Layout::default(),
    };
    let plan = plan::plan(&input, resolver).map_err(|e| {
        Box::new(Refused {
            error: e.into(),
            reports: BTreeMap::new(),
        })
    })?;
    let versions = inputs
        .port_bindings
        .iter()
        .map(|pb| {
            (
                SourceKey::port_binding(ObjectKey::of(pb.as_ref())),
                pb.metadata.generation,
            )
        })
        .chain(inputs.services.iter().map(|svc| {
            (
                SourceKey::service(ObjectKey::of(svc.as_ref())),
                Some(load_balancer::version(svc)),
            )
        }))
        .chain(inputs.gateways.iter().map(|g| {
            (
                SourceKey::gateway(ObjectKey::new(g.namespace.clone(), g.name.clone())),
                g.version,
            )
        }));
    let reports = versions
        .map(|(source, generation)| {
            let (ns, name) = (&source.key.namespace, &source.key.name);
            let report = SourceReport {
                node: key.clone(),
                generation,
                node_problem: None,
                outcomes: plan.outcomes_of(source.kind, ns, name).cloned().collect(),
                ports: plan.served_ports(source.kind, ns, name),
            };
            (source, report)
        })
        .collect();
    let workload = UplinkObjects {
        namespace: node.spec.uplink.namespace.clone(),
        config_map: workload::config_map(w, &plan.uplink_file.contents),
        service: workload::headless_service(w),
        statefulset: workload::statefulset(w),
        config_hash: sha256_hex(plan.uplink_file.contents.as_bytes()),
        replicas: node.spec.uplink.replicas,
    };
    let carried = Carried {
        tunnelctl: settings.artefacts.tunnelctl.clone(),
        envoy: settings.artefacts.envoy.clone(),
        host: HostTuning::from(&node.spec.host),
    };
    let desired = DesiredState::from_rendered(
        plan.vps_files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_bytes())),
        carried,
    )
    .map(Box::new)
    .map_err(ReconcileError::Desired);
    // A drain holds the restart (and its annotation) until its connections ended.
    let restart_asked = node
        .annotations()
        .get(ANNOTATION_RESTART_ENVOY)
        .map(String::as_str)
        == Some("true");
    let restart_requested = restart_asked && crate::actors::drain::may_proceed(node);
    let facts = PassFacts {
        relay_public: key_set.keys.relay_private.public_key().to_string(),
        uplinks: plan
            .uplink_addresses
            .iter()
            .zip(&key_set.keys.uplink_public)
            .enumerate()
            .map(|(ordinal, (ip, public))| UplinkStatus {
                ordinal: i32::try_from(ordinal).unwrap_or(i32::MAX),
                tunnel_ip: ip.to_string(),
                public_key: public.to_string(),
            })
            .collect(),
        plan_hash: plan.hashes.plan.clone(),
        applied: plan.applied_sources.clone(),
        private_keys_on_edge: plan
            .private_keys_on_edge
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect(),
        replicas: usize::try_from(replicas).unwrap_or(1),
        restart_requested,
        restart_held: restart_asked && !restart_requested,
    };
    Ok(Planned {
        workload,
        desired,
        request: Request {
            restart_envoy: restart_requested,
        },
        facts,
        reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};

    use crate::enroll::{Arch, Blob, EnvoyInstall};
    use crate::plan::StaticResolver;
    use crate::plan::outcome::Reason;

    fn node(extra_spec: &str, annotations: &str) -> EdgeNode {
        serde_yaml::from_str(&format!(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: edge, namespace: team, generation: 3{annotations}}}\nspec:\n  address: 203.0.113.10\n  ssh: {{secretRef: {{name: vps-ssh}}}}\n{extra_spec}"
        ))
        .unwrap()
    }

    fn pb(name: &str, port: u16, service: &str) -> Arc<PortBinding> {
        Arc::new(
            serde_yaml::from_str(&format!(
                "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: {name}, namespace: team, generation: 2}}\nspec:\n  edgeNodeRef: {{name: edge}}\n  bindings:\n  - name: main\n    protocol: TCP\n    listenPort: {port}\n    target: {{service: {{name: {service}, namespace: team, port: 8080}}}}\n"
            ))
            .unwrap(),
        )
    }

    fn artefacts() -> Artefacts {
        Artefacts {
            tunnelctl: BTreeMap::from([(Arch::X86_64, Blob::new(b"relay".to_vec()))]),
            envoy: EnvoyInstall::Push {
                version: "1.40.0".into(),
                binaries: BTreeMap::from([(Arch::X86_64, Blob::new(b"envoy".to_vec()))]),
            },
            uplink_image: "registry.example/uplink:1".into(),
        }
    }

    fn resolver() -> StaticResolver {
        StaticResolver::default().with_service(
            "team",
            "web",
            Some(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))),
            &[8080],
        )
    }

    fn run(node: &EdgeNode, stored: &StoredKeys, pbs: &[Arc<PortBinding>]) -> Decision {
        let artefacts = artefacts();
        let settings = Settings {
            artefacts: &artefacts,
            uplink_log: ("json", "info"),
            pod_options: &crate::workload::UplinkPodOptions::default(),
        };
        let inputs = Inputs {
            node,
            stored_keys: stored,
            port_bindings: pbs,
            services: &[],
            gateways: &[],
        };
        decide(&inputs, &resolver(), &settings)
    }

    fn names(secrets: &[Secret]) -> Vec<(String, String)> {
        secrets
            .iter()
            .map(|s| {
                (
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The keys a first pass wrote, as the next pass reads them back.
    fn stored_after(first: &Decision) -> StoredKeys {
        let read = |s: &Secret| -> BTreeMap<String, String> {
            s.string_data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(
                    s.data
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap())),
                )
                .collect()
        };
        StoredKeys {
            relay: Some(read(&first.key_writes[0])),
            uplinks: Some(read(&first.key_writes[1])),
            ..StoredKeys::default()
        }
    }

    #[test]
    fn a_first_pass_writes_both_key_secrets_the_workload_and_one_report_per_port_binding() {
        let node = node("", "");
        let d = run(&node, &StoredKeys::default(), &[pb("web", 80, "web")]);
        let uplink = UplinkNames::for_node("team", "edge");
        assert_eq!(
            names(&d.key_writes),
            [
                ("tunnel".to_owned(), uplink.vps_key_secret.clone()),
                ("tunnel".to_owned(), uplink.keys_secret.clone())
            ]
        );
        let planned = d.outcome.unwrap();
        let w = &planned.workload;
        assert_eq!(w.namespace, "tunnel");
        assert_eq!(
            w.statefulset.metadata.name.as_deref(),
            Some(uplink.workload.as_str())
        );
        assert_eq!(
            w.config_map.metadata.name.as_deref(),
            Some(uplink.config_map.as_str())
        );
        assert_eq!(
            w.service.metadata.name.as_deref(),
            Some(uplink.workload.as_str())
        );
        assert_eq!(w.config_hash.len(), 64);
        let report = &planned.reports[&SourceKey::port_binding(ObjectKey::new("team", "web"))];
        assert_eq!(report.generation, Some(2));
        assert_eq!(report.ports, "80/TCP");
        assert!(report.outcomes.iter().all(|o| o.refusal.is_none()));
        assert_eq!(planned.facts.applied, ["team/web"]);
        assert_eq!(planned.facts.uplinks.len(), 1, "the default replicas");
        assert!(planned.desired.is_ok());
        assert!(!planned.request.restart_envoy);
    }

    #[test]
    fn a_pass_over_stored_keys_writes_no_key_and_keeps_the_relay_identity() {
        let node = node("", "");
        let first = run(&node, &StoredKeys::default(), &[]);
        let relay_public = first.outcome.as_ref().unwrap().facts.relay_public.clone();
        let again = run(&node, &stored_after(&first), &[]);
        assert!(again.key_writes.is_empty(), "nothing changed");
        let facts = &again.outcome.unwrap().facts;
        assert_eq!(facts.relay_public, relay_public);
        assert!(facts.applied.is_empty());
    }

    #[test]
    fn keys_adopted_from_the_legacy_names_are_written_unchanged_under_the_current_ones() {
        let node = node("", "");
        let first = run(&node, &StoredKeys::default(), &[]);
        let relay_public = first.outcome.as_ref().unwrap().facts.relay_public.clone();
        let uplinks = first.outcome.as_ref().unwrap().facts.uplinks.clone();
        let adopted = StoredKeys {
            relay_from_legacy: true,
            uplinks_from_legacy: true,
            ..stored_after(&first)
        };
        let migrated = run(&node, &adopted, &[]);
        let uplink = UplinkNames::for_node("team", "edge");
        assert_eq!(
            names(&migrated.key_writes),
            [
                ("tunnel".to_owned(), uplink.vps_key_secret.clone()),
                ("tunnel".to_owned(), uplink.keys_secret.clone())
            ]
        );
        assert_eq!(
            stored_after(&migrated),
            stored_after(&first),
            "the same keys"
        );
        let facts = &migrated.outcome.unwrap().facts;
        assert_eq!(
            facts.relay_public, relay_public,
            "the VPS keeps its identity"
        );
        assert_eq!(facts.uplinks, uplinks, "and its peers");
    }

    #[test]
    fn outcomes_reach_each_port_binding_and_only_planned_ones_are_applied() {
        let node = node("", "");
        let pbs = [
            pb("web", 80, "web"),
            pb("gone", 81, "missing"),
            pb("late", 80, "web"),
        ];
        let planned = run(&node, &StoredKeys::default(), &pbs).outcome.unwrap();
        assert_eq!(planned.reports.len(), 3);
        let missing = &planned.reports[&SourceKey::port_binding(ObjectKey::new("team", "gone"))];
        assert_eq!(missing.ports, "");
        assert!(matches!(
            missing.outcomes[0].refusal.as_ref().map(|r| r.reason),
            Some(Reason::ServiceNotFound)
        ));
        // Neither has a creation time: namespace/name decides, and team/late < team/web.
        let late = &planned.reports[&SourceKey::port_binding(ObjectKey::new("team", "late"))];
        let web = &planned.reports[&SourceKey::port_binding(ObjectKey::new("team", "web"))];
        assert_eq!(late.ports, "80/TCP");
        assert!(matches!(
            web.outcomes[0].refusal.as_ref().map(|r| r.reason),
            Some(Reason::PortConflict)
        ));
        assert_eq!(planned.facts.applied, ["team/late"]);
    }

    #[test]
    fn a_plan_error_still_writes_the_keys_and_tells_no_port_binding() {
        let node = node("  tunnel: {network: 10.200.0.0/31}\n", "");
        let d = run(&node, &StoredKeys::default(), &[pb("web", 80, "web")]);
        assert_eq!(d.key_writes.len(), 2, "the keys decided now are kept");
        let refused = d.outcome.unwrap_err();
        assert_eq!(refused.error.category(), "TunnelNetworkTooSmall");
        assert!(refused.reports.is_empty());
    }

    #[test]
    fn a_refused_uplink_setting_stops_the_pass_before_anything_is_written() {
        let node = node(
            "  uplink: {annotations: {k8s.v1.cni.cncf.io/networks: mgmt}}\n",
            "",
        );
        let d = run(&node, &StoredKeys::default(), &[pb("web", 80, "web")]);
        assert!(d.key_writes.is_empty(), "not even the keys");
        let refused = d.outcome.unwrap_err();
        assert_eq!(refused.error.category(), "UplinkPodSettingRefused");
        assert!(
            refused
                .error
                .to_string()
                .contains("spec.uplink.annotations[\"k8s.v1.cni.cncf.io/networks\"]"),
            "{}",
            refused.error
        );
    }

    #[test]
    fn a_corrupt_stored_key_stops_the_pass_before_anything_is_written() {
        let node = node("", "");
        let stored = StoredKeys {
            relay: Some(BTreeMap::from([(
                "priv".to_owned(),
                "not a key".to_owned(),
            )])),
            ..StoredKeys::default()
        };
        let d = run(&node, &stored, &[]);
        assert!(d.key_writes.is_empty());
        assert_eq!(d.outcome.unwrap_err().error.category(), "InvalidKey");
    }

    #[test]
    fn replicas_and_the_restart_annotation_reach_what_is_written() {
        let node = node(
            "  uplink: {replicas: 3}\n",
            ", annotations: {tunnel.achetronic.com/restart-envoy: \"true\"}",
        );
        let planned = run(&node, &StoredKeys::default(), &[]).outcome.unwrap();
        assert_eq!(planned.facts.uplinks.len(), 3);
        assert_eq!(planned.facts.replicas, 3);
        assert_eq!(planned.workload.replicas, 3);
        assert_eq!(
            planned
                .workload
                .statefulset
                .spec
                .as_ref()
                .and_then(|s| s.replicas),
            Some(3)
        );
        assert!(planned.request.restart_envoy && planned.facts.restart_requested);
    }
}
