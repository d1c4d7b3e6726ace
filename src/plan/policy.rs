//! L4 policy at the edge of one binding, as the planner hands it to Envoy: the allowed client
//! networks parsed into typed prefixes (aggregated: no duplicates, no overlaps, sorted), the
//! connection (TCP) or session (UDP) cap, and the new-connection token bucket with its burst
//! defaulted.
//!
//! Admission already refuses every bad value; this checks them again for what reaches the
//! planner without admission (`tunnel render` of local files, an object stored before the
//! rules). A bad value refuses only its binding, with [`Reason::InvalidSpec`] and a message
//! naming the field (`policy.sourceRanges[2]`).

use ipnet::IpNet;

use super::outcome::{Reason, Refusal};
use crate::crd::{BindingPolicy, MAX_SOURCE_RANGES, Protocol};

/// A binding's policy, checked. Only a binding with one gets Envoy's extra filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePolicy {
    /// Client networks allowed to connect, aggregated and sorted; empty: every client.
    pub source_ranges: Vec<IpNet>,
    /// Most concurrent TCP connections or UDP sessions, if limited.
    pub max_connections: Option<u32>,
    /// New TCP connections allowed, if limited.
    pub connection_rate: Option<TokenBucket>,
}

/// A token bucket of new connections: at most `burst` tokens, `per_second` added every second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens added every second.
    pub per_second: u32,
    /// Most tokens in the bucket (what may arrive at once).
    pub burst: u32,
}

/// The checked policy of a binding of `protocol`: `None` when it has none, or one that says
/// nothing (no ranges, no limits), so such a binding renders exactly as one without.
pub fn edge_policy(
    policy: Option<&BindingPolicy>,
    protocol: Protocol,
) -> Result<Option<EdgePolicy>, Refusal> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    if policy.source_ranges.len() > MAX_SOURCE_RANGES {
        return Err(invalid(format!(
            "policy.sourceRanges has {} entries; at most {MAX_SOURCE_RANGES}",
            policy.source_ranges.len()
        )));
    }
    let mut ranges = Vec::with_capacity(policy.source_ranges.len());
    for (i, text) in policy.source_ranges.iter().enumerate() {
        ranges.push(source_range(i, text)?);
    }
    if policy.max_connections == Some(0) {
        return Err(invalid(
            "policy.maxConnections must be at least 1".to_owned(),
        ));
    }
    let connection_rate = match &policy.connection_rate {
        None => None,
        Some(_) if protocol == Protocol::Udp => {
            return Err(invalid(
                "policy.connectionRate applies to TCP bindings only; a UDP binding caps its client sessions with policy.maxConnections".to_owned(),
            ));
        }
        Some(rate) => {
            if rate.per_second == 0 {
                return Err(invalid(
                    "policy.connectionRate.perSecond must be at least 1".to_owned(),
                ));
            }
            let burst = rate.burst.unwrap_or(rate.per_second);
            if burst < rate.per_second {
                return Err(invalid(format!(
                    "policy.connectionRate.burst ({burst}) must be at least perSecond ({})",
                    rate.per_second
                )));
            }
            Some(TokenBucket {
                per_second: rate.per_second,
                burst,
            })
        }
    };
    let out = EdgePolicy {
        source_ranges: IpNet::aggregate(&ranges),
        max_connections: policy.max_connections,
        connection_rate,
    };
    Ok((!out.is_empty()).then_some(out))
}

impl EdgePolicy {
    /// Whether it restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.source_ranges.is_empty()
            && self.max_connections.is_none()
            && self.connection_rate.is_none()
    }
}

/// `policy.sourceRanges[i]`, parsed: a CIDR written with its network address.
fn source_range(i: usize, text: &str) -> Result<IpNet, Refusal> {
    let net: IpNet = text.trim().parse().map_err(|_| {
        invalid(format!(
            "policy.sourceRanges[{i}]: {text:?} is not an IPv4 or IPv6 CIDR such as 203.0.113.0/24"
        ))
    })?;
    if net.trunc() != net {
        return Err(invalid(format!(
            "policy.sourceRanges[{i}]: {text:?} has host bits set; write its network address, {}",
            net.trunc()
        )));
    }
    Ok(net)
}

