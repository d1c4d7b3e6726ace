//! Labels of the uplink objects. Selector labels identify one EdgeNode's uplinks; the owner
//! label records the EdgeNode's namespace (owner references cannot cross namespaces).

use std::collections::BTreeMap;

/// Label naming the namespace of the EdgeNode that owns an uplink object.
pub const OWNER_NAMESPACE_LABEL: &str = "tunnel.achetronic.com/owner-namespace";

/// The labels that select one EdgeNode's uplinks: its name and its namespace, so two
/// same-named EdgeNodes of different namespaces sharing an uplink namespace never select
/// each other's pods. User labels never override them. They are also how the operator
/// recognises its own objects ([`super::ownership`]).
pub fn selector_labels(node: &str, node_namespace: &str) -> BTreeMap<String, String> {
    owner_labels(
        node,
        node_namespace,
        &super::UplinkNames::for_node(node_namespace, node).base,
    )
}

/// The selector labels of the EdgeNode `node_namespace/node` whose names have `base` (that of
/// the current names, or of the legacy ones for objects an older operator made).
pub(super) fn owner_labels(
    node: &str,
    node_namespace: &str,
    base: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "uplink".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance(node, base),
        ),
        (
            OWNER_NAMESPACE_LABEL.to_string(),
            node_namespace.to_string(),
        ),
    ])
}

/// The `app.kubernetes.io/instance` value: the EdgeNode's name, or, when that is longer than
/// a label value may be (63), the names' `base` ([`super::UplinkNames`]), which is shorter.
fn instance(node: &str, base: &str) -> String {
    if node.len() <= 63 {
        node.to_string()
    } else {
        base.to_string()
    }
}

/// Every label of an uplink object: the selector labels (with the owner) and `managed-by`.
pub fn labels(node: &str, node_namespace: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(node, node_namespace);
    labels.insert("app.kubernetes.io/managed-by".into(), "tunnel".into());
    labels
}
