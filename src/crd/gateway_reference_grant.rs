//! Gateway API's own `ReferenceGrant` (`gateway.networking.k8s.io/v1`, Standard channel): the
//! fields Tunnel reads, and their mapping onto our grant ([`GrantInput`]), so that one decision
//! ([`super::reference_allowed`]) answers for both kinds of grant. Gateway API names a kind by
//! `(group, kind)`; the pairs Tunnel knows are [`from_pair`] and [`to_pair`] (read back by
//! [`from_kind`] and [`to_kind`]), any other pair grants nothing here. Tunnel never installs this CRD: the operator watches it only when the
//! API server serves it (`docs/operations.md`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::reference_grant::{
    FromKind, GrantFrom, GrantInput, GrantTo, ReferenceGrantSpec, ToKind,
};

/// The API group of Gateway API.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The version of its `ReferenceGrant` Tunnel reads (Standard channel).
pub const GATEWAY_VERSION: &str = "v1";
/// The plural of `ReferenceGrant` (for discovery).
pub const GATEWAY_GRANT_PLURAL: &str = "referencegrants";

/// Gateway API's `ReferenceGrant`: objects of the `from` kinds in the `from` namespaces may
/// reference objects of the `to` kinds in this grant's namespace. Unknown fields are ignored.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "ReferenceGrant",
    root = "GatewayReferenceGrant",
    plural = "referencegrants",
    namespaced
)]
pub struct GatewayReferenceGrantSpec {
    /// Who may reference.
    #[serde(default)]
    pub from: Vec<GatewayGrantFrom>,
    /// What they may reference in this namespace.
    #[serde(default)]
    pub to: Vec<GatewayGrantTo>,
}

/// A referencing side: a group and kind in a namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct GatewayGrantFrom {
    /// The API group (`""`: the core group).
    #[serde(default)]
    pub group: String,
    /// The kind.
    pub kind: String,
    /// The namespace.
    pub namespace: String,
}

/// A referenced side: a group and kind, optionally one name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct GatewayGrantTo {
    /// The API group (`""`: the core group).
    #[serde(default)]
    pub group: String,
    /// The kind.
    pub kind: String,
    /// Only this object; every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Every referencing kind of ours.
pub const FROM_KINDS: [FromKind; 3] =
    [FromKind::PortBinding, FromKind::EdgeNode, FromKind::Service];
/// Gateway API's own referencing kinds (granted only by its `ReferenceGrant`).
pub const GATEWAY_FROM_KINDS: [FromKind; 4] = [
    FromKind::Gateway,
    FromKind::TcpRoute,
    FromKind::UdpRoute,
    FromKind::TlsRoute,
];
/// Every referenced kind of ours.
pub const TO_KINDS: [ToKind; 3] = [ToKind::Secret, ToKind::Service, ToKind::EdgeNode];

/// The Gateway API `(group, kind)` of a referencing kind of ours: the one mapping, read both
/// ways ([`from_kind`]; `tunnel migrate-grants`).
pub fn from_pair(kind: FromKind) -> (&'static str, &'static str) {
    match kind {
        FromKind::PortBinding => (super::GROUP, "PortBinding"),
        FromKind::EdgeNode => (super::GROUP, "EdgeNode"),
        FromKind::Service => ("", "Service"),
        FromKind::Gateway => (GATEWAY_GROUP, "Gateway"),
        FromKind::TcpRoute => (GATEWAY_GROUP, "TCPRoute"),
        FromKind::UdpRoute => (GATEWAY_GROUP, "UDPRoute"),
        FromKind::TlsRoute => (GATEWAY_GROUP, "TLSRoute"),
    }
}

/// The Gateway API `(group, kind)` of a referenced kind of ours ([`to_kind`]).
pub fn to_pair(kind: ToKind) -> (&'static str, &'static str) {
    match kind {
        ToKind::Secret => ("", "Secret"),
        ToKind::Service => ("", "Service"),
        ToKind::EdgeNode => (super::GROUP, "EdgeNode"),
    }
}

/// The referencing kind a Gateway API `(group, kind)` means to Tunnel, if any.
pub fn from_kind(group: &str, kind: &str) -> Option<FromKind> {
    FROM_KINDS
        .into_iter()
        .chain(GATEWAY_FROM_KINDS)
        .find(|k| from_pair(*k) == (group, kind))
}

/// The referenced kind a Gateway API `(group, kind)` means to Tunnel, if any.
pub fn to_kind(group: &str, kind: &str) -> Option<ToKind> {
    TO_KINDS.into_iter().find(|k| to_pair(*k) == (group, kind))
}

