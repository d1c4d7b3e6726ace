//! The `ReferenceGrant` resource (in the style of Gateway API's ReferenceGrant): a namespace's
//! consent to be referenced from another namespace. Tunnel honours a reference that crosses a
//! namespace boundary (a PortBinding's TLS Secret, an EdgeNode's SSH Secret, a PortBinding's
//! EdgeNode, a Service) only when a grant in the *referenced* namespace allows it; a
//! same-namespace reference needs nothing.
//!
//! [`reference_allowed`] is the whole decision, pure: the operator lists the grants (from its
//! reflector), the planner and the EdgeNode actor ask.
//!
//! This kind is deprecated (its CRD version is `deprecated`, with a `deprecationWarning` that
//! `kubectl` prints on every request for it, naming the replacement and the command): Gateway API's own `ReferenceGrant` replaces it
//! ([`super::gateway_reference_grant`]; `tunnel migrate-grants` converts,
//! [`super::grant_migration`]). It is still honoured until its removal.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Allows objects of the listed kinds in the listed namespaces to reference objects of the
/// listed kinds in this grant's namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "tunnel.achetronic.com",
    version = "v1alpha1",
    kind = "ReferenceGrant",
    plural = "referencegrants",
    shortname = "tgrant",
    namespaced,
    deprecated = "tunnel.achetronic.com/v1alpha1 ReferenceGrant is deprecated: use Gateway API's ReferenceGrant (gateway.networking.k8s.io/v1); convert yours with: kubectl get referencegrants.tunnel.achetronic.com -A -o yaml | tunnel migrate-grants"
)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    /// Who may reference: a kind and a namespace per entry.
    #[schemars(length(min = 1, max = 16))]
    pub from: Vec<GrantFrom>,
    /// What they may reference in this namespace: a kind, and optionally one name.
    #[schemars(length(min = 1, max = 16))]
    pub to: Vec<GrantTo>,
}

/// A referencing side.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantFrom {
    /// The referencing kind.
    pub kind: FromKind,
    /// The referencing object's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// A referenced side.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantTo {
    /// The referenced kind.
    pub kind: ToKind,
    /// Only this object; every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
}

/// Kinds that reference across namespaces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FromKind {
    /// A `PortBinding` (its EdgeNode, its TLS Secrets, its target Services).
    PortBinding,
    /// An `EdgeNode` (its SSH Secret).
    EdgeNode,
    /// A core `Service` of `type: LoadBalancer` served by an EdgeNode (that EdgeNode, its TLS
    /// Secrets).
    Service,
    /// A Gateway API `Gateway` (its EdgeNode, its certificates); granted by Gateway API's
    /// `ReferenceGrant` only.
    #[serde(skip)]
    Gateway,
    /// A Gateway API `TCPRoute` (its backend Services); Gateway API's grant only.
    #[serde(skip)]
    TcpRoute,
    /// A Gateway API `UDPRoute`; Gateway API's grant only.
    #[serde(skip)]
    UdpRoute,
    /// A Gateway API `TLSRoute`; Gateway API's grant only.
    #[serde(skip)]
    TlsRoute,
}

/// Kinds that can be referenced across namespaces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ToKind {
    /// A core `Secret` (TLS or SSH).
    Secret,
    /// A core `Service`.
    Service,
    /// A Tunnel `EdgeNode`.
    EdgeNode,
}

/// One reference to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    /// The referencing kind.
    pub from_kind: FromKind,
    /// The referencing object's namespace.
    pub from_namespace: &'a str,
    /// The referenced kind.
    pub to_kind: ToKind,
    /// The referenced object's namespace.
    pub to_namespace: &'a str,
    /// The referenced object's name.
    pub to_name: &'a str,
}

/// A grant as the decision needs it: its namespace and spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantInput {
    /// The grant's namespace (the referenced side).
    pub namespace: String,
    /// Its spec.
    pub spec: ReferenceGrantSpec,
}

