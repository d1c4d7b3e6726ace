//! The migration of our deprecated `ReferenceGrant` (`tunnel.achetronic.com/v1alpha1`) to
//! Gateway API's (`gateway.networking.k8s.io/v1`), pure: what `tunnel migrate-grants` does
//! between reading its input and printing.
//!
//! The input is what `kubectl get referencegrants.tunnel.achetronic.com -A -o yaml` prints (a
//! `List`) or grants as separate YAML documents, or both. Each grant becomes a Gateway API
//! grant of the same namespace and name (and labels): each `from` kind and each `to` kind gets
//! its Gateway API `(group, kind)` ([`super::gateway_reference_grant::from_pair`],
//! [`super::gateway_reference_grant::to_pair`]), namespaces and names kept, so that
//! [`super::reference_allowed`] answers every reference the same under either (the tests below
//! check it exhaustively). Anything else in the input is an error naming the document (and
//! item) and the field.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::gateway_reference_grant::{
    GatewayGrantFrom, GatewayGrantTo, GatewayReferenceGrant, GatewayReferenceGrantSpec, from_pair,
    to_pair,
};
use super::reference_grant::ReferenceGrant;

/// Why the input could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    /// A document is not YAML.
    #[error("document {document}: not YAML: {message}")]
    Yaml {
        /// Position of the document (from 1).
        document: usize,
        /// The parser's message.
        message: String,
    },
    /// A document or List item is not one of our grants.
    #[error("{place}: {found} is not a {OURS} ReferenceGrant")]
    NotOurGrant {
        /// `document N` or `document N, items[M]`.
        place: String,
        /// What it is (`apiVersion` and `kind` as given).
        found: String,
    },
    /// One of our grants with a field that is missing or invalid.
    #[error("{place}: {field}: {message}")]
    Field {
        /// `document N` or `document N, items[M]`, with `namespace/name` when known.
        place: String,
        /// The field's path (`metadata.namespace`, `spec.from[0].kind`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The converted grants did not serialize (not expected).
    #[error("printing the converted grants: {0}")]
    Print(String),
}

impl MigrationError {
    /// A stable label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Yaml { .. } => "GrantMigrationYamlInvalid",
            Self::NotOurGrant { .. } => "GrantMigrationNotOurGrant",
            Self::Field { .. } => "GrantMigrationFieldInvalid",
            Self::Print(_) => "GrantMigrationPrintFailed",
        }
    }
}

/// Our grants' `apiVersion`.
const OURS: &str = "tunnel.achetronic.com/v1alpha1";

/// Reads our grants from `text`: YAML documents, each one grant or a `List` (or `...List`) of
/// them; empty documents are skipped.
pub fn read_grants(text: &str) -> Result<Vec<ReferenceGrant>, MigrationError> {
    let mut grants = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| MigrationError::Yaml {
            document,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
        if kind.is_some_and(|k| k.ends_with("List")) {
            let Some(items) = value.get("items") else {
                return Err(field(&format!("document {document}"), "items", "missing"));
            };
            let Some(items) = items.as_sequence() else {
                // `items: null` is what an empty List may look like.
                if items.is_null() {
                    continue;
                }
                return Err(field(
                    &format!("document {document}"),
                    "items",
                    "not a list",
                ));
            };
            for (j, item) in items.iter().enumerate() {
                grants.push(grant(&format!("document {document}, items[{j}]"), item)?);
            }
        } else {
            grants.push(grant(&format!("document {document}"), &value)?);
        }
    }
    Ok(grants)
}

