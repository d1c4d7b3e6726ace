//! Names of listeners, clusters, filter chains and SDS secrets. A listener is one public port,
//! named by protocol and port (`tcp_443`); a cluster is one binding, named by protocol, port
//! and the binding's full id (`tcp_443_default_public-web_http`), because two PortBindings may
//! both call a binding `http` (a Service's port: `tcp_443_default_web_https_svc`). Kubernetes names never contain `_`, so `_` and the fixed shape
//! keep every name unambiguous.

use super::super::bindings::SecretKey;
use super::super::outcome::{BindingId, SourceKind};
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

/// The cluster of one binding (also its stat prefix and filter chain name). A Service's
/// port ends in `_svc`: a PortBinding's name has three parts after the port, so the two never
/// meet.
pub fn cluster(protocol: Protocol, port: u16, id: &BindingId) -> String {
    let suffix = match id.kind {
        SourceKind::PortBinding => "",
        SourceKind::Service => "_svc",
        SourceKind::Gateway => "_gw",
    };
    format!(
        "{}_{port}_{}_{}_{}{suffix}",
        proto(protocol),
        id.namespace,
        id.source,
        id.binding
    )
}

/// The filter chain (and stat prefix) that closes a binding's clients from outside its
/// `policy.sourceRanges`: the cluster's name and `_refused` (one `_` more than any cluster).
pub fn refused(protocol: Protocol, port: u16, id: &BindingId) -> String {
    format!("{}_refused", cluster(protocol, port, id))
}

/// The longest `<namespace>_<secret>` used as is in SDS file and secret names. Kubernetes
/// allows up to 317 characters (63 + 1 + 253), more than the VPS's file names accept
/// (`enroll::layout::is_sds_file_name`, 200): a longer one is cut and made unique by a hash
/// ([`tls_stem`]), so one long Secret name costs nothing, not the EdgeNode's pass.
pub const MAX_PLAIN_STEM: usize = 160;

/// `<namespace>_<secret>`, or, when longer than [`MAX_PLAIN_STEM`], its first 144 characters,
/// `-` and 16 hex digits of its SHA-256: 161 characters, longer than any plain stem, so a
/// hashed stem never equals another Secret's plain one.
fn tls_stem(secret: &SecretKey) -> String {
    let plain = format!("{}_{}", secret.namespace, secret.name);
    if plain.len() <= MAX_PLAIN_STEM {
        return plain;
    }
    let digest = crate::hash::sha256_hex(plain.as_bytes());
    let keep = MAX_PLAIN_STEM - 16;
    let start: String = plain.chars().take(keep).collect();
    format!("{start}-{}", digest.get(..16).unwrap_or(&digest))
}

/// The SDS file stem and certificate secret name of a TLS Secret.
pub fn certificate(secret: &SecretKey) -> String {
    tls_stem(secret)
}

/// The SDS validation-context secret name of a TLS Secret's `ca.crt`.
pub fn ca(secret: &SecretKey) -> String {
    format!("{}_ca", tls_stem(secret))
}
