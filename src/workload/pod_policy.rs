//! What an EdgeNode may ask of its uplink pods (security review M9): the uplink namespace it
//! may use, the label and annotation keys and the tolerations it may set, and whether its
//! `nodeSelector` and `affinity` are taken at all. The uplink pods run a privileged init
//! container in a Pod-Security-privileged namespace, so in a cluster shared by tenants these
//! are the operator admin's choice (`tunnel run` flags, chart values), not the tenant's.
//!
//! Pure: [`check`] reads the EdgeNode's namespace and `spec.uplink` and answers with the first
//! refused field of each kind, named as in the EdgeNode (e.g.
//! `spec.uplink.annotations["k8s.v1.cni.cncf.io/networks"]`). The pass that gets a refusal
//! writes nothing (docs/security.md, "Tenant settings on the uplink pods").

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

use crate::crd::UplinkSpec;

/// Domains of keys that components of the cluster act on: the Kubernetes ones (AppArmor,
/// seccomp, sysctls, bandwidth, topology, taints of control-plane and unhealthy nodes) and
/// the CNI plugins' (extra network attachments, fixed pod IPs, policy identities). A key in
/// one of them (or a subdomain) is taken from an EdgeNode only when an allow-list entry other
/// than `*` matches it.
pub const SENSITIVE_DOMAINS: &[&str] = &[
    "kubernetes.io",
    "k8s.io",
    "cncf.io",
    "multus-cni.io",
    "projectcalico.org",
    "cilium.io",
    "ovn.org",
    "antrea.io",
    "openshift.io",
    "networking.gke.io",
];

/// The Kubernetes recommended labels (`app.kubernetes.io/part-of`, …): no component acts on
/// them, so `*` allows them.
const RECOMMENDED_LABELS: &str = "app.kubernetes.io";

/// The operator's own key domain: never taken from an EdgeNode.
const OWN_DOMAIN: &str = "tunnel.achetronic.com";

/// An uplink namespace and the EdgeNode namespaces that may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkNamespaceRule {
    /// The uplink namespace.
    pub namespace: String,
    /// EdgeNode namespaces that may put their uplinks there; empty: every namespace.
    pub edge_node_namespaces: Vec<String>,
}

impl std::str::FromStr for UplinkNamespaceRule {
    type Err = String;

    /// `NAME` (open to EdgeNodes of every namespace) or `NAME=NS[,NS...]`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (namespace, tenants) = text.split_once('=').unwrap_or((text, ""));
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        let edge_node_namespaces: Vec<String> = tenants
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !label(namespace) || !edge_node_namespaces.iter().all(|s| label(s)) {
            return Err(format!(
                "{text:?} is not NAME or NAME=NAMESPACE[,NAMESPACE...] (namespace names)"
            ));
        }
        if text.contains('=') && edge_node_namespaces.is_empty() {
            return Err(format!(
                "{text:?} names no EdgeNode namespace after '=' (leave out '=' to open it to every namespace)"
            ));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            edge_node_namespaces,
        })
    }
}

/// What the operator takes from an EdgeNode's `spec.uplink` (flags of `tunnel run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPolicy {
    /// `--uplink-namespace`: the uplink namespaces and who may use each; empty: any namespace
    /// (the operator's RBAC still decides where it can write).
    pub namespaces: Vec<UplinkNamespaceRule>,
    /// `--uplink-pod-label-prefixes`: label key prefixes taken from EdgeNodes; `*` is every
    /// key outside [`SENSITIVE_DOMAINS`].
    pub label_prefixes: Vec<String>,
    /// `--uplink-pod-annotation-prefixes`: the same for annotations.
    pub annotation_prefixes: Vec<String>,
    /// `--uplink-pod-toleration-keys`: the same for the taint keys of tolerations (a
    /// toleration without a key tolerates every taint and is never taken).
    pub toleration_keys: Vec<String>,
    /// `--edge-node-placement`: take `nodeSelector` and `affinity` from EdgeNodes.
    pub placement: bool,
}

impl Default for TenantPolicy {
    /// The defaults of the flags: any namespace the operator may write, every key outside
    /// the sensitive domains, placement from the EdgeNode.
    fn default() -> Self {
        let any = || vec!["*".to_owned()];
        Self {
            namespaces: Vec::new(),
            label_prefixes: any(),
            annotation_prefixes: any(),
            toleration_keys: any(),
            placement: true,
        }
    }
}

