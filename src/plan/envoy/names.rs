//! Names of listeners, clusters, filter chains and SDS secrets. A listener is one public port,
//! named by protocol and port (`tcp_443`); a cluster is one binding, named by protocol, port
//! and the binding's full id (`tcp_443_default_public-web_http`), because two PortBindings may
//! both call a binding `http`. Kubernetes names never contain `_`, so `_` and the fixed shape
//! keep every name unambiguous.

use super::super::bindings::SecretKey;
use super::super::outcome::BindingId;
use crate::crd::Protocol;

fn proto(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The listener of a public port.
pub fn listener(protocol: Protocol, port: u16) -> String {
    format!("{}_{port}", proto(protocol))
}

/// The cluster of one binding (also its stat prefix and filter chain name).
pub fn cluster(protocol: Protocol, port: u16, id: &BindingId) -> String {
    format!(
        "{}_{port}_{}_{}_{}",
        proto(protocol),
        id.namespace,
        id.port_binding,
        id.binding
    )
}

/// The SDS file stem and certificate secret name of a TLS Secret.
pub fn certificate(secret: &SecretKey) -> String {
    format!("{}_{}", secret.namespace, secret.name)
}

/// The SDS validation-context secret name of a TLS Secret's `ca.crt`.
pub fn ca(secret: &SecretKey) -> String {
    format!("{}_{}_ca", secret.namespace, secret.name)
}
