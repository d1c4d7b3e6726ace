//! In-process test support for the actor tree, without root or a cluster: an in-memory API
//! server behind a real `kube::Client` (a tower service, as kube-rs's own fixtures do), watch
//! caches filled by hand, and a [`Context`] over both. Objects written through the client
//! (server-side apply, merge patches, creates, deletes) are kept by path; every request is
//! logged, so a test asserts on exactly what the actors wrote.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::crd::{EdgeNode, PortBinding, ReferenceGrant};
use crate::enroll::{Arch, Blob, EnvoyInstall};

use super::edge_node::core::Schedule;
use super::resolver::ApiServerStores;
use super::restarts::RestartPolicy;
use super::scoped_store::ScopedStore;
use super::{Artefacts, Context, Stores};

/// One request the fake API answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// The path (no query).
    pub path: String,
    /// The body, as JSON (`Null` when empty).
    pub body: serde_json::Value,
}

/// The in-memory API server.
#[derive(Debug, Clone, Default)]
pub struct FakeApi {
    objects: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeApi {
    /// A client over it.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The requests whose path ends with `suffix`, with this method.
    pub fn calls_to(&self, method: &Method, suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == *method && c.path.ends_with(suffix))
            .collect()
    }

    /// Stores `object` at `path`, as if created.
    pub fn put(&self, path: &str, object: &impl serde::Serialize) {
        let value = serde_json::to_value(object).unwrap();
        self.objects.lock().unwrap().insert(path.to_owned(), value);
    }

    /// The object stored at `path`.
    pub fn object(&self, path: &str) -> Option<serde_json::Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    async fn answer(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let bytes = request
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        self.calls.lock().unwrap().push(Call {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        // A status subresource is kept with its object.
        let (key, status) = match path.strip_suffix("/status") {
            Some(object) => (object.to_owned(), true),
            None => (path.clone(), false),
        };
        let mut objects = self.objects.lock().unwrap();
        match method {
            Method::GET => match objects.get(&key) {
                Some(o) => reply(StatusCode::OK, o),
                None => not_found(&key),
            },
            Method::DELETE => match objects.remove(&key) {
                Some(o) => reply(StatusCode::OK, &o),
                None => not_found(&key),
            },
            Method::POST => {
                let name = body
                    .pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("generated")
                    .to_owned();
                let at = format!("{path}/{name}");
                if objects.contains_key(&at) {
                    return reply(
                        StatusCode::CONFLICT,
                        &status_body(409, "AlreadyExists", &at),
                    );
                }
                objects.insert(at, body.clone());
                reply(StatusCode::CREATED, &body)
            }
            Method::PATCH | Method::PUT => {
                let entry = objects.entry(key).or_insert_with(|| serde_json::json!({}));
                if status {
                    if let Some(s) = body.get("status") {
                        entry["status"] = s.clone();
                    }
                } else {
                    merge(entry, &body);
                }
                reply(StatusCode::OK, entry)
            }
            _ => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &status_body(405, "MethodNotAllowed", &path),
            ),
        }
    }
}

/// JSON merge patch (RFC 7386), close enough to server-side apply for one field manager.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn status_body(code: u16, reason: &str, what: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("{what}: {reason}"), "reason": reason, "code": code,
    })
}

fn not_found(path: &str) -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, &status_body(404, "NotFound", path))
}

