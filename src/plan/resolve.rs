//! What the planner needs from the cluster, behind a trait so the planner stays pure: the
//! ClusterIP of a target Service, the contents of a TLS Secret, whether a reference across
//! namespaces is granted (`ReferenceGrant`), and which targets are refused ([`TargetPolicy`],
//! applied to every target however it was resolved). The
//! operator implements it over its watch caches; `tunnel render` over the YAML files it read;
//! tests over maps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::crd::{GrantInput, Reference, ServicePort, reference_allowed};

/// The answer for a Service target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceLookup {
    /// The Service exists, has a ClusterIP and exposes the port.
    Found {
        /// Its ClusterIP.
        address: IpAddr,
        /// The port number (a named port resolved).
        port: u16,
    },
    /// No such Service.
    NotFound,
    /// The Service has no ClusterIP (`clusterIP: None`, or not allocated yet).
    Headless,
    /// The Service exists but does not expose the requested port.
    PortNotFound {
        /// The ports it does expose, sorted: `8080`, or `8443 (https)` for a named one.
        available: Vec<String>,
    },
}

/// One port of a Service: its number and, when it has one, its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePortEntry {
    /// `spec.ports[].port`.
    pub port: u16,
    /// `spec.ports[].name`.
    pub name: Option<String>,
}

/// A Service's ClusterIP (`None`: headless, or not allocated yet) and its ports.
pub fn service_ports(service: &Service) -> (Option<IpAddr>, Vec<ServicePortEntry>) {
    let spec = service.spec.clone().unwrap_or_default();
    let address = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(ServicePortEntry {
                port: u16::try_from(p.port).ok()?,
                name: p.name.filter(|n| !n.is_empty()),
            })
        })
        .collect();
    (address, ports)
}

/// Finds `wanted` (a number, or a name) among a Service's ports: the port number, or the
/// ports there are (sorted, for the refusal message).
pub fn match_port(ports: &[ServicePortEntry], wanted: &ServicePort) -> Result<u16, Vec<String>> {
    let found = ports.iter().find(|p| match wanted {
        ServicePort::Number(n) => p.port == *n,
        ServicePort::Name(name) => p.name.as_deref() == Some(name.as_str()),
    });
    if let Some(p) = found {
        return Ok(p.port);
    }
    let mut sorted = ports.to_vec();
    sorted.sort();
    sorted.dedup();
    Err(sorted
        .iter()
        .map(|p| match &p.name {
            Some(name) if !name.is_empty() => format!("{} ({name})", p.port),
            _ => p.port.to_string(),
        })
        .collect())
}

/// The keys of a `kubernetes.io/tls` Secret the edge may need. The private key is never
/// printed by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsSecret {
    /// `tls.crt`: the certificate chain, PEM.
    pub certificate_chain: Option<String>,
    /// `tls.key`: the private key, PEM.
    pub private_key: Option<String>,
    /// `ca.crt`: the CA bundle client certificates are verified against, PEM.
    pub ca: Option<String>,
}

impl std::fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSecret")
            .field(
                "certificate_chain",
                &self.certificate_chain.as_ref().map(String::len),
            )
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("ca", &self.ca.as_ref().map(String::len))
            .finish()
    }
}

/// Looks up what bindings point at.
pub trait Resolver {
    /// The ClusterIP of Service `namespace/name` and the number of its port `port` (a number
    /// it must expose, or the name of one of its ports).
    fn service(&self, namespace: &str, name: &str, port: &ServicePort) -> ServiceLookup;
    /// The TLS Secret `namespace/name`, or `None` when it does not exist.
    fn tls_secret(&self, namespace: &str, name: &str) -> Option<TlsSecret>;
    /// Whether a reference across namespaces may be followed: the operator answers with
    /// [`crate::crd::reference_allowed`] over the `ReferenceGrant`s it watches. The default
    /// (no grants known) allows same-namespace references only.
    fn reference_allowed(&self, reference: &Reference<'_>) -> bool {
        reference_allowed(reference, &[])
    }
    /// Which targets are refused, and whether target Services in other namespaces need a
    /// grant. The default refuses loopback, link-local and metadata addresses (no API server
    /// addresses known) and allows Services in other namespaces.
    fn target_policy(&self) -> TargetPolicy {
        TargetPolicy::default()
    }
}

