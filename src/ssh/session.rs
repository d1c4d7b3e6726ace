//! One SSH connection to one VPS (russh, ring crypto), reused for every command of a pass:
//! each command gets its own channel on it. Host key verification, authentication,
//! keepalives, a timeout per command, and reconnection with backoff when the connection is
//! lost between commands. With leader election, every command that may change the VPS is
//! checked against the write fence first ([`Session::fence_writes`]), so a replaced leader
//! stops between two steps of a pass, not only before the pass.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::SshError;
use super::command_log::{CommandLog, LoggedCommand};
use super::credentials::{Credentials, SshOptions};
use super::error::TransportError;
use super::known_hosts::{KnownHosts, Verdict, fingerprint};
use super::private_key;
use super::script::{Access, Script};
use super::upload_source::{ReadFailure, UploadSource};
use crate::leader::fence::Fence;
use tunnel_contract::dns::absolute_name;

/// Standard error kept from one command: its last part, at most twice this (error messages
/// quote the last 512 bytes). Standard output is bounded by each script
/// ([`Script::max_output`]).
const STDERR_KEPT: usize = 8 * 1024;

/// What a remote command printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Exit status; 255 when the command was killed by a signal or the server sent none.
    pub status: u32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// The last part of standard error (at most 16 KiB; the start of a longer one is dropped).
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last part of standard error, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let text = text.trim();
        let start = text.len().saturating_sub(512);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

/// The russh handler: verifies the server's host key against `knownHosts`, and signals
/// `lost` when an established connection ends (keepalives unanswered, reset, server gone).
struct Verifier {
    host: String,
    port: u16,
    known_hosts: Option<KnownHosts>,
    insecure: bool,
    lost: Arc<Notify>,
}

impl client::Handler for Verifier {
    type Error = SshError;

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        debug!(host = %self.host, port = self.port, "SSH connection ended");
        self.lost.notify_waiters();
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let target = format!("{}:{}", self.host, self.port);
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            return Err(SshError::HostKeyRejected {
                host: target,
                reason: "the server presented a host certificate; pin its plain host key in knownHosts instead".into(),
            });
        };
        let Some(known) = &self.known_hosts else {
            if self.insecure {
                warn!(
                    host = %target,
                    fingerprint = %fingerprint(key),
                    "accepting the host key without verification (insecureSkipHostKeyVerification)"
                );
                return Ok(true);
            }
            return Err(SshError::NoKnownHosts { host: target });
        };
        let shown = format!("{} {}", key.algorithm().as_str(), fingerprint(key));
        match known.verify(&self.host, self.port, key) {
            Verdict::Trusted => {
                debug!(host = %target, key = %shown, "host key verified");
                Ok(true)
            }
            Verdict::Mismatch { lines } => Err(SshError::HostKeyRejected {
                host: target,
                reason: format!(
                    "the server presented {shown}, which does not match the key(s) pinned for it in knownHosts (line(s) {lines:?}); this is either a different machine (possible man-in-the-middle) or a reinstalled VPS whose knownHosts must be updated"
                ),
            }),
            Verdict::UnknownHost => Err(SshError::HostKeyRejected {
                host: target,
                reason: format!(
                    "knownHosts has no entry for {} (the server presented {shown}); add one, e.g. with `ssh-keyscan{} {}`",
                    KnownHosts::host_key_name(&self.host, self.port),
                    if self.port == 22 {
                        String::new()
                    } else {
                        format!(" -p {}", self.port)
                    },
                    self.host
                ),
            }),
            Verdict::Revoked { line } => Err(SshError::HostKeyRejected {
                host: target,
                reason: format!(
                    "the server presented {shown}, which knownHosts marks @revoked (line {line})"
                ),
            }),
        }
    }
}

