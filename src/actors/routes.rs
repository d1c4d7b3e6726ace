//! The Manager's routing of EdgeNode events and of the events of sources (PortBindings,
//! LoadBalancer Services), pure (DESIGN.md §3, one route per
//! kind of change): from what the Manager saw of an object before and what it sees now, which
//! actors hear of it. Our own status writes change nothing the routes look at (generation,
//! annotations, deletion, the EdgeNode a PortBinding points at), so they never loop.

use std::collections::BTreeMap;

use crate::crd::{EdgeNode, PortBinding};
use crate::object_key::ObjectKey;

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

/// What of a source triggers a pass: its version and its EdgeNode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSeen {
    /// A PortBinding's `metadata.generation` (the spec); a Service's
    /// [`crate::plan::load_balancer::version`].
    pub generation: Option<i64>,
    /// The EdgeNode it points at.
    pub edge_node: ObjectKey,
}

impl SourceSeen {
    /// How `pb` is now.
    pub fn of(pb: &PortBinding) -> Self {
        Self {
            generation: pb.metadata.generation,
            edge_node: index::edge_node_of(pb),
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
    if let Some(b) = before
        && now.is_none_or(|n| n.edge_node != b.edge_node)
    {
        // It went or moved: the EdgeNode it left closes its ports.
        tell.push((b.edge_node.clone(), Seen::Gone));
    }
    if let Some(n) = now {
        tell.push((n.edge_node.clone(), Seen::Present(n.generation)));
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

/// The EdgeNode told of a PortBinding that is gone (`before`: what was seen last).
pub fn port_binding_gone(before: Option<&SourceSeen>) -> Option<(ObjectKey, Seen)> {
    source(before, None).into_iter().next()
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

    fn pb(generation: i64, edge_node: &str) -> SourceSeen {
        SourceSeen {
            generation: Some(generation),
            edge_node: ObjectKey::new("team", edge_node),
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
            [(edge.clone(), Seen::Gone), (other, Seen::Present(Some(3)))]
        );
        assert!(moved.upsert);
        assert_eq!(
            port_binding_gone(Some(&pb(3, "edge"))),
            Some((edge, Seen::Gone))
        );
        assert_eq!(port_binding_gone(None), None);
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
}
