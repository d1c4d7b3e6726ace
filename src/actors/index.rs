//! The reference index, pure: which EdgeNodes a Secret, a Service or a PortBinding concerns
//! (a LoadBalancer Service's own EdgeNode is chosen by [`crate::plan::load_balancer`]).
//! A change of any of them becomes a `Changed` in exactly those EdgeNodes' mailboxes.
//!
//! It is computed from the reflector stores' current contents at each event (a scan of the
//! EdgeNodes and PortBindings, which is cheap at the sizes an operator of VPSes sees), so it
//! can never disagree with the stores.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;

use crate::crd::{EdgeNode, PortBinding};
use crate::object_key::ObjectKey;
use crate::plan::load_balancer;

/// The EdgeNodes a PortBinding names (one, or several).
pub fn edge_nodes_of(pb: &PortBinding) -> Vec<ObjectKey> {
    pb.spec
        .edge_nodes(pb.metadata.namespace.as_deref().unwrap_or_default())
}

/// The PortBindings that name `node`.
pub fn port_bindings_of<'a>(
    node: &'a ObjectKey,
    port_bindings: &'a [impl AsRef<PortBinding>],
) -> impl Iterator<Item = &'a PortBinding> + 'a {
    port_bindings.iter().map(AsRef::as_ref).filter(move |pb| {
        pb.spec.names_edge_node(
            pb.metadata.namespace.as_deref().unwrap_or_default(),
            (&node.namespace, &node.name),
        )
    })
}

/// EdgeNodes that read Secret `secret`: as their SSH Secret, or through the TLS Secret of a
/// PortBinding or of a LoadBalancer Service (`load_balancers`: those served, with their
/// EdgeNode).
pub fn users_of_secret(
    secret: &ObjectKey,
    nodes: &[impl AsRef<EdgeNode>],
    port_bindings: &[impl AsRef<PortBinding>],
    load_balancers: &[(ObjectKey, &Service)],
) -> BTreeSet<ObjectKey> {
    let mut users: BTreeSet<ObjectKey> = nodes
        .iter()
        .map(AsRef::as_ref)
        .filter(|n| {
            let ns = n.metadata.namespace.as_deref().unwrap_or_default();
            let r = &n.spec.ssh.secret_ref;
            r.name == secret.name && r.namespace_or(ns) == secret.namespace
        })
        .map(ObjectKey::of)
        .collect();
    for pb in port_bindings.iter().map(AsRef::as_ref) {
        let ns = pb.metadata.namespace.as_deref().unwrap_or_default();
        let references = pb.spec.bindings.iter().any(|b| {
            b.tls
                .as_ref()
                .and_then(|t| t.secret_ref.as_ref())
                .is_some_and(|r| r.name == secret.name && r.namespace_or(ns) == secret.namespace)
        });
        if references {
            users.extend(edge_nodes_of(pb));
        }
    }
    for (node, svc) in load_balancers {
        if load_balancer::tls_secret_of(svc).as_ref() == Some(secret) {
            users.insert(node.clone());
        }
    }
    users
}

/// The Secrets a pass of `node` depends on: its SSH Secret and the TLS Secrets of `port_bindings`
/// and `services` (those it serves). The inverse of [`users_of_secret`].
pub fn secrets_of(
    node: &EdgeNode,
    port_bindings: &[impl AsRef<PortBinding>],
    services: &[impl AsRef<Service>],
) -> BTreeSet<ObjectKey> {
    let ns = node.metadata.namespace.as_deref().unwrap_or_default();
    let ssh = &node.spec.ssh.secret_ref;
    let mut secrets = BTreeSet::from([ObjectKey::new(ssh.namespace_or(ns), ssh.name.clone())]);
    for pb in port_bindings.iter().map(AsRef::as_ref) {
        let pb_ns = pb.metadata.namespace.as_deref().unwrap_or_default();
        for r in pb
            .spec
            .bindings
            .iter()
            .filter_map(|b| b.tls.as_ref()?.secret_ref.as_ref())
        {
            secrets.insert(ObjectKey::new(r.namespace_or(pb_ns), r.name.clone()));
        }
    }
    secrets.extend(
        services
            .iter()
            .filter_map(|s| load_balancer::tls_secret_of(s.as_ref())),
    );
    secrets
}

