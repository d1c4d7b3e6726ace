//! The planner's [`Resolver`] over the operator's reflector stores: a target Service's
//! ClusterIP (by port number or port name), a TLS Secret's keys, whether a reference to another namespace
//! is granted there (ReferenceGrants), and which raw target addresses are refused (loopback,
//! link-local, the API server's ClusterIP) unless `--allow-restricted-targets`.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::reflector::{ObjectRef, Store};

use super::scoped_store::ScopedStore;

use crate::crd::{GrantInput, Reference, ReferenceGrant, ServicePort, reference_allowed};
use crate::plan::{Resolver, ServiceLookup, TargetPolicy, TlsSecret, match_port, service_ports};

/// Reads Services and Secrets from the watch caches.
#[derive(Clone)]
pub struct StoreResolver {
    services: ScopedStore<Service>,
    secrets: ScopedStore<Secret>,
    grants: Vec<GrantInput>,
    policy: TargetPolicy,
}

impl std::fmt::Debug for StoreResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreResolver").finish_non_exhaustive()
    }
}

impl StoreResolver {
    /// A resolver over these stores; `allow_restricted` is `--allow-restricted-targets`.
    pub fn new(
        services: ScopedStore<Service>,
        secrets: ScopedStore<Secret>,
        grants: &Store<ReferenceGrant>,
        allow_restricted: bool,
    ) -> Self {
        let grants = grants
            .state()
            .iter()
            .filter_map(|g| GrantInput::from_object(g))
            .collect();
        let api_server = services
            .get(&ObjectRef::new("kubernetes").within("default"))
            .and_then(|s| s.spec.clone())
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .into_iter()
            .collect();
        Self {
            services,
            secrets,
            grants,
            policy: TargetPolicy {
                allow_restricted,
                api_server,
            },
        }
    }
}

/// What a Service offers for a target port (a number, or a port name), pure.
pub fn lookup(service: Option<&Service>, port: &ServicePort) -> ServiceLookup {
    let Some(service) = service else {
        return ServiceLookup::NotFound;
    };
    let (Some(address), ports) = service_ports(service) else {
        return ServiceLookup::Headless;
    };
    match match_port(&ports, port) {
        Ok(port) => ServiceLookup::Found { address, port },
        Err(available) => ServiceLookup::PortNotFound { available },
    }
}

/// The TLS keys of a Secret, pure.
pub fn tls_of(secret: &Secret) -> TlsSecret {
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|s| !s.trim().is_empty())
    };
    TlsSecret {
        certificate_chain: text("tls.crt"),
        private_key: text("tls.key"),
        ca: text("ca.crt"),
    }
}

impl Resolver for StoreResolver {
    fn reference_allowed(&self, reference: &Reference<'_>) -> bool {
        reference_allowed(reference, &self.grants)
    }

    fn target_policy(&self) -> TargetPolicy {
        self.policy.clone()
    }

    fn service(&self, namespace: &str, name: &str, port: &ServicePort) -> ServiceLookup {
        let found = self.services.get(&ObjectRef::new(name).within(namespace));
        lookup(found.as_deref(), port)
    }

    fn tls_secret(&self, namespace: &str, name: &str) -> Option<TlsSecret> {
        self.secrets
            .get(&ObjectRef::new(name).within(namespace))
            .map(|s| tls_of(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_cluster_ip_service_resolves_by_port_number_or_name() {
        let s = service(
            "metadata: {name: web, namespace: d}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 9090, name: metrics}, {port: 8080}]}",
        );
        let found = |port| ServiceLookup::Found {
            address: "10.96.0.10".parse().unwrap(),
            port,
        };
        assert_eq!(lookup(Some(&s), &8080.into()), found(8080));
        assert_eq!(
            lookup(Some(&s), &ServicePort::Name("metrics".into())),
            found(9090),
            "a named port resolves to its number"
        );
        let missing = ServiceLookup::PortNotFound {
            available: vec!["8080".into(), "9090 (metrics)".into()],
        };
        assert_eq!(lookup(Some(&s), &81.into()), missing);
        assert_eq!(
            lookup(Some(&s), &ServicePort::Name("http".into())),
            missing,
            "an unknown name is refused with the ports there are"
        );
        assert_eq!(
            lookup(Some(&s), &ServicePort::Name("9090".into())),
            missing,
            "a name never matches a number"
        );
    }

    #[test]
    fn headless_and_missing_services_say_so() {
        let headless =
            service("metadata: {name: web}\nspec: {clusterIP: None, ports: [{port: 80}]}");
        assert_eq!(lookup(Some(&headless), &80.into()), ServiceLookup::Headless);
        let pending = service("metadata: {name: web}\nspec: {ports: [{port: 80}]}");
        assert_eq!(lookup(Some(&pending), &80.into()), ServiceLookup::Headless);
        assert_eq!(lookup(None, &80.into()), ServiceLookup::NotFound);
    }

    #[test]
    fn grants_and_the_api_server_address_come_from_the_stores() {
        use crate::crd::{FromKind, ToKind};
        use kube::runtime::{reflector, watcher};
        let (services, mut services_w) = reflector::store::<Service>();
        let (secrets, _secrets_w) = reflector::store::<Secret>();
        let (grants, mut grants_w) = reflector::store::<ReferenceGrant>();
        services_w.apply_watcher_event(&watcher::Event::Apply(service(
            "metadata: {name: kubernetes, namespace: default}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 443}]}",
        )));
        let grant: ReferenceGrant = serde_yaml::from_str(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: certs}\nspec:\n  from: [{kind: PortBinding, namespace: apps}]\n  to: [{kind: Secret}]\n",
        )
        .unwrap();
        grants_w.apply_watcher_event(&watcher::Event::Apply(grant));
        let r = StoreResolver::new(
            ScopedStore::Cluster(services),
            ScopedStore::Cluster(secrets),
            &grants,
            false,
        );
        let to_certs = |from| Reference {
            from_kind: FromKind::PortBinding,
            from_namespace: from,
            to_kind: ToKind::Secret,
            to_namespace: "certs",
            to_name: "tls",
        };
        assert!(r.reference_allowed(&to_certs("apps")));
        assert!(!r.reference_allowed(&to_certs("other")));
        let policy = r.target_policy();
        assert_eq!(
            policy.api_server,
            vec!["10.96.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(policy.restriction("10.96.0.1".parse().unwrap()).is_some());
        assert!(policy.restriction("10.96.0.53".parse().unwrap()).is_none());
    }

    #[test]
    fn tls_keys_are_read_and_empty_values_count_as_absent() {
        let secret: Secret = serde_yaml::from_str(
            "metadata: {name: t}\ndata: {tls.crt: Q0VSVA==, tls.key: '', ca.crt: Q0E=}",
        )
        .unwrap();
        let tls = tls_of(&secret);
        assert_eq!(tls.certificate_chain.as_deref(), Some("CERT"));
        assert_eq!(tls.private_key, None);
        assert_eq!(tls.ca.as_deref(), Some("CA"));
    }
}
