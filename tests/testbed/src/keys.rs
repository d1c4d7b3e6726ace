//! Encrypted SSH private keys as the real tools make them (`ssh-keygen`, `openssl pkcs8`), and
//! the key-derivation bombs of the December 2026 security review (H2), made from them by
//! patching one cost parameter, as `reviews/poc/kdf_bomb.py` does: an OpenSSH key with
//! 2^32-1 bcrypt rounds and a PKCS#8 key with scrypt N=2^30, r=2 (256 GiB). Every key is
//! encrypted with the passphrase [`PASSPHRASE`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The passphrase of every key made here.
pub const PASSPHRASE: &str = "x";

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (installed by tests/testbed/setup.sh): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

/// An encrypted ed25519 key from `ssh-keygen` (OpenSSH format), with `extra` arguments.
pub fn ssh_keygen_encrypted(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    let path = path.to_str().unwrap();
    let mut args = vec!["-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", path];
    args.extend_from_slice(extra);
    run("ssh-keygen", &args);
    std::fs::read_to_string(path).unwrap()
}

/// An ed25519 key from `openssl genpkey`, encrypted by `openssl pkcs8 -topk8` with `extra`
/// arguments (PBKDF2 with 2048 iterations unless they say otherwise).
pub fn openssl_pkcs8(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("k.pem");
    let out = dir.path().join("e.pem");
    let (plain, out) = (plain.to_str().unwrap(), out.to_str().unwrap());
    run(
        "openssl",
        &["genpkey", "-algorithm", "ed25519", "-out", plain],
    );
    let pass = format!("pass:{PASSPHRASE}");
    let mut args = vec![
        "pkcs8", "-topk8", "-in", plain, "-passout", &pass, "-out", out,
    ];
    args.extend_from_slice(extra);
    run("openssl", &args);
    std::fs::read_to_string(out).unwrap()
}

/// The DER inside a PEM text.
pub fn pem_body(pem: &str) -> Vec<u8> {
    let lines: Vec<&str> = pem.trim().lines().collect();
    STANDARD.decode(lines[1..lines.len() - 1].concat()).unwrap()
}

/// `der` as PEM with `label`, wrapped at `width`.
pub fn pem(label: &str, der: &[u8], width: usize) -> String {
    let body = STANDARD.encode(der);
    let wrapped: Vec<&str> = body
        .as_bytes()
        .chunks(width)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        wrapped.join("\n")
    )
}

/// The OpenSSH key `key` with its bcrypt rounds replaced by `rounds`.
pub fn with_bcrypt_rounds(key: &str, rounds: u32) -> String {
    let mut blob = pem_body(key);
    let string_end = |blob: &[u8], at: usize| {
        at + 4 + u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize
    };
    let at = b"openssh-key-v1\0".len();
    let at = string_end(&blob, at); // cipher name
    let at = string_end(&blob, at); // KDF name
    let salt_end = string_end(&blob, at + 4); // KDF options: string salt, uint32 rounds
    blob[salt_end..salt_end + 4].copy_from_slice(&rounds.to_be_bytes());
    pem("OPENSSH PRIVATE KEY", &blob, 70)
}

/// The bcrypt bomb: an `ssh-keygen` key with 2^32-1 rounds (years of CPU).
pub fn bcrypt_bomb() -> String {
    with_bcrypt_rounds(&ssh_keygen_encrypted(&[]), u32::MAX)
}

/// The scrypt bomb: an `openssl pkcs8 -scrypt` key patched to N=2^30, r=2 (256 GiB; openssl
/// itself refuses to make it).
pub fn scrypt_bomb() -> String {
    let key = openssl_pkcs8(&[
        "-scrypt",
        "-scrypt_N",
        "16384",
        "-scrypt_r",
        "1",
        "-scrypt_p",
        "1",
    ]);
    let der = pem_body(&key);
    // N INTEGER 02 02 40 00 -> 02 04 40 00 00 00 (2^30); r INTEGER 02 01 01 -> 02 01 02.
    let old = [0x02, 0x02, 0x40, 0x00, 0x02, 0x01, 0x01];
    let at = der.windows(old.len()).position(|w| w == old).unwrap();
    let mut patched = der[..at].to_vec();
    patched.extend_from_slice(&[0x02, 0x04, 0x40, 0, 0, 0, 0x02, 0x01, 0x02]);
    patched.extend_from_slice(&der[at + old.len()..]);
    // Every constructed element around the INTEGERs grows by two bytes.
    for len_at in enclosing_lengths(&der, at) {
        patched[len_at] += 2;
    }
    pem("ENCRYPTED PRIVATE KEY", &patched, 64)
}

/// Offsets of the length bytes of the constructed DER elements that contain `at` (short
/// lengths, or the one-byte long form `81 nn`, as a small key has).
fn enclosing_lengths(der: &[u8], at: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut pos = 0;
    let mut end = der.len();
    while pos < end {
        let tag = der[pos];
        let (len_at, len, header) = match der[pos + 1] {
            0x81 => (pos + 2, usize::from(der[pos + 2]), 3),
            short if short < 0x80 => (pos + 1, usize::from(short), 2),
            other => panic!("unexpected DER length byte {other:#x}"),
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
    found
}
