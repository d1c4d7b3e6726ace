//! The control plane (DESIGN.md §3): a supervision tree of ractor actors fed by kube-runtime
//! reflectors.
//!
//! ```text
//! Manager ─ reflectors: EdgeNodes, PortBindings, Secrets, Services, StatefulSets, grants,
//!           the API server's Service and EndpointSlices
//!   ├─ EdgeNode supervisor ─ EdgeNode actor per EdgeNode ─ SSH session actor
//!   ├─ PortBinding supervisor ─ PortBinding actor per PortBinding
//!   └─ LoadBalancer supervisor ─ LoadBalancer actor per Service of type LoadBalancer served
//! ```
//!
//! Messages and look-ups are in [`protocol`], the reflectors in [`watches`]. Each actor keeps
//! its decisions in a sans-IO core ([`edge_node::core`], [`restarts`],
//! [`conditions`], [`status`], [`index`], [`keys`]) and does I/O in a thin shell. Actors are
//! found by name (prefixed per Manager, since ractor's registry is process-wide), never by a
//! reference kept across a restart.

pub mod cert_watcher;
pub mod conditions;
pub mod dns_endpoint;
pub mod drain;
pub mod edge_health;
pub mod edge_node;
pub mod edge_probe;
pub mod edge_set;
pub mod error;
#[cfg(test)]
mod fake_sshd;
pub mod gateway;
pub mod gateway_api;
pub mod gateway_status;
pub mod grants;
pub mod index;
pub mod keys;
pub mod load_balancer;
pub mod manager;
pub mod port_binding;
pub mod protocol;
pub mod resolver;
pub mod restarts;
pub mod routes;
pub mod scoped_store;
pub mod secrets;
pub mod source_edges;
pub mod ssh_session;
pub mod ssh_slots;
pub mod status;
pub mod supervisor;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tree_tests;
pub mod watches;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::crd::{EdgeNode, PortBinding};
use crate::enroll::{Arch, Blob, EnvoyInstall};
use crate::object_key::ObjectKey;

/// The finalizer on EdgeNodes: the VPS is torn down before the object goes.
pub const FINALIZER: &str = "tunnel.achetronic.com/teardown";
/// Field manager of the EdgeNode status and of the objects EdgeNode actors write.
pub const EDGE_NODE_MANAGER: &str = crate::workload::FIELD_MANAGER;
/// Field manager of the PortBinding status.
pub const PORT_BINDING_MANAGER: &str = "tunnel-portbinding";
/// Field manager of the LoadBalancer actors (a Service's load-balancer status and our
/// finalizer on it).
pub const LOAD_BALANCER_MANAGER: &str = "tunnel-loadbalancer";

/// The watch caches every actor reads.
#[derive(Clone)]
pub struct Stores {
    /// EdgeNodes.
    pub edge_nodes: Store<EdgeNode>,
    /// PortBindings.
    pub port_bindings: Store<PortBinding>,
    /// Secrets, metadata only, in the watched namespaces (the data of those a pass reads is
    /// fetched: [`Context::secret_data`]).
    pub secrets: secrets::SecretMetadata,
    /// Services (targets), in the watched namespaces.
    pub services: scoped_store::ScopedStore<Service>,
    /// The uplink StatefulSets.
    pub stateful_sets: Store<StatefulSet>,
    /// ReferenceGrants (Gateway API's and our deprecated ones): which cross-namespace
    /// references each namespace allows.
    pub grants: grants::GrantStores,
    /// The API server's own addresses (never a target), watched whatever namespaces are.
    pub api_server: resolver::ApiServerStores,
    /// Gateway API's Gateways and routes, when the API server serves them.
    pub gateway_api: Option<gateway_api::GatewayStores>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("edge_nodes", &self.edge_nodes.state().len())
            .field("port_bindings", &self.port_bindings.state().len())
            .finish_non_exhaustive()
    }
}

/// What the operator carries to every VPS.
#[derive(Debug, Clone)]
pub struct Artefacts {
    /// The relay agent per architecture.
    pub tunnelctl: BTreeMap<Arch, Blob>,
    /// Envoy, pushed or downloaded.
    pub envoy: EnvoyInstall,
    /// The uplink image, `<repo>/uplink:<tag>`.
    pub uplink_image: String,
}