/// An authenticated SSH connection to one VPS, reconnected on demand.
pub struct Session {
    options: SshOptions,
    credentials: Credentials,
    /// `credentials.private_key`, decoded once (see [`private_key::KeyCache`]).
    key: Option<Arc<PrivateKey>>,
    handle: Option<Handle<Verifier>>,
    log: CommandLog,
    lost: Arc<Notify>,
    /// Checked before every [`Access::Write`] command, when set.
    fence: Option<Fence>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.options.target())
            .field("user", &self.options.user)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects and authenticates, retrying transient failures with exponential backoff.
    /// Refused credentials and host keys fail at once. The private key is decoded first, off
    /// the async runtime ([`private_key::decode_off_runtime`]).
    pub async fn connect(options: SshOptions, credentials: Credentials) -> Result<Self, SshError> {
        let key = match &credentials.private_key {
            Some(key) => {
                Some(private_key::decode_off_runtime(key, credentials.passphrase.as_ref()).await?)
            }
            None => None,
        };
        Self::connect_with_key(options, credentials, key).await
    }

    /// [`Session::connect`] with `credentials.private_key` already decoded as `key` (`None`:
    /// no public-key authentication). Every connection of the session uses it; nothing is
    /// decoded here.
    pub async fn connect_with_key(
        options: SshOptions,
        credentials: Credentials,
        key: Option<Arc<PrivateKey>>,
    ) -> Result<Self, SshError> {
        if credentials.known_hosts.is_none() && !options.insecure_skip_host_key_verification {
            return Err(SshError::NoKnownHosts {
                host: options.target(),
            });
        }
        // Without `knownHosts` nothing verifies the host: its password must not reach it
        // (issue 24, M4). Refused before any connection, whatever else the Secret holds.
        if credentials.known_hosts.is_none() && credentials.password.is_some() {
            return Err(SshError::PasswordNeedsHostKey {
                host: options.target(),
            });
        }
        let mut session = Self {
            options,
            credentials,
            key,
            handle: None,
            log: CommandLog::new(),
            lost: Arc::new(Notify::new()),
            fence: None,
        };
        session.reconnect().await?;
        Ok(session)
    }

    /// From now on, a command that may change the VPS ([`Access::Write`]) runs only while
    /// `fence` allows writes; otherwise it fails with [`SshError::NotLeader`] before anything
    /// is sent. Read-only commands are not fenced.
    pub fn fence_writes(&mut self, fence: Fence) {
        self.fence = Some(fence);
    }

    /// The record of every command run on this session.
    pub fn log(&self) -> &CommandLog {
        &self.log
    }

    /// The settings this session was made with.
    pub fn options(&self) -> &SshOptions {
        &self.options
    }

    /// Wakes whoever waits on it (`notify_waiters`: nothing is stored for later) each time an
    /// established connection of this session ends: unanswered keepalives, a reset, the
    /// server going away, or [`Session::close`]. Lets the owner notice a VPS that went down
    /// between passes instead of at the next one.
    pub fn lost(&self) -> Arc<Notify> {
        self.lost.clone()
    }

    /// Whether the connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_closed())
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    async fn reconnect(&mut self) -> Result<(), SshError> {
        if let Some(old) = self.handle.take() {
            drop(old);
        }
        let options = &self.options;
        let credentials = &self.credentials;
        let key = self.key.as_ref();
        let lost = &self.lost;
        let attempt = || connect_once(options, credentials, key, lost.clone());
        let handle = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(options.reconnect_attempts)
                    .with_jitter(),
            )
            .when(SshError::is_transient)
            .notify(|e, delay| {
                warn!(host = %options.target(), error = %e, ?delay, "SSH connection failed, retrying");
            })
            .await?;
        info!(host = %options.target(), user = %options.user, "SSH session established");
        self.handle = Some(handle);
        Ok(())
    }

    /// Runs `script`; a non-zero exit is returned as an [`Output`], not an error.
    pub async fn run(&mut self, script: &Script) -> Result<Output, SshError> {
        self.run_with_stdin(script, &[]).await
    }

    /// Runs `script` and requires exit status 0.
    pub async fn run_ok(&mut self, script: &Script) -> Result<Output, SshError> {
        let out = self.run(script).await?;
        require_success(script, out)
    }

    /// Runs `script` with `stdin` fed to it, and requires exit status 0.
    pub async fn run_ok_with_stdin(
        &mut self,
        script: &Script,
        stdin: &[u8],
    ) -> Result<Output, SshError> {
        let out = self.run_with_stdin(script, stdin).await?;
        require_success(script, out)
    }

    /// Runs `script` with `stdin` fed to it under `timeout` instead of the per-command one
    /// (an upload's timeout grows with its size), and requires exit status 0.
    pub async fn run_ok_with_stdin_timeout(
        &mut self,
        script: &Script,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let out = self.run_with_timeout(script, stdin, timeout).await?;
        require_success(script, out)
    }

    /// Runs `script` on a new channel with `stdin` fed to it, under the per-command timeout.
    /// Reconnects first (with backoff) when the connection was lost since the last command.
    /// A command that times out is killed on the VPS (see [`exec`]).
    pub async fn run_with_stdin(
        &mut self,
        script: &Script,
        stdin: &[u8],
    ) -> Result<Output, SshError> {
        let timeout = self.options.command_timeout;
        self.run_with_reader(script, stdin, stdin.len() as u64, timeout)
            .await
    }

    /// Runs `script` with the `len` bytes of `stdin` streamed to it (a large file is never
    /// held in memory) under `timeout`, and requires exit status 0.
    pub async fn run_ok_with_reader<R>(
        &mut self,
        script: &Script,
        stdin: R,
        len: u64,
        timeout: Duration,
    ) -> Result<Output, SshError>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        let out = self.run_with_reader(script, stdin, len, timeout).await?;
        require_success(script, out)
    }

    async fn run_with_timeout(
        &mut self,
        script: &Script,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Output, SshError> {
        self.run_with_reader(script, stdin, stdin.len() as u64, timeout)
            .await
    }

    /// [`Session::run_with_stdin`] with the `len` bytes of `stdin` read from a reader, under
    /// `timeout`.
    async fn run_with_reader<R>(
        &mut self,
        script: &Script,
        stdin: R,
        len: u64,
        timeout: Duration,
    ) -> Result<Output, SshError>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        if script.access() == Access::Write
            && self.fence.as_ref().is_some_and(|fence| !fence.allows())
        {
            return Err(SshError::NotLeader {
                command: script.to_string(),
            });
        }
        if !self.is_connected() {
            warn!(host = %self.options.target(), "SSH connection lost, reconnecting");
            self.reconnect().await?;
        }
        let target = self.options.target();
        let started = std::time::Instant::now();
        debug!(host = %target, access = ?script.access(), command = %script, stdin_bytes = len, "remote command");
        // Opening the channel is retried once on a fresh connection: the command has not
        // started, so this cannot run it twice.
        let channel = match self.open_channel(timeout).await {
            Ok(channel) => channel,
            Err(e) => {
                warn!(host = %target, error = %e, "opening a channel failed, reconnecting");
                self.reconnect().await?;
                self.open_channel(timeout).await?
            }
        };
        let result = exec(channel, script, stdin, len, timeout)
            .await
            .map_err(|e| e.at(&target));
        if let Err(e) = &result
            && e.is_transient()
        {
            // The connection may be half-dead: start afresh on the next command.
            self.handle = None;
        }
        self.log.push(LoggedCommand {
            command: script.to_string(),
            access: script.access(),
            stdin_bytes: usize::try_from(len).unwrap_or(usize::MAX),
            status: result.as_ref().ok().map(|o| o.status),
            duration: started.elapsed(),
        });
        result
    }
}

