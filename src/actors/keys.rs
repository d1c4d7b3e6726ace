//! The WireGuard keys of one EdgeNode, kept in Secrets: the relay's pair in `<node>-vps-key`
//! (`priv`, `pub`) and one private key per uplink replica in `<node>-uplink-keys`
//! (`priv-<ordinal>`). Generated once, in the cluster; never rotated by a pass; scaling adds or
//! removes only the keys of the replicas concerned. The decisions are pure; the actor reads and
//! writes the Secrets.

use std::collections::BTreeMap;

use tunnel_contract::key::{KeyError, PrivateKey};

use crate::plan::Keys;

/// Key of the relay's private key in `<node>-vps-key`.
pub const RELAY_PRIVATE: &str = "priv";
/// Key of the relay's public key in `<node>-vps-key`.
pub const RELAY_PUBLIC: &str = "pub";

/// Why the keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A stored key is not a WireGuard key.
    #[error("Secret {secret}, key {key}: not a WireGuard private key ({source})")]
    Invalid {
        /// The Secret, `namespace/name`.
        secret: String,
        /// The key in it.
        key: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// No randomness for a new key.
    #[error("generating a WireGuard key: {0}")]
    Generate(#[source] KeyError),
}

impl KeysError {
    /// A stable UpperCamelCase label (condition reason, metrics).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "InvalidKey",
            Self::Generate(_) => "KeyGenerationFailed",
        }
    }
}

/// The data the keys Secrets should hold, and the keys for the planner.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// `<node>-vps-key` data.
    pub relay_secret: BTreeMap<String, String>,
    /// `<node>-uplink-keys` data.
    pub uplink_secret: BTreeMap<String, String>,
    /// Whether `relay_secret` differs from what was stored.
    pub relay_changed: bool,
    /// Whether `uplink_secret` differs from what was stored.
    pub uplink_changed: bool,
    /// The planner's view.
    pub keys: Keys,
    /// The uplinks' private keys by ordinal (for the keys Secret builder).
    pub uplink_private: BTreeMap<u32, String>,
}

/// Decides the keys from what the Secrets hold now (`None`: no such Secret). Existing keys
/// are kept; missing ones are generated; uplink keys of ordinals ≥ `replicas` are dropped.
pub fn reconcile(
    relay_secret_name: &str,
    relay_stored: Option<&BTreeMap<String, String>>,
    uplink_secret_name: &str,
    uplink_stored: Option<&BTreeMap<String, String>>,
    replicas: u32,
) -> Result<KeySet, KeysError> {
    let parse = |secret: &str, key: &str, text: &str| {
        text.trim()
            .parse::<PrivateKey>()
            .map_err(|source| KeysError::Invalid {
                secret: secret.to_owned(),
                key: key.to_owned(),
                source,
            })
    };
    let relay_private = match relay_stored.and_then(|d| d.get(RELAY_PRIVATE)) {
        Some(text) => parse(relay_secret_name, RELAY_PRIVATE, text)?,
        None => PrivateKey::generate().map_err(KeysError::Generate)?,
    };
    let relay_secret = BTreeMap::from([
        (RELAY_PRIVATE.to_owned(), relay_private.to_base64()),
        (
            RELAY_PUBLIC.to_owned(),
            relay_private.public_key().to_string(),
        ),
    ]);
    let relay_changed = relay_stored != Some(&relay_secret);

    let mut uplink_private = BTreeMap::new();
    let mut uplink_public = Vec::new();
    for ordinal in 0..replicas {
        let key = format!("priv-{ordinal}");
        let private = match uplink_stored.and_then(|d| d.get(&key)) {
            Some(text) => parse(uplink_secret_name, &key, text)?,
            None => PrivateKey::generate().map_err(KeysError::Generate)?,
        };
        uplink_public.push(private.public_key());
        uplink_private.insert(ordinal, private.to_base64());
    }
    let uplink_secret: BTreeMap<String, String> = uplink_private
        .iter()
        .map(|(o, k)| (format!("priv-{o}"), k.clone()))
        .collect();
    let uplink_changed = uplink_stored != Some(&uplink_secret);
    Ok(KeySet {
        relay_secret,
        uplink_secret,
        relay_changed,
        uplink_changed,
        keys: Keys {
            relay_private,
            uplink_public,
        },
        uplink_private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_once_then_kept() {
        let first = reconcile("ns/n-vps-key", None, "ns/n-uplink-keys", None, 2).unwrap();
        assert!(first.relay_changed && first.uplink_changed);
        assert_eq!(first.uplink_secret.len(), 2);
        let again = reconcile(
            "ns/n-vps-key",
            Some(&first.relay_secret),
            "ns/n-uplink-keys",
            Some(&first.uplink_secret),
            2,
        )
        .unwrap();
        assert!(!again.relay_changed && !again.uplink_changed);
        assert_eq!(again.relay_secret, first.relay_secret);
        assert_eq!(again.keys.uplink_public, first.keys.uplink_public);
    }

    #[test]
    fn scaling_touches_only_the_replicas_concerned() {
        let two = reconcile("r", None, "u", None, 2).unwrap();
        let three = reconcile(
            "r",
            Some(&two.relay_secret),
            "u",
            Some(&two.uplink_secret),
            3,
        )
        .unwrap();
        assert!(three.uplink_changed && !three.relay_changed);
        assert_eq!(three.uplink_secret["priv-0"], two.uplink_secret["priv-0"]);
        assert_eq!(three.uplink_secret["priv-1"], two.uplink_secret["priv-1"]);
        assert!(three.uplink_secret.contains_key("priv-2"));
        let one = reconcile(
            "r",
            Some(&three.relay_secret),
            "u",
            Some(&three.uplink_secret),
            1,
        )
        .unwrap();
        assert_eq!(one.uplink_secret.len(), 1);
        assert_eq!(one.uplink_secret["priv-0"], two.uplink_secret["priv-0"]);
    }

    #[test]
    fn a_broken_stored_key_names_the_secret_and_key_and_is_not_replaced() {
        let stored = BTreeMap::from([("priv-0".to_owned(), "not a key".to_owned())]);
        let e = reconcile("r", None, "ns/n-uplink-keys", Some(&stored), 1).unwrap_err();
        assert_eq!(e.category(), "InvalidKey");
        let text = e.to_string();
        assert!(
            text.contains("ns/n-uplink-keys") && text.contains("priv-0"),
            "{text}"
        );
        assert!(
            !text.contains("not a key"),
            "the stored value is not echoed: {text}"
        );
    }
}
