//! `/etc/tunnel/state.json`: what the operator last applied to the VPS. It records the digest
//! and mode of every managed file and what each service was last (re)started with, so a pass
//! knows what it owns, what to restart, and resumes correctly after an interruption (the
//! state is written last, so a cut pass re-runs its restarts).
//!
//! Serialized compactly with sorted maps, so the same state is always the same bytes and a
//! no-op pass does not rewrite it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::sha256_hex;

/// The current schema version.
pub const STATE_VERSION: u32 = 1;

/// One managed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Permission bits in octal, e.g. `600`.
    pub mode: String,
}

/// The state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Schema version.
    pub version: u32,
    /// Envoy version installed.
    #[serde(default)]
    pub envoy_version: String,
    /// Every managed file by path.
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// Fingerprint of what the relay was last started with (binary and unit).
    #[serde(default)]
    pub relay_started_with: String,
    /// Digest of the relay document last written (the agent follows the file).
    #[serde(default)]
    pub relay_document_applied: String,
    /// Fingerprint of what Envoy was last started with (binary, bootstrap and unit).
    #[serde(default)]
    pub envoy_started_with: String,
}

impl State {
    /// Parses the file; anything unreadable counts as no state (a fresh enrollment re-checks
    /// every file anyway).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|s| s.version == STATE_VERSION)
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// A fingerprint over several digests (order matters).
pub fn fingerprint(parts: &[&str]) -> String {
    sha256_hex(parts.join("\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_stable_bytes() {
        let mut s = State {
            version: STATE_VERSION,
            envoy_version: "1.40.0".into(),
            ..State::default()
        };
        s.files.insert(
            "/etc/b".into(),
            FileRecord {
                sha256: "bb".into(),
                mode: "600".into(),
            },
        );
        s.files.insert(
            "/etc/a".into(),
            FileRecord {
                sha256: "aa".into(),
                mode: "644".into(),
            },
        );
        let bytes = s.to_bytes();
        assert_eq!(State::parse(&bytes).unwrap(), s);
        assert_eq!(s.clone().to_bytes(), bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.find("/etc/a").unwrap() < text.find("/etc/b").unwrap());
    }

    #[test]
    fn garbage_or_other_versions_are_no_state() {
        assert!(State::parse(b"{not json").is_none());
        assert!(State::parse(br#"{"version":99}"#).is_none());
    }
}