fn field(place: &str, field: &str, message: &str) -> MigrationError {
    MigrationError::Field {
        place: place.to_owned(),
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// One of our grants from one document or item, with its namespace and name.
fn grant(place: &str, value: &serde_yaml::Value) -> Result<ReferenceGrant, MigrationError> {
    let api_version = value.get("apiVersion").and_then(serde_yaml::Value::as_str);
    let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
    if api_version != Some(OURS) || kind != Some("ReferenceGrant") {
        return Err(MigrationError::NotOurGrant {
            place: place.to_owned(),
            found: format!(
                "apiVersion {}, kind {}",
                api_version.unwrap_or("(none)"),
                kind.unwrap_or("(none)")
            ),
        });
    }
    let text = |path: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(path))
            .and_then(serde_yaml::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = text("name");
    let namespace = text("namespace");
    let place = match (namespace, name) {
        (Some(ns), Some(n)) => format!("{place} ({ns}/{n})"),
        _ => place.to_owned(),
    };
    if name.is_none() {
        return Err(field(&place, "metadata.name", "missing"));
    }
    if namespace.is_none() {
        // A grant is consent of its namespace: without one it grants nothing, and the converted
        // grant would land in whatever namespace `kubectl apply` defaults to.
        return Err(field(&place, "metadata.namespace", "missing"));
    }
    serde_path_to_error::deserialize::<_, ReferenceGrant>(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        MigrationError::Field {
            place,
            field: path,
            message: e.into_inner().to_string(),
        }
    })
}

/// The Gateway API grant equivalent to one of ours: same namespace, name and labels.
pub fn to_gateway(grant: &ReferenceGrant) -> GatewayReferenceGrant {
    let spec = GatewayReferenceGrantSpec {
        from: grant
            .spec
            .from
            .iter()
            .map(|f| {
                let (group, kind) = from_pair(f.kind);
                GatewayGrantFrom {
                    group: group.to_owned(),
                    kind: kind.to_owned(),
                    namespace: f.namespace.clone(),
                }
            })
            .collect(),
        to: grant
            .spec
            .to
            .iter()
            .map(|t| {
                let (group, kind) = to_pair(t.kind);
                GatewayGrantTo {
                    group: group.to_owned(),
                    kind: kind.to_owned(),
                    name: t.name.clone(),
                }
            })
            .collect(),
    };
    GatewayReferenceGrant {
        metadata: ObjectMeta {
            name: grant.metadata.name.clone(),
            namespace: grant.metadata.namespace.clone(),
            labels: grant.metadata.labels.clone().filter(|l| !l.is_empty()),
            ..ObjectMeta::default()
        },
        spec,
    }
}

/// The Gateway API grants as YAML documents for `kubectl apply -f -`, each after a comment
/// naming the grant it replaces.
pub fn to_yaml(grants: &[GatewayReferenceGrant]) -> Result<String, MigrationError> {
    let mut out = String::new();
    for grant in grants {
        let yaml =
            serde_yaml::to_string(grant).map_err(|e| MigrationError::Print(e.to_string()))?;
        out.push_str("---\n# replaces referencegrants.tunnel.achetronic.com ");
        out.push_str(grant.metadata.namespace.as_deref().unwrap_or_default());
        out.push('/');
        out.push_str(grant.metadata.name.as_deref().unwrap_or_default());
        out.push('\n');
        out.push_str(&yaml);
    }
    Ok(out)
}

/// The whole conversion: our grants in `text` → Gateway API grants as YAML, and how many.
pub fn migrate(text: &str) -> Result<(String, usize), MigrationError> {
    let converted: Vec<GatewayReferenceGrant> = read_grants(text)?.iter().map(to_gateway).collect();
    Ok((to_yaml(&converted)?, converted.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::gateway_reference_grant::{FROM_KINDS, TO_KINDS};
    use crate::crd::{
        FromKind, GrantFrom, GrantInput, GrantTo, Reference, ReferenceGrantSpec, ToKind,
        reference_allowed,
    };

    fn ours(from: Vec<GrantFrom>, to: Vec<GrantTo>) -> ReferenceGrant {
        let mut g = ReferenceGrant::new("g", ReferenceGrantSpec { from, to });
        g.metadata.namespace = Some("target".into());
        g
    }

    /// Every list of one or two of `all`.
    fn one_or_two<T: Clone>(all: &[T]) -> Vec<Vec<T>> {
        let mut out: Vec<Vec<T>> = all.iter().map(|t| vec![t.clone()]).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                out.push(vec![a.clone(), b.clone()]);
            }
        }
        out
    }

    /// Every grant of one or two `from` entries (each kind, from namespace `a` or `b`) and one
    /// or two `to` entries (each kind, every object or only `x`).
    fn every_grant() -> Vec<ReferenceGrant> {
        let froms: Vec<GrantFrom> = FROM_KINDS
            .into_iter()
            .flat_map(|kind| {
                ["a", "b"].map(|ns| GrantFrom {
                    kind,
                    namespace: ns.into(),
                })
            })
            .collect();
        let tos: Vec<GrantTo> = TO_KINDS
            .into_iter()
            .flat_map(|kind| {
                [None, Some("x".to_owned())].map(|name| GrantTo {
                    kind,
                    name: name.clone(),
                })
            })
            .collect();
        let mut grants = Vec::new();
        for from in one_or_two(&froms) {
            for to in one_or_two(&tos) {
                grants.push(ours(from.clone(), to));
            }
        }
        grants
    }

    /// Every reference: each kind pair, from `a`, `b`, `c` or `target` itself, to `target` or
    /// `other`, to `x` or `y`.
    fn every_reference() -> Vec<(FromKind, &'static str, ToKind, &'static str, &'static str)> {
        let mut out = Vec::new();
        for from in FROM_KINDS {
            for from_ns in ["a", "b", "c", "target"] {
                for to in TO_KINDS {
                    for to_ns in ["target", "other"] {
                        for name in ["x", "y"] {
                            out.push((from, from_ns, to, to_ns, name));
                        }
                    }
                }
            }
        }
        out
    }

    /// The converted grant as the operator reads it: printed, parsed back as Gateway API's.
    fn printed_and_read(grant: &ReferenceGrant) -> GrantInput {
        let yaml = to_yaml(&[to_gateway(grant)]).unwrap();
        let back: GatewayReferenceGrant = serde_yaml::from_str(&yaml).unwrap();
        GrantInput::from_gateway(&back).unwrap()
    }

    #[test]
    fn every_reference_is_decided_the_same_under_the_converted_grant() {
        let grants = every_grant();
        let references = every_reference();
        assert_eq!((grants.len(), references.len()), (441, 144));
        let mut allowed = 0;
        for grant in &grants {
            let original = [GrantInput::from_object(grant).unwrap()];
            let converted = [printed_and_read(grant)];
            for (from_kind, from_namespace, to_kind, to_namespace, to_name) in &references {
                let r = Reference {
                    from_kind: *from_kind,
                    from_namespace,
                    to_kind: *to_kind,
                    to_namespace,
                    to_name,
                };
                let before = reference_allowed(&r, &original);
                assert_eq!(
                    before,
                    reference_allowed(&r, &converted),
                    "{r:?} under {:?} and {:?}",
                    grant.spec,
                    converted[0].spec
                );
                allowed += usize::from(before && from_namespace != to_namespace);
            }
        }
        // The cases are not vacuous: many cross-namespace references are granted, many not.
        assert!(allowed > 1000, "{allowed}");
    }

    #[test]
    fn the_converted_grant_names_each_kind_by_its_gateway_api_pair() {
        let grant = ours(
            vec![
                GrantFrom {
                    kind: FromKind::PortBinding,
                    namespace: "apps".into(),
                },
                GrantFrom {
                    kind: FromKind::Service,
                    namespace: "lb".into(),
                },
                GrantFrom {
                    kind: FromKind::EdgeNode,
                    namespace: "edges".into(),
                },
            ],
            vec![
                GrantTo {
                    kind: ToKind::Secret,
                    name: Some("tls".into()),
                },
                GrantTo {
                    kind: ToKind::Service,
                    name: None,
                },
                GrantTo {
                    kind: ToKind::EdgeNode,
                    name: Some("edge".into()),
                },
            ],
        );
        let yaml = to_yaml(&[to_gateway(&grant)]).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        let expected: serde_yaml::Value = serde_yaml::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: target}\nspec:\n  from:\n  - {group: tunnel.achetronic.com, kind: PortBinding, namespace: apps}\n  - {group: '', kind: Service, namespace: lb}\n  - {group: tunnel.achetronic.com, kind: EdgeNode, namespace: edges}\n  to:\n  - {group: '', kind: Secret, name: tls}\n  - {group: '', kind: Service}\n  - {group: tunnel.achetronic.com, kind: EdgeNode, name: edge}\n",
        )
        .unwrap();
        assert_eq!(doc, expected, "{yaml}");
        assert!(
            yaml.starts_with("---\n# replaces referencegrants.tunnel.achetronic.com target/g\n")
        );
    }

    /// What `kubectl get referencegrants.tunnel.achetronic.com -A -o yaml` prints (server
    /// fields, annotations, an extra label), then a grant as a document of its own.
    const KUBECTL_LIST: &str = r#"apiVersion: v1
