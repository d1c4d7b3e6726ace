//! WireGuard keys: 32-byte Curve25519 keys written as standard base64 (the `wg` format).
//!
//! [`PrivateKey`] never shows its bytes in `Debug` output, so it cannot reach a log by
//! accident; [`PublicKey`] is derived from it.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of exactly 32 bytes.
    #[error("not a 32-byte base64 WireGuard key")]
    Malformed,
    /// The system random source failed while generating a key.
    #[error("cannot generate a key: {0}")]
    Random(#[source] getrandom::Error),
}

impl KeyError {
    /// A stable, low-cardinality name for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Malformed => "KeyMalformed",
            Self::Random(_) => "KeyGenerationFailed",
        }
    }
}

fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::Malformed)?;
    bytes.try_into().map_err(|_| KeyError::Malformed)
}

/// A WireGuard public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short form for logs: the first 8 base64 characters, like `wg show` abbreviations.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(Self)
    }
}

/// A WireGuard private key. Its `Debug` form is redacted; `Display` is deliberately absent:
/// use [`PrivateKey::to_base64`] where the secret must be written (a document, a Secret).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// The key from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the system's random source, clamped like `wg genkey` does.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
        bytes[0] &= 0b1111_1000;
        bytes[31] = (bytes[31] & 0b0111_1111) | 0b0100_0000;
        Ok(Self(bytes))
    }

    /// The raw bytes (secret).
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The base64 form (secret): for documents and Secrets only, never for logs.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(Self)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for PrivateKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PrivateKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_wg_pubkey() {
        // `echo yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk= | wg pubkey` (RFC 7748 vector).
        let private: PrivateKey = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
            .parse()
            .unwrap();
        assert_eq!(
            private.public_key().to_string(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn generated_keys_round_trip_and_are_redacted() {
        let key = PrivateKey::generate().unwrap();
        let again: PrivateKey = key.to_base64().parse().unwrap();
        assert_eq!(key, again);
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
        assert_ne!(
            key.public_key(),
            PrivateKey::generate().unwrap().public_key()
        );
    }

    #[test]
    fn every_category_is_upper_camel_case() {
        let all = [
            KeyError::Malformed,
            KeyError::Random(getrandom::Error::UNSUPPORTED),
        ];
        let categories: Vec<&str> = all.iter().map(KeyError::category).collect();
        assert_eq!(categories, ["KeyMalformed", "KeyGenerationFailed"]);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "abc", "AAAA", "!!!!", &STANDARD.encode([0u8; 31])] {
            assert_eq!(bad.parse::<PublicKey>(), Err(KeyError::Malformed), "{bad}");
        }
    }
}
