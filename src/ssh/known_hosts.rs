//! OpenSSH `known_hosts` parsing and host key verification, in memory (no temporary file).
//!
//! Supported: plain host patterns with `*`/`?` wildcards and `!` negation, comma-separated
//! lists, `[host]:port` entries for non-22 ports, hashed entries (`|1|salt|hmac`, as written
//! by `ssh-keyscan -H` or `HashKnownHosts yes`), and `@revoked` markers.
//! `@cert-authority` lines are skipped: host certificates are not accepted.
//!
//! Host key types: ed25519, ECDSA (P-256/384/521) and RSA of at least [`MIN_RSA_HOST_KEY_BITS`]
//! bits, which russh verifies with `rsa-sha2-512`/`rsa-sha2-256` signatures (never SHA-1). A
//! pinned `ssh-rsa` key makes the client ask for those two algorithms. Lines this client
//! cannot use are skipped: DSA (`ssh-dss`), shorter RSA keys, a key whose blob is not of the
//! type the line names, and unparsable keys.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::PublicKey;
use russh::keys::{HashAlg, PublicKeyBase64};

use super::SshError;

/// RSA host keys shorter than this are skipped (as RSA client keys are refused).
pub const MIN_RSA_HOST_KEY_BITS: u32 = 2048;

/// One usable line of `known_hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// 1-based line number, for messages.
    line: usize,
    revoked: bool,
    patterns: Vec<HostPattern>,
    /// Algorithm name, e.g. `ssh-ed25519`.
    algorithm: String,
    /// The key blob (SSH wire encoding).
    key: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Plain { negated: bool, pattern: String },
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// The trusted host keys from a Secret's `knownHosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// What `knownHosts` says about the key a server presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host holds exactly this key.
    Trusted,
    /// Lines for this host exist but none holds this key.
    Mismatch {
        /// Line numbers of the entries for this host.
        lines: Vec<usize>,
    },
    /// No line matches this host at all.
    UnknownHost,
    /// The key is marked `@revoked`.
    Revoked {
        /// Line number of the `@revoked` entry.
        line: usize,
    },
}

impl KnownHosts {
    /// Parses `known_hosts` text. Comments, blank lines, certificate authorities and key types
    /// this client cannot use are skipped; a text with no usable line at all is an error.
    pub fn parse(text: &str) -> Result<Self, SshError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut revoked = false;
            if first.starts_with('@') {
                match first {
                    "@revoked" => revoked = true,
                    // Host certificates are not accepted; such a line trusts nothing here.
                    _ => continue,
                }
                first = fields.next().unwrap_or_default();
            }
            let (Some(algorithm), Some(blob)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = russh::keys::parse_public_key_base64(blob) else {
                continue;
            };
            if !usable_host_key(algorithm, &key) {
                continue;
            }
            let patterns = first.split(',').filter_map(parse_pattern).collect();
            entries.push(Entry {
                line: index + 1,
                revoked,
                patterns,
                algorithm: algorithm.to_owned(),
                key: key.public_key_bytes(),
            });
        }
        if entries.iter().all(|e| e.revoked) {
            return Err(SshError::Credentials(
                "knownHosts has no usable entry (expected lines like `203.0.113.10 ssh-ed25519 AAAA...`; ed25519, ECDSA and RSA of 2048 bits or more are supported, DSA is not)".into(),
            ));
        }
        Ok(Self { entries })
    }

    /// The host name as `known_hosts` writes it: `host` on port 22, `[host]:port` otherwise.
    pub fn host_key_name(host: &str, port: u16) -> String {
        if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        }
    }

    /// Host key algorithms to ask the server for, from the keys pinned for `host:port` in
    /// file order, so the client asks for a key it can verify. An RSA pin asks for
    /// `rsa-sha2-512` and `rsa-sha2-256` (its key type `ssh-rsa` names SHA-1 signatures).
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<String> {
        let name = Self::host_key_name(host, port);
        let mut out: Vec<String> = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| !e.revoked && e.matches(&name))
        {
            let names: Vec<&str> = if e.algorithm == "ssh-rsa" {
                vec!["rsa-sha2-512", "rsa-sha2-256"]
            } else {
                vec![e.algorithm.as_str()]
            };
            for n in names {
                if !out.iter().any(|o| o == n) {
                    out.push(n.to_owned());
                }
            }
        }
        out
    }

    /// Checks the key presented by `host:port`.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let blob = key.public_key_bytes();
        let name = Self::host_key_name(host, port);
        if let Some(e) = self.entries.iter().find(|e| e.revoked && e.key == blob) {
            return Verdict::Revoked { line: e.line };
        }
        let mut lines = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| !e.revoked && e.matches(&name))
        {
            if e.key == blob {
                return Verdict::Trusted;
            }
            lines.push(e.line);
        }
        if lines.is_empty() {
            Verdict::UnknownHost
        } else {
            Verdict::Mismatch { lines }
        }
    }
}