/// Addresses of cloud metadata and platform services outside 169.254.0.0/16 (which is refused
/// as link-local anyway): Alibaba Cloud's metadata service, Azure's platform address
/// (WireServer), and the IPv6 metadata services of AWS and Google Cloud.
pub const METADATA_ADDRESSES: [(IpAddr, &str); 4] = [
    (
        IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
        "Alibaba Cloud's metadata service",
    ),
    (
        IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
        "Azure's platform address (WireServer)",
    ),
    (
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
        "AWS's IPv6 metadata service",
    ),
    (
        IpAddr::V6(Ipv6Addr::new(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x0254)),
        "Google Cloud's IPv6 metadata service",
    ),
];

/// Whether a target Service in another namespace than its PortBinding's needs that
/// namespace's consent (the operator's `--cross-namespace-targets`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrossNamespaceTargets {
    /// Followed without a grant, as README Examples 2 and 3 expect (a PortBinding in
    /// `default` targeting a Service in `networking`). Restricted targets are refused anyway.
    #[default]
    Allow,
    /// Followed only when a `ReferenceGrant` in the Service's namespace allows it (from kind
    /// `PortBinding`, to kind `Service`): for clusters shared by tenants.
    RequireGrant,
}

impl CrossNamespaceTargets {
    /// The flag's spelling: `allow` or `require-grant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::RequireGrant => "require-grant",
        }
    }
}

impl std::str::FromStr for CrossNamespaceTargets {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "allow" => Ok(Self::Allow),
            "require-grant" => Ok(Self::RequireGrant),
            other => Err(format!(
                "{other:?} is not a cross-namespace target policy: use allow or require-grant"
            )),
        }
    }
}

/// Which targets the planner refuses (binding refusal `RestrictedTarget`), however they were
/// given (a raw `target.address` or the ClusterIP a target Service resolves to): loopback,
/// link-local (169.254.0.0/16 and fe80::/10, where most cloud metadata lives), the other
/// cloud metadata addresses ([`METADATA_ADDRESSES`]), the EdgeNode's own tunnel network (the
/// relay's admin bridge on 10.200.0.1:40600, the uplinks), and the API server's addresses;
/// unless the operator was started with the flag that allows them. Also: whether target
/// Services in other namespaces need a grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// The operator flag: publish restricted addresses anyway.
    pub allow_restricted: bool,
    /// The API server's addresses (the `default/kubernetes` Service's ClusterIP and its
    /// endpoints: [`api_server_addresses`]).
    pub api_server: Vec<IpAddr>,
    /// The EdgeNode's tunnel network; the planner fills it in for the node it plans.
    pub tunnel_network: Option<Ipv4Net>,
    /// Whether target Services in other namespaces need a grant.
    pub cross_namespace_targets: CrossNamespaceTargets,
}

impl TargetPolicy {
    /// Why `ip` may not be a target, or `None` when it may.
    pub fn restriction(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_restricted {
            return None;
        }
        let same = canonical(ip);
        let v4 = match same {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        };
        if ip.is_loopback() || v4.is_some_and(|v| v.is_loopback()) {
            Some("a loopback address")
        } else if v4.is_some_and(|v| v.is_link_local())
            || matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
        {
            Some("a link-local address (cloud metadata lives there)")
        } else if let Some((_, what)) = METADATA_ADDRESSES.iter().find(|(a, _)| *a == same) {
            Some(*what)
        } else if v4.is_some_and(|v| self.tunnel_network.is_some_and(|n| n.contains(&v))) {
            Some("in the EdgeNode's tunnel network (the relay and the uplinks' own endpoints)")
        } else if self.api_server.iter().any(|a| canonical(*a) == same) {
            Some("an address of the Kubernetes API server")
        } else {
            None
        }
    }
}

