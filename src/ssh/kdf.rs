//! The cost of decrypting a `privateKey`, read from the key file's own header before anything
//! is decrypted, and refused above fixed bounds.
//!
//! An encrypted private key names its own key-derivation function and cost: OpenSSH keys
//! bcrypt-pbkdf rounds, PKCS#8 (`ENCRYPTED PRIVATE KEY`) PBKDF2 iterations or scrypt `N`, `r`,
//! `p`, PuTTY v3 keys Argon2 memory, passes and lanes. Whoever writes the Secret chooses them,
//! and the decoder honours them: scrypt `N=2^30` asks for 256 GiB (the process aborts), 2^32
//! bcrypt rounds run for years. So the header is parsed first, with the same format selection
//! and the same parsers russh uses (no parser differential: what russh would derive with is
//! what is checked), and a cost above the bounds is an
//! [`SshError::KeyKdfTooExpensive`] naming the parameter.
//!
//! The bounds accept what the tools make by default and the common hardened settings, and keep
//! one decode to a few seconds of one core and at most 32 MiB:
//! - bcrypt-pbkdf rounds ≤ [`MAX_BCRYPT_ROUNDS`] (128): `ssh-keygen` uses 16 by default; the
//!   widely published hardening `ssh-keygen -a 100` is accepted (about 1.3 s).
//! - PBKDF2 iterations ≤ [`MAX_PBKDF2_ITERATIONS`] (10⁶): `openssl pkcs8`/`genpkey` use 2048;
//!   OWASP's 2023 advice for PBKDF2-HMAC-SHA256 is 600 000.
//! - scrypt `128·N·r` ≤ [`MAX_SCRYPT_MEMORY`] (32 MiB) and `N·r·p` ≤ [`MAX_SCRYPT_WORK`]
//!   (2^20): `openssl pkcs8 -scrypt` uses N=16384, r=8, p=1 (16 MiB, N·r·p = 2^17).
//! - Argon2 memory ≤ [`MAX_ARGON2_MEMORY_KIB`] (32 MiB), memory × passes ≤
//!   [`MAX_ARGON2_WORK_KIB`] (1 GiB), lanes ≤ [`MAX_ARGON2_LANES`]: PuTTYgen uses 8 MiB, one
//!   lane, and passes calibrated to 100 ms.
//!
//! Decrypting happens elsewhere ([`super::private_key`]): off the async runtime, one at a time.

use data_encoding::BASE64_MIME;
use pkcs8::der::Decode as _;
use pkcs8::pkcs5::{EncryptionScheme, pbes2};
use russh::keys::ssh_key;

use super::SshError;
use super::secret_keys::KEY_PRIVATE_KEY;

/// Most bcrypt-pbkdf rounds accepted in an OpenSSH key.
pub const MAX_BCRYPT_ROUNDS: u32 = 128;
/// Most PBKDF2 iterations accepted in a PKCS#8 key.
pub const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// Most memory scrypt may need (`128·N·r` bytes).
pub const MAX_SCRYPT_MEMORY: u64 = 32 * 1024 * 1024;
/// Most scrypt work (`N·r·p`).
pub const MAX_SCRYPT_WORK: u64 = 1 << 20;
/// Most Argon2 memory (KiB).
pub const MAX_ARGON2_MEMORY_KIB: u64 = 32 * 1024;
/// Most Argon2 memory × passes (KiB).
pub const MAX_ARGON2_WORK_KIB: u64 = 1024 * 1024;
/// Most Argon2 lanes.
pub const MAX_ARGON2_LANES: u64 = 16;

/// The key-derivation function of a key file, with the cost it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kdf {
    /// Not encrypted, a cheap legacy scheme (PEM `DEK-Info`, PuTTY v2), or not readable (the
    /// decoder then fails without deriving anything).
    Cheap,
    /// OpenSSH `bcrypt` KDF.
    Bcrypt {
        /// Rounds.
        rounds: u32,
    },
    /// PKCS#8 PBES2 with PBKDF2.
    Pbkdf2 {
        /// Iterations.
        iterations: u32,
    },
    /// PKCS#8 PBES2 with scrypt.
    Scrypt {
        /// CPU/memory cost `N`.
        n: u64,
        /// Block size `r`.
        r: u64,
        /// Parallelism `p`.
        p: u64,
    },
    /// A PKCS#8 scheme newer than this code, whose cost it cannot tell: refused.
    Unknown,
    /// PuTTY v3 Argon2 (the largest value of each parameter the file gives).
    Argon2 {
        /// Memory, KiB.
        memory_kib: u64,
        /// Passes.
        passes: u64,
        /// Lanes.
        lanes: u64,
    },
}

