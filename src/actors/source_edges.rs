//! The edges of one source of bindings as its actor sees them: for each EdgeNode it names,
//! whether it may use it at all (exists, granted), the EdgeNode pass's last report, its public
//! addresses, the check from outside and its drain annotation — the input of
//! [`super::edge_set::compose`], read from the tree's caches.

use std::collections::BTreeMap;

use kube::runtime::reflector::ObjectRef;

use crate::object_key::ObjectKey;
use crate::plan::bindings::may_use_edge_node;
use crate::plan::{SourceKey, SourceKind};

use super::Context;
use super::edge_set::{self, EdgeInput, EdgeView};
use super::protocol::{self, BindingMsg, NodeMsg};
use super::status::SourceReport;

/// Asks each EdgeNode of `nodes` that `source` may use (granted; those not granted are never
/// asked) for what its last pass said of it: a (re)started actor, or one told of a change the
/// Manager already told those EdgeNodes of.
pub fn ask_reports(ctx: &Context, source: &SourceKey, nodes: &[ObjectKey]) {
    let resolver = ctx.resolver();
    for node in nodes {
        let granted = may_use_edge_node(
            &resolver,
            source.kind,
            &source.key.namespace,
            (&node.namespace, &node.name),
        );
        if granted.is_ok()
            && let Some(actor) = protocol::edge_node(ctx, node)
        {
            let _ = actor.send_message(NodeMsg::ReportWanted(source.clone()));
        }
    }
}

/// What a source's actor does with a message about its edges `nodes`: a change asks them for
/// their last reports ([`ask_reports`]); a report is kept ([`keep_report`]).
pub fn heard(
    ctx: &Context,
    reports: &mut BTreeMap<ObjectKey, SourceReport>,
    source: &SourceKey,
    nodes: &[ObjectKey],
    message: BindingMsg,
) {
    match message {
        // The Manager told the EdgeNodes of the change itself; this only asks for what their
        // last passes said.
        BindingMsg::Changed => {
            keep_report(reports, nodes, None);
            ask_reports(ctx, source, nodes);
        }
        BindingMsg::Report(report) => keep_report(reports, nodes, Some(report)),
    }
}

/// Keeps `report` as the last word of its EdgeNode when that is one of `nodes`, and forgets
/// the reports of EdgeNodes no longer named.
pub fn keep_report(
    reports: &mut BTreeMap<ObjectKey, SourceReport>,
    nodes: &[ObjectKey],
    report: Option<SourceReport>,
) {
    reports.retain(|node, _| nodes.contains(node));
    if let Some(report) = report.filter(|r| nodes.contains(&r.node)) {
        reports.insert(report.node.clone(), report);
    }
}

/// The edges `nodes` of source `kind` in `namespace`, with `reports` (by EdgeNode); `missing`
/// words the refusal of an EdgeNode that does not exist.
pub fn gather(
    ctx: &Context,
    kind: SourceKind,
    namespace: &str,
    nodes: &[ObjectKey],
    reports: &BTreeMap<ObjectKey, SourceReport>,
    missing: impl Fn(&ObjectKey) -> (String, String),
) -> Vec<EdgeInput> {
    let resolver = ctx.resolver();
    nodes
        .iter()
        .map(|key| {
            let found = ctx
                .stores
                .edge_nodes
                .get(&ObjectRef::new(&key.name).within(&key.namespace))
                .filter(|n| n.metadata.deletion_timestamp.is_none());
            let granted =
                may_use_edge_node(&resolver, kind, namespace, (&key.namespace, &key.name));
            let view = match (&granted, &found) {
                // Whatever the message: not granted says nothing of the EdgeNode.
                (Err(refusal), _) => EdgeView::Refused {
                    reason: refusal.reason.as_str().to_owned(),
                    message: refusal.message.clone(),
                },
                (Ok(()), None) => {
                    let (reason, message) = missing(key);
                    EdgeView::Refused { reason, message }
                }
                (Ok(()), Some(_)) => reports
                    .get(key)
                    .cloned()
                    .map_or(EdgeView::Waiting, EdgeView::Reported),
            };
            let visible = granted.is_ok();
            EdgeInput {
                node: key.clone(),
                view,
                addresses: found
                    .as_deref()
                    .filter(|_| visible)
                    .map(edge_set::public_addresses)
                    .unwrap_or_default(),
                outside: ctx.edges.outside(key),
                draining: found.as_deref().is_some_and(edge_set::is_draining),
            }
        })
        .collect()
}