impl GrantInput {
    /// From a `ReferenceGrant` object (one without a namespace grants nothing).
    pub fn from_object(grant: &ReferenceGrant) -> Option<Self> {
        Some(Self {
            namespace: grant.metadata.namespace.clone()?,
            spec: grant.spec.clone(),
        })
    }
}

/// Whether `reference` may be followed: always within one namespace; across namespaces only
/// when a grant in the referenced namespace lists the referencing kind and namespace and the
/// referenced kind (and name, when it names one).
pub fn reference_allowed(reference: &Reference<'_>, grants: &[GrantInput]) -> bool {
    if reference.from_namespace == reference.to_namespace {
        return true;
    }
    grants
        .iter()
        .filter(|g| g.namespace == reference.to_namespace)
        .any(|g| {
            g.spec
                .from
                .iter()
                .any(|f| f.kind == reference.from_kind && f.namespace == reference.from_namespace)
                && g.spec.to.iter().any(|t| {
                    t.kind == reference.to_kind
                        && t.name.as_deref().is_none_or(|n| n == reference.to_name)
                })
        })
}

/// The refusal message for a reference that is not granted (names what to create).
pub fn not_granted_message(reference: &Reference<'_>) -> String {
    format!(
        "{:?} in namespace {} may not reference {:?} {}/{}: no ReferenceGrant in namespace {} allows it (from kind {:?}, namespace {}; to kind {:?})",
        reference.from_kind,
        reference.from_namespace,
        reference.to_kind,
        reference.to_namespace,
        reference.to_name,
        reference.to_namespace,
        reference.from_kind,
        reference.from_namespace,
        reference.to_kind,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ns: &str, from: (FromKind, &str), to: (ToKind, Option<&str>)) -> GrantInput {
        GrantInput {
            namespace: ns.into(),
            spec: ReferenceGrantSpec {
                from: vec![GrantFrom {
                    kind: from.0,
                    namespace: from.1.into(),
                }],
                to: vec![GrantTo {
                    kind: to.0,
                    name: to.1.map(Into::into),
                }],
            },
        }
    }

    fn tls_ref<'a>(from: &'a str, to: &'a str, name: &'a str) -> Reference<'a> {
        Reference {
            from_kind: FromKind::PortBinding,
            from_namespace: from,
            to_kind: ToKind::Secret,
            to_namespace: to,
            to_name: name,
        }
    }

    #[test]
    fn same_namespace_needs_no_grant() {
        assert!(reference_allowed(&tls_ref("a", "a", "web-tls"), &[]));
    }

    #[test]
    fn across_namespaces_only_with_a_matching_grant_in_the_target_namespace() {
        let r = tls_ref("team-a", "certs", "web-tls");
        assert!(!reference_allowed(&r, &[]));
        let ok = grant(
            "certs",
            (FromKind::PortBinding, "team-a"),
            (ToKind::Secret, None),
        );
        assert!(reference_allowed(&r, std::slice::from_ref(&ok)));
        // The grant must live in the referenced namespace, not the referencing one.
        let wrong_place = GrantInput {
            namespace: "team-a".into(),
            ..ok.clone()
        };
        assert!(!reference_allowed(&r, &[wrong_place]));
        // Kind, namespace and name must all match.
        for g in [
            grant(
                "certs",
                (FromKind::EdgeNode, "team-a"),
                (ToKind::Secret, None),
            ),
            grant(
                "certs",
                (FromKind::PortBinding, "team-b"),
                (ToKind::Secret, None),
            ),
            grant(
                "certs",
                (FromKind::PortBinding, "team-a"),
                (ToKind::Service, None),
            ),
            grant(
                "certs",
                (FromKind::PortBinding, "team-a"),
                (ToKind::Secret, Some("other")),
            ),
        ] {
            assert!(!reference_allowed(&r, std::slice::from_ref(&g)), "{g:?}");
        }
        let named = grant(
            "certs",
            (FromKind::PortBinding, "team-a"),
            (ToKind::Secret, Some("web-tls")),
        );
        assert!(reference_allowed(&r, &[named]));
        assert!(not_granted_message(&r).contains("no ReferenceGrant in namespace certs"));
    }
}
