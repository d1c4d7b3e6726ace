//! Decoding the `privateKey` of the Secret (OpenSSH or PEM/PKCS#8, optionally encrypted with
//! the `passphrase`) and refusing key types this client does not sign with.
//!
//! Supported: Ed25519, ECDSA (NIST P-256, P-384, P-521) and RSA (the most common legacy key;
//! signed with rsa-sha2-256/512, never SHA-1). RSA signing uses the pure-Rust `rsa` crate,
//! which carries a timing side-channel advisory (RUSTSEC-2023-0071): the VPS sees one signature
//! per SSH connection, and the session is kept open for days, so the exposure is small, but
//! Ed25519 is the recommendation (docs/enrollment.md). DSA is obsolete and refused with an
//! error naming what works.
//!
//! Decrypting an encrypted key runs its key-derivation function, whose cost the key file
//! names: [`decode`] refuses costs above the bounds of [`super::kdf`] first, and
//! [`decode_off_runtime`] runs it on a blocking thread, one decode at a time in the whole
//! process (so at most one KDF's memory, 32 MiB, is in use), never on an async worker.
//! [`KeyCache`] decodes once per Secret version.

use std::sync::Arc;

use russh::keys::{Algorithm, PrivateKey};
use tokio::sync::Semaphore;

use super::SshError;
use super::credentials::{Credentials, SecretString};
use crate::hash::sha256_hex;

/// The key types this client authenticates with, for error messages and docs.
pub const SUPPORTED_KEY_TYPES: &str = "ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa (2048 bits or more)";

/// Decodes and checks `key`, decrypting it with `passphrase` when it is encrypted.
pub fn decode(
    key: &SecretString,
    passphrase: Option<&SecretString>,
) -> Result<PrivateKey, SshError> {
    let text = key.expose().trim();
    if let Some(found) = legacy_unsupported_type(text) {
        return Err(unsupported(found));
    }
    if passphrase.is_some() {
        // Without a passphrase nothing is derived.
        super::kdf::check(text)?;
    }
    let decoded = russh::keys::decode_secret_key(text, passphrase.map(SecretString::expose));
    let key = match decoded {
        Ok(key) => key,
        Err(e) => return Err(explain(text, passphrase.is_some(), &e)),
    };
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(key),
        Algorithm::Rsa { .. } => {
            let bits = key
                .key_data()
                .rsa()
                .map_or(0, russh::keys::ssh_key::private::RsaKeypair::key_size);
            if bits < 2048 {
                return Err(unsupported(format!("ssh-rsa with {bits} bits")));
            }
            Ok(key)
        }
        other => Err(unsupported(other.as_str().to_owned())),
    }
}

/// Decodes in the whole process one at a time: a decode may hold up to 32 MiB for a second
/// or two, and many EdgeNodes may ask at once.
static DECODES: Semaphore = Semaphore::const_new(1);

/// [`decode`] on a blocking thread (never on an async worker), one at a time in the process.
/// A panic in the decoder is a credentials error, not a crash.
pub async fn decode_off_runtime(
    key: &SecretString,
    passphrase: Option<&SecretString>,
) -> Result<Arc<PrivateKey>, SshError> {
    let (key, passphrase) = (key.clone(), passphrase.cloned());
    let _turn = DECODES
        .acquire()
        .await
        .map_err(|_| SshError::Credentials("privateKey decoding is shut down".into()))?;
    tokio::task::spawn_blocking(move || decode(&key, passphrase.as_ref()).map(Arc::new))
        .await
        .unwrap_or_else(|_| {
            Err(SshError::Credentials(
                "privateKey could not be decoded (the decoder failed)".into(),
            ))
        })
}

/// The decoded `privateKey` of one EdgeNode's Secret, kept while the key and passphrase stay
/// the same: each Secret version is decoded once, not on every connection. A refused key is
/// kept too (as its error), so a bad key costs one decode per version, not one per pass.
#[derive(Default)]
pub struct KeyCache {
    entry: Option<(String, Result<Arc<PrivateKey>, SshError>)>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("cached", &self.entry.is_some())
            .finish()
    }
}

