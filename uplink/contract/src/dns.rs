//! How both sides dial a name a user wrote (`spec.address`): as an absolute name. In a pod,
//! `ndots:5` makes the resolver try the search path first, so `vps.mycorp.dev` would be looked
//! up as `vps.mycorp.dev.<namespace>.svc.cluster.local` and so on, names a tenant may answer
//! with a Service of their own (review 2026-12, L9). The operator's SSH client and the uplink
//! agent both use [`absolute_name`].

use std::borrow::Cow;

/// The name `host` is resolved as: a DNS name with a dot gets a trailing dot, so the resolver
/// takes it as absolute. Addresses (IPv6 with or without brackets), names already absolute and
/// single labels (meant for the search path) are kept.
pub fn absolute_name(host: &str) -> Cow<'_, str> {
    let address = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if address.parse::<std::net::IpAddr>().is_ok() || host.ends_with('.') || !host.contains('.') {
        Cow::Borrowed(host)
    } else {
        Cow::Owned(format!("{host}."))
    }
}

/// `host:port` with the host made [`absolute_name`]; an endpoint without a port is kept.
pub fn absolute_endpoint(endpoint: &str) -> Cow<'_, str> {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            match absolute_name(host) {
                Cow::Borrowed(_) => Cow::Borrowed(endpoint),
                Cow::Owned(name) => Cow::Owned(format!("{name}:{port}")),
            }
        }
        _ => Cow::Borrowed(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_resolved_as_absolute_names() {
        assert_eq!(absolute_name("vps.mycorp.dev"), "vps.mycorp.dev.");
        assert_eq!(absolute_name("vps.mycorp.dev."), "vps.mycorp.dev.");
        assert_eq!(absolute_name("203.0.113.10"), "203.0.113.10");
        assert_eq!(absolute_name("2001:db8::1"), "2001:db8::1");
        assert_eq!(absolute_name("[2001:db8::1]"), "[2001:db8::1]");
        assert_eq!(absolute_name("vps"), "vps");
    }

    #[test]
    fn endpoints_keep_their_port() {
        assert_eq!(
            absolute_endpoint("vps.mycorp.dev:51820"),
            "vps.mycorp.dev.:51820"
        );
        assert_eq!(
            absolute_endpoint("203.0.113.10:51820"),
            "203.0.113.10:51820"
        );
        assert_eq!(
            absolute_endpoint("[2001:db8::1]:51820"),
            "[2001:db8::1]:51820"
        );
        assert_eq!(absolute_endpoint("relay:51820"), "relay:51820");
        assert_eq!(absolute_endpoint("vps.mycorp.dev."), "vps.mycorp.dev.");
    }
}