impl Session {
    async fn open_channel(
        &self,
        timeout: Duration,
    ) -> Result<russh::Channel<client::Msg>, SshError> {
        let target = self.options.target();
        let handle = self.handle.as_ref().ok_or_else(|| SshError::Transport {
            host: target.clone(),
            source: TransportError::NotConnected,
        })?;
        match tokio::time::timeout(timeout, handle.channel_open_session()).await {
            Ok(result) => result.map_err(|e| SshError::from(e).at(&target)),
            Err(_) => Err(SshError::Transport {
                host: target,
                source: TransportError::ChannelTimeout,
            }),
        }
    }
}

fn require_success(script: &Script, out: Output) -> Result<Output, SshError> {
    if out.success() {
        Ok(out)
    } else {
        Err(SshError::CommandFailed {
            command: script.to_string(),
            status: out.status,
            stderr: out.stderr_tail(),
        })
    }
}

async fn connect_once(
    options: &SshOptions,
    credentials: &Credentials,
    key: Option<&Arc<PrivateKey>>,
    lost: Arc<Notify>,
) -> Result<Handle<Verifier>, SshError> {
    let target = options.target();
    let mut preferred = russh::Preferred::default();
    if let Some(known) = &credentials.known_hosts {
        // Ask the server for a host key type we have pinned, as OpenSSH does.
        let pinned = known.algorithms_for(&options.host, options.port);
        let ordered: Vec<Algorithm> = pinned
            .iter()
            .filter_map(|name| Algorithm::new(name).ok())
            .filter(|a| preferred.key.contains(a))
            .collect();
        if !ordered.is_empty() {
            preferred.key = Cow::Owned(ordered);
        }
    }
    let config = Arc::new(client::Config {
        keepalive_interval: Some(options.keepalive_interval),
        keepalive_max: options.keepalive_max,
        inactivity_timeout: None,
        nodelay: true,
        preferred,
        ..client::Config::default()
    });
    let verifier = Verifier {
        host: options.host.clone(),
        port: options.port,
        known_hosts: credentials.known_hosts.clone(),
        insecure: options.insecure_skip_host_key_verification,
        lost,
    };
    let work = async {
        let stream =
            tokio::net::TcpStream::connect((absolute_name(&options.host).as_ref(), options.port))
                .await
                .map_err(|source| SshError::Connect {
                    host: target.clone(),
                    source,
                })?;
        // russh sets TCP_NODELAY only on sockets it opens itself (`Config::nodelay` is not
        // applied by `connect_stream`). Without it, a command's channel open waits behind the
        // previous channel's close for the VPS's delayed ACK: 40 ms per command.
        if let Err(e) = stream.set_nodelay(true) {
            warn!(host = %target, error = %e, "cannot set TCP_NODELAY on the SSH connection");
        }
        let mut handle = client::connect_stream(config, stream, verifier)
            .await
            .map_err(|e| e.at(&target))?;
        authenticate(&mut handle, options, credentials, key).await?;
        Ok(handle)
    };
    match tokio::time::timeout(options.connect_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(SshError::ConnectTimeout {
            host: target,
            timeout: options.connect_timeout,
        }),
    }
}

