//! The Manager's routing of EdgeNode events, of the events of sources (PortBindings,
//! LoadBalancer Services) and of the uplink StatefulSets' status, pure (DESIGN.md §3, one
//! route per kind of change): from what the Manager saw of an object before and what it sees
//! now, which actors hear of it. Our own writes change nothing the routes look at (generation,
//! annotations, deletion, the EdgeNode a PortBinding points at; of an uplink StatefulSet only
//! the pod counts the StatefulSet controller writes), so they never loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::crd::{EdgeNode, PortBinding};
use crate::object_key::ObjectKey;
use crate::workload::UplinkNames;

use super::edge_node::core::Seen;
use super::index;

/// What of an EdgeNode triggers a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    /// `metadata.generation` (the spec).
    pub generation: Option<i64>,
    /// The annotations (restart-envoy, skip-deprovision).
    pub annotations: BTreeMap<String, String>,
    /// Being deleted.
    pub deleting: bool,
}

impl NodeSeen {
    /// How `node` is now.
    pub fn of(node: &EdgeNode) -> Self {
        Self {
            generation: node.metadata.generation,
            annotations: node.metadata.annotations.clone().unwrap_or_default(),
            deleting: node.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Where an EdgeNode event goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeRoute {
    /// To its supervisor: spawn the actor, or tell it (a pass).
    pub upsert: bool,
    /// Its PortBindings' actors decide again on their own (it started being deleted).
    pub port_bindings_again: bool,
}

/// The route of an EdgeNode seen `now`, `before` being what was seen last (`None`: new).
pub fn edge_node(before: Option<&NodeSeen>, now: &NodeSeen) -> NodeRoute {
    if before == Some(now) {
        return NodeRoute::default();
    }
    NodeRoute {
        upsert: true,
        // A new EdgeNode's first pass answers its PortBindings itself.
        port_bindings_again: before.is_some_and(|b| b.deleting != now.deleting),
    }
}

/// What of a source triggers a pass: its version and its EdgeNodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSeen {
    /// A PortBinding's `metadata.generation` (the spec); a Service's
    /// [`crate::plan::load_balancer::version`].
    pub generation: Option<i64>,
    /// The EdgeNodes it names.
    pub edge_nodes: BTreeSet<ObjectKey>,
}

impl SourceSeen {
    /// How `pb` is now.
    pub fn of(pb: &PortBinding) -> Self {
        Self {
            generation: pb.metadata.generation,
            edge_nodes: index::edge_nodes_of(pb).into_iter().collect(),
        }
    }
}

/// The EdgeNodes told of a source seen `now` (`None`: gone, or no longer served by any), and
/// how it is for each; `before` is what was seen last (`None`: new, or not served).
pub fn source(before: Option<&SourceSeen>, now: Option<&SourceSeen>) -> Vec<(ObjectKey, Seen)> {
    if before == now {
        return Vec::new();
    }
    let mut tell = Vec::new();
    if let Some(b) = before {
        // It went, or left some of its EdgeNodes: those close its ports.
        for node in &b.edge_nodes {
            if now.is_none_or(|n| !n.edge_nodes.contains(node)) {
                tell.push((node.clone(), Seen::Gone));
            }
        }
    }
    if let Some(n) = now {
        tell.extend(
            n.edge_nodes
                .iter()
                .map(|node| (node.clone(), Seen::Present(n.generation))),
        );
    }
    tell
}

/// Where a PortBinding event goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortBindingRoute {
    /// The EdgeNodes told, and how the PortBinding is for each.
    pub tell: Vec<(ObjectKey, Seen)>,
    /// To its supervisor: its own actor writes its status.
    pub upsert: bool,
}

/// The route of a PortBinding seen `now` (`before`: what was seen last, `None`: new).
pub fn port_binding(before: Option<&SourceSeen>, now: &SourceSeen) -> PortBindingRoute {
    if before == Some(now) {
        return PortBindingRoute::default();
    }
    PortBindingRoute {
        tell: source(before, Some(now)),
        upsert: true,
    }
}

/// The EdgeNodes told of a PortBinding that is gone (`before`: what was seen last).
pub fn port_binding_gone(before: Option<&SourceSeen>) -> Vec<(ObjectKey, Seen)> {
    source(before, None)
}

/// What of an uplink StatefulSet's status follows its pods as `UplinksReady` counts them (a
/// pod counts when it runs and is not being deleted): the StatefulSet controller (v1.34,
/// `computeReplicaStatus`) rewrites these as its pods change. A pod being deleted drops
/// `currentReplicas`/`updatedReplicas` at once (they skip terminating pods) and
/// `readyReplicas` when its container stops; a pod gone drops `replicas`; its replacement
/// raises `replicas`, `currentReplicas`/`updatedReplicas` when created and `readyReplicas`
/// when its `/ready` answers. Left out on purpose: `observedGeneration` and the revisions
/// (they follow our own writes of the spec, and the pods they replace move the counts
/// anyway), `availableReplicas` (`readyReplicas` after `minReadySeconds`, 0 for ours: the
/// same update), the conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkSetSeen {
    /// `status.replicas`: pods created (terminating ones too).
    pub replicas: i32,
    /// `status.readyReplicas`: pods running and Ready.
    pub ready: i32,
    /// `status.currentReplicas`: pods of the current revision, not being deleted.
    pub current: i32,
    /// `status.updatedReplicas`: pods of the update revision, not being deleted.
    pub updated: i32,
}

