//! Decoding the `privateKey` of the Secret (OpenSSH or PEM/PKCS#8, optionally encrypted with
//! the `passphrase`) and refusing key types this client does not sign with.
//!
//! Supported: Ed25519 and ECDSA (NIST P-256, P-384, P-521). RSA is deliberately not built in
//! (the only pure-Rust RSA implementation carries an open timing side-channel advisory,
//! RUSTSEC-2023-0071), and DSA is obsolete; both get an error naming what works.

use russh::keys::{Algorithm, PrivateKey};

use super::SshError;
use super::credentials::SecretString;

/// The key types this client authenticates with, for error messages and docs.
pub const SUPPORTED_KEY_TYPES: &str =
    "ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521";

/// Decodes and checks `key`, decrypting it with `passphrase` when it is encrypted.
pub fn decode(
    key: &SecretString,
    passphrase: Option<&SecretString>,
) -> Result<PrivateKey, SshError> {
    let text = key.expose().trim();
    if let Some(found) = legacy_unsupported_type(text) {
        return Err(unsupported(found));
    }
    let decoded = russh::keys::decode_secret_key(text, passphrase.map(SecretString::expose));
    let key = match decoded {
        Ok(key) => key,
        Err(e) => return Err(explain(text, passphrase.is_some(), &e)),
    };
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(key),
        other => Err(unsupported(other.as_str().to_owned())),
    }
}

fn unsupported(found: String) -> SshError {
    SshError::UnsupportedKeyType {
        found,
        supported: SUPPORTED_KEY_TYPES,
    }
}

/// PEM headers that name an unsupported algorithm outright.
fn legacy_unsupported_type(text: &str) -> Option<String> {
    if text.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        Some("ssh-rsa (PEM)".into())
    } else if text.starts_with("-----BEGIN DSA PRIVATE KEY-----") {
        Some("ssh-dss (PEM)".into())
    } else {
        None
    }
}

/// Turns a decoding failure into a message that says what to fix, without key material.
fn explain(text: &str, had_passphrase: bool, error: &russh::keys::Error) -> SshError {
    // An OpenSSH key names its algorithm in the clear even when encrypted: use that to tell
    // "unsupported type" apart from "corrupt".
    if let Ok(parsed) = russh::keys::ssh_key::PrivateKey::from_openssh(text) {
        match parsed.algorithm() {
            Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
            other => return unsupported(other.as_str().to_owned()),
        }
        if parsed.is_encrypted() {
            return SshError::Credentials(if had_passphrase {
                "privateKey could not be decrypted with the given passphrase".into()
            } else {
                "privateKey is encrypted: add its \"passphrase\" to the Secret".into()
            });
        }
    }
    match error {
        russh::keys::Error::KeyIsEncrypted => SshError::Credentials(
            "privateKey is encrypted: add its \"passphrase\" to the Secret".into(),
        ),
        russh::keys::Error::UnsupportedKeyType {
            key_type_string, ..
        } => unsupported(key_type_string.clone()),
        _ if had_passphrase => SshError::Credentials(
            "privateKey could not be decoded or decrypted with the given passphrase".into(),
        ),
        _ => SshError::Credentials(
            "privateKey could not be decoded (expected an OpenSSH or PEM private key)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_clear_error_without_the_input() {
        let e = decode(&SecretString::new("not a key at all"), None).unwrap_err();
        assert_eq!(e.category(), "SSHCredentialsInvalid");
        assert!(!e.to_string().contains("not a key at all"));
    }

    #[test]
    fn pem_rsa_is_refused_by_name() {
        let e = decode(
            &SecretString::new(
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            ),
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("ssh-rsa"), "{text}");
        assert!(text.contains("ssh-ed25519"), "{text}");
    }
}
