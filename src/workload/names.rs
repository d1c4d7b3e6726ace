//! The names of one EdgeNode's uplink objects: a readable part and 64 bits of a digest of the
//! EdgeNode's namespace and name, within Kubernetes' length limits. Also the names of the
//! previous scheme (32 bits), which a pass still looks at to migrate what an older operator
//! created ([`super::ownership`]).

/// Longest StatefulSet name: its pods' `controller-revision-hash` label is
/// `<name>-<10-char hash>`, and a label value is at most 63 characters.
pub const MAX_WORKLOAD_NAME: usize = 52;
/// Hex characters of the namespace/name digest in [`UplinkNames::base`]: 64 bits, so finding
/// another EdgeNode name with the same base takes about 2^64 hashes.
const HASH_CHARS: usize = 16;
/// Characters of the readable part of [`UplinkNames::base`].
const READABLE: usize = MAX_WORKLOAD_NAME - "-uplink".len() - 1 - HASH_CHARS;
/// The previous scheme: 8 hex characters (32 bits, found by brute force in minutes) after 36
/// readable ones (security review of December 2026, M8).
const LEGACY_HASH_CHARS: usize = 8;
/// See [`LEGACY_HASH_CHARS`].
const LEGACY_READABLE: usize = 36;

/// Names of the objects that make up one EdgeNode's uplink workload.
///
/// EdgeNodes of several namespaces may share one uplink namespace, so every name starts with
/// a base that identifies the EdgeNode by namespace *and* name and stays within Kubernetes'
/// limits: `<readable>-<hash>`, where `hash` is the first 16 hex digits (64 bits) of SHA-256
/// of `<namespace>/<name>` (`/` cannot occur in either, so the input is unambiguous) and
/// `readable` is `<name>-<namespace>` with dots as dashes, cut to 28 characters (trailing `-`
/// trimmed). The StatefulSet (and headless Service) is then at most 52 characters, the
/// longest a StatefulSet may be; the others are longer but far below the 253 of ConfigMaps
/// and Secrets. The name alone proves nothing: before reusing, applying over or deleting an
/// object the operator checks its owner labels ([`super::ownership`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkNames {
    /// `<readable>-<hash>`, shared by every name below.
    pub base: String,
    /// StatefulSet and headless Service: `<base>-uplink`.
    pub workload: String,
    /// ConfigMap: `<base>-uplink-config`.
    pub config_map: String,
    /// Secret with the replicas' private keys: `<base>-uplink-keys`.
    pub keys_secret: String,
    /// Secret with the relay's private key: `<base>-vps-key`.
    pub vps_key_secret: String,
}

impl UplinkNames {
    /// The names for the EdgeNode `namespace/name`.
    pub fn for_node(namespace: &str, name: &str) -> Self {
        Self::with(namespace, name, READABLE, HASH_CHARS)
    }

    /// The names an operator before the 64-bit scheme gave the EdgeNode `namespace/name`
    /// (36 readable characters, 8 hex digits). Only for finding, adopting and deleting what
    /// it left; two EdgeNodes may share them.
    pub fn legacy(namespace: &str, name: &str) -> Self {
        Self::with(namespace, name, LEGACY_READABLE, LEGACY_HASH_CHARS)
    }

    fn with(namespace: &str, name: &str, readable_chars: usize, hash_chars: usize) -> Self {
        let digest = crate::hash::sha256_hex(format!("{namespace}/{name}").as_bytes());
        // A Service name is a DNS label: no dots (EdgeNode names may have them).
        let readable: String = format!("{name}-{namespace}")
            .chars()
            .map(|c| if c == '.' { '-' } else { c })
            .take(readable_chars)
            .collect();
        let base = format!(
            "{}-{}",
            readable.trim_end_matches('-'),
            &digest[..hash_chars]
        );
        Self {
            workload: format!("{base}-uplink"),
            config_map: format!("{base}-uplink-config"),
            keys_secret: format!("{base}-uplink-keys"),
            vps_key_secret: format!("{base}-vps-key"),
            base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_names_in_two_namespaces_do_not_collide() {
        let a = UplinkNames::for_node("team-a", "edge-node");
        let b = UplinkNames::for_node("team-b", "edge-node");
        assert_ne!(a.workload, b.workload);
        assert_ne!(a.keys_secret, b.keys_secret);
        // 16 hex digits of SHA-256("team-a/edge-node").
        assert_eq!(a.base, "edge-node-team-a-430e39ce649af2e8");
        assert_eq!(a.workload, "edge-node-team-a-430e39ce649af2e8-uplink");
        // Dashes cannot make two pairs meet.
        assert_ne!(
            UplinkNames::for_node("b-c", "a").base,
            UplinkNames::for_node("c", "a-b").base
        );
        assert_eq!(a, UplinkNames::for_node("team-a", "edge-node"), "stable");
    }

    #[test]
    fn the_hash_has_64_bits_and_the_readable_part_gives_way() {
        let long = UplinkNames::for_node("team-payments", "production-ingress-gateway-eu");
        let (readable, hash) = long.base.rsplit_once('-').unwrap();
        assert_eq!(hash.len(), 16, "{}", long.base);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
        assert_eq!(readable, "production-ingress-gateway-e");
        assert_eq!(long.workload.len(), MAX_WORKLOAD_NAME, "{}", long.workload);
    }

    #[test]
    fn the_legacy_names_are_the_32_bit_scheme() {
        let old = UplinkNames::legacy("team-a", "edge-node");
        assert_eq!(old.base, "edge-node-team-a-430e39ce");
        assert_eq!(old.vps_key_secret, "edge-node-team-a-430e39ce-vps-key");
        let long = UplinkNames::legacy("team-payments", "production-ingress-gateway-eu");
        assert!(
            long.base
                .starts_with("production-ingress-gateway-eu-team-p-"),
            "{}",
            long.base
        );
        assert_ne!(old.base, UplinkNames::for_node("team-a", "edge-node").base);
    }

    #[test]
    fn a_pair_that_collided_on_32_bits_does_not_on_64() {
        // Found by tests/tools/uplink_name_collision.c (security review M8).
        let victim = ("team-payments", "production-ingress-gateway-eu");
        let attacker = ("mallory", "production-ingress-gateway-eu-team-p-45299bf6");
        assert_eq!(
            UplinkNames::legacy(victim.0, victim.1),
            UplinkNames::legacy(attacker.0, attacker.1)
        );
        assert_ne!(
            UplinkNames::for_node(victim.0, victim.1).base,
            UplinkNames::for_node(attacker.0, attacker.1).base
        );
    }

    #[test]
    fn longest_names_stay_within_limits() {
        let long = "a".repeat(253);
        let ns = "n".repeat(63);
        for names in [
            UplinkNames::for_node(&ns, &long),
            UplinkNames::legacy(&ns, &long),
        ] {
            assert!(
                names.workload.len() <= MAX_WORKLOAD_NAME,
                "{}",
                names.workload
            );
            // The StatefulSet's pods (`<workload>-<ordinal>`) and its Service are DNS labels.
            assert!(format!("{}-999", names.workload).len() <= 63);
            for name in [
                &names.workload,
                &names.config_map,
                &names.keys_secret,
                &names.vps_key_secret,
            ] {
                assert!(name.len() <= 63, "{name}");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{name}"
                );
            }
        }
        // A dotted EdgeNode name (a DNS subdomain) still gives a valid Service name.
        let dotted = UplinkNames::for_node("default", "edge.example");
        assert!(
            dotted.workload.starts_with("edge-example-default-"),
            "{}",
            dotted.workload
        );
    }
}