items:
- apiVersion: tunnel.achetronic.com/v1alpha1
  kind: ReferenceGrant
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"tunnel.achetronic.com/v1alpha1","kind":"ReferenceGrant"}
    creationTimestamp: "2026-12-01T10:00:00Z"
    generation: 1
    labels: {team: networking}
    name: public-edge-from-default
    namespace: networking
    resourceVersion: "4242"
    uid: 0b5c7a8e-0000-4000-8000-000000000001
  spec:
    from:
    - kind: PortBinding
      namespace: default
    to:
    - kind: Service
      name: internal-ingress
- apiVersion: tunnel.achetronic.com/v1alpha1
  kind: ReferenceGrant
  metadata: {name: edge, namespace: team-a}
  spec:
    from: [{kind: PortBinding, namespace: evil}, {kind: Service, namespace: evil}]
    to: [{kind: EdgeNode}]
kind: List
metadata:
  resourceVersion: ""
---
apiVersion: tunnel.achetronic.com/v1alpha1
kind: ReferenceGrant
metadata: {name: ssh, namespace: keys}
spec:
  from: [{kind: EdgeNode, namespace: team-a}]
  to: [{kind: Secret, name: vps}]
"#;

    #[test]
    fn a_kubectl_list_and_separate_documents_are_read() {
        let grants = read_grants(KUBECTL_LIST).unwrap();
        let names: Vec<(String, String)> = grants
            .iter()
            .map(|g| {
                (
                    g.metadata.namespace.clone().unwrap(),
                    g.metadata.name.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("networking".into(), "public-edge-from-default".into()),
                ("team-a".into(), "edge".into()),
                ("keys".into(), "ssh".into()),
            ]
        );
        let (yaml, count) = migrate(KUBECTL_LIST).unwrap();
        assert_eq!(count, 3);
        let docs: Vec<GatewayReferenceGrant> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| GatewayReferenceGrant::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 3);
        // Only name, namespace and labels are carried over: no server fields, no annotations.
        let first = &docs[0].metadata;
        assert_eq!(
            first
                .labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("networking")
        );
        assert!(first.annotations.is_none() && first.uid.is_none());
        assert!(first.resource_version.is_none() && first.creation_timestamp.is_none());
        assert!(
            !yaml.contains("last-applied") && !yaml.contains("4242"),
            "{yaml}"
        );
        // Empty input, an empty List: nothing to convert, no error.
        assert_eq!(migrate("").unwrap().1, 0);
        assert_eq!(
            migrate("apiVersion: v1\nkind: List\nitems: []\n")
                .unwrap()
                .1,
            0
        );
        assert_eq!(
            migrate("apiVersion: v1\nkind: List\nitems:\n").unwrap().1,
            0
        );
    }

    #[test]
    fn bad_input_is_refused_naming_the_document_and_the_field() {
        let grant = |metadata: &str, spec: &str| {
            format!(
                "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: ReferenceGrant\nmetadata: {metadata}\nspec: {spec}\n"
            )
        };
        let good = grant(
            "{name: g, namespace: n}",
            "{from: [{kind: PortBinding, namespace: a}], to: [{kind: Secret}]}",
        );
        let cases: Vec<(String, &str)> = vec![
            ("a: [unclosed".into(), "document 1: not YAML"),
            (
                format!(
                    "{good}---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: n}}\n"
                ),
                "document 2: apiVersion gateway.networking.k8s.io/v1, kind ReferenceGrant is not a tunnel.achetronic.com/v1alpha1 ReferenceGrant",
            ),
            (
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n".into(),
                "document 1, items[0]: apiVersion v1, kind ConfigMap is not",
            ),
            (
                "apiVersion: v1\nkind: List\n".into(),
                "document 1: items: missing",
            ),
            (
                "apiVersion: v1\nkind: List\nitems: {a: 1}\n".into(),
                "document 1: items: not a list",
            ),
            (
                "- 1\n- 2\n".into(),
                "document 1: apiVersion (none), kind (none) is not",
            ),
            (
                grant(
                    "{name: g}",
                    "{from: [{kind: PortBinding, namespace: a}], to: [{kind: Secret}]}",
                ),
                "document 1: metadata.namespace: missing",
            ),
            (
                grant("{namespace: n}", "{from: [], to: []}"),
                "document 1: metadata.name: missing",
            ),
            (
                grant(
                    "{name: g, namespace: n}",
                    "{from: [{kind: PortBinding, namespace: a}], to: [{kind: ConfigMap}]}",
                ),
                "document 1 (n/g): spec.to[0].kind: unknown variant `ConfigMap`",
            ),
            (
                grant(
                    "{name: g, namespace: n}",
                    "{from: [{kind: PortBinding}], to: [{kind: Secret}]}",
                ),
                "document 1 (n/g): spec.from[0]: missing field `namespace`",
            ),
            (
                grant("{name: g, namespace: n}", "{to: [{kind: Secret}]}"),
                "document 1 (n/g): spec: missing field `from`",
            ),
        ];
        for (input, expected) in cases {
            let err = migrate(&input).unwrap_err();
            assert!(
                err.to_string().starts_with(expected),
                "{input}\n=> {err}\nexpected {expected}"
            );
        }
        let categories: Vec<&str> = [
            MigrationError::Yaml {
                document: 1,
                message: String::new(),
            },
            MigrationError::NotOurGrant {
                place: String::new(),
                found: String::new(),
            },
            MigrationError::Field {
                place: String::new(),
                field: String::new(),
                message: String::new(),
            },
            MigrationError::Print(String::new()),
        ]
        .iter()
        .map(MigrationError::category)
        .collect();
        assert_eq!(
            categories,
            [
                "GrantMigrationYamlInvalid",
                "GrantMigrationNotOurGrant",
                "GrantMigrationFieldInvalid",
                "GrantMigrationPrintFailed"
            ]
        );
    }

    #[test]
    fn our_crd_version_is_deprecated_naming_the_replacement_and_the_command() {
        use kube::CustomResourceExt;
        let crd = ReferenceGrant::crd();
        let version = &crd.spec.versions[0];
        assert_eq!(version.deprecated, Some(true));
        let warning = version.deprecation_warning.clone().unwrap_or_default();
        assert!(
            warning.contains("gateway.networking.k8s.io/v1"),
            "{warning}"
        );
        assert!(warning.contains("tunnel migrate-grants"), "{warning}");
        // The API server's limit: printable ASCII, at most 256 characters.
        assert!(warning.len() <= 256 && warning.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }
}
