//! The gather stage of a pass: every input read once, into one value. The EdgeNode, its
//! PortBindings and LoadBalancer Services come from the watch caches, the SSH and TLS Secrets from what the pass fetched
//! ([`super::super::secrets`]; the SSH Secret is turned into the SSH target here), the WireGuard key Secrets and the owners of the uplink objects from
//! the API (they live in the uplink namespace, which the operator may not watch): an object
//! under one of the EdgeNode's names that is not its own stops the pass here, before any write.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt;

use crate::crd::{EdgeNode, FromKind, PortBinding, Reference, ToKind};
use crate::hash::sha256_hex;
use crate::object_key::ObjectKey;
use crate::ssh::{Credentials, SshOptions};
use crate::workload::{self, Existing};

use super::super::Context;
use super::super::error::ReconcileError;
use super::super::gateway_api::SourceInput;
use super::super::protocol::Target;
use super::super::resolver::StoreResolver;

/// What one pass reads.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// The EdgeNode.
    pub node: Arc<EdgeNode>,
    /// Where and how to log in.
    pub target: Target,
    /// The WireGuard key Secrets as they are, and this EdgeNode's objects under the legacy
    /// names (to migrate).
    pub existing: Existing,
    /// The PortBindings that point at the EdgeNode.
    pub port_bindings: Vec<Arc<PortBinding>>,
    /// The LoadBalancer Services it serves.
    pub services: Vec<Arc<Service>>,
    /// The Gateways it serves, translated.
    pub gateways: Vec<SourceInput>,
    /// The Secrets the pass reads (SSH and TLS), with their data.
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
}

/// Reads the inputs of a converge pass of `node`, whose sources (PortBindings, LoadBalancer
/// Services) and Secrets the caller read (first, so it knows what the pass read even when this
/// fails).
pub async fn gather(
    ctx: &Context,
    resolver: &StoreResolver,
    node: Arc<EdgeNode>,
    (port_bindings, services, gateways): (
        Vec<Arc<PortBinding>>,
        Vec<Arc<Service>>,
        Vec<SourceInput>,
    ),
    secrets: BTreeMap<ObjectKey, Arc<Secret>>,
) -> Result<Gathered, ReconcileError> {
    let key = ObjectKey::of(node.as_ref());
    let target = target_of(ctx, resolver, &node, &secrets)?;
    let existing = workload::read_existing(
        &ctx.client,
        &node.spec.uplink.namespace,
        &key.namespace,
        &key.name,
    )
    .await?;
    Ok(Gathered {
        node,
        target,
        existing,
        port_bindings,
        services,
        gateways,
        secrets,
    })
}

/// The SSH target from the EdgeNode's spec and its Secret (from `secrets`, what the pass
/// fetched).
pub fn target_of(
    ctx: &Context,
    resolver: &StoreResolver,
    node: &EdgeNode,
    secrets: &BTreeMap<ObjectKey, Arc<Secret>>,
) -> Result<Target, ReconcileError> {
    let ns = node.namespace().unwrap_or_default();
    let secret_ref = &node.spec.ssh.secret_ref;
    let secret_ns = secret_ref.namespace_or(&ns);
    let secret_name = format!("{secret_ns}/{}", secret_ref.name);
    let reference = Reference {
        from_kind: FromKind::EdgeNode,
        from_namespace: &ns,
        to_kind: ToKind::Secret,
        to_namespace: secret_ns,
        to_name: &secret_ref.name,
    };
    if !crate::plan::Resolver::reference_allowed(resolver, &reference) {
        return Err(ReconcileError::SshSecretNotGranted {
            secret: secret_name,
            namespace: ns.clone(),
        });
    }
    let secret = secrets
        .get(&ObjectKey::new(secret_ns, secret_ref.name.clone()))
        .ok_or_else(|| ReconcileError::SshSecretNotFound {
            secret: secret_name.clone(),
            hint: if ctx.stores.secrets.watches(secret_ns) {
                "create it with key privateKey (or password) and knownHosts"
            } else {
                "the operator watches Secrets only in the namespaces of --watch-namespaces (the chart's watchNamespaces), and this is not one of them"
            },
        })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let credentials =
        Credentials::from_secret_data(&data).map_err(|source| ReconcileError::SshSecret {
            secret: secret_name,
            source,
        })?;
    let mut options = SshOptions::from_spec(&node.spec.address, &node.spec.ssh)
        .map_err(ReconcileError::SshSettings)?;
    options.keepalive_interval = ctx.ssh_keepalive;
    let fingerprint = session_digest(&options, &data);
    Ok(Target {
        options,
        credentials,
        fingerprint,
    })
}

/// A digest of everything a kept SSH session was made with: every field of the options, named
/// one by one (a new field does not compile until it is decided here), and each key of the
/// Secret with a digest of its value. A different digest means a new connection.
pub fn session_digest(options: &SshOptions, secret_data: &BTreeMap<String, Vec<u8>>) -> String {
    let SshOptions {
        host,
        port,
        user,
        connect_timeout,
        keepalive_interval,
        keepalive_max,
        command_timeout,
        insecure_skip_host_key_verification,
        reconnect_attempts,
    } = options;
    let mut material = format!(
        "host={host}\nport={port}\nuser={user}\nconnect={}\nkeepalive={}\nkeepalive_max={keepalive_max}\ncommand={}\ninsecure={insecure_skip_host_key_verification}\nreconnect={reconnect_attempts}\n",
        connect_timeout.as_millis(),
        keepalive_interval.as_millis(),
        command_timeout.as_millis(),
    );
    for (k, v) in secret_data {
        let _ = writeln!(material, "secret.{k}={}", sha256_hex(v));
    }
    sha256_hex(material.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SshOptions {
        let spec: crate::crd::SshSpec =
            serde_json::from_value(serde_json::json!({"secretRef": {"name": "s"}})).unwrap();
        SshOptions::from_spec("192.0.2.1", &spec).unwrap()
    }

    #[test]
    fn the_session_digest_follows_the_options_and_the_secret() {
        let data = BTreeMap::from([("privateKey".to_owned(), b"k1".to_vec())]);
        let base = session_digest(&options(), &data);
        assert_eq!(base, session_digest(&options(), &data), "stable");
        let mut other_port = options();
        other_port.port += 1;
        assert_ne!(base, session_digest(&other_port, &data));
        let rotated = BTreeMap::from([("privateKey".to_owned(), b"k2".to_vec())]);
        assert_ne!(base, session_digest(&options(), &rotated));
        let mut insecure = options();
        insecure.insecure_skip_host_key_verification = true;
        assert_ne!(base, session_digest(&insecure, &data));
    }
}