/// Why an EdgeNode's uplink settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The uplink namespace is not one this EdgeNode's namespace may use.
    #[error(
        "spec.uplink.namespace {uplink:?} is not open to EdgeNodes of namespace {node_namespace:?} (the operator's --uplink-namespace; with the Helm chart, the values uplinkNamespaces and uplinkNamespaceTenants); {allowed}"
    )]
    NamespaceNotAllowed {
        /// The EdgeNode's `spec.uplink.namespace`.
        uplink: String,
        /// The EdgeNode's namespace.
        node_namespace: String,
        /// The uplink namespaces it may use, as a sentence.
        allowed: String,
    },
    /// Fields of `spec.uplink` the operator does not take from EdgeNodes.
    #[error("not allowed on uplink pods by the operator's settings: {}", .refused.join("; "))]
    SettingRefused {
        /// One sentence per refused field, each starting with the field.
        refused: Vec<String>,
    },
}

impl PolicyError {
    /// The stable UpperCamelCase reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NamespaceNotAllowed { .. } => "UplinkNamespaceNotAllowed",
            Self::SettingRefused { .. } => "UplinkPodSettingRefused",
        }
    }
}

/// The domain of a key (`domain/name`), if it has one.
fn domain(key: &str) -> Option<&str> {
    key.split_once('/').map(|(d, _)| d)
}

fn in_domain(d: &str, of: &str) -> bool {
    d == of || d.strip_suffix(of).is_some_and(|rest| rest.ends_with('.'))
}

/// A key that a component of the cluster acts on (see [`SENSITIVE_DOMAINS`]).
pub fn sensitive(key: &str) -> bool {
    domain(key).is_some_and(|d| {
        d != RECOMMENDED_LABELS && SENSITIVE_DOMAINS.iter().any(|s| in_domain(d, s))
    })
}

/// Whether `prefixes` let `key` through.
pub fn allowed(prefixes: &[String], key: &str) -> bool {
    if domain(key).is_some_and(|d| in_domain(d, OWN_DOMAIN)) {
        return false;
    }
    prefixes.iter().any(|p| match p.as_str() {
        "*" => !sensitive(key),
        "" => false,
        p => key.starts_with(p),
    })
}

fn list(prefixes: &[String]) -> String {
    if prefixes.is_empty() {
        "none".to_owned()
    } else {
        prefixes.join(",")
    }
}

fn refused_keys(
    field: &str,
    map: &BTreeMap<String, String>,
    prefixes: &[String],
    flag: &str,
) -> Option<String> {
    let bad: Vec<&String> = map.keys().filter(|k| !allowed(prefixes, k)).collect();
    let first = bad.first()?;
    let more = match bad.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Some(format!(
        "{field}[{first:?}]{more}: the key is not in {flag}={} (the kubernetes.io, k8s.io and CNI domains need a prefix of their own there; tunnel.achetronic.com/ is the operator's)",
        list(prefixes)
    ))
}

fn refused_toleration(tolerations: &[Toleration], keys: &[String]) -> Option<String> {
    tolerations.iter().enumerate().find_map(|(i, t)| {
        let key = t.key.as_deref().unwrap_or("");
        if key.is_empty() {
            return Some(format!(
                "spec.uplink.tolerations[{i}]: a toleration without a key tolerates every taint; only the operator's --uplink-tolerations may"
            ));
        }
        (!allowed(keys, key)).then(|| {
            format!(
                "spec.uplink.tolerations[{i}].key {key:?}: not in --uplink-pod-toleration-keys={} (taints of the kubernetes.io and k8s.io domains, such as control-plane nodes, need a prefix of their own there)",
                list(keys)
            )
        })
    })
}

