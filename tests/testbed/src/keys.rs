//! Encrypted SSH private keys as the real tools make them (`ssh-keygen`, `openssl pkcs8`), and
//! the key-derivation bombs of the December 2026 security review (H2), made from them by
//! patching one cost parameter, as `reviews/poc/kdf_bomb.py` does: an OpenSSH key with
//! 2^32-1 bcrypt rounds and a PKCS#8 key with scrypt N=2^30, r=2 (256 GiB). Every key is
//! encrypted with the passphrase [`PASSPHRASE`].

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::TestbedError;

/// The passphrase of every key made here.
pub const PASSPHRASE: &str = "x";

fn malformed(what: &str) -> TestbedError {
    TestbedError::Command {
        command: "patching a key".into(),
        detail: format!("unexpected key layout: {what}"),
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), TestbedError> {
    let command = format!("{program} {}", args.join(" "));
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| TestbedError::Command {
            command: command.clone(),
            detail: format!("{e} (installed by tests/testbed/setup.sh)"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

fn path_str(path: &Path) -> Result<&str, TestbedError> {
    path.to_str()
        .ok_or_else(|| malformed("a non-UTF-8 temp path"))
}

fn read(path: &Path) -> Result<String, TestbedError> {
    std::fs::read_to_string(path).map_err(TestbedError::io("reading the key"))
}

/// An encrypted ed25519 key from `ssh-keygen` (OpenSSH format), with `extra` arguments.
pub fn ssh_keygen_encrypted(extra: &[&str]) -> Result<String, TestbedError> {
    let dir = tempfile::tempdir().map_err(TestbedError::io("making a temp dir"))?;
    let path = dir.path().join("key");
    let mut args = vec![
        "-q",
        "-t",
        "ed25519",
        "-N",
        PASSPHRASE,
        "-f",
        path_str(&path)?,
    ];
    args.extend_from_slice(extra);
    run("ssh-keygen", &args)?;
    read(&path)
}

/// An ed25519 key from `openssl genpkey`, encrypted by `openssl pkcs8 -topk8` with `extra`
/// arguments (PBKDF2 with 2048 iterations unless they say otherwise).
pub fn openssl_pkcs8(extra: &[&str]) -> Result<String, TestbedError> {
    let dir = tempfile::tempdir().map_err(TestbedError::io("making a temp dir"))?;
    let (plain, out) = (dir.path().join("k.pem"), dir.path().join("e.pem"));
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            path_str(&plain)?,
        ],
    )?;
    let pass = format!("pass:{PASSPHRASE}");
    let mut args = vec![
        "pkcs8",
        "-topk8",
        "-in",
        path_str(&plain)?,
        "-passout",
        &pass,
        "-out",
        path_str(&out)?,
    ];
    args.extend_from_slice(extra);
    run("openssl", &args)?;
    read(&out)
}

/// The DER inside a PEM text.
pub fn pem_body(pem: &str) -> Result<Vec<u8>, TestbedError> {
    let lines: Vec<&str> = pem.trim().lines().collect();
    let body = lines
        .get(1..lines.len().saturating_sub(1))
        .ok_or_else(|| malformed("not PEM"))?;
    STANDARD
        .decode(body.concat())
        .map_err(|_| malformed("PEM body not base64"))
}

/// `der` as PEM with `label`, wrapped at `width`.
pub fn pem(label: &str, der: &[u8], width: usize) -> String {
    let body = STANDARD.encode(der);
    let wrapped: Vec<String> = body
        .as_bytes()
        .chunks(width)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        wrapped.join("\n")
    )
}

/// The OpenSSH key `key` with its bcrypt rounds replaced by `rounds`.
pub fn with_bcrypt_rounds(key: &str, rounds: u32) -> Result<String, TestbedError> {
    let mut blob = pem_body(key)?;
    // Where the SSH string starting at `at` ends.
    let string_end = |blob: &[u8], at: usize| -> Result<usize, TestbedError> {
        let len: [u8; 4] = blob
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("short OpenSSH key"))?;
        Ok(at + 4 + usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX))
    };
    let at = b"openssh-key-v1\0".len();
    let at = string_end(&blob, at)?; // cipher name
    let at = string_end(&blob, at)?; // KDF name
    let salt_end = string_end(&blob, at + 4)?; // KDF options: string salt, uint32 rounds
    blob.get_mut(salt_end..salt_end + 4)
        .ok_or_else(|| malformed("no bcrypt rounds"))?
        .copy_from_slice(&rounds.to_be_bytes());
    Ok(pem("OPENSSH PRIVATE KEY", &blob, 70))
}

/// The bcrypt bomb: an `ssh-keygen` key with 2^32-1 rounds (years of CPU).
pub fn bcrypt_bomb() -> Result<String, TestbedError> {
    with_bcrypt_rounds(&ssh_keygen_encrypted(&[])?, u32::MAX)
}

/// The scrypt bomb: an `openssl pkcs8 -scrypt` key patched to N=2^30, r=2 (256 GiB; openssl
/// itself refuses to make it).
pub fn scrypt_bomb() -> Result<String, TestbedError> {
    let key = openssl_pkcs8(&[
        "-scrypt",
        "-scrypt_N",
        "16384",
        "-scrypt_r",
        "1",
        "-scrypt_p",
        "1",
    ])?;
    let der = pem_body(&key)?;
    // N INTEGER 02 02 40 00 -> 02 04 40 00 00 00 (2^30); r INTEGER 02 01 01 -> 02 01 02.
    let old = [0x02, 0x02, 0x40, 0x00, 0x02, 0x01, 0x01];
    let at = der
        .windows(old.len())
        .position(|w| w == old)
        .ok_or_else(|| malformed("no scrypt N=16384, r=1"))?;
    let mut patched = der[..at].to_vec();
    patched.extend_from_slice(&[0x02, 0x04, 0x40, 0, 0, 0, 0x02, 0x01, 0x02]);
    patched.extend_from_slice(&der[at + old.len()..]);
    // Every constructed element around the INTEGERs grows by two bytes.
    for len_at in enclosing_lengths(&der, at)? {
        patched[len_at] = patched[len_at]
            .checked_add(2)
            .filter(|l| *l < 0x80 || der[len_at - 1] == 0x81)
            .ok_or_else(|| malformed("a length that changes form"))?;
    }
    Ok(pem("ENCRYPTED PRIVATE KEY", &patched, 64))
}

/// Offsets of the length bytes of the constructed DER elements that contain `at` (short
/// lengths, or the one-byte long form `81 nn`, as a small key has).
fn enclosing_lengths(der: &[u8], at: usize) -> Result<Vec<usize>, TestbedError> {
    let mut found = Vec::new();
    let mut pos = 0;
    let mut end = der.len();
    while pos < end {
        let byte = |i: usize| der.get(i).copied().ok_or_else(|| malformed("short DER"));
        let tag = byte(pos)?;
        let (len_at, len, header) = match byte(pos + 1)? {
            0x81 => (pos + 2, usize::from(byte(pos + 2)?), 3),
            short if short < 0x80 => (pos + 1, usize::from(short), 2),
            _ => return Err(malformed("a long DER length")),
        };
        let (start, stop) = (pos + header, pos + header + len);
        if (start..stop).contains(&at) && tag & 0x20 != 0 {
            found.push(len_at);
            pos = start;
            end = stop;
        } else {
            pos = stop;
        }
    }
    Ok(found)
}
