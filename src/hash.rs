//! Content hashes: lower-case hex SHA-256 of each file's bytes, and hashes over groups of
//! files (all of them, the hot-reloadable Envoy files, the TLS files) computed from the
//! sorted `(path, file hash)` pairs, so they do not depend on the order files were made in.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One hash over files given as `(path, hex hash)`: SHA-256 of `path NUL hash LF` lines in
/// path order.
pub fn combine<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = files.into_iter().collect();
    pairs.sort_unstable();
    let mut hasher = Sha256::new();
    for (path, hash) in pairs {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(hash.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_order_independence() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let a = combine([("a", "1"), ("b", "2")]);
        assert_eq!(a, combine([("b", "2"), ("a", "1")]));
        assert_ne!(a, combine([("a", "2"), ("b", "1")]));
    }
}
