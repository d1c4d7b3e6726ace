//! The planner's [`Resolver`] over the operator's reflector stores: a target Service's
//! ClusterIP (by port number or port name), a TLS Secret's keys, whether a reference to another namespace
//! is granted there (ReferenceGrants of both kinds: [`super::grants`]), and which targets are refused (loopback, link-local,
//! cloud metadata, the API server's addresses; the planner adds the EdgeNode's tunnel network)
//! unless `--allow-restricted-targets`, and whether Services in other namespaces need a grant
//! (`--cross-namespace-targets`). The API server's addresses come from their own watch of
//! `default/kubernetes` and its EndpointSlices ([`ApiServerStores`]), whatever
//! `--watch-namespaces` says.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};

use super::scoped_store::ScopedStore;
use crate::object_key::ObjectKey;

use super::grants::GrantStores;
use crate::crd::{GrantInput, Reference, ServicePort, reference_allowed};
use crate::plan::{
    Resolver, ServiceLookup, TargetPolicy, TlsSecret, api_server_addresses, match_port,
    service_ports,
};

/// The namespace and name of the Service in front of the API server.
pub const API_SERVER_SERVICE: (&str, &str) = ("default", "kubernetes");
/// The label selector of the API server's EndpointSlices.
pub const API_SERVER_SLICES: &str = "kubernetes.io/service-name=kubernetes";

/// The watch caches of the API server's own addresses: Service `default/kubernetes` (a watch
/// on that one name) and its EndpointSlices. Separate from the target Services, which may be
/// watched only in some namespaces.
#[derive(Clone)]
pub struct ApiServerStores {
    /// Service `default/kubernetes`.
    pub service: Store<Service>,
    /// Its EndpointSlices.
    pub slices: Store<EndpointSlice>,
}

impl std::fmt::Debug for ApiServerStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerStores")
            .field("addresses", &self.addresses())
            .finish()
    }
}

impl ApiServerStores {
    /// The API server's addresses now: its Service's ClusterIP and its endpoints.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let (namespace, name) = API_SERVER_SERVICE;
        let service = self.service.get(&ObjectRef::new(name).within(namespace));
        let slices: Vec<EndpointSlice> =
            self.slices.state().iter().map(|s| (**s).clone()).collect();
        api_server_addresses(service.as_deref(), &slices)
    }
}

/// Reads Services from the watch cache, and TLS Secrets from what the pass fetched
/// ([`Self::with_secrets`]; Secrets are watched as metadata only).
#[derive(Clone)]
pub struct StoreResolver {
    services: ScopedStore<Service>,
    secrets: BTreeMap<ObjectKey, Arc<Secret>>,
    grants: Vec<GrantInput>,
    policy: TargetPolicy,
}

impl std::fmt::Debug for StoreResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreResolver").finish_non_exhaustive()
    }
}

impl StoreResolver {
    /// A resolver over these stores, with `policy` (the operator's flags and the API
    /// server's addresses).
    pub fn new(services: ScopedStore<Service>, grants: &GrantStores, policy: TargetPolicy) -> Self {
        Self {
            services,
            secrets: BTreeMap::new(),
            grants: grants.inputs(),
            policy,
        }
    }

    /// The same, with the Secrets a pass fetched (the TLS Secrets it may read).
    #[must_use]
    pub fn with_secrets(mut self, secrets: BTreeMap<ObjectKey, Arc<Secret>>) -> Self {
        self.secrets = secrets;
        self
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
            .get(&ObjectKey::new(namespace, name))
            .map(|s| tls_of(s))
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
    fn grants_and_the_api_server_addresses_come_from_the_stores() {
        use crate::crd::{FromKind, ToKind};
        use kube::runtime::{reflector, watcher};
        let (services, _services_w) = reflector::store::<Service>();
        let (grants, mut grants_w) = reflector::store::<crate::crd::ReferenceGrant>();
        let (api_service, mut api_service_w) = reflector::store::<Service>();
        let (api_slices, mut api_slices_w) = reflector::store::<EndpointSlice>();
        // The target Services' cache does not have `default` (--watch-namespaces): the API
        // server's own watch does.
        api_service_w.apply_watcher_event(&watcher::Event::Apply(service(
            "metadata: {name: kubernetes, namespace: default}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 443}]}",
        )));
        let slice: EndpointSlice = serde_yaml::from_str(
            "metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}\naddressType: IPv4\nendpoints: [{addresses: [192.0.2.10, 192.0.2.11]}, {addresses: [not-an-ip]}]\nports: [{port: 6443}]",
        )
        .unwrap();
        api_slices_w.apply_watcher_event(&watcher::Event::Apply(slice));
        let api_server = ApiServerStores {
            service: api_service,
            slices: api_slices,
        };
        let grant: crate::crd::ReferenceGrant = serde_yaml::from_str(
            "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: certs}\nspec:\n  from: [{kind: PortBinding, namespace: apps}]\n  to: [{kind: Secret}]\n",
        )
        .unwrap();
        grants_w.apply_watcher_event(&watcher::Event::Apply(grant));
        // And Gateway API's, for another namespace.
        let (gateway, mut gateway_w) = reflector::store::<crate::crd::GatewayReferenceGrant>();
        let gateway_grant: crate::crd::GatewayReferenceGrant = serde_yaml::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: certs}\nspec:\n  from: [{group: tunnel.achetronic.com, kind: PortBinding, namespace: gw-apps}]\n  to: [{group: '', kind: Secret}]\n",
        )
        .unwrap();
        gateway_w.apply_watcher_event(&watcher::Event::Apply(gateway_grant));
        let r = StoreResolver::new(
            ScopedStore::Namespaces([("apps".to_owned(), services)].into()),
            &GrantStores {
                tunnel: grants,
                gateway: Some(gateway),
            },
            TargetPolicy {
                api_server: api_server.addresses(),
                ..TargetPolicy::default()
            },
        );
        let to_certs = |from| Reference {
            from_kind: FromKind::PortBinding,
            from_namespace: from,
            to_kind: ToKind::Secret,
            to_namespace: "certs",
            to_name: "tls",
        };
        assert!(r.reference_allowed(&to_certs("apps")));
        assert!(r.reference_allowed(&to_certs("gw-apps")));
        assert!(!r.reference_allowed(&to_certs("other")));
        let policy = r.target_policy();
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
        assert_eq!(
            policy.api_server,
            ips(&["10.96.0.1", "192.0.2.10", "192.0.2.11"]),
            "the ClusterIP and every endpoint, malformed ones skipped"
        );
        for ip in ["10.96.0.1", "192.0.2.11", "::ffff:192.0.2.10"] {
            assert!(policy.restriction(ip.parse().unwrap()).is_some(), "{ip}");
        }
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
