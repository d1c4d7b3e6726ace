//! The keys of an EdgeNode's SSH Secret (DESIGN.md §1), below both the credentials that read
//! them and the key-derivation check that names `privateKey` in its refusals.

/// Secret key holding an OpenSSH/PEM private key.
pub const KEY_PRIVATE_KEY: &str = "privateKey";
/// Secret key holding the private key's passphrase.
pub const KEY_PASSPHRASE: &str = "passphrase";
/// Secret key holding a login password.
pub const KEY_PASSWORD: &str = "password";
/// Secret key holding OpenSSH `known_hosts` lines.
pub const KEY_KNOWN_HOSTS: &str = "knownHosts";