impl KeyCache {
    /// The decoded key of `credentials` (`None` when they have no `privateKey`), decoding it
    /// off the runtime when it is new.
    pub async fn key_for(
        &mut self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<PrivateKey>>, SshError> {
        let Some(key) = &credentials.private_key else {
            return Ok(None);
        };
        let version = sha256_hex(
            format!(
                "{}\0{}",
                sha256_hex(key.expose().as_bytes()),
                credentials
                    .passphrase
                    .as_ref()
                    .map_or_else(String::new, |p| sha256_hex(p.expose().as_bytes()))
            )
            .as_bytes(),
        );
        if let Some((cached, result)) = &self.entry
            && *cached == version
        {
            return result.as_ref().map(|k| Some(k.clone())).map_err(replay);
        }
        let result = decode_off_runtime(key, credentials.passphrase.as_ref()).await;
        let answer = result.as_ref().map(|k| Some(k.clone())).map_err(replay);
        self.entry = Some((version, result));
        answer
    }
}

/// A copy of a decoding error (they carry only strings).
fn replay(e: &SshError) -> SshError {
    match e {
        SshError::UnsupportedKeyType { found, supported } => SshError::UnsupportedKeyType {
            found: found.clone(),
            supported,
        },
        SshError::KeyKdfTooExpensive {
            key,
            kdf,
            found,
            limit,
        } => SshError::KeyKdfTooExpensive {
            key,
            kdf,
            found: found.clone(),
            limit: limit.clone(),
        },
        SshError::Credentials(message) => SshError::Credentials(message.clone()),
        other => SshError::Credentials(other.to_string()),
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
    if text.starts_with("-----BEGIN DSA PRIVATE KEY-----") {
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
            Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => {}
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

    #[tokio::test]
    async fn the_tools_encrypted_keys_decode_off_the_runtime() {
        use testbed::keys::{PASSPHRASE, openssl_pkcs8, ssh_keygen_encrypted};
        let pass = SecretString::new(PASSPHRASE);
        for key in [
            ssh_keygen_encrypted(&[]).unwrap(),
            openssl_pkcs8(&[]).unwrap(),
            openssl_pkcs8(&["-scrypt"]).unwrap(),
        ] {
            let key = decode_off_runtime(&SecretString::new(key), Some(&pass))
                .await
                .unwrap();
            assert!(matches!(key.algorithm(), Algorithm::Ed25519));
        }
    }

    #[tokio::test]
    async fn the_bombs_are_refused_by_the_decoder_itself() {
        let pass = SecretString::new(testbed::keys::PASSPHRASE);
        for bomb in [
            testbed::keys::scrypt_bomb().unwrap(),
            testbed::keys::bcrypt_bomb().unwrap(),
        ] {
            let e = decode_off_runtime(&SecretString::new(bomb), Some(&pass))
                .await
                .unwrap_err();
            assert_eq!(e.category(), "SSHKeyKdfTooExpensive");
        }
    }

    #[tokio::test]
    async fn a_secret_version_is_decoded_once() {
        let key = SecretString::new(testbed::keys::ssh_keygen_encrypted(&[]).unwrap());
        let credentials = |passphrase: &str| Credentials {
            private_key: Some(key.clone()),
            passphrase: Some(SecretString::new(passphrase)),
            ..Credentials::default()
        };
        let mut cache = KeyCache::default();
        let first = cache.key_for(&credentials("x")).await.unwrap().unwrap();
        let again = cache.key_for(&credentials("x")).await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same version: no new decode"
        );
        // A refusal is kept too, and a new version is decoded afresh.
        let wrong = cache.key_for(&credentials("wrong")).await.unwrap_err();
        assert_eq!(wrong.category(), "SSHCredentialsInvalid");
        let wrong_again = cache.key_for(&credentials("wrong")).await.unwrap_err();
        assert_eq!(wrong.to_string(), wrong_again.to_string());
        let back = cache.key_for(&credentials("x")).await.unwrap().unwrap();
        assert!(
            !Arc::ptr_eq(&first, &back),
            "a changed Secret is decoded again"
        );
        let none = cache.key_for(&Credentials::default()).await.unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn garbage_is_a_clear_error_without_the_input() {
        let e = decode(&SecretString::new("not a key at all"), None).unwrap_err();
        assert_eq!(e.category(), "SSHCredentialsInvalid");
        assert!(!e.to_string().contains("not a key at all"));
    }

    fn ssh_keygen(args: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let out = std::process::Command::new("ssh-keygen")
            .args(args)
            .args(["-q", "-N", "", "-f"])
            .arg(&path)
            .output()
            .expect("ssh-keygen (openssh-client, installed by tests/testbed/setup.sh)");
        assert!(out.status.success(), "{out:?}");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn rsa_keys_are_accepted_in_openssh_and_pem_form() {
        for form in [
            &["-t", "rsa", "-b", "2048"][..],
            &["-t", "rsa", "-b", "3072", "-m", "PEM"],
        ] {
            let text = ssh_keygen(form);
            let key = decode(&SecretString::new(text), None).unwrap();
            assert!(matches!(key.algorithm(), Algorithm::Rsa { .. }), "{form:?}");
        }
    }

    #[test]
    fn short_rsa_keys_are_refused_with_what_works() {
        let text = ssh_keygen(&["-t", "rsa", "-b", "1024"]);
        let e = decode(&SecretString::new(text), None).unwrap_err();
        assert_eq!(e.category(), "SSHCredentialsInvalid");
        let text = e.to_string();
        assert!(
            text.contains("1024 bits") && text.contains("ssh-ed25519"),
            "{text}"
        );
    }
}