impl Entry {
    /// OpenSSH semantics: some positive pattern matches and no negated pattern does.
    fn matches(&self, name: &str) -> bool {
        let mut positive = false;
        for p in &self.patterns {
            match p {
                HostPattern::Plain { negated, pattern } => {
                    if wildcard_match(pattern, name) {
                        if *negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                HostPattern::Hashed { salt, hash } => {
                    if let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt)
                        && mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok()
                    {
                        positive = true;
                    }
                }
            }
        }
        positive
    }
}

/// Whether a line's key can be verified here: its blob is of the type the line names, and it
/// is ed25519, ECDSA, or RSA of at least [`MIN_RSA_HOST_KEY_BITS`].
fn usable_host_key(algorithm: &str, key: &PublicKey) -> bool {
    if key.algorithm().as_str() != algorithm {
        return false;
    }
    match key.key_data() {
        russh::keys::ssh_key::public::KeyData::Ed25519(_)
        | russh::keys::ssh_key::public::KeyData::Ecdsa(_) => true,
        russh::keys::ssh_key::public::KeyData::Rsa(rsa) => rsa.key_size() >= MIN_RSA_HOST_KEY_BITS,
        _ => false,
    }
}

fn parse_pattern(text: &str) -> Option<HostPattern> {
    if let Some(rest) = text.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        let engine = base64::engine::general_purpose::STANDARD;
        return Some(HostPattern::Hashed {
            salt: engine.decode(salt).ok()?,
            hash: engine.decode(hash).ok()?,
        });
    }
    let (negated, pattern) = match text.strip_prefix('!') {
        Some(p) => (true, p),
        None => (false, text),
    };
    (!pattern.is_empty()).then(|| HostPattern::Plain {
        negated,
        pattern: pattern.to_ascii_lowercase(),
    })
}