/// The formats russh's `decode_secret_key` tells apart, chosen the same way.
#[derive(Debug, PartialEq, Eq)]
enum Format {
    Putty,
    Openssh,
    Pkcs8,
    Other,
}

/// Reads the KDF and its cost from the header of `text` (a `privateKey` value, trimmed).
pub fn kdf_of(text: &str) -> Kdf {
    let (format, body) = armour(text);
    match format {
        Format::Putty => putty(text),
        Format::Openssh => {
            let Ok(der) = BASE64_MIME.decode(body.as_bytes()) else {
                return Kdf::Cheap;
            };
            match ssh_key::PrivateKey::from_bytes(&der).map(|k| k.kdf().clone()) {
                Ok(ssh_key::Kdf::Bcrypt { rounds, .. }) => Kdf::Bcrypt { rounds },
                _ => Kdf::Cheap,
            }
        }
        Format::Pkcs8 => {
            let Ok(der) = BASE64_MIME.decode(body.as_bytes()) else {
                return Kdf::Cheap;
            };
            let Ok(info) = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&der) else {
                return Kdf::Cheap;
            };
            match info.encryption_algorithm {
                EncryptionScheme::Pbes2(params) => match params.kdf {
                    pbes2::Kdf::Pbkdf2(p) => Kdf::Pbkdf2 {
                        iterations: p.iteration_count,
                    },
                    pbes2::Kdf::Scrypt(s) => Kdf::Scrypt {
                        n: s.cost_parameter,
                        r: u64::from(s.block_size),
                        p: u64::from(s.parallelization),
                    },
                    _ => Kdf::Unknown,
                },
                // PBES1 is parsed but never decrypted.
                EncryptionScheme::Pbes1(_) => Kdf::Cheap,
                _ => Kdf::Unknown,
            }
        }
        Format::Other => Kdf::Cheap,
    }
}

/// Refuses `text` when its KDF asks for more than the bounds allow.
pub fn check(text: &str) -> Result<(), SshError> {
    let text = text.trim();
    let refuse = |kdf: &'static str, found: String, limit: String| {
        Err(SshError::KeyKdfTooExpensive {
            key: KEY_PRIVATE_KEY,
            kdf,
            found,
            limit,
        })
    };
    match kdf_of(text) {
        Kdf::Unknown => refuse(
            "a key-derivation function",
            "this operator does not know".into(),
            "bcrypt-pbkdf, PBKDF2 or scrypt".into(),
        ),
        Kdf::Bcrypt { rounds } if rounds > MAX_BCRYPT_ROUNDS => refuse(
            "bcrypt-pbkdf",
            format!("rounds={rounds}"),
            format!("at most {MAX_BCRYPT_ROUNDS} rounds (ssh-keygen uses 16)"),
        ),
        Kdf::Pbkdf2 { iterations } if iterations > MAX_PBKDF2_ITERATIONS => refuse(
            "PBKDF2",
            format!("iterations={iterations}"),
            format!("at most {MAX_PBKDF2_ITERATIONS} iterations (openssl uses 2048)"),
        ),
        Kdf::Scrypt { n, r, p } => {
            let memory = 128u128 * u128::from(n) * u128::from(r);
            let work = u128::from(n) * u128::from(r) * u128::from(p);
            let limit = || {
                format!(
                    "N a power of two, 128·N·r at most {} and N·r·p at most {MAX_SCRYPT_WORK} (openssl uses N=16384, r=8, p=1)",
                    bytes(u128::from(MAX_SCRYPT_MEMORY))
                )
            };
            if !n.is_power_of_two()
                || n < 2
                || memory > u128::from(MAX_SCRYPT_MEMORY)
                || work > u128::from(MAX_SCRYPT_WORK)
                || p == 0
            {
                return refuse(
                    "scrypt",
                    format!("N={n}, r={r}, p={p} ({} of memory)", bytes(memory)),
                    limit(),
                );
            }
            Ok(())
        }
        Kdf::Argon2 {
            memory_kib,
            passes,
            lanes,
        } if memory_kib > MAX_ARGON2_MEMORY_KIB
            || u128::from(memory_kib) * u128::from(passes) > u128::from(MAX_ARGON2_WORK_KIB)
            || lanes > MAX_ARGON2_LANES =>
        {
            refuse(
                "Argon2",
                format!(
                    "Argon2-Memory={memory_kib} KiB, Argon2-Passes={passes}, Argon2-Parallelism={lanes}"
                ),
                format!(
                    "memory at most {MAX_ARGON2_MEMORY_KIB} KiB, memory × passes at most {MAX_ARGON2_WORK_KIB} KiB, at most {MAX_ARGON2_LANES} lanes (PuTTYgen uses 8192 KiB, 1 lane)"
                ),
            )
        }
        Kdf::Cheap | Kdf::Bcrypt { .. } | Kdf::Pbkdf2 { .. } | Kdf::Argon2 { .. } => Ok(()),
    }
}

