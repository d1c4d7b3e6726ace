//! What the planner needs from the cluster, behind a trait so the planner stays pure: the
//! ClusterIP of a target Service, the contents of a TLS Secret, whether a reference across
//! namespaces is granted (`ReferenceGrant`), and which raw target addresses are refused. The
//! operator implements it over its watch caches; `tunnel render` over the YAML files it read;
//! tests over maps.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

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
    /// What raw `target.address`es are refused. The default refuses loopback, link-local and
    /// unspecified addresses (no API server addresses known).
    fn target_policy(&self) -> TargetPolicy {
        TargetPolicy::default()
    }
}

/// Which raw `target.address`es the planner refuses (binding refusal `RestrictedTarget`):
/// loopback (127.0.0.0/8), link-local (169.254.0.0/16, where cloud metadata lives), and the
/// API server's addresses, unless the operator was started with the flag that allows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// The operator flag: publish restricted addresses anyway.
    pub allow_restricted: bool,
    /// The API server's addresses (the `default/kubernetes` Service's ClusterIP and its
    /// endpoints), which a raw target may not name.
    pub api_server: Vec<IpAddr>,
}

impl TargetPolicy {
    /// Why `ip` may not be a raw target, or `None` when it may.
    pub fn restriction(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_restricted {
            return None;
        }
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        if ip.is_loopback() || v4.is_some_and(|v| v.is_loopback()) {
            Some("a loopback address")
        } else if v4.is_some_and(|v| v.is_link_local())
            || matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
        {
            Some("a link-local address (cloud metadata lives there)")
        } else if self.api_server.contains(&ip)
            || v4.is_some_and(|v| self.api_server.contains(&IpAddr::V4(v)))
        {
            Some("an address of the Kubernetes API server")
        } else {
            None
        }
    }
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
    /// The raw-target policy.
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
    /// Sets the raw-target policy.
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
    fn a_port_is_a_number_or_a_name_in_yaml() {
        let number: ServicePort = serde_yaml::from_str("8080").unwrap();
        let name: ServicePort = serde_yaml::from_str("https").unwrap();
        assert_eq!(number, ServicePort::Number(8080));
        assert_eq!(name, ServicePort::Name("https".into()));
        assert_eq!(serde_json::to_string(&number).unwrap(), "8080");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"https\"");
    }
}
