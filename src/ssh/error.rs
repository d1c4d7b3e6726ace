//! Errors of the SSH layer. No variant ever carries secret material (key bytes, passwords,
//! passphrases, file contents pushed to the VPS): only names, fingerprints and messages.

use std::time::Duration;

use crate::duration::DurationError;

/// What went wrong talking to a VPS over SSH.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The Secret lacks what authentication needs, or holds something unusable.
    #[error("SSH credentials: {0}")]
    Credentials(String),

    /// The private key's algorithm is not one this client signs with.
    #[error(
        "SSH credentials: privateKey is a {found} key, which is not supported; use one of: {supported}"
    )]
    UnsupportedKeyType {
        /// The algorithm found in the key.
        found: String,
        /// The algorithms that work, comma-separated.
        supported: &'static str,
    },

    /// The private key is encrypted with a key-derivation cost above the operator's bounds
    /// (see `ssh::kdf`); refused before anything is derived.
    #[error(
        "SSH credentials: {key} is encrypted with {kdf} {found}, more than this operator spends on decrypting a key ({limit}); re-encrypt it at the tools' default cost (`ssh-keygen -p -f <file>`, `openssl pkcs8 -topk8 -scrypt`) or store it unencrypted: the Secret already protects it"
    )]
    KeyKdfTooExpensive {
        /// The Secret key holding it (`privateKey`).
        key: &'static str,
        /// The key-derivation function (`bcrypt-pbkdf`, `PBKDF2`, `scrypt`, `Argon2`).
        kdf: &'static str,
        /// The parameters found in the key file.
        found: String,
        /// The bounds.
        limit: String,
    },

    /// A setting is out of range or malformed (an empty address).
    #[error("SSH settings: {0}")]
    Settings(String),

    /// A duration setting (`spec.ssh.connectTimeout`) is not a Go duration.
    #[error("SSH settings: {field}: {source}")]
    Duration {
        /// The field under `spec`.
        field: &'static str,
        /// What the parser said.
        #[source]
        source: DurationError,
    },

    /// No `knownHosts` and `insecureSkipHostKeyVerification` is not set.
    #[error(
        "no host key to verify {host} against: set a \"knownHosts\" entry in the SSH Secret (e.g. from `ssh-keyscan`), or set ssh.insecureSkipHostKeyVerification on the EdgeNode"
    )]
    NoKnownHosts {
        /// `host:port` of the VPS.
        host: String,
    },

    /// The Secret holds a `password` but no `knownHosts`: a password is only ever sent to a
    /// host whose key was verified, so nothing is attempted (the Secret may be one the
    /// EdgeNode's author cannot read, and the address one they control).
    #[error(
        "the SSH Secret has a \"password\" but no \"knownHosts\": a password is only ever sent to a host whose key was verified, and ssh.insecureSkipHostKeyVerification skips that; add a \"knownHosts\" entry for {host} to the Secret (e.g. from `ssh-keyscan`), or authenticate with \"privateKey\" alone"
    )]
    PasswordNeedsHostKey {
        /// `host:port` of the VPS.
        host: String,
    },

    /// The server presented a key that `knownHosts` does not trust.
    #[error("host key verification failed for {host}: {reason}")]
    HostKeyRejected {
        /// `host:port` of the VPS.
        host: String,
        /// Why, with the presented key's fingerprint (public information).
        reason: String,
    },

    /// The server refused every authentication method we offered.
    #[error("authentication as {user} on {host} was refused ({method}){remaining}")]
    AuthRejected {
        /// `host:port` of the VPS.
        host: String,
        /// The user we logged in as.
        user: String,
        /// The method(s) tried.
        method: &'static str,
        /// What the server would accept instead, if it said.
        remaining: String,
    },

    /// The TCP connection or SSH handshake did not complete in time.
    #[error("connecting to {host} timed out after {timeout:?}")]
    ConnectTimeout {
        /// `host:port` of the VPS.
        host: String,
        /// The configured `connectTimeout`.
        timeout: Duration,
    },

    /// The TCP connection failed.
    #[error("connecting to {host}: {source}")]
    Connect {
        /// `host:port` of the VPS.
        host: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },

    /// The SSH protocol failed (handshake, channel, closed connection).
    #[error("SSH transport to {host}: {source}")]
    Transport {
        /// `host:port` of the VPS.
        host: String,
        /// What failed.
        #[source]
        source: TransportError,
    },

    /// A remote command ran longer than the per-command timeout; its channel was closed.
    #[error("remote command `{command}` timed out after {timeout:?}")]
    CommandTimeout {
        /// The command's log form (no secrets: data travels on stdin).
        command: String,
        /// The per-command timeout.
        timeout: Duration,
    },

    /// A remote command exited non-zero where success was required.
    #[error("remote command `{command}` failed with exit status {status}: {stderr}")]
    CommandFailed {
        /// The command's log form.
        command: String,
        /// Its exit status (255 when killed by a signal).
        status: u32,
        /// The tail of its standard error.
        stderr: String,
    },

    /// A remote command exited with status 0 before the input streamed to it was all sent:
    /// whatever it was to write did not arrive whole. (A command that fails before reading
    /// its input is reported by its own status and message.)
    #[error(
        "remote command `{command}` exited before it read all of its input ({len} bytes): the upload did not arrive whole"
    )]
    InputNotRead {
        /// The command's log form.
        command: String,
        /// The input's length, in bytes.
        len: u64,
    },

    /// The operator could not read the input it was streaming to a remote command (its own
    /// copy of a binary: a disk error, a file cut short). The command's input was ended
    /// there, so the VPS refused the short upload and kept its file.
    #[error(
        "reading the input of remote command `{command}` failed after {read} of {len} bytes: {reason}; the VPS kept its file"
    )]
    InputUnreadable {
        /// The command's log form.
        command: String,
        /// Bytes read before the error.
        read: u64,
        /// The input's length, in bytes.
        len: u64,
        /// The local error's text.
        reason: String,
    },

    /// A value refused before it could reach a shell (bad path, control characters).
    #[error("refusing unsafe remote argument: {0}")]
    UnsafeArgument(String),

    /// A command that may change the VPS was not sent: the write fence says this process may
    /// no longer hold the leader Lease (see `crate::leader::fence`).
    #[error(
        "not the leader (the Lease was not renewed within the renew deadline): remote command `{command}` not sent"
    )]
    NotLeader {
        /// The command's log form.
        command: String,
    },

    /// A remote command printed more on standard output than the operator reads from it: the
    /// VPS is not trusted with the size of its answers. The rest was not read; the command's
    /// channel was closed.
    #[error(
        "remote command `{command}` printed more than {limit} bytes, more than it ever needs to: the VPS's answer was refused unread"
    )]
    OutputTooLarge {
        /// The command's log form.
        command: String,
        /// The bound, in bytes.
        limit: usize,
    },
}