/// A byte count for messages (powers of 1024).
fn bytes(n: u128) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (n, 0);
    while value >= 1024 && value % 1024 == 0 && unit + 1 < UNITS.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
}

/// Which format russh's `decode_secret_key` would decode `text` as, and the base64 body it
/// would decode, computed the same way: PuTTY when the text starts so; otherwise the last
/// `-----BEGIN` line it knows sets the format, and the lines of base64 characters after the
/// first known one, up to an `-----END` line, are the body.
fn armour(text: &str) -> (Format, String) {
    if text.trim().starts_with("PuTTY-User-Key-File-") {
        return (Format::Putty, String::new());
    }
    let mut format = Format::Other;
    let mut started = false;
    let mut body = String::new();
    for line in text.lines() {
        if started {
            if line.starts_with("-----END ") {
                break;
            }
            if line.chars().all(is_base64_char) {
                body.push_str(line);
            }
        }
        match line {
            "-----BEGIN OPENSSH PRIVATE KEY-----" => {
                started = true;
                format = Format::Openssh;
            }
            "-----BEGIN ENCRYPTED PRIVATE KEY-----"
            | "-----BEGIN PRIVATE KEY-----"
            | "-----BEGIN EC PRIVATE KEY-----" => {
                // russh decrypts all three as PKCS#8 when given a passphrase.
                started = true;
                format = Format::Pkcs8;
            }
            "-----BEGIN RSA PRIVATE KEY-----" => {
                started = true;
                format = Format::Other;
            }
            _ => {}
        }
    }
    (format, body)
}

fn is_base64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '/' || c == '+' || c == '='
}

/// The Argon2 parameters of a PuTTY v3 key (`Name: value` lines; the largest value of each,
/// so a repeated line cannot hide a larger one). Values that are not numbers make the decoder
/// fail before deriving anything.
fn putty(text: &str) -> Kdf {
    let (mut memory_kib, mut passes, mut lanes, mut argon2) = (0u64, 0u64, 0u64, false);
    for line in text.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        let slot = match name {
            "Argon2-Memory" => &mut memory_kib,
            "Argon2-Passes" => &mut passes,
            "Argon2-Parallelism" => &mut lanes,
            _ => continue,
        };
        if let Ok(v) = value.parse::<u32>() {
            argon2 = true;
            *slot = (*slot).max(u64::from(v));
        }
    }
    if argon2 {
        Kdf::Argon2 {
            memory_kib,
            passes,
            lanes,
        }
    } else {
        Kdf::Cheap
    }
}

#[cfg(test)]
mod tests {
    use testbed::keys::{
        bcrypt_bomb, openssl_pkcs8, pem, pem_body, scrypt_bomb, ssh_keygen_encrypted,
        with_bcrypt_rounds,
    };

    use super::*;

    #[test]
    fn the_tools_default_keys_are_accepted() {
        let openssh = ssh_keygen_encrypted(&[]).unwrap();
        assert_eq!(kdf_of(&openssh), Kdf::Bcrypt { rounds: 16 });
        check(&openssh).unwrap();
        let hardened = ssh_keygen_encrypted(&["-a", "100"]).unwrap();
        assert_eq!(kdf_of(&hardened), Kdf::Bcrypt { rounds: 100 });
        check(&hardened).unwrap();

        let pbkdf2 = openssl_pkcs8(&[]).unwrap();
        assert_eq!(kdf_of(&pbkdf2), Kdf::Pbkdf2 { iterations: 2048 });
        check(&pbkdf2).unwrap();
        let scrypt = openssl_pkcs8(&["-scrypt"]).unwrap();
        assert_eq!(
            kdf_of(&scrypt),
            Kdf::Scrypt {
                n: 16384,
                r: 8,
                p: 1
            }
        );
        check(&scrypt).unwrap();
        let owasp = openssl_pkcs8(&["-v2", "aes-256-cbc", "-iter", "600000"]).unwrap();
        check(&owasp).unwrap();
    }

