//! Gateway API's objects as the operator sees them: the watch caches of GatewayClasses,
//! Gateways, TCPRoutes, UDPRoutes, TLSRoutes and namespaces' labels, kept only when the API
//! server serves those kinds in `gateway.networking.k8s.io/v1` (asked once, by discovery,
//! when the Manager starts: a cluster without the CRDs has no failing watch), and the
//! translation of every Gateway of our class ([`crate::plan::gateway`]) that EdgeNode passes
//! and the Gateway actor both read.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{info, warn};

use crate::crd::gateway::{Gateway, GatewayClass};
use crate::crd::gateway_route::{RouteObject, TcpRoute, TlsRoute, UdpRoute};
use crate::object_key::ObjectKey;
use crate::plan::Resolver;
use crate::plan::gateway::{self, GatewaySource};

/// A Gateway as an EdgeNode pass reads it: the planner's input and the version its report
/// carries.
#[derive(Debug, Clone)]
pub struct SourceInput {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// [`GatewaySource::version`].
    pub version: Option<i64>,
    /// What the planner reads.
    pub input: crate::plan::SourceInput,
}

impl GatewaySource {
    /// What an EdgeNode pass reads of it.
    pub fn source_with_version(self) -> SourceInput {
        SourceInput {
            namespace: self.key.namespace,
            name: self.key.name,
            version: Some(self.version),
            input: self.source,
        }
    }
}

/// The plurals Tunnel watches in Gateway API's group (all must be served).
pub const PLURALS: [&str; 5] = [
    "gatewayclasses",
    "gateways",
    "tcproutes",
    "udproutes",
    "tlsroutes",
];

/// The caches of Gateway API's objects.
#[derive(Clone)]
pub struct GatewayStores {
    /// GatewayClasses.
    pub classes: Store<GatewayClass>,
    /// Gateways.
    pub gateways: Store<Gateway>,
    /// TCPRoutes.
    pub tcp: Store<TcpRoute>,
    /// UDPRoutes.
    pub udp: Store<UdpRoute>,
    /// TLSRoutes.
    pub tls: Store<TlsRoute>,
    /// Namespaces, metadata only (their labels, for `allowedRoutes` selectors).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl std::fmt::Debug for GatewayStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayStores")
            .field("gateways", &self.gateways.state().len())
            .finish_non_exhaustive()
    }
}

impl GatewayStores {
    /// Waits until each cache has had its first list.
    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.classes.wait_until_ready().await?;
        self.gateways.wait_until_ready().await?;
        self.tcp.wait_until_ready().await?;
        self.udp.wait_until_ready().await?;
        self.tls.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        Ok(())
    }

    /// Every route of the three kinds.
    pub fn routes(&self) -> Vec<RouteObject> {
        let tcp = self.tcp.state();
        let udp = self.udp.state();
        let tls = self.tls.state();
        tcp.iter()
            .map(|r| RouteObject::from(r.as_ref()))
            .chain(udp.iter().map(|r| RouteObject::from(r.as_ref())))
            .chain(tls.iter().map(|r| RouteObject::from(r.as_ref())))
            .collect()
    }

    /// Each namespace's labels.
    pub fn namespace_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.namespaces
            .state()
            .iter()
            .filter_map(|n| {
                Some((
                    n.metadata.name.clone()?,
                    n.metadata.labels.clone().unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// The GatewayClass named `name`.
    pub fn class(&self, name: &str) -> Option<std::sync::Arc<GatewayClass>> {
        self.classes.get(&ObjectRef::new(name))
    }

    /// Every Gateway of a class of ours (being deleted or not), translated.
    pub fn sources(&self, resolver: &dyn Resolver) -> Vec<GatewaySource> {
        let routes = self.routes();
        let labels = self.namespace_labels();
        self.gateways
            .state()
            .iter()
            .filter_map(|gw| {
                let class = self.class(&gw.spec.gateway_class_name)?;
                if !gateway::class_is_ours(&class) || gw.metadata.deletion_timestamp.is_some() {
                    return None;
                }
                Some(gateway::translate(
                    gw,
                    Some(&class),
                    &routes,
                    &labels,
                    resolver,
                ))
            })
            .collect()
    }

    /// The Gateways EdgeNode `node` serves, translated.
    pub fn sources_of(&self, node: &ObjectKey, resolver: &dyn Resolver) -> Vec<GatewaySource> {
        self.sources(resolver)
            .into_iter()
            .filter(|g| g.edge_nodes.as_ref().is_ok_and(|n| n.contains(node)))
            .collect()
    }
}

/// What discovery says now, in one attempt (`None`: it failed): whether Gateway API's
/// ReferenceGrants are served, and whether every kind of [`PLURALS`] is. The Manager compares it,
/// every minute, with what it watches (`watch_kinds_changed`).
pub async fn served_now(client: &Client) -> Option<(bool, bool)> {
    let group_version = format!("{}/v1", gateway::GROUP);
    match client.list_api_group_resources(&group_version).await {
        Ok(list) => {
            let has = |p: &str| list.resources.iter().any(|r| r.name == p);
            Some((has("referencegrants"), PLURALS.iter().all(|p| has(p))))
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Some((false, false)),
        Err(_) => None,
    }
}

/// Asks discovery every `period` until it answers other than `watched`, then sends
/// `changed` once: the Manager stops the tree, and the restarted operator watches what is
/// served then (crash-only: the kinds a tree watches are fixed when it starts).
pub async fn watch_kinds_changed(
    client: Client,
    watched: (bool, bool),
    period: Duration,
    changed: impl FnOnce() + Send,
) {
    loop {
        tokio::time::sleep(period).await;
        if let Some(now) = served_now(&client).await
            && now != watched
        {
            info!(
                grants = now.0,
                gateways = now.1,
                "Gateway API's kinds served changed since the start: restarting the tree to watch them"
            );
            changed();
            return;
        }
    }
}

/// Whether the API server serves every kind of [`PLURALS`] in `gateway.networking.k8s.io/v1`.
/// A group or version it does not know (404) means no; any other failure is retried (1 s,
/// doubling to 30 s), as the watches would be.
pub async fn served(client: &Client) -> bool {
    let group_version = format!("{}/v1", gateway::GROUP);
    let mut delay = Duration::from_secs(1);
    loop {
        match client.list_api_group_resources(&group_version).await {
            Ok(list) => {
                let served = PLURALS
                    .iter()
                    .all(|p| list.resources.iter().any(|r| r.name == *p));
                info!(
                    served,
                    "Gateway API Gateways and routes ({group_version}) {}",
                    if served {
                        "watched"
                    } else {
                        "not all served: not watched until a restart"
                    }
                );
                return served;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                info!(
                    "Gateway API ({group_version}) not served: Gateways are not watched until a restart"
                );
                return false;
            }
            Err(e) => {
                warn!(error = %e, "discovery of {group_version} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
