//! The Kubernetes objects a user writes and reads around the operator, as `kubectl` would:
//! server-side apply of a YAML document, a namespace, the SSH Secret of a VPS, a TLS Secret
//! (as cert-manager writes it), a ClusterIP Service, an object's `Ready` condition and the
//! Events about it. Generic over the object's type, so the test bed needs nothing of the
//! operator's crate.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TestbedError;
use crate::vps::Vps;
use crate::wait::eventually;

/// A condition as `(status, reason, message)`.
pub type Condition = (String, String, String);

fn kube_error(what: &str) -> impl FnOnce(kube::Error) -> TestbedError + '_ {
    move |e| TestbedError::Kube(format!("{what}: {e}"))
}

fn json_error(what: &str) -> impl FnOnce(serde_json::Error) -> TestbedError + '_ {
    move |e| TestbedError::Kube(format!("{what}: {e}"))
}

/// Applies a YAML document with server-side apply, as `kubectl apply --server-side` would
/// (namespace `default` when the document names none).
pub async fn apply_yaml<K>(client: &Client, yaml: &str) -> Result<K, TestbedError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let object: K = serde_yaml::from_str(yaml)
        .map_err(|e| TestbedError::Kube(format!("parsing the document: {e}\n{yaml}")))?;
    let ns = object
        .meta()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = object.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(kube_error(&format!("applying {ns}/{name}")))
}

/// Creates namespace `name` unless it exists.
pub async fn namespace(client: &Client, name: &str) -> Result<(), TestbedError> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
        .map_err(json_error(name))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(kube_error(&format!("creating namespace {name}"))(e)),
    }
}

/// The SSH Secret for `vps`, as a user would create it: the test client's private key and
/// the VPS's host key.
pub async fn ssh_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    vps: &Vps,
) -> Result<(), TestbedError> {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {
            "privateKey": vps.client_private_key()?,
            "knownHosts": vps.known_hosts_line()?,
        }
    }))
    .map_err(json_error(name))?;
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(kube_error(&format!("applying Secret {namespace}/{name}")))?;
    Ok(())
}

/// A `kubernetes.io/tls` Secret `<namespace>/<name>` with `tls.crt` and `tls.key` (and
/// `ca.crt` when given), applied as cert-manager applies a renewal: the same object, new data.
pub async fn tls_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    cert: &str,
    key: &str,
    ca: Option<&str>,
) -> Result<(), TestbedError> {
    let mut data = serde_json::json!({"tls.crt": cert, "tls.key": key});
    if let Some(ca) = ca {
        data["ca.crt"] = serde_json::Value::String(ca.to_owned());
    }
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "stringData": data,
    }))
    .map_err(json_error(name))?;
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("cert-manager").force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(kube_error(&format!("applying Secret {namespace}/{name}")))?;
    Ok(())
}

/// A ClusterIP Service with a fixed address; port `p` of protocol `P` is named `p<p>-<P>`.
pub async fn service(
    client: &Client,
    namespace: &str,
    name: &str,
    ip: &str,
    ports: &[(u16, &str)],
) -> Result<(), TestbedError> {
    let ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|(p, proto)| serde_json::json!({"name": format!("p{p}-{}", proto.to_lowercase()), "port": p, "protocol": proto}))
        .collect();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": ports}
    }))
    .map_err(json_error(name))?;
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &svc)
        .await
        .map_err(kube_error(&format!("creating Service {namespace}/{name}")))?;
    Ok(())
}

/// The condition `type_` of `conditions`.
pub fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<Condition> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The `Ready` condition in the status of object `name` (`status.conditions`, the API
/// convention), if it has one yet.
pub async fn ready<K>(api: &Api<K>, name: &str) -> Option<Condition>
where
    K: Clone + Serialize + DeserializeOwned + Debug,
{
    let object = serde_json::to_value(api.get_opt(name).await.ok()??).ok()?;
    let ready = object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    let field = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    Some((field("status"), field("reason"), field("message")))
}

/// Waits (3 minutes at most) until object `name` is `Ready=True`; its condition. Fails the
/// test with what `describe` gives otherwise.
pub async fn until_ready<K>(api: &Api<K>, name: &str, describe: impl Fn() -> String) -> Condition
where
    K: Clone + Serialize + DeserializeOwned + Debug,
{
    eventually(
        &format!("{name} Ready=True"),
        Duration::from_secs(180),
        async || ready(api, name).await.filter(|c| c.0 == "True"),
        describe,
    )
    .await
}

/// The Events about object `namespace/name`, as `reason: note` lines.
pub async fn events_of(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<String>, TestbedError> {
    let list = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(kube_error(&format!("listing Events in {namespace}")))?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect())
}
