//! SSH to the VPS, with russh (ring crypto): credentials from the EdgeNode's Secret, host key
//! verification against `knownHosts` (on by default), one authenticated connection reused for
//! every command of a pass, commands built so no outside string reaches a shell unquoted,
//! atomic file uploads, and a log of what ran.
//!
//! - [`credentials`]: the Secret's contents and the `spec.ssh` settings.
//! - [`secret_keys`]: the names of the SSH Secret's keys.
//! - [`known_hosts`]: OpenSSH `known_hosts` parsing and verification.
//! - [`private_key`]: key decoding (off the runtime, once per Secret version) and the
//!   supported key types.
//! - [`kdf`]: the key-derivation cost an encrypted key asks for, refused above bounds.
//! - [`script`]: safe remote command construction.
//! - [`session`]: the connection, commands, timeouts and reconnection.
//! - [`transfer`]: atomic file writes.
//! - [`upload_source`]: the local reader an upload streams from, its read errors kept.
//! - [`command_log`]: the record of commands run.

pub mod command_log;
pub mod credentials;
mod error;
pub mod kdf;
pub mod known_hosts;
pub mod private_key;
pub mod script;
pub mod secret_keys;
pub mod session;
pub mod transfer;
mod upload_source;

pub use command_log::{CommandLog, LoggedCommand};
pub use credentials::{Credentials, SecretString, SshOptions};
pub use error::{SshError, TransportError};
pub use script::{Access, Script};
pub use session::{Output, Session};
pub use transfer::{
    BatchItem, Packing, StreamedFile, write_batch, write_file, write_file_owned,
    write_file_streamed,
};