fn invalid(message: String) -> Refusal {
    Refusal {
        reason: Reason::InvalidSpec,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ConnectionRate;

    fn policy(ranges: &[&str]) -> BindingPolicy {
        BindingPolicy {
            source_ranges: ranges.iter().map(|s| (*s).to_owned()).collect(),
            ..BindingPolicy::default()
        }
    }

    fn refused(p: &BindingPolicy, protocol: Protocol) -> String {
        let r = edge_policy(Some(p), protocol).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidSpec);
        r.message
    }

    #[test]
    fn no_policy_or_an_empty_one_is_none() {
        assert_eq!(edge_policy(None, Protocol::Tcp).unwrap(), None);
        assert_eq!(
            edge_policy(Some(&BindingPolicy::default()), Protocol::Udp).unwrap(),
            None
        );
    }

    #[test]
    fn ranges_are_typed_aggregated_and_sorted() {
        let p = edge_policy(
            Some(&policy(&[
                "198.51.100.0/24",
                "2001:db8::/32",
                "10.0.0.0/8",
                "10.1.0.0/16",
                "203.0.113.0/25",
                "203.0.113.128/25",
                "10.0.0.0/8",
            ])),
            Protocol::Tcp,
        )
        .unwrap()
        .unwrap();
        let got: Vec<String> = p.source_ranges.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "10.0.0.0/8",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "2001:db8::/32"
            ]
        );
        assert_eq!(p.max_connections, None);
        assert_eq!(p.connection_rate, None);
    }

    #[test]
    fn a_bad_range_is_refused_naming_its_index() {
        let m = refused(&policy(&["10.0.0.0/8", "not-a-cidr"]), Protocol::Tcp);
        assert!(
            m.starts_with("policy.sourceRanges[1]: \"not-a-cidr\""),
            "{m}"
        );
        let m = refused(&policy(&["10.0.0.1"]), Protocol::Udp);
        assert!(m.starts_with("policy.sourceRanges[0]"), "{m}");
        let m = refused(&policy(&["10.0.0.0/8", "10.1.2.3/16"]), Protocol::Tcp);
        assert!(
            m.contains("policy.sourceRanges[1]") && m.contains("10.1.0.0/16"),
            "{m}"
        );
        let m = refused(&policy(&["10.0.0.0/33"]), Protocol::Tcp);
        assert!(m.starts_with("policy.sourceRanges[0]"), "{m}");
    }

    #[test]
    fn too_many_ranges_are_refused() {
        let many: Vec<String> = (0..=MAX_SOURCE_RANGES)
            .map(|i| format!("10.{i}.0.0/16"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let m = refused(&policy(&refs), Protocol::Tcp);
        assert!(m.contains("policy.sourceRanges has 65 entries"), "{m}");
        assert!(edge_policy(Some(&policy(&refs[..MAX_SOURCE_RANGES])), Protocol::Tcp).is_ok());
    }

    #[test]
    fn limits_are_checked_and_burst_defaults_to_the_rate() {
        let rate = |per_second, burst| BindingPolicy {
            connection_rate: Some(ConnectionRate { per_second, burst }),
            ..BindingPolicy::default()
        };
        let p = edge_policy(Some(&rate(10, None)), Protocol::Tcp)
            .unwrap()
            .unwrap();
        assert_eq!(
            p.connection_rate,
            Some(TokenBucket {
                per_second: 10,
                burst: 10
            })
        );
        let p = edge_policy(Some(&rate(10, Some(50))), Protocol::Tcp)
            .unwrap()
            .unwrap();
        assert_eq!(p.connection_rate.unwrap().burst, 50);
        assert!(refused(&rate(0, None), Protocol::Tcp).contains("policy.connectionRate.perSecond"));
        assert!(refused(&rate(10, Some(5)), Protocol::Tcp).contains("policy.connectionRate.burst"));
        assert!(refused(&rate(10, None), Protocol::Udp).contains("policy.connectionRate"));
        let cap = |n| BindingPolicy {
            max_connections: Some(n),
            ..BindingPolicy::default()
        };
        assert!(refused(&cap(0), Protocol::Udp).contains("policy.maxConnections"));
        let p = edge_policy(Some(&cap(3)), Protocol::Udp).unwrap().unwrap();
        assert_eq!(p.max_connections, Some(3));
        assert!(p.source_ranges.is_empty());
    }
}