/// The same address however it is spelled: an IPv4-mapped IPv6 address is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The API server's addresses: the ClusterIP of Service `default/kubernetes` and the
/// endpoint addresses of its EndpointSlices, sorted, without duplicates. Malformed entries
/// are skipped.
pub fn api_server_addresses(service: Option<&Service>, slices: &[EndpointSlice]) -> Vec<IpAddr> {
    let cluster_ips = service
        .and_then(|s| s.spec.as_ref())
        .map(|spec| {
            spec.cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let endpoints = slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .flat_map(|e| &e.addresses)
        .filter_map(|ip| ip.parse::<IpAddr>().ok());
    let all: BTreeSet<IpAddr> = cluster_ips.into_iter().chain(endpoints).collect();
    all.into_iter().collect()
}

/// A resolver over plain maps, for `tunnel render` and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    /// `(namespace, name)` → `(ClusterIP or None when headless, ports)`.
    pub services: BTreeMap<(String, String), (Option<IpAddr>, Vec<ServicePortEntry>)>,
    /// `(namespace, name)` → Secret contents.
    pub secrets: BTreeMap<(String, String), TlsSecret>,
    /// The ReferenceGrants in force.
    pub grants: Vec<GrantInput>,
    /// Which targets are refused.
    pub policy: TargetPolicy,
}

impl StaticResolver {
    #[must_use]
    /// Adds a ReferenceGrant in `namespace`.
    pub fn with_grant(mut self, namespace: &str, spec: crate::crd::ReferenceGrantSpec) -> Self {
        self.grants.push(GrantInput {
            namespace: namespace.to_owned(),
            spec,
        });
        self
    }

    #[must_use]
    /// Sets the target policy.
    pub fn with_target_policy(mut self, policy: TargetPolicy) -> Self {
        self.policy = policy;
        self
    }

    #[must_use]
    /// Adds a Service with a ClusterIP (`None`: headless) and its (unnamed) ports.
    pub fn with_service(
        self,
        namespace: &str,
        name: &str,
        cluster_ip: Option<IpAddr>,
        ports: &[u16],
    ) -> Self {
        let ports: Vec<ServicePortEntry> = ports
            .iter()
            .map(|&port| ServicePortEntry { port, name: None })
            .collect();
        self.with_service_ports(namespace, name, cluster_ip, ports)
    }

    #[must_use]
    /// Adds a Service with a ClusterIP (`None`: headless) and its ports, named or not.
    pub fn with_service_ports(
        mut self,
        namespace: &str,
        name: &str,
        cluster_ip: Option<IpAddr>,
        ports: Vec<ServicePortEntry>,
    ) -> Self {
        self.services
            .insert((namespace.to_owned(), name.to_owned()), (cluster_ip, ports));
        self
    }

    #[must_use]
    /// Adds a TLS Secret.
    pub fn with_secret(mut self, namespace: &str, name: &str, secret: TlsSecret) -> Self {
        self.secrets
            .insert((namespace.to_owned(), name.to_owned()), secret);
        self
    }
}

impl Resolver for StaticResolver {
    fn reference_allowed(&self, reference: &Reference<'_>) -> bool {
        reference_allowed(reference, &self.grants)
    }

    fn target_policy(&self) -> TargetPolicy {
        self.policy.clone()
    }

    fn service(&self, namespace: &str, name: &str, port: &ServicePort) -> ServiceLookup {
        match self.services.get(&(namespace.to_owned(), name.to_owned())) {
            None => ServiceLookup::NotFound,
            Some((None, _)) => ServiceLookup::Headless,
            Some((Some(address), ports)) => match match_port(ports, port) {
                Ok(port) => ServiceLookup::Found {
                    address: *address,
                    port,
                },
                Err(available) => ServiceLookup::PortNotFound { available },
            },
        }
    }

    fn tls_secret(&self, namespace: &str, name: &str) -> Option<TlsSecret> {
        self.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_match_by_number_or_by_name_and_a_miss_lists_them() {
        let ports = vec![
            ServicePortEntry {
                port: 8443,
                name: Some("https".into()),
            },
            ServicePortEntry {
                port: 80,
                name: None,
            },
        ];
        assert_eq!(match_port(&ports, &ServicePort::Number(80)), Ok(80));
        assert_eq!(
            match_port(&ports, &ServicePort::Name("https".into())),
            Ok(8443)
        );
        let listed = vec!["80".to_owned(), "8443 (https)".to_owned()];
        assert_eq!(
            match_port(&ports, &ServicePort::Number(443)),
            Err(listed.clone())
        );
        assert_eq!(
            match_port(&ports, &ServicePort::Name("http".into())),
            Err(listed)
        );
        assert_eq!(match_port(&[], &ServicePort::Number(1)), Err(Vec::new()));
    }

    #[test]
    fn the_cross_namespace_policy_reads_its_two_spellings_and_names_them_on_error() {
        for p in [
            CrossNamespaceTargets::Allow,
            CrossNamespaceTargets::RequireGrant,
        ] {
            assert_eq!(p.as_str().parse::<CrossNamespaceTargets>(), Ok(p));
        }
        let err = "grant".parse::<CrossNamespaceTargets>().unwrap_err();
        assert!(err.contains("allow or require-grant"), "{err}");
    }

    #[test]
    fn a_port_is_a_number_or_a_name_in_yaml() {
        let number: ServicePort = serde_yaml::from_str("8080").unwrap();
        let name: ServicePort = serde_yaml::from_str("https").unwrap();
        assert_eq!(number, ServicePort::Number(8080));
        assert_eq!(name, ServicePort::Name("https".into()));
        assert_eq!(serde_json::to_string(&number).unwrap(), "8080");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"https\"");
    }
}