/// Shared by every actor of one tree.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The watch caches.
    pub stores: Stores,
    /// The Secrets passes read, with their data, by resourceVersion.
    pub secret_data: secrets::SecretData,
    /// Publishes Events.
    pub recorder: Recorder,
    /// What is pushed to the VPSes.
    pub artefacts: Artefacts,
    /// Period of the drift pass.
    pub resync: Duration,
    /// `--ssh-keepalive-interval`.
    pub ssh_keepalive: Duration,
    /// At most this many SSH passes at once, across EdgeNodes.
    pub ssh_slots: Arc<ssh_slots::SshSlots>,
    /// Prefix of every actor name of this tree.
    pub prefix: String,
    /// Retry and re-check delays of EdgeNode passes.
    pub schedule: edge_node::core::Schedule,
    /// Restart policy of the supervisors.
    pub restarts: restarts::RestartPolicy,
    /// Pod settings of the uplink pods from the flags (priority class, image pull Secrets).
    pub uplink_pod_options: crate::workload::UplinkPodOptions,
    /// `LOG_FORMAT` and `LOG_LEVEL` given to the uplink pods.
    pub uplink_log: (String, String),
    /// `--allow-restricted-targets`: targets may be loopback, link-local, cloud metadata, the
    /// tunnel network or the API server.
    pub allow_restricted_targets: bool,
    /// `--cross-namespace-targets`: whether target Services in other namespaces need a grant.
    pub cross_namespace_targets: crate::plan::CrossNamespaceTargets,
    /// Which LoadBalancer Services are ours (`--load-balancer-classless`).
    pub load_balancers: crate::plan::load_balancer::LoadBalancerSettings,
    /// The operator's metrics.
    pub metrics: crate::telemetry::metrics::Metrics,
    /// Shut when leader election may have moved on: no SSH job starts then (API writes are
    /// fenced in the client already).
    pub fence: crate::leader::fence::Fence,
    /// The check of each edge from outside: targets and verdicts ([`edge_probe`]).
    pub edges: Arc<edge_probe::EdgeBoard>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("prefix", &self.prefix)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The registered name of the `kind` actor for `key`.
    pub fn name(&self, kind: &str, key: &ObjectKey) -> String {
        format!("{}/{kind}/{}/{}", self.prefix, key.namespace, key.name)
    }

    /// The registered name of a singleton of this tree.
    pub fn singleton(&self, kind: &str) -> String {
        format!("{}/{kind}", self.prefix)
    }

    /// The planner's view of the caches for one pass (grants and the API server's addresses
    /// read once).
    pub fn resolver(&self) -> resolver::StoreResolver {
        resolver::StoreResolver::new(
            self.stores.services.clone(),
            &self.stores.grants,
            crate::plan::TargetPolicy {
                allow_restricted: self.allow_restricted_targets,
                api_server: self.stores.api_server.addresses(),
                tunnel_network: None,
                cross_namespace_targets: self.cross_namespace_targets,
            },
        )
    }

    /// The LoadBalancer Services EdgeNode `node` serves now (ours, not being deleted,
    /// choosing it).
    pub fn load_balancers_of(&self, node: &ObjectKey) -> Vec<Arc<Service>> {
        let nodes = self.stores.edge_nodes.state();
        let services = self.stores.services.state();
        crate::plan::load_balancer::served_by(node, &services, &nodes, self.load_balancers)
            .map(|s| Arc::new(s.clone()))
            .collect()
    }

    /// The Gateways EdgeNode `node` serves now, translated.
    pub fn gateways_of(&self, node: &ObjectKey) -> Vec<crate::plan::gateway::GatewaySource> {
        self.stores
            .gateway_api
            .as_ref()
            .map(|g| g.sources_of(node, &self.resolver()))
            .unwrap_or_default()
    }

    /// Every LoadBalancer Service of ours, once with each of its EdgeNodes (those that have
    /// some).
    pub fn load_balancers(&self) -> Vec<(ObjectKey, Arc<Service>)> {
        let nodes = self.stores.edge_nodes.state();
        self.stores
            .services
            .state()
            .into_iter()
            .filter(|s| {
                crate::plan::load_balancer::is_ours(s, self.load_balancers)
                    && s.metadata.deletion_timestamp.is_none()
            })
            .flat_map(|s| {
                crate::plan::load_balancer::edge_nodes_of(&s, &nodes)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |node| (node, s.clone()))
            })
            .collect()
    }

    /// The Secrets `keys` with their data (those that exist in a watched namespace).
    pub async fn secrets(
        &self,
        keys: &std::collections::BTreeSet<ObjectKey>,
    ) -> Result<BTreeMap<ObjectKey, Arc<Secret>>, secrets::SecretReadError> {
        self.secret_data
            .snapshot(&self.client, &self.stores.secrets, keys)
            .await
    }

    /// Publishes an Event on `object`; a failure is logged, never fatal.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(clip_note(note)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(reason, error = %e, "publishing an Event");
        }
    }
}

/// The API server refuses an Event whose note is longer than 1024 bytes (and the Event is
/// lost): long notes are cut at a character boundary, marked with `…`.
pub fn clip_note(mut note: String) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note;
    }
    let mut end = MAX - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

/// The Event reporter of this process.
pub fn reporter() -> Reporter {
    Reporter {
        controller: "tunnel".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_notes_fit_the_api_limit() {
        assert_eq!(super::clip_note("short".into()), "short");
        let long = "é".repeat(700);
        let clipped = super::clip_note(long);
        assert!(clipped.len() <= 1024 && clipped.ends_with('…'));
    }
}