/// The TLS Secrets a translated source (a Gateway's) offloads.
pub fn tls_secrets_of_source(source: &crate::plan::SourceInput) -> Vec<ObjectKey> {
    source
        .spec
        .bindings
        .iter()
        .filter_map(|b| b.tls.as_ref()?.secret_ref.as_ref())
        .map(|r| ObjectKey::new(r.namespace_or(&source.namespace), r.name.clone()))
        .collect()
}

/// EdgeNodes with a binding whose target is Service `service`.
pub fn users_of_service(
    service: &ObjectKey,
    port_bindings: &[impl AsRef<PortBinding>],
) -> BTreeSet<ObjectKey> {
    port_bindings
        .iter()
        .map(AsRef::as_ref)
        .filter(|pb| {
            pb.spec.bindings.iter().any(|b| {
                b.target
                    .service
                    .as_ref()
                    .is_some_and(|s| s.name == service.name && s.namespace == service.namespace)
            })
        })
        .flat_map(edge_nodes_of)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn node(yaml: &str) -> Arc<EdgeNode> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    fn pb(yaml: &str) -> Arc<PortBinding> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    fn nodes() -> Vec<Arc<EdgeNode>> {
        vec![
            node(
                "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {name: a, namespace: team}\nspec:\n  address: 192.0.2.1\n  ssh: {secretRef: {name: vps-ssh}}\n",
            ),
            node(
                "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {name: b, namespace: other}\nspec:\n  address: 192.0.2.2\n  ssh: {secretRef: {name: vps-ssh}}\n",
            ),
        ]
    }

    fn bindings() -> Vec<Arc<PortBinding>> {
        vec![pb(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: web, namespace: apps}\nspec:\n  edgeNodeRef: {name: a, namespace: team}\n  bindings:\n  - name: https\n    protocol: TCP\n    listenPort: 443\n    tls: {mode: offload, secretRef: {name: web-tls}}\n    target: {service: {name: web, namespace: apps, port: 8443}}\n",
        )]
    }

    #[test]
    fn an_ssh_secret_concerns_only_the_nodes_of_its_namespace() {
        let users = users_of_secret(
            &ObjectKey::new("team", "vps-ssh"),
            &nodes(),
            &bindings(),
            &[],
        );
        assert_eq!(users, BTreeSet::from([ObjectKey::new("team", "a")]));
        let none = users_of_secret(
            &ObjectKey::new("apps", "vps-ssh"),
            &nodes(),
            &bindings(),
            &[],
        );
        assert!(none.is_empty());
    }

    #[test]
    fn a_tls_secret_and_a_target_service_reach_the_referenced_node() {
        let via_tls = users_of_secret(
            &ObjectKey::new("apps", "web-tls"),
            &nodes(),
            &bindings(),
            &[],
        );
        assert_eq!(via_tls, BTreeSet::from([ObjectKey::new("team", "a")]));
        let via_service = users_of_service(&ObjectKey::new("apps", "web"), &bindings());
        assert_eq!(via_service, BTreeSet::from([ObjectKey::new("team", "a")]));
        assert!(users_of_service(&ObjectKey::new("team", "web"), &bindings()).is_empty());
    }

    #[test]
    fn the_secrets_of_a_node_are_exactly_those_whose_users_include_it() {
        let (nodes, pbs) = (nodes(), bindings());
        let a = ObjectKey::new("team", "a");
        let secrets = secrets_of(&nodes[0], &pbs, &[] as &[Arc<Service>]);
        assert_eq!(
            secrets,
            BTreeSet::from([
                ObjectKey::new("team", "vps-ssh"),
                ObjectKey::new("apps", "web-tls")
            ])
        );
        for s in &secrets {
            assert!(users_of_secret(s, &nodes, &pbs, &[]).contains(&a), "{s}");
        }
    }

    #[test]
    fn port_bindings_are_matched_by_the_defaulted_namespace() {
        let pbs = bindings();
        let a = ObjectKey::new("team", "a");
        assert_eq!(port_bindings_of(&a, &pbs).count(), 1);
        let same_name_elsewhere = ObjectKey::new("apps", "a");
        assert_eq!(port_bindings_of(&same_name_elsewhere, &pbs).count(), 0);
    }
}
