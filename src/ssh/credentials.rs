//! The SSH credentials of one VPS, read from the keys of its Secret (`privateKey`,
//! `passphrase`, `password`, `knownHosts`), and the connection settings read from
//! `spec.address` and `spec.ssh`.
//!
//! Secret values live in [`SecretString`], whose `Debug` prints nothing but a length, so a
//! stray `{:?}` in a log line cannot leak them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::SshError;
use super::known_hosts::KnownHosts;
use crate::crd::SshSpec;
use crate::duration::GoDuration;

pub use super::secret_keys::{KEY_KNOWN_HOSTS, KEY_PASSPHRASE, KEY_PASSWORD, KEY_PRIVATE_KEY};

/// A secret string: readable on purpose through [`SecretString::expose`], never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString(<{} bytes redacted>)", self.0.len())
    }
}

/// What the Secret provides to log in and to trust the server.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// OpenSSH or PEM private key.
    pub private_key: Option<SecretString>,
    /// Passphrase of an encrypted private key.
    pub passphrase: Option<SecretString>,
    /// Password, used when there is no private key (or the key is refused).
    pub password: Option<SecretString>,
    /// Trusted host keys; `None` when the Secret has no (or an empty) `knownHosts`.
    pub known_hosts: Option<KnownHosts>,
}

impl Credentials {
    /// Reads the credentials from a Secret's `data` (decoded bytes by key). Unknown keys are
    /// ignored; empty values count as absent.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, SshError> {
        let text = |key: &str| -> Result<Option<String>, SshError> {
            match data.get(key) {
                None => Ok(None),
                Some(bytes) => {
                    let s = String::from_utf8(bytes.clone()).map_err(|_| {
                        SshError::Credentials(format!("Secret key {key:?} is not UTF-8 text"))
                    })?;
                    Ok((!s.trim().is_empty()).then_some(s))
                }
            }
        };
        let private_key = text(KEY_PRIVATE_KEY)?.map(SecretString::new);
        // A passphrase may legitimately end in spaces: keep it as given, only drop one
        // trailing newline that `--from-file` adds.
        let passphrase = text(KEY_PASSPHRASE)?.map(|p| SecretString::new(strip_newline(p)));
        let password = text(KEY_PASSWORD)?.map(|p| SecretString::new(strip_newline(p)));
        let known_hosts = text(KEY_KNOWN_HOSTS)?
            .map(|k| KnownHosts::parse(&k))
            .transpose()?;
        if let (Some(key), Some(_)) = (&private_key, &passphrase) {
            // Refused here, before any connection, so the condition says so at once; the
            // decoder checks again (`private_key::decode`).
            super::kdf::check(key.expose())?;
        }
        if private_key.is_none() && password.is_none() {
            return Err(SshError::Credentials(format!(
                "the Secret has neither {KEY_PRIVATE_KEY:?} nor {KEY_PASSWORD:?}"
            )));
        }
        Ok(Self {
            private_key,
            passphrase,
            password,
            known_hosts,
        })
    }
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// How to reach one VPS and how long to wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshOptions {
    /// Address or host name of the VPS.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Limit on the TCP connect plus handshake plus authentication.
    pub connect_timeout: Duration,
    /// Keepalive interval on an idle connection (`keepalive@openssh.com`).
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the connection is declared dead.
    pub keepalive_max: usize,
    /// Limit on one remote command (including its stdin upload).
    pub command_timeout: Duration,
    /// Accept any host key when the Secret has no `knownHosts`.
    pub insecure_skip_host_key_verification: bool,
    /// Reconnection attempts after a transient failure, before giving up.
    pub reconnect_attempts: usize,
}

impl SshOptions {
    /// Default keepalive interval.
    pub const KEEPALIVE: Duration = Duration::from_secs(15);
    /// Default per-command timeout (large enough to push a 100+ MB Envoy binary).
    pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
    /// Longest `ssh.connectTimeout` honoured (the CRD refuses more at admission; an object
    /// stored before that rule is held to it here). A VPS that has not finished the handshake
    /// in a minute is down, and a tarpit should not keep a reconnecting session for longer.
    pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

    /// Settings for `address` from an EdgeNode's `spec.ssh`, with the default keepalive and
    /// command timeout.
    pub fn from_spec(address: &str, spec: &SshSpec) -> Result<Self, SshError> {
        if address.is_empty() {
            return Err(SshError::Settings("the VPS address is empty".into()));
        }
        Ok(Self {
            host: address.to_owned(),
            port: spec.port,
            user: spec.user.clone(),
            connect_timeout: GoDuration::parse(&spec.connect_timeout)
                .map_err(|source| SshError::Duration {
                    field: "ssh.connectTimeout",
                    source,
                })?
                .to_std()
                .min(Self::MAX_CONNECT_TIMEOUT),
            keepalive_interval: Self::KEEPALIVE,
            keepalive_max: 3,
            command_timeout: Self::COMMAND_TIMEOUT,
            insecure_skip_host_key_verification: spec.insecure_skip_host_key_verification,
            reconnect_attempts: 4,
        })
    }

    /// `host:port` for messages (IPv6 hosts in brackets).
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn password_only_is_enough() {
        let c = Credentials::from_secret_data(&data(&[("password", "pw\n")])).unwrap();
        assert_eq!(c.password.unwrap().expose(), "pw");
        assert!(c.known_hosts.is_none());
    }

    #[test]
    fn nothing_to_log_in_with_is_an_error() {
        let e = Credentials::from_secret_data(&data(&[("knownHosts", "")])).unwrap_err();
        assert_eq!(e.category(), "SSHCredentialsInvalid");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::from_secret_data(&data(&[
            ("password", "hunter2-password"),
            ("passphrase", "my-passphrase"),
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("my-passphrase"), "{shown}");
    }

    #[test]
    fn options_from_spec() {
        let spec: SshSpec =
            serde_json::from_str(r#"{"secretRef":{"name":"s"},"connectTimeout":"5s","port":2222}"#)
                .unwrap();
        let o = SshOptions::from_spec("203.0.113.10", &spec).unwrap();
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.target(), "203.0.113.10:2222");
        assert_eq!(o.user, "root");
    }

    #[test]
    fn connect_timeout_is_held_to_a_minute() {
        let spec: SshSpec =
            serde_json::from_str(r#"{"secretRef":{"name":"s"},"connectTimeout":"10000h"}"#)
                .unwrap();
        let o = SshOptions::from_spec("203.0.113.10", &spec).unwrap();
        assert_eq!(o.connect_timeout, SshOptions::MAX_CONNECT_TIMEOUT);
    }

    #[test]
    fn a_key_derivation_bomb_is_refused_before_any_connection() {
        let e = Credentials::from_secret_data(&data(&[
            ("privateKey", &testbed::keys::bcrypt_bomb().unwrap()),
            ("passphrase", testbed::keys::PASSPHRASE),
        ]))
        .unwrap_err();
        assert_eq!(e.category(), "SSHKeyKdfTooExpensive");
        assert!(e.to_string().contains("privateKey"), "{e}");
    }
}
