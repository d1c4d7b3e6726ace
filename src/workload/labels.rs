//! Labels of the uplink objects. Selector labels identify one EdgeNode's uplinks; the owner
//! label records the EdgeNode's namespace (owner references cannot cross namespaces).

use std::collections::BTreeMap;

/// Label naming the namespace of the EdgeNode that owns an uplink object.
pub const OWNER_NAMESPACE_LABEL: &str = "tunnel.achetronic.com/owner-namespace";

/// The labels that select one EdgeNode's uplink pods. User labels never override them.
pub fn selector_labels(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "uplink".to_string()),
        ("app.kubernetes.io/instance".to_string(), node.to_string()),
    ])
}

/// Every label of an uplink object: the selector labels, `managed-by`, and the owner.
pub fn labels(node: &str, node_namespace: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(node);
    labels.insert("app.kubernetes.io/managed-by".into(), "tunnel".into());
    labels.insert(OWNER_NAMESPACE_LABEL.into(), node_namespace.into());
    labels
}
