//! The decide stage of a pass, pure: from what the gather stage read, everything the pass
//! will write. The WireGuard keys (kept, or generated when missing), the plan (the renderer,
//! [`plan::plan`], is called here and nowhere else in a pass), the uplink objects, the VPS's
//! desired state, one report per PortBinding and the facts the status is made of. Nothing here
//! touches the API or the network; the table tests below check what a pass writes for given
//! specs and stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::crd::{ANNOTATION_RESTART_ENVOY, EdgeNode, PortBinding, UplinkStatus};
use crate::enroll::{Carried, DesiredState, HostTuning, Request};
use crate::hash::sha256_hex;
use crate::object_key::ObjectKey;
use crate::plan::{self, Layout, NodeInput, PlanInput, PortBindingInput, Resolver};
use crate::workload::{self, StoredKeys, UplinkNames, UplinkObjects, UplinkWorkload};

use super::super::Artefacts;
use super::super::error::ReconcileError;
use super::super::keys;
use super::super::status::PortBindingReport;

/// What the pass needs besides the EdgeNode and its inputs: the operator's settings.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// The uplink image, the relay agent and Envoy.
    pub artefacts: &'a Artefacts,
    /// `LOG_FORMAT` and `LOG_LEVEL` of the uplink pods.
    pub uplink_log: (&'a str, &'a str),
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
    pub reports: BTreeMap<ObjectKey, PortBindingReport>,
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
    pub reports: BTreeMap<ObjectKey, PortBindingReport>,
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
    /// `namespace/name` of each PortBinding the plan serves.
    pub applied: Vec<String>,
    /// TLS Secrets whose private keys go to the VPS (`namespace/name`).
    pub private_keys_on_edge: Vec<String>,
    /// Uplink replicas.
    pub replicas: usize,
    /// The restart-envoy annotation was set.
    pub restart_requested: bool,
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
    };
    let mut key_writes = Vec::new();
    if key_set.relay_changed {
        key_writes.push(workload::relay_key_secret(&w, &key_set.relay_secret));
    }
    if key_set.uplink_changed {
        key_writes.push(workload::keys_secret(&w, &key_set.uplink_private));
    }
    let outcome =
        plan_pass(inputs, &key, &key_set, &w, resolver, settings, replicas).map_err(|e| *e);
    Decision {
        key_writes,
        outcome,
    }
}

fn plan_pass(
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
        port_bindings: inputs
            .port_bindings
            .iter()
            .map(|pb| PortBindingInput::of(pb, &key.namespace))
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
    let reports = inputs
        .port_bindings
        .iter()
        .map(|pb| {
            let pb_key = ObjectKey::of(pb.as_ref());
            let report = PortBindingReport {
                generation: pb.metadata.generation,
                node_problem: None,
                outcomes: plan
                    .outcomes_of(&pb_key.namespace, &pb_key.name)
                    .cloned()
                    .collect(),
                ports: plan.served_ports(&pb_key.namespace, &pb_key.name),
            };
            (pb_key, report)
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
    let restart_requested = node
        .annotations()
        .get(ANNOTATION_RESTART_ENVOY)
        .map(String::as_str)
        == Some("true");
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
        applied: plan.applied_port_bindings.clone(),
        private_keys_on_edge: plan
            .private_keys_on_edge
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect(),
        replicas: usize::try_from(replicas).unwrap_or(1),
        restart_requested,
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