async fn authenticate(
    handle: &mut Handle<Verifier>,
    options: &SshOptions,
    credentials: &Credentials,
    key: Option<&Arc<PrivateKey>>,
) -> Result<(), SshError> {
    let target = options.target();
    let mut tried = Vec::new();
    let mut remaining = String::new();
    if let Some(key) = key {
        // RSA signs with SHA-2 (rsa-sha2-512/256, as the server offers), never SHA-1.
        let hash = if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
            let offered = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| SshError::from(e).at(&target))?;
            offered.flatten().or(Some(russh::keys::HashAlg::Sha256))
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(key.clone(), hash);
        let result = handle
            .authenticate_publickey(options.user.clone(), key)
            .await
            .map_err(|e| SshError::from(e).at(&target))?;
        if accepted(result, "publickey", &mut tried, &mut remaining) {
            return Ok(());
        }
    }
    // A password goes only to a host `knownHosts` verified (also refused before connecting,
    // in `connect_with_key`).
    if let Some(password) = credentials
        .password
        .as_ref()
        .filter(|_| credentials.known_hosts.is_some())
    {
        let result = handle
            .authenticate_password(options.user.clone(), password.expose())
            .await
            .map_err(|e| SshError::from(e).at(&target))?;
        if accepted(result, "password", &mut tried, &mut remaining) {
            return Ok(());
        }
    }
    Err(SshError::AuthRejected {
        host: target,
        user: options.user.clone(),
        method: match tried.as_slice() {
            ["publickey", "password"] => "publickey, then password",
            ["password"] => "password",
            _ => "publickey",
        },
        remaining: if remaining.is_empty() {
            String::new()
        } else {
            format!("; the server accepts: {remaining}")
        },
    })
}

/// Whether the server let us in with `method`; if not, records the method as tried and what
/// the server said it would accept instead.
fn accepted(
    result: client::AuthResult,
    method: &'static str,
    tried: &mut Vec<&'static str>,
    remaining: &mut String,
) -> bool {
    match result {
        client::AuthResult::Success => true,
        client::AuthResult::Failure {
            remaining_methods, ..
        } => {
            tried.push(method);
            *remaining = methods(&remaining_methods);
            false
        }
    }
}

fn methods(set: &russh::MethodSet) -> String {
    set.iter().map(<&str>::from).collect::<Vec<_>>().join(", ")
}

/// How long a timed-out command's channel gets to close before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How much later than the client's timeout the VPS itself kills the command: the client
/// reports the timeout first, and the kill happens even if the connection is gone by then.
const REMOTE_KILL_MARGIN: Duration = Duration::from_secs(2);