    #[test]
    fn the_bombs_are_refused_naming_the_key_and_the_parameter() {
        let bcrypt = bcrypt_bomb().unwrap();
        let e = check(&bcrypt).unwrap_err();
        assert_eq!(e.category(), "SSHKeyKdfTooExpensive");
        let text = e.to_string();
        assert!(
            text.contains("privateKey") && text.contains("rounds=4294967295"),
            "{text}"
        );

        let scrypt = scrypt_bomb().unwrap();
        assert_eq!(
            kdf_of(&scrypt),
            Kdf::Scrypt {
                n: 1 << 30,
                r: 2,
                p: 1
            }
        );
        let text = check(&scrypt).unwrap_err().to_string();
        assert!(
            text.contains("privateKey")
                && text.contains("N=1073741824, r=2")
                && text.contains("256 GiB"),
            "{text}"
        );

        let pbkdf2 = openssl_pkcs8(&["-v2", "aes-256-cbc", "-iter", "1000001"]).unwrap();
        let text = check(&pbkdf2).unwrap_err().to_string();
        assert!(text.contains("iterations=1000001"), "{text}");
    }

    #[test]
    fn the_bounds_are_inclusive_and_scrypt_n_must_be_a_power_of_two() {
        let at =
            with_bcrypt_rounds(&ssh_keygen_encrypted(&[]).unwrap(), MAX_BCRYPT_ROUNDS).unwrap();
        check(&at).unwrap();
        let over =
            with_bcrypt_rounds(&ssh_keygen_encrypted(&[]).unwrap(), MAX_BCRYPT_ROUNDS + 1).unwrap();
        check(&over).unwrap_err();
        // N=0 makes the decoder's own parameter conversion panic; N=3 is not a power of two.
        let scrypt = openssl_pkcs8(&[
            "-scrypt",
            "-scrypt_N",
            "2",
            "-scrypt_r",
            "1",
            "-scrypt_p",
            "1",
        ])
        .unwrap();
        check(&scrypt).unwrap();
        let der = pem_body(&scrypt).unwrap();
        let n_at = der
            .windows(6)
            .position(|w| w == [0x02, 0x01, 0x02, 0x02, 0x01, 0x01])
            .unwrap();
        for n in [0u8, 3] {
            let mut patched = der.clone();
            patched[n_at + 2] = n;
            let text = pem("ENCRYPTED PRIVATE KEY", &patched, 64);
            let e = check(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("N={n},")), "{e}");
        }
    }

    #[test]
    fn putty_argon2_costs_are_read_and_bounded() {
        let key = |memory: u32, passes: u32| {
            format!(
                "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: aes256-cbc\nComment: c\nPublic-Lines: 0\nKey-Derivation: Argon2id\nArgon2-Memory: {memory}\nArgon2-Passes: {passes}\nArgon2-Parallelism: 1\nArgon2-Salt: 00\nPrivate-Lines: 0\nPrivate-MAC: 00\n"
            )
        };
        check(&key(8192, 13)).unwrap();
        let e = check(&key(u32::MAX, 1)).unwrap_err();
        assert_eq!(e.category(), "SSHKeyKdfTooExpensive");
        assert!(e.to_string().contains("Argon2-Memory=4294967295"), "{e}");
        check(&key(8192, 1000)).unwrap_err();
    }

    #[test]
    fn unencrypted_and_unreadable_keys_cost_nothing() {
        assert_eq!(kdf_of("not a key"), Kdf::Cheap);
        assert_eq!(
            kdf_of("-----BEGIN OPENSSH PRIVATE KEY-----\n!!\n-----END OPENSSH PRIVATE KEY-----"),
            Kdf::Cheap
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let plain = std::fs::read_to_string(path).unwrap();
        assert_eq!(kdf_of(&plain), Kdf::Cheap);
    }

    #[test]
    fn a_later_begin_line_sets_the_format_as_in_russh() {
        // russh takes the body after the first BEGIN line and the format of the last one.
        let pkcs8 = scrypt_bomb().unwrap();
        let body: Vec<&str> = pkcs8.trim().lines().collect();
        let mixed = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n-----BEGIN ENCRYPTED PRIVATE KEY-----\n{}\n-----END ENCRYPTED PRIVATE KEY-----\n",
            body[1..body.len() - 1].join("\n")
        );
        check(&mixed).unwrap_err();
    }
}