impl GrantInput {
    /// From a Gateway API `ReferenceGrant`: its entries of kinds Tunnel knows, the others
    /// dropped (one without a namespace grants nothing).
    pub fn from_gateway(grant: &GatewayReferenceGrant) -> Option<Self> {
        let from = grant
            .spec
            .from
            .iter()
            .filter_map(|f| {
                Some(GrantFrom {
                    kind: from_kind(&f.group, &f.kind)?,
                    namespace: f.namespace.clone(),
                })
            })
            .collect();
        let to = grant
            .spec
            .to
            .iter()
            .filter_map(|t| {
                Some(GrantTo {
                    kind: to_kind(&t.group, &t.kind)?,
                    name: t.name.clone().filter(|n| !n.is_empty()),
                })
            })
            .collect();
        Some(Self {
            namespace: grant.metadata.namespace.clone()?,
            spec: ReferenceGrantSpec { from, to },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Reference, reference_allowed};

    fn gateway(yaml: &str) -> GrantInput {
        let grant: GatewayReferenceGrant = serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: target}}\nspec:\n{yaml}"
        ))
        .unwrap();
        GrantInput::from_gateway(&grant).unwrap()
    }

    fn reference(from: FromKind, to: ToKind, name: &str) -> Reference<'_> {
        Reference {
            from_kind: from,
            from_namespace: "apps",
            to_kind: to,
            to_namespace: "target",
            to_name: name,
        }
    }

    #[test]
    fn every_kind_of_ours_has_its_gateway_api_pair() {
        let cases = [
            (
                "tunnel.achetronic.com",
                "PortBinding",
                "",
                "Secret",
                FromKind::PortBinding,
                ToKind::Secret,
            ),
            (
                "tunnel.achetronic.com",
                "PortBinding",
                "",
                "Service",
                FromKind::PortBinding,
                ToKind::Service,
            ),
            (
                "tunnel.achetronic.com",
                "PortBinding",
                "tunnel.achetronic.com",
                "EdgeNode",
                FromKind::PortBinding,
                ToKind::EdgeNode,
            ),
            (
                "tunnel.achetronic.com",
                "EdgeNode",
                "",
                "Secret",
                FromKind::EdgeNode,
                ToKind::Secret,
            ),
            (
                "",
                "Service",
                "tunnel.achetronic.com",
                "EdgeNode",
                FromKind::Service,
                ToKind::EdgeNode,
            ),
            (
                "",
                "Service",
                "",
                "Secret",
                FromKind::Service,
                ToKind::Secret,
            ),
        ];
        for (fg, fk, tg, tk, from, to) in cases {
            let g = gateway(&format!(
                "  from: [{{group: '{fg}', kind: {fk}, namespace: apps}}]\n  to: [{{group: '{tg}', kind: {tk}}}]\n"
            ));
            assert!(
                reference_allowed(&reference(from, to, "x"), std::slice::from_ref(&g)),
                "{g:?}"
            );
            // The same grant for any other pair of ours grants nothing.
            for other_from in [FromKind::PortBinding, FromKind::EdgeNode, FromKind::Service] {
                for other_to in [ToKind::Secret, ToKind::Service, ToKind::EdgeNode] {
                    if (other_from, other_to) != (from, to) {
                        assert!(
                            !reference_allowed(
                                &reference(other_from, other_to, "x"),
                                std::slice::from_ref(&g)
                            ),
                            "{g:?} allowed {other_from:?} -> {other_to:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_groups_and_unknown_kinds_grant_nothing() {
        for yaml in [
            // Our kinds under the wrong group, the core kinds under ours.
            "  from: [{group: '', kind: PortBinding, namespace: apps}]\n  to: [{group: '', kind: Secret}]\n",
            "  from: [{group: tunnel.achetronic.com, kind: PortBinding, namespace: apps}]\n  to: [{group: tunnel.achetronic.com, kind: Secret}]\n",
            "  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]\n  to: [{group: '', kind: Secret}]\n",
            // Another namespace, another name.
            "  from: [{group: tunnel.achetronic.com, kind: PortBinding, namespace: other}]\n  to: [{group: '', kind: Secret}]\n",
            "  from: [{group: tunnel.achetronic.com, kind: PortBinding, namespace: apps}]\n  to: [{group: '', kind: Secret, name: other}]\n",
        ] {
            let g = gateway(yaml);
            assert!(
                !reference_allowed(
                    &reference(FromKind::PortBinding, ToKind::Secret, "tls"),
                    &[g]
                ),
                "{yaml}"
            );
        }
        // Unknown entries beside known ones: the known ones still count; a name limits.
        let g = gateway(
            "  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: apps}, {group: tunnel.achetronic.com, kind: PortBinding, namespace: apps}]\n  to: [{group: '', kind: ConfigMap}, {group: '', kind: Secret, name: tls}]\n",
        );
        let tls = reference(FromKind::PortBinding, ToKind::Secret, "tls");
        assert!(reference_allowed(&tls, std::slice::from_ref(&g)));
        assert!(!reference_allowed(
            &reference(FromKind::PortBinding, ToKind::Secret, "other"),
            std::slice::from_ref(&g)
        ));
        // The grant must be in the referenced namespace.
        let elsewhere = GrantInput {
            namespace: "apps".into(),
            ..g
        };
        assert!(!reference_allowed(&tls, &[elsewhere]));
    }

    #[test]
    fn the_group_may_be_omitted_for_the_core_group() {
        let g = gateway(
            "  from: [{group: tunnel.achetronic.com, kind: PortBinding, namespace: apps}]\n  to: [{kind: Service}]\n",
        );
        assert!(reference_allowed(
            &reference(FromKind::PortBinding, ToKind::Service, "web"),
            &[g]
        ));
    }
}