/// The command line sent for `script`: the login shell runs it under coreutils' `timeout`,
/// which puts it in its own process group and kills the whole group (the command and its
/// children) with SIGKILL once `timeout` plus [`REMOTE_KILL_MARGIN`] has passed. Without it
/// a command the client gave up on (a hung `systemctl`, a stalled download) would run on for
/// days beside the next pass. The script stays one single-quoted word, so nothing in it is
/// interpreted by the outer shell.
pub fn command_line(script: &Script, timeout: Duration) -> String {
    let total = timeout.saturating_add(REMOTE_KILL_MARGIN);
    let seconds = total
        .as_secs()
        .saturating_add(u64::from(total.subsec_nanos() > 0));
    format!(
        "exec timeout -s KILL {seconds}s \"${{SHELL:-/bin/sh}}\" -c {}",
        super::script::quote(script.as_str())
    )
}

/// Runs `script` on `channel` with the `len` bytes of `stdin`, within `timeout`. On timeout
/// the channel is closed and the command is killed on the VPS ([`command_line`]); sshd is
/// also asked to send SIGKILL.
async fn exec<R: tokio::io::AsyncRead + Unpin>(
    channel: russh::Channel<client::Msg>,
    script: &Script,
    stdin: R,
    len: u64,
    timeout: Duration,
) -> Result<Output, SshError> {
    let (read, write) = channel.split();
    let line = command_line(script, timeout);
    let work = run_on_channel(read, &write, &line, stdin, len, script.max_output());
    match tokio::time::timeout(timeout, work).await {
        Ok(Err(TooMuch::Output)) => {
            warn!(command = %script, limit = script.max_output(), "remote command printed more than it may; it is killed on the VPS");
            let close = async {
                let _ = write.signal(russh::Sig::KILL).await;
                let _ = write.close().await;
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
            return Err(SshError::OutputTooLarge {
                command: script.to_string(),
                limit: script.max_output(),
            });
        }
        Ok(Err(TooMuch::InputNotRead)) => {
            return Err(SshError::InputNotRead {
                command: script.to_string(),
                len,
            });
        }
        Ok(Err(TooMuch::InputUnreadable(ReadFailure { read, reason }))) => {
            warn!(command = %script, read, len, %reason, "the upload's local input could not be read; its command was given a short input");
            return Err(SshError::InputUnreadable {
                command: script.to_string(),
                read,
                len,
                reason,
            });
        }
        Ok(Err(TooMuch::Failed(e))) => return Err(e),
        Ok(Ok(out)) => return Ok(out),
        Err(_) => {}
    }
    warn!(command = %script, ?timeout, "remote command timed out; it is killed on the VPS");
    let close = async {
        let _ = write.signal(russh::Sig::KILL).await;
        let _ = write.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
    Err(SshError::CommandTimeout {
        command: script.to_string(),
        timeout,
    })
}

/// Why [`run_on_channel`] gave up.
enum TooMuch {
    /// Standard output went past the script's bound.
    Output,
    /// The command exited with status 0 before its input was all sent.
    InputNotRead,
    /// The input could not be read here (the command's input was ended at that point).
    InputUnreadable(ReadFailure),
    /// The transport failed or the server refused the command.
    Failed(SshError),
}

impl From<SshError> for TooMuch {
    fn from(e: SshError) -> Self {
        Self::Failed(e)
    }
}

async fn run_on_channel<R: tokio::io::AsyncRead + Unpin>(
    mut read: russh::ChannelReadHalf,
    write: &russh::ChannelWriteHalf<client::Msg>,
    command_line: &str,
    stdin: R,
    len: u64,
    max_output: usize,
) -> Result<Output, TooMuch> {
    write
        .exec(true, command_line)
        .await
        .map_err(SshError::from)?;
    // Set once every byte of the input is handed to the channel (before its EOF).
    let input_sent = std::sync::atomic::AtomicBool::new(len == 0);
    // Set when the input itself could not be read (not the channel).
    let read_failure = std::sync::OnceLock::new();
    let send = async {
        if len > 0 {
            let source = UploadSource::new(stdin, len, &read_failure);
            let sent = write.data(tokio::io::AsyncReadExt::take(source, len)).await;
            if sent.is_err() && read_failure.get().is_some() {
                // No more bytes will come: end the command's input here, so it sees a short
                // upload and fails (nothing replaced) instead of waiting until the timeout.
                let _ = write.eof().await;
            }
            sent?;
        }
        input_sent.store(true, std::sync::atomic::Ordering::Relaxed);
        write.eof().await?;
        Ok::<_, SshError>(())
    };
    let receive = async {
        let mut out = Output {
            status: 255,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let mut got_status = false;
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let fits = append_bounded(&mut out.stdout, &data, max_output);
                    if !fits {
                        return Err(TooMuch::Output);
                    }
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    append_tail(&mut out.stderr, &data, STDERR_KEPT);
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    out.status = exit_status;
                    got_status = true;
                }
                ChannelMsg::Failure => {
                    return Err(SshError::from(TransportError::CommandRefused).into());
                }
                _ => {}
            }
        }
        if !got_status {
            debug!("remote command ended without an exit status");
        }
        Ok(out)
    };
    // The command's end (its channel closed) ends the upload too: a command that exits
    // without reading all of its input (a full disk under `gzip -dc`, a `mkdir` refused)
    // would otherwise leave the upload waiting for window space until the timeout.
    // The upload's own error says less than the command's end: a command that stopped
    // reading closes the channel under it, a lost connection ends the command without an
    // exit status (255). So the command's status decides, and a success is only taken
    // when every byte of the input was sent.
    tokio::pin!(send, receive);
    let mut sending = true;
    let out = loop {
        tokio::select! {
            biased;
            _ = &mut send, if sending => sending = false,
            received = &mut receive => break received?,
        }
    };
    if let Some(failure) = read_failure.get().cloned() {
        return Err(TooMuch::InputUnreadable(failure));
    }
    if out.success() && !input_sent.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(TooMuch::InputNotRead);
    }
    Ok(out)
}