impl SshError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Credentials(_) | Self::UnsupportedKeyType { .. } => "SSHCredentialsInvalid",
            Self::KeyKdfTooExpensive { .. } => "SSHKeyKdfTooExpensive",
            Self::Settings(_) | Self::Duration { .. } => "SSHSettingsInvalid",
            Self::NoKnownHosts { .. } => "SSHHostKeyMissing",
            Self::PasswordNeedsHostKey { .. } => "SSHPasswordNeedsHostKey",
            Self::HostKeyRejected { .. } => "SSHHostKeyRejected",
            Self::AuthRejected { .. } => "SSHAuthFailed",
            Self::ConnectTimeout { .. } | Self::Connect { .. } => "SSHUnreachable",
            Self::Transport { .. } => "SSHTransportError",
            Self::CommandTimeout { .. } => "SSHCommandTimeout",
            Self::CommandFailed { .. } => "SSHCommandFailed",
            Self::InputNotRead { .. } => "SSHInputNotRead",
            Self::InputUnreadable { .. } => "SSHInputUnreadable",
            Self::UnsafeArgument(_) => "SSHUnsafeArgument",
            Self::OutputTooLarge { .. } => "SSHOutputTooLarge",
            Self::NotLeader { .. } => "NotLeader",
        }
    }

    /// Fills in the VPS address of a transport error converted from russh.
    #[must_use]
    pub fn at(self, address: &str) -> Self {
        match self {
            Self::Transport { host, source } if host.is_empty() => Self::Transport {
                host: address.to_owned(),
                source,
            },
            other => other,
        }
    }

    /// Whether trying again later (reconnecting) may help: network and protocol trouble,
    /// not refused credentials or host keys.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. } | Self::Connect { .. } | Self::Transport { .. }
        )
    }
}