impl UplinkSetSeen {
    /// How `sts`'s pods are now, as its status says (no status: none yet).
    pub fn of(sts: &StatefulSet) -> Self {
        sts.status.as_ref().map_or_else(Self::default, |s| Self {
            replicas: s.replicas,
            ready: s.ready_replicas.unwrap_or_default(),
            current: s.current_replicas.unwrap_or_default(),
            updated: s.updated_replicas.unwrap_or_default(),
        })
    }
}

/// Whether an uplink StatefulSet seen `now` runs a pass of its EdgeNode, `before` being what
/// was seen last (`None`: new, or the operator just started). Only a change of its pod counts
/// does: our own apply of its spec changes metadata, spec and generation, never these, so a
/// pass never causes the next; a pass follows each pod change the controller reports, no
/// more. A StatefulSet seen first runs none: it was there before the first pass that reads it
/// (start-up, a relist), or that pass made it.
pub fn uplink_set_changed(before: Option<&UplinkSetSeen>, now: &UplinkSetSeen) -> bool {
    before.is_some_and(|b| b != now)
}

/// The EdgeNodes among `nodes` whose uplink StatefulSet is `sts`: those whose uplink
/// namespace and workload name it has (the name holds a 64-bit digest of the EdgeNode's
/// namespace and name, [`UplinkNames`]).
pub fn owners_of_uplink_set(sts: &ObjectKey, nodes: &[Arc<EdgeNode>]) -> Vec<ObjectKey> {
    nodes
        .iter()
        .filter(|node| node.spec.uplink.namespace == sts.namespace)
        .map(|node| ObjectKey::of(node.as_ref()))
        .filter(|node| UplinkNames::for_node(&node.namespace, &node.name).workload == sts.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(generation: i64, annotations: &[(&str, &str)], deleting: bool) -> NodeSeen {
        NodeSeen {
            generation: Some(generation),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            deleting,
        }
    }

    fn pb(generation: i64, edge_nodes: &str) -> SourceSeen {
        SourceSeen {
            generation: Some(generation),
            edge_nodes: edge_nodes
                .split(',')
                .map(|n| ObjectKey::new("team", n))
                .collect(),
        }
    }

    #[test]
    fn our_own_status_write_routes_nowhere() {
        // A status write changes neither the generation, the annotations nor the deletion.
        let seen = node(3, &[("a", "b")], false);
        assert_eq!(edge_node(Some(&seen), &seen.clone()), NodeRoute::default());
        assert_eq!(
            port_binding(Some(&pb(2, "edge")), &pb(2, "edge")),
            PortBindingRoute::default()
        );
    }

    #[test]
    fn an_edge_node_change_is_one_upsert_and_leaves_its_port_bindings_alone() {
        let before = node(3, &[], false);
        for now in [
            node(4, &[], false),
            node(3, &[("tunnel.achetronic.com/restart-envoy", "true")], false),
        ] {
            assert_eq!(
                edge_node(Some(&before), &now),
                NodeRoute {
                    upsert: true,
                    port_bindings_again: false
                }
            );
        }
        // New: its first pass answers its PortBindings.
        assert_eq!(
            edge_node(None, &before),
            NodeRoute {
                upsert: true,
                port_bindings_again: false
            }
        );
        // Being deleted: its PortBindings decide again on their own.
        assert_eq!(
            edge_node(Some(&before), &node(3, &[], true)),
            NodeRoute {
                upsert: true,
                port_bindings_again: true
            }
        );
    }

    #[test]
    fn every_port_binding_change_reaches_its_edge_nodes_the_same_way() {
        let edge = ObjectKey::new("team", "edge");
        let other = ObjectKey::new("team", "other");
        assert_eq!(
            port_binding(None, &pb(1, "edge")).tell,
            [(edge.clone(), Seen::Present(Some(1)))]
        );
        assert_eq!(
            port_binding(Some(&pb(1, "edge")), &pb(2, "edge")).tell,
            [(edge.clone(), Seen::Present(Some(2)))]
        );
        let moved = port_binding(Some(&pb(2, "edge")), &pb(3, "other"));
        assert_eq!(
            moved.tell,
            [
                (edge.clone(), Seen::Gone),
                (other.clone(), Seen::Present(Some(3)))
            ]
        );
        assert!(moved.upsert);
        assert_eq!(
            port_binding_gone(Some(&pb(3, "edge"))),
            [(edge.clone(), Seen::Gone)]
        );
        assert_eq!(port_binding_gone(None), []);
        // Several EdgeNodes: each hears; one left closes its ports, one added opens them.
        assert_eq!(
            port_binding(Some(&pb(3, "edge")), &pb(3, "edge,other")).tell,
            [
                (edge.clone(), Seen::Present(Some(3))),
                (other.clone(), Seen::Present(Some(3)))
            ]
        );
        assert_eq!(
            port_binding(Some(&pb(3, "edge,other")), &pb(4, "other")).tell,
            [
                (edge.clone(), Seen::Gone),
                (other.clone(), Seen::Present(Some(4)))
            ]
        );
        assert_eq!(
            port_binding_gone(Some(&pb(4, "edge,other"))),
            [(edge, Seen::Gone), (other, Seen::Gone)]
        );
    }

    #[test]
    fn a_service_that_stops_being_served_is_gone_for_its_edge_node() {
        let edge = ObjectKey::new("team", "edge");
        let other = ObjectKey::new("team", "other");
        // No longer ours (class, type, deletion), or no EdgeNode any more: `now` is None.
        assert_eq!(
            source(Some(&pb(7, "edge")), None),
            [(edge.clone(), Seen::Gone)]
        );
        assert_eq!(source(None, None), []);
        // The default moved to another EdgeNode.
        assert_eq!(
            source(Some(&pb(7, "edge")), Some(&pb(7, "other"))),
            [(edge, Seen::Gone), (other.clone(), Seen::Present(Some(7)))]
        );
        assert_eq!(source(Some(&pb(7, "other")), Some(&pb(7, "other"))), []);
        assert_eq!(
            source(None, Some(&pb(8, "other"))),
            [(other, Seen::Present(Some(8)))]
        );
    }

    fn set(status: &str) -> StatefulSet {
        serde_yaml::from_str(&format!(
            "metadata: {{name: s, namespace: tunnel, generation: 3}}\nstatus: {status}\n"
        ))
        .unwrap()
    }

    #[test]
    fn only_a_change_of_the_pod_counts_of_a_known_uplink_set_runs_a_pass() {
        let healthy = UplinkSetSeen::of(&set(
            "{replicas: 2, readyReplicas: 2, availableReplicas: 2, currentReplicas: 2, updatedReplicas: 2, observedGeneration: 3}",
        ));
        assert_eq!(
            healthy,
            UplinkSetSeen {
                replicas: 2,
                ready: 2,
                current: 2,
                updated: 2
            }
        );
        // A user deletes a pod: the controller's updates as the pod terminates, goes, and its
        // replacement is created and becomes Ready. Each is a pass.
        let steps = [
            "{replicas: 2, readyReplicas: 2, currentReplicas: 1, updatedReplicas: 1}",
            "{replicas: 2, readyReplicas: 1, currentReplicas: 1, updatedReplicas: 1}",
            "{replicas: 1, readyReplicas: 1, currentReplicas: 1, updatedReplicas: 1}",
            "{replicas: 2, readyReplicas: 1, currentReplicas: 2, updatedReplicas: 2}",
            "{replicas: 2, readyReplicas: 2, currentReplicas: 2, updatedReplicas: 2}",
        ];
        let mut before = healthy;
        for step in steps {
            let now = UplinkSetSeen::of(&set(step));
            assert!(uplink_set_changed(Some(&before), &now), "{step}");
            before = now;
        }
        // Our own apply: a new generation, then the controller's observedGeneration, a new
        // update revision and availableReplicas, counts unchanged: no pass, so no loop.
        let ours = UplinkSetSeen::of(&set(
            "{replicas: 2, readyReplicas: 2, availableReplicas: 1, currentReplicas: 2, updatedReplicas: 2, observedGeneration: 4, updateRevision: s-abc}",
        ));
        assert!(!uplink_set_changed(Some(&healthy), &ours));
        // Seen first (start-up, a relist into an empty memory, or the pass that created it):
        // the first pass reads it anyway.
        assert!(!uplink_set_changed(None, &healthy));
        // No status yet is no pods.
        assert_eq!(UplinkSetSeen::of(&set("null")), UplinkSetSeen::default());
        assert!(uplink_set_changed(
            Some(&UplinkSetSeen::default()),
            &healthy
        ));
    }

    #[test]
    fn an_uplink_set_reaches_only_the_edge_node_it_belongs_to() {
        let node = |namespace: &str, name: &str, uplinks: &str| {
            Arc::new(crate::actors::testing::edge_node(&format!(
                "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  address: 203.0.113.10\n  ssh: {{secretRef: {{name: vps-ssh}}}}\n  uplink: {{namespace: {uplinks}}}\n"
            )))
        };
        let nodes = [
            node("team-a", "edge", "tunnel"),
            node("team-b", "edge", "tunnel"),
            node("team-a", "other", "tunnel"),
            node("team-c", "edge", "elsewhere"),
        ];
        let workload = |ns: &str, name: &str| UplinkNames::for_node(ns, name).workload;
        assert_eq!(
            owners_of_uplink_set(
                &ObjectKey::new("tunnel", workload("team-b", "edge")),
                &nodes
            ),
            [ObjectKey::new("team-b", "edge")]
        );
        // Its name in another namespace than the EdgeNode's uplink namespace: not its own.
        assert_eq!(
            owners_of_uplink_set(
                &ObjectKey::new("elsewhere", workload("team-a", "edge")),
                &nodes
            ),
            []
        );
        assert_eq!(
            owners_of_uplink_set(
                &ObjectKey::new("elsewhere", workload("team-c", "edge")),
                &nodes
            ),
            [ObjectKey::new("team-c", "edge")]
        );
        assert_eq!(
            owners_of_uplink_set(&ObjectKey::new("tunnel", "stranger-uplink"), &nodes),
            []
        );
    }
}