/// Appends `data` to `buffer` unless that makes it longer than `max`; false (and nothing
/// appended) when it would.
fn append_bounded(buffer: &mut Vec<u8>, data: &[u8], max: usize) -> bool {
    if data.len() > max.saturating_sub(buffer.len()) {
        return false;
    }
    buffer.extend_from_slice(data);
    true
}

/// Appends `data` to `buffer`, keeping only its last part: once it holds more than twice
/// `keep`, everything before the last `keep` bytes is dropped (so at most `2 * keep` are held).
fn append_tail(buffer: &mut Vec<u8>, data: &[u8], keep: usize) {
    let data = &data[data.len().saturating_sub(2 * keep)..];
    buffer.extend_from_slice(data);
    if buffer.len() > 2 * keep {
        let cut = buffer.len() - keep;
        buffer.drain(..cut);
    }
}

/// Convenience for callers that only read: runs a [`Access::Read`] script.
pub async fn read_text(session: &mut Session, script: &Script) -> Result<String, SshError> {
    debug_assert_eq!(script.access(), Access::Read);
    Ok(session.run_ok(script).await?.stdout_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_kills_the_script_after_its_timeout_and_keeps_it_one_word() {
        let script = Script::read("echo \"it's\"; sleep 9");
        let line = command_line(&script, Duration::from_millis(60_500));
        assert_eq!(
            line,
            r#"exec timeout -s KILL 63s "${SHELL:-/bin/sh}" -c 'echo "it'\''s"; sleep 9'"#
        );
        assert!(command_line(&script, Duration::MAX).contains(" -c '"));
    }

    #[test]
    fn standard_output_stops_at_its_bound() {
        let mut out = Vec::new();
        assert!(append_bounded(&mut out, b"12345", 8));
        assert!(append_bounded(&mut out, b"678", 8));
        assert!(!append_bounded(&mut out, b"9", 8));
        assert_eq!(out, b"12345678");
    }

    #[test]
    fn standard_error_keeps_its_last_part_within_twice_the_bound() {
        let mut err = Vec::new();
        for i in 0..10_000u32 {
            append_tail(&mut err, format!("line {i}\n").as_bytes(), 64);
            assert!(err.len() <= 128);
        }
        assert!(err.ends_with(b"line 9999\n"));
        append_tail(&mut err, &[b'x'; 1000], 64);
        assert!(err.len() <= 128 && err.ends_with(b"xxxx"));
    }
}