/// Why the SSH transport failed: russh's error, or what the session found itself.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The SSH protocol layer failed (boxed: russh's error is large, and every result of
    /// the SSH layer carries this enum).
    #[error(transparent)]
    Protocol(Box<russh::Error>),
    /// A command was attempted on a session that is not connected.
    #[error("not connected")]
    NotConnected,
    /// The server did not open a channel in time.
    #[error("opening a channel timed out")]
    ChannelTimeout,
    /// The server answered a command request with a failure.
    #[error("the server refused to run the command")]
    CommandRefused,
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        TransportError::Protocol(Box::new(e)).into()
    }
}

impl From<TransportError> for SshError {
    /// A transport error whose host [`SshError::at`] fills in.
    fn from(source: TransportError) -> Self {
        Self::Transport {
            host: String::new(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn every_category_is_upper_camel_case() {
        let host = String::new;
        let all = [
            SshError::Credentials(String::new()),
            SshError::UnsupportedKeyType {
                found: String::new(),
                supported: "",
            },
            SshError::KeyKdfTooExpensive {
                key: "privateKey",
                kdf: "scrypt",
                found: String::new(),
                limit: String::new(),
            },
            SshError::Settings(String::new()),
            SshError::Duration {
                field: "ssh.connectTimeout",
                source: DurationError::Syntax { input: host() },
            },
            SshError::NoKnownHosts { host: host() },
            SshError::PasswordNeedsHostKey { host: host() },
            SshError::HostKeyRejected {
                host: host(),
                reason: String::new(),
            },
            SshError::AuthRejected {
                host: host(),
                user: String::new(),
                method: "publickey",
                remaining: String::new(),
            },
            SshError::ConnectTimeout {
                host: host(),
                timeout: Duration::from_secs(1),
            },
            SshError::Connect {
                host: host(),
                source: std::io::Error::other("refused"),
            },
            TransportError::NotConnected.into(),
            SshError::CommandTimeout {
                command: String::new(),
                timeout: Duration::from_secs(1),
            },
            SshError::CommandFailed {
                command: String::new(),
                status: 1,
                stderr: String::new(),
            },
            SshError::InputNotRead {
                command: String::new(),
                len: 1,
            },
            SshError::InputUnreadable {
                command: String::new(),
                read: 0,
                len: 1,
                reason: String::new(),
            },
            SshError::UnsafeArgument(String::new()),
            SshError::OutputTooLarge {
                command: String::new(),
                limit: 1,
            },
            SshError::NotLeader {
                command: String::new(),
            },
        ];
        let categories: Vec<&str> = all.iter().map(SshError::category).collect();
        assert_eq!(
            categories,
            [
                "SSHCredentialsInvalid",
                "SSHCredentialsInvalid",
                "SSHKeyKdfTooExpensive",
                "SSHSettingsInvalid",
                "SSHSettingsInvalid",
                "SSHHostKeyMissing",
                "SSHPasswordNeedsHostKey",
                "SSHHostKeyRejected",
                "SSHAuthFailed",
                "SSHUnreachable",
                "SSHUnreachable",
                "SSHTransportError",
                "SSHCommandTimeout",
                "SSHCommandFailed",
                "SSHInputNotRead",
                "SSHInputUnreadable",
                "SSHUnsafeArgument",
                "SSHOutputTooLarge",
                "NotLeader",
            ]
        );
    }

    #[test]
    fn a_transport_error_keeps_russh_as_its_source_and_gets_its_host() {
        let e = SshError::from(russh::Error::Disconnect).at("203.0.113.10:22");
        assert!(
            e.to_string()
                .starts_with("SSH transport to 203.0.113.10:22: "),
            "{e}"
        );
        assert!(
            e.source()
                .is_some_and(|s| s.to_string() == russh::Error::Disconnect.to_string())
        );
        assert!(e.is_transient());
    }
}
