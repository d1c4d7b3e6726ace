//! The SDS files under `/etc/envoy/tls/`: for each TLS Secret an offload or mutual binding
//! uses, `<namespace>_<secret>.sds.yaml` with the certificate and key, and, when a mutual
//! binding uses the Secret, `<namespace>_<secret>_ca.sds.yaml` with its `ca.crt` as a
//! validation context. Envoy's file-based SDS wants exactly one secret per file. Rotating a
//! certificate rewrites these files; Envoy reloads them without touching listeners or
//! connections.
//!
//! These files carry private keys: they are written 0600 on the VPS and never logged.

use std::collections::BTreeMap;

use serde_json::json;

use super::super::bindings::SecretKey;
use super::super::resolve::TlsSecret;
use super::{EnvoyError, names, resources, to_yaml};

/// The SDS files as (file stem, YAML), sorted by stem.
pub fn render(
    secrets: &BTreeMap<SecretKey, (TlsSecret, bool)>,
) -> Result<Vec<(String, String)>, EnvoyError> {
    let mut out = Vec::new();
    for (key, (secret, with_ca)) in secrets {
        let cert = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": names::certificate(key),
            "tls_certificate": {
                "certificate_chain": { "inline_string": secret.certificate_chain.clone().unwrap_or_default() },
                "private_key": { "inline_string": secret.private_key.clone().unwrap_or_default() },
            }
        });
        out.push((
            names::certificate(key),
            to_yaml("SDS file", &resources(&[cert]))?,
        ));
        if *with_ca {
            let ca = json!({
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": names::ca(key),
                "validation_context": {
                    "trusted_ca": { "inline_string": secret.ca.clone().unwrap_or_default() },
                }
            });
            out.push((names::ca(key), to_yaml("SDS file", &resources(&[ca]))?));
        }
    }
    out.sort();
    Ok(out)
}