/// `*` matches any run, `?` one character; case-insensitive like host names.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// `SHA256:...` fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    const RSA_2048: &str = "AAAAB3NzaC1yc2EAAAADAQABAAABAQDHQ9n/XO//Gj2MaRwEHNBoo5xdKsIw5Fy1kFbYz3hRb2ZckMiZgHu4YNKOjnlVvz1kDLjwCcyH+gYxJt3RCfc08kzlYOC7GfnFGOcChunGZVRNNGr/8Yejq4ERqF8W11G/h2KzqMAulMeN5Ik3+ni2v3sk7OmqyuOdT+TPpgIhvytnJqMINiQvu1/yNZvQnb6MxDVWC0z8/rQyHt2lcDMn5Oh+0FY1/wD4QQdUCDxfRu6QDmlNt/4oPLif1qDwUIf9Hn3UMUM+/5e5avVMzsp3Z6SstbW5Spu3wx7TitAODQjsFvmu6xaDIAkYVDk8/GqpZZJs1UswGTON09yR26w1";
    const RSA_1024: &str = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQCmqS4ksAAWQN3FPkiTsAm7+8fZt9vnMMj4rtR26Lr48PkINrKzDmBP+kHuZSznZoZHmyNVAJuQUS1aT3b2SsNURfR3iJXi0aD7yzxqVkAk4FRgR0po6rQPXJyvCANWS1wzOpDjGZ//ybHNzUvjhqDCIPMsqzSCu4Y8369g5q7kLQ==";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn other_key() -> PublicKey {
        key("AAAAC3NzaC1lZDI1NTE5AAAAIOCbsgnigui2b8nCBQ3n2ODqZawcKfbR/Q5F+dKyioM7")
    }

    #[test]
    fn plain_entry_trusts_its_key_and_refuses_another() {
        let kh = KnownHosts::parse(&format!("203.0.113.10 ssh-ed25519 {KEY_A}\n")).unwrap();
        assert_eq!(kh.verify("203.0.113.10", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(
            kh.verify("203.0.113.10", 22, &other_key()),
            Verdict::Mismatch { lines: vec![1] }
        );
        assert_eq!(
            kh.verify("203.0.113.11", 22, &key(KEY_A)),
            Verdict::UnknownHost
        );
        // A non-22 port needs a [host]:port entry.
        assert_eq!(
            kh.verify("203.0.113.10", 2222, &key(KEY_A)),
            Verdict::UnknownHost
        );
    }

    #[test]
    fn bracketed_port_entries() {
        let kh = KnownHosts::parse(&format!("[vps.example]:2222 ssh-ed25519 {KEY_A}")).unwrap();
        assert_eq!(
            kh.verify("vps.example", 2222, &key(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(
            kh.verify("vps.example", 22, &key(KEY_A)),
            Verdict::UnknownHost
        );
    }

    #[test]
    fn hashed_entries() {
        // `|1|salt|HMAC-SHA1(salt, "203.0.113.10")`, computed here the way ssh-keygen -H does.
        let salt = [7u8; 20];
        let mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"203.0.113.10")
            .finalize()
            .into_bytes();
        let e = base64::engine::general_purpose::STANDARD;
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}",
            e.encode(salt),
            e.encode(mac)
        );
        let kh = KnownHosts::parse(&line).unwrap();
        assert_eq!(kh.verify("203.0.113.10", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(
            kh.verify("203.0.113.99", 22, &key(KEY_A)),
            Verdict::UnknownHost
        );
    }

    #[test]
    fn wildcards_negation_lists_and_revocation() {
        let text = format!(
            "# comment\n\n*.example,!bad.example ssh-ed25519 {KEY_A}\n@cert-authority * ssh-ed25519 {KEY_A}\n"
        );
        let kh = KnownHosts::parse(&text).unwrap();
        assert_eq!(kh.verify("vps.example", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(
            kh.verify("bad.example", 22, &key(KEY_A)),
            Verdict::UnknownHost
        );
        assert_eq!(kh.algorithms_for("vps.example", 22), vec!["ssh-ed25519"]);

        let kh = KnownHosts::parse(&format!(
            "vps.example ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n"
        ))
        .unwrap();
        assert_eq!(
            kh.verify("vps.example", 22, &key(KEY_A)),
            Verdict::Revoked { line: 2 }
        );
    }

    #[test]
    fn nothing_usable_is_an_error() {
        assert!(KnownHosts::parse("# only a comment\n").is_err());
        assert!(KnownHosts::parse("host ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n").is_err());
    }

    #[test]
    fn rsa_host_keys_of_2048_bits_are_pinned_and_asked_for_with_sha2() {
        let kh = KnownHosts::parse(&format!(
            "vps ssh-rsa {RSA_2048}\nvps ssh-ed25519 {KEY_A}\n"
        ))
        .unwrap();
        assert_eq!(kh.verify("vps", 22, &key(RSA_2048)), Verdict::Trusted);
        assert_eq!(
            kh.algorithms_for("vps", 22),
            vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-ed25519"]
        );
        // Too short, or a blob that is not what the line says: skipped.
        let kh = KnownHosts::parse(&format!(
            "vps ssh-rsa {RSA_1024}\nvps ssh-ed25519 {RSA_2048}\nother ssh-ed25519 {KEY_A}\n"
        ))
        .unwrap();
        assert_eq!(kh.verify("vps", 22, &key(RSA_1024)), Verdict::UnknownHost);
        assert_eq!(kh.verify("vps", 22, &key(RSA_2048)), Verdict::UnknownHost);
        assert!(kh.algorithms_for("vps", 22).is_empty());
        let e = KnownHosts::parse(&format!("vps ssh-rsa {RSA_1024}\n")).unwrap_err();
        assert!(e.to_string().contains("2048 bits"), "{e}");
    }

    #[test]
    fn wildcard_matching() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("10.0.0.?", "10.0.0.7"));
        assert!(!wildcard_match("10.0.0.?", "10.0.0.17"));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(!wildcard_match("a*c", "abbb"));
    }
}