/// Checks the EdgeNode `node_namespace`'s `spec` against `policy`; `operator_node_selector`
/// is the operator's own `nodeSelector`, which an EdgeNode may add to but not change.
pub fn check(
    policy: &TenantPolicy,
    operator_node_selector: &BTreeMap<String, String>,
    node_namespace: &str,
    spec: &UplinkSpec,
) -> Result<(), PolicyError> {
    check_namespace(policy, node_namespace, &spec.namespace)?;
    let mut refused: Vec<String> = [
        refused_keys(
            "spec.uplink.labels",
            &spec.labels,
            &policy.label_prefixes,
            "--uplink-pod-label-prefixes",
        ),
        refused_keys(
            "spec.uplink.annotations",
            &spec.annotations,
            &policy.annotation_prefixes,
            "--uplink-pod-annotation-prefixes",
        ),
        refused_toleration(&spec.tolerations, &policy.toleration_keys),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !policy.placement {
        let off = "the operator places uplink pods itself (--edge-node-placement=false; its --uplink-node-selector and --uplink-tolerations apply)";
        if !spec.node_selector.is_empty() {
            refused.push(format!("spec.uplink.nodeSelector: {off}"));
        }
        if spec.affinity.is_some() {
            refused.push(format!("spec.uplink.affinity: {off}"));
        }
    } else if let Some(key) = spec
        .node_selector
        .iter()
        .find(|(k, v)| operator_node_selector.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k)
    {
        refused.push(format!(
            "spec.uplink.nodeSelector[{key:?}]: the operator's --uplink-node-selector sets it to another value"
        ));
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(PolicyError::SettingRefused { refused })
    }
}

fn check_namespace(
    policy: &TenantPolicy,
    node_namespace: &str,
    uplink: &str,
) -> Result<(), PolicyError> {
    if policy.namespaces.is_empty() {
        return Ok(());
    }
    let open = |r: &UplinkNamespaceRule| {
        r.edge_node_namespaces.is_empty()
            || r.edge_node_namespaces.iter().any(|n| n == node_namespace)
    };
    if policy
        .namespaces
        .iter()
        .any(|r| r.namespace == uplink && open(r))
    {
        return Ok(());
    }
    let usable: Vec<&str> = policy
        .namespaces
        .iter()
        .filter(|r| open(r))
        .map(|r| r.namespace.as_str())
        .collect();
    let allowed = if usable.is_empty() {
        format!("no uplink namespace is open to {node_namespace:?}")
    } else {
        format!("it may use: {}", usable.join(", "))
    };
    Err(PolicyError::NamespaceNotAllowed {
        uplink: uplink.to_owned(),
        node_namespace: node_namespace.to_owned(),
        allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> UplinkSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn refused(policy: &TenantPolicy, yaml: &str) -> Vec<String> {
        match check(policy, &BTreeMap::new(), "team-a", &spec(yaml)) {
            Ok(()) => Vec::new(),
            Err(PolicyError::SettingRefused { refused }) => refused,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_reviews_keys_are_refused_by_default_and_ordinary_ones_pass() {
        let p = TenantPolicy::default();
        // README Example 4: an ordinary label, annotation and toleration, a nodeSelector.
        assert!(
            refused(
                &p,
                "{labels: {environment: production, app.kubernetes.io/part-of: shop}, annotations: {prometheus.io/scrape: 'true'}, nodeSelector: {node-role.kubernetes.io/edge: 'true'}, tolerations: [{key: dedicated, operator: Equal, value: edge, effect: NoSchedule}]}"
            )
            .is_empty()
        );
        for (yaml, field) in [
            (
                "{annotations: {container.apparmor.security.beta.kubernetes.io/uplink: unconfined}}",
                "spec.uplink.annotations[\"container.apparmor.security.beta.kubernetes.io/uplink\"]",
            ),
            (
                "{annotations: {seccomp.security.alpha.kubernetes.io/pod: unconfined}}",
                "spec.uplink.annotations[\"seccomp.security.alpha.kubernetes.io/pod\"]",
            ),
            (
                "{annotations: {k8s.v1.cni.cncf.io/networks: mgmt-vlan}}",
                "spec.uplink.annotations[\"k8s.v1.cni.cncf.io/networks\"]",
            ),
            (
                "{annotations: {cni.projectcalico.org/ipAddrs: '[\"10.0.0.5\"]'}}",
                "spec.uplink.annotations[\"cni.projectcalico.org/ipAddrs\"]",
            ),
            (
                "{annotations: {io.cilium.cilium.io/x: y, policy.cilium.io/proxy-visibility: z}}",
                "spec.uplink.annotations[\"io.cilium.cilium.io/x\"] (and 1 more)",
            ),
            (
                "{labels: {tunnel.achetronic.com/owner-namespace: other}}",
                "spec.uplink.labels[\"tunnel.achetronic.com/owner-namespace\"]",
            ),
            (
                "{tolerations: [{key: dedicated, operator: Exists}, {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]}",
                "spec.uplink.tolerations[1].key \"node-role.kubernetes.io/control-plane\"",
            ),
            (
                "{tolerations: [{operator: Exists}]}",
                "spec.uplink.tolerations[0]: a toleration without a key",
            ),
        ] {
            let r = refused(&p, yaml);
            assert_eq!(r.len(), 1, "{yaml}: {r:?}");
            assert!(r[0].starts_with(field), "{yaml}: {}", r[0]);
        }
        // Every kind at once: one sentence each, in the message of the error.
        let e = check(
            &p,
            &BTreeMap::new(),
            "team-a",
            &spec(
                "{labels: {kubernetes.io/x: y}, annotations: {k8s.v1.cni.cncf.io/networks: v}, tolerations: [{operator: Exists}]}",
            ),
        )
        .unwrap_err();
        assert_eq!(e.category(), "UplinkPodSettingRefused");
        let text = e.to_string();
        for part in [
            "spec.uplink.labels[\"kubernetes.io/x\"]",
            "spec.uplink.annotations[\"k8s.v1.cni.cncf.io/networks\"]",
            "spec.uplink.tolerations[0]",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[test]
    fn an_explicit_prefix_allows_a_sensitive_key_and_a_narrow_list_refuses_the_rest() {
        let p = TenantPolicy {
            annotation_prefixes: strings(&["*", "k8s.v1.cni.cncf.io/"]),
            label_prefixes: strings(&["team.example.com/"]),
            toleration_keys: strings(&["node-role.kubernetes.io/edge"]),
            ..TenantPolicy::default()
        };
        assert!(
            refused(
                &p,
                "{annotations: {k8s.v1.cni.cncf.io/networks: v, prometheus.io/scrape: 'true'}, labels: {team.example.com/cost: a}, tolerations: [{key: node-role.kubernetes.io/edge, operator: Exists}]}"
            )
            .is_empty()
        );
        let r = refused(
            &p,
            "{annotations: {cni.projectcalico.org/ipAddrs: x}, labels: {environment: prod}, tolerations: [{key: dedicated, operator: Exists}]}",
        );
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[1].contains("--uplink-pod-annotation-prefixes=*,k8s.v1.cni.cncf.io/"));
        // The operator's own domain is never allowed, even by name.
        assert!(!allowed(
            &strings(&["tunnel.achetronic.com/"]),
            "tunnel.achetronic.com/uplink-config"
        ));
        // Nothing allowed: an empty list.
        let none = TenantPolicy {
            label_prefixes: Vec::new(),
            ..TenantPolicy::default()
        };
        assert!(refused(&none, "{labels: {a: b}}")[0].contains("=none"));
    }

    #[test]
    fn domains_match_whole_labels() {
        assert!(sensitive("kubernetes.io/ingress-bandwidth"));
        assert!(sensitive("node-role.kubernetes.io/control-plane"));
        assert!(sensitive("v1.multus-cni.io/default-network"));
        assert!(!sensitive("notkubernetes.io/x"), "a suffix, not a domain");
        assert!(!sensitive("app.kubernetes.io/part-of"));
        assert!(!sensitive("kubernetes.io"), "no prefix: a plain name");
    }

    #[test]
    fn placement_from_edge_nodes_can_be_turned_off_and_the_operators_selector_holds() {
        let off = TenantPolicy {
            placement: false,
            ..TenantPolicy::default()
        };
        let r = refused(&off, "{nodeSelector: {a: b}, affinity: {}}");
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(
            r[0].starts_with("spec.uplink.nodeSelector:")
                && r[1].starts_with("spec.uplink.affinity:")
        );
        assert!(refused(&off, "{}").is_empty());
        let operator = BTreeMap::from([("pool".to_owned(), "edge".to_owned())]);
        let on = TenantPolicy::default();
        assert!(
            check(
                &on,
                &operator,
                "t",
                &spec("{nodeSelector: {pool: edge, zone: a}}")
            )
            .is_ok()
        );
        let e = check(
            &on,
            &operator,
            "t",
            &spec("{nodeSelector: {pool: control}}"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("spec.uplink.nodeSelector[\"pool\"]"),
            "{e}"
        );
    }

    #[test]
    fn uplink_namespaces_are_open_to_the_namespaces_the_admin_named() {
        let rules: Vec<UplinkNamespaceRule> = ["tunnel", "tunnel-a=team-a,team-a-dev"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let p = TenantPolicy {
            namespaces: rules,
            ..TenantPolicy::default()
        };
        let at = |node_ns: &str, uplink: &str| {
            check(
                &p,
                &BTreeMap::new(),
                node_ns,
                &spec(&format!("{{namespace: {uplink}}}")),
            )
        };
        assert!(at("team-a", "tunnel-a").is_ok());
        assert!(at("team-a-dev", "tunnel-a").is_ok());
        assert!(at("team-b", "tunnel").is_ok(), "open to every namespace");
        let e = at("team-b", "tunnel-a").unwrap_err();
        assert_eq!(e.category(), "UplinkNamespaceNotAllowed");
        let text = e.to_string();
        assert!(
            text.contains("spec.uplink.namespace \"tunnel-a\"")
                && text.contains("it may use: tunnel"),
            "{text}"
        );
        assert!(at("team-a", "kube-system").is_err(), "not listed");
        // No rule: any namespace (the operator's RBAC decides).
        assert!(
            check(
                &TenantPolicy::default(),
                &BTreeMap::new(),
                "x",
                &spec("{namespace: y}")
            )
            .is_ok()
        );
        for bad in ["", "Tunnel", "a=", "a=B", "-a", "a=b,,-c"] {
            assert!(bad.parse::<UplinkNamespaceRule>().is_err(), "{bad:?}");
        }
    }
}
