//! A PortBinding's DNS records for external-dns (issue 20): a PortBinding annotated
//! [`ANNOTATION_HOSTNAME`] (external-dns's own annotation, as on a Service) gets a `DNSEndpoint`
//! (external-dns's CRD source, `externaldns.k8s.io/v1alpha1`) of the same name in its namespace,
//! with an `A` record of its published IPv4 addresses and an `AAAA` record of its IPv6 ones —
//! exactly the edges that serve it, pass the check from outside and are not drained
//! ([`super::edge_set`]). An unmodified external-dns run with `--source=crd` publishes it.
//!
//! Written by server-side apply (field manager [`FIELD_MANAGER`], never forced: a DNSEndpoint
//! of that name that someone else wrote is left alone and the conflict is logged), owned by the
//! PortBinding (garbage-collected with it), deleted by the PortBinding actor when the
//! annotation goes or the PortBinding is gone. Where the CRD is not installed nothing is
//! written (the API answers 404) and nothing fails.
//!
//! Trust: the names a PortBinding publishes are its author's to choose, like a Service's
//! annotation; the cluster's admin bounds them with external-dns's own `--domain-filter`.

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::{Client, Resource};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::crd::PortBinding;
use crate::object_key::ObjectKey;

/// external-dns's annotation: the names to publish (comma-separated).
pub const ANNOTATION_HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";
/// external-dns's annotation: the records' TTL in seconds.
pub const ANNOTATION_TTL: &str = "external-dns.alpha.kubernetes.io/ttl";
/// The prefixes external-dns's annotations come with: the classic one, and the one newer
/// releases default to (`--annotation-prefix`); a PortBinding may use either.
pub const ANNOTATION_PREFIXES: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/",
    "external-dns.kubernetes.io/",
];
/// The field manager of the DNSEndpoints the operator writes.
pub const FIELD_MANAGER: &str = "tunnel-dnsendpoint";
/// The most names one PortBinding publishes.
pub const MAX_NAMES: usize = 16;

/// external-dns's CRD.
fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

/// The `spec.endpoints` for the names of `hostnames` (comma-separated) at `addresses`, with
/// `ttl` (seconds) when it parses; names that are not DNS names are skipped, and so are
/// addresses that are not IPs (a hostname cannot be an A record).
pub fn endpoints(hostnames: &str, ttl: Option<&str>, addresses: &[String]) -> Vec<Value> {
    let (v4, v6): (Vec<std::net::IpAddr>, Vec<std::net::IpAddr>) = addresses
        .iter()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .partition(std::net::IpAddr::is_ipv4);
    let ttl = ttl.and_then(|t| t.trim().parse::<u32>().ok());
    let mut out = Vec::new();
    for name in hostnames
        .split(',')
        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| is_dns_name(n))
        .take(MAX_NAMES)
    {
        for (record, ips) in [("A", &v4), ("AAAA", &v6)] {
            if ips.is_empty() {
                continue;
            }
            let mut e = json!({
                "dnsName": name,
                "recordType": record,
                "targets": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            });
            if let Some(ttl) = ttl {
                e["recordTTL"] = json!(ttl);
            }
            out.push(e);
        }
    }
    out
}

/// Letters, digits, `-`, `.` and a leading `*.`; labels of 1–63, at most 253 in all.
fn is_dns_name(name: &str) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    !body.is_empty()
        && name.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The DNSEndpoint `pb` wants now, for its published `addresses`; `None` when it carries no
/// hostname annotation.
pub fn wanted(pb: &PortBinding, addresses: &[String]) -> Option<Value> {
    let annotations = pb.metadata.annotations.as_ref()?;
    let get = |key: &str| {
        ANNOTATION_PREFIXES
            .iter()
            .find_map(|p| annotations.get(&format!("{p}{key}")))
            .map(String::as_str)
    };
    let endpoints = endpoints(get("hostname")?, get("ttl"), addresses);
    let owner = pb.controller_owner_ref(&())?;
    Some(json!({
        "apiVersion": "externaldns.k8s.io/v1alpha1",
        "kind": "DNSEndpoint",
        "metadata": {
            "name": pb.metadata.name,
            "namespace": pb.metadata.namespace,
            "labels": {"app.kubernetes.io/managed-by": "tunnel"},
            "ownerReferences": [owner],
        },
        "spec": {"endpoints": endpoints},
    }))
}

/// Applies `object` (from [`wanted`]) for PortBinding `key`; whether it was written (a
/// missing CRD is no error, and is tried again with the next status).
pub async fn apply(client: &Client, key: &ObjectKey, object: &Value) -> bool {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &resource());
    match api
        .patch(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(object),
        )
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            debug!(port_binding = %key, "no DNSEndpoint CRD: nothing published for external-dns");
            false
        }
        Err(e) => {
            warn!(port_binding = %key, error = %e, "writing the PortBinding's DNSEndpoint");
            false
        }
    }
}

/// Deletes the DNSEndpoint of PortBinding `key`, if it is ours (written by [`apply`]).
pub async fn delete(client: &Client, key: &ObjectKey) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &resource());
    let Ok(Some(existing)) = api.get_opt(&key.name).await else {
        return;
    };
    let ours = existing
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER));
    if !ours {
        return;
    }
    if let Err(e) = api.delete(&key.name, &DeleteParams::default()).await {
        warn!(port_binding = %key, error = %e, "deleting the PortBinding's DNSEndpoint");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_gets_an_a_and_an_aaaa_record_of_the_published_addresses() {
        let e = endpoints(
            "Web.Example.com., *.apps.example.com, bad_name, ",
            Some("60"),
            &[
                "203.0.113.1".into(),
                "2001:db8::1".into(),
                "203.0.113.2".into(),
                "vps.example.net".into(),
            ],
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert_eq!(e[0]["dnsName"], "web.example.com");
        assert_eq!(e[0]["recordType"], "A");
        assert_eq!(e[0]["targets"], json!(["203.0.113.1", "203.0.113.2"]));
        assert_eq!(e[0]["recordTTL"], 60);
        assert_eq!(e[1]["recordType"], "AAAA");
        assert_eq!(e[1]["targets"], json!(["2001:db8::1"]));
        assert_eq!(e[2]["dnsName"], "*.apps.example.com");
    }

    #[test]
    fn no_address_published_means_no_record() {
        assert!(endpoints("web.example.com", None, &[]).is_empty());
        let only_v4 = endpoints("web.example.com", Some("soon"), &["192.0.2.1".into()]);
        assert_eq!(only_v4.len(), 1);
        assert!(
            only_v4[0].get("recordTTL").is_none(),
            "a bad TTL is left out"
        );
    }

    #[test]
    fn names_are_bounded() {
        let many: Vec<String> = (0..40).map(|i| format!("n{i}.example.com")).collect();
        assert_eq!(
            endpoints(&many.join(","), None, &["192.0.2.1".into()]).len(),
            MAX_NAMES
        );
        assert!(!is_dns_name(&"a".repeat(64)));
        assert!(!is_dns_name("-a.example.com"));
    }
}
