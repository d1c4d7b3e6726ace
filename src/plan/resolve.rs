//! What the planner needs from the cluster, behind a trait so the planner stays pure: the
//! ClusterIP of a target Service, and the contents of a TLS Secret. The operator implements it
//! over its watch caches; `tunnel render` over the YAML files it read; tests over maps.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// The answer for a Service target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceLookup {
    /// The Service exists, has a ClusterIP and exposes the port.
    Found(IpAddr),
    /// No such Service.
    NotFound,
    /// The Service has no ClusterIP (`clusterIP: None`, or not allocated yet).
    Headless,
    /// The Service exists but does not expose the requested port.
    PortNotFound {
        /// The ports it does expose, sorted.
        available: Vec<u16>,
    },
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
    /// The ClusterIP of Service `namespace/name`, checked to expose `port`.
    fn service(&self, namespace: &str, name: &str, port: u16) -> ServiceLookup;
    /// The TLS Secret `namespace/name`, or `None` when it does not exist.
    fn tls_secret(&self, namespace: &str, name: &str) -> Option<TlsSecret>;
}

/// A resolver over plain maps, for `tunnel render` and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    /// `(namespace, name)` → `(ClusterIP or None when headless, ports)`.
    pub services: BTreeMap<(String, String), (Option<IpAddr>, Vec<u16>)>,
    /// `(namespace, name)` → Secret contents.
    pub secrets: BTreeMap<(String, String), TlsSecret>,
}

impl StaticResolver {
    #[must_use]
    /// Adds a Service with a ClusterIP (`None`: headless) and its ports.
    pub fn with_service(
        mut self,
        namespace: &str,
        name: &str,
        cluster_ip: Option<IpAddr>,
        ports: &[u16],
    ) -> Self {
        self.services.insert(
            (namespace.to_owned(), name.to_owned()),
            (cluster_ip, ports.to_vec()),
        );
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
    fn service(&self, namespace: &str, name: &str, port: u16) -> ServiceLookup {
        match self.services.get(&(namespace.to_owned(), name.to_owned())) {
            None => ServiceLookup::NotFound,
            Some((None, _)) => ServiceLookup::Headless,
            Some((Some(ip), ports)) => {
                if ports.contains(&port) {
                    ServiceLookup::Found(*ip)
                } else {
                    let mut available = ports.clone();
                    available.sort_unstable();
                    available.dedup();
                    ServiceLookup::PortNotFound { available }
                }
            }
        }
    }

    fn tls_secret(&self, namespace: &str, name: &str) -> Option<TlsSecret> {
        self.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}