fn reply(code: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The writers of the caches a test fills by hand.
#[allow(missing_debug_implementations)]
pub struct Caches {
    /// EdgeNodes.
    pub edge_nodes: Writer<EdgeNode>,
    /// PortBindings.
    pub port_bindings: Writer<PortBinding>,
    /// Secrets (metadata: their data is in the API, [`Bed::secret`]).
    pub secrets: Writer<PartialObjectMeta<Secret>>,
    /// Services.
    pub services: Writer<Service>,
}

impl Caches {
    /// Puts an EdgeNode in the cache (see [`Bed::edge_node`] for the cache and the API).
    pub fn edge_node(&mut self, node: EdgeNode) {
        self.edge_nodes
            .apply_watcher_event(&watcher::Event::Apply(node));
    }

    /// Puts a Secret's metadata in the cache (see [`Bed::secret`] for the cache and the API).
    pub fn secret(&mut self, secret: &Secret) {
        self.secrets.apply_watcher_event(&watcher::Event::Apply(
            secret.metadata.clone().into_response_partial(),
        ));
    }

    /// Puts a PortBinding in the cache.
    pub fn port_binding(&mut self, pb: PortBinding) {
        self.port_bindings
            .apply_watcher_event(&watcher::Event::Apply(pb));
    }

    /// Puts a Service in the cache.
    pub fn service(&mut self, svc: Service) {
        self.services
            .apply_watcher_event(&watcher::Event::Apply(svc));
    }
}

impl Bed {
    /// Creates an EdgeNode: in the API and in the cache.
    pub fn edge_node(&mut self, node: EdgeNode) {
        let meta = &node.metadata;
        let path = format!(
            "/apis/tunnel.achetronic.com/v1alpha1/namespaces/{}/edgenodes/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        );
        self.api.put(&path, &node);
        self.caches.edge_node(node);
    }

    /// Creates or changes a Secret: in the API (its data is fetched from there) and in the
    /// metadata cache.
    pub fn secret(&mut self, secret: &Secret) {
        let meta = &secret.metadata;
        let path = format!(
            "/api/v1/namespaces/{}/secrets/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        );
        self.api.put(&path, secret);
        self.caches.secret(secret);
    }
}

/// A tree's context over a fake API, with caches filled by hand.
#[allow(missing_debug_implementations)]
pub struct Bed {
    /// The API.
    pub api: FakeApi,
    /// The context actors get.
    pub ctx: Arc<Context>,
    /// The caches' writers.
    pub caches: Caches,
}

/// A bed whose actor names start with `prefix` (unique per test: ractor's registry is
/// process-wide), with `restarts` as the supervisors' policy and retries an hour apart (a
/// test counts passes; no retry may add one).
pub fn bed(prefix: &str, restarts: RestartPolicy) -> Bed {
    let api = FakeApi::default();
    let client = api.client();
    let (edge_nodes, edge_writer) = reflector::store::<EdgeNode>();
    let (port_bindings, pb_writer) = reflector::store::<PortBinding>();
    let (secrets, secret_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let (services, service_writer) = reflector::store::<Service>();
    let (stateful_sets, _) = reflector::store();
    let (grants, _) = reflector::store::<ReferenceGrant>();
    let (service, _) = reflector::store();
    let (slices, _) = reflector::store();
    let stores = Stores {
        edge_nodes,
        port_bindings,
        secrets: ScopedStore::Cluster(secrets),
        services: ScopedStore::Cluster(services),
        stateful_sets,
        grants: super::grants::GrantStores {
            tunnel: grants,
            gateway: None,
        },
        api_server: ApiServerStores { service, slices },
        gateway_api: None,
    };
    let hour = Duration::from_secs(3600);
    let ctx = Context {
        recorder: kube::runtime::events::Recorder::new(client.clone(), super::reporter()),
        client,
        stores,
        secret_data: super::secrets::SecretData::default(),
        artefacts: Artefacts {
            tunnelctl: BTreeMap::from([(Arch::X86_64, Blob::new(b"relay".to_vec()))]),
            envoy: EnvoyInstall::Push {
                version: "1.40.0".into(),
                binaries: BTreeMap::from([(Arch::X86_64, Blob::new(b"envoy".to_vec()))]),
            },
            uplink_image: "registry.example/uplink:1".into(),
        },
        resync: hour,
        ssh_keepalive: Duration::from_secs(15),
        ssh_slots: Arc::new(super::ssh_slots::SshSlots::new(1)),
        prefix: prefix.to_owned(),
        schedule: Schedule {
            retry_min: hour,
            retry_max: hour,
            recheck_min: hour,
            recheck_max: hour,
        },
        restarts,
        uplink_log: ("json".into(), "info".into()),
        uplink_pod_options: crate::workload::UplinkPodOptions::default(),
        load_balancers: crate::plan::load_balancer::LoadBalancerSettings::default(),
        allow_restricted_targets: false,
        cross_namespace_targets: crate::plan::CrossNamespaceTargets::default(),
        metrics: crate::telemetry::metrics::Metrics::new(),
        fence: crate::leader::fence::Fence::always_open(),
        edges: Arc::default(),
    };
    Bed {
        api,
        ctx: Arc::new(ctx),
        caches: Caches {
            edge_nodes: edge_writer,
            port_bindings: pb_writer,
            secrets: secret_writer,
            services: service_writer,
        },
    }
}

/// Polls `check` every 10 ms until it holds, for at most 10 s (an in-process actor answers
/// in microseconds; the bound only keeps a broken test from hanging).
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// A parsed EdgeNode from YAML.
pub fn edge_node(yaml: &str) -> EdgeNode {
    serde_yaml::from_str(yaml).unwrap()
}

/// A parsed PortBinding from YAML.
pub fn port_binding(yaml: &str) -> PortBinding {
    serde_yaml::from_str(yaml).unwrap()
}

/// A peer that records every message it gets.
#[derive(Debug)]
pub struct Recorder<M>(std::marker::PhantomData<fn() -> M>);

impl<M> Recorder<M> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<M: ractor::Message + std::fmt::Debug> Actor for Recorder<M> {
    type Msg = M;
    type State = Arc<Mutex<Vec<String>>>;
    type Arguments = Arc<Mutex<Vec<String>>>;

    async fn pre_start(
        &self,
        _: ActorRef<M>,
        seen: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(seen)
    }

    async fn handle(
        &self,
        _: ActorRef<M>,
        message: M,
        seen: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        seen.lock().unwrap().push(format!("{message:?}"));
        Ok(())
    }
}

/// Spawns a [`Recorder`] named `name`; returns it and what it has seen (each message's
/// `Debug` text, in order).
pub async fn recorder<M: ractor::Message + std::fmt::Debug>(
    name: String,
) -> (ActorRef<M>, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (actor, _) = Actor::spawn(Some(name), Recorder::<M>::new(), seen.clone())
        .await
        .unwrap();
    (actor, seen)
}
