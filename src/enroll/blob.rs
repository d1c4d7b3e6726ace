//! File content with its SHA-256, cheap to clone: what enrollment writes to a VPS. Small
//! documents live in memory. The binaries the operator carries (Envoy is about 100 MB) stay
//! on disk: their digest is computed once at start-up by streaming them, and a push streams
//! them again from the file, so the operator never holds one in memory. The VPS checks what
//! it received against the digest before installing it, so a binary replaced on disk after
//! start-up is refused there, not installed under the old digest.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::hash::sha256_hex;

/// Where the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    /// In memory.
    Memory(&'a [u8]),
    /// In a file of the operator's file system.
    File(&'a Path),
}

#[derive(Clone)]
enum Content {
    Memory(Arc<Vec<u8>>),
    File(Arc<PathBuf>),
}

/// Content and its digest. `Debug` shows only size and digest, so a document holding a
/// private key never reaches a log through it.
#[derive(Clone)]
pub struct Blob {
    content: Content,
    len: u64,
    sha256: String,
}

impl Blob {
    /// Wraps `bytes` and computes their digest.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = Arc::new(bytes.into());
        let sha256 = sha256_hex(&bytes);
        Self {
            len: bytes.len() as u64,
            content: Content::Memory(bytes),
            sha256,
        }
    }

    /// The file at `path`, hashed now by streaming it; streamed again when it is pushed.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            len += n as u64;
        }
        Ok(Self {
            content: Content::File(Arc::new(path.to_owned())),
            len,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lowercase hex SHA-256 of the content.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Where the content is.
    pub fn stored(&self) -> Stored<'_> {
        match &self.content {
            Content::Memory(bytes) => Stored::Memory(bytes),
            Content::File(path) => Stored::File(path),
        }
    }
}

impl PartialEq for Blob {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.sha256 == other.sha256
    }
}

impl Eq for Blob {}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes, sha256 {})", self.len, &self.sha256[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_content() {
        let b = Blob::new(b"PRIVATE KEY MATERIAL".to_vec());
        let shown = format!("{b:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains("20 bytes"), "{shown}");
    }

    #[test]
    fn a_file_is_hashed_by_streaming_and_stays_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy-linux-amd64");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let blob = Blob::from_file(&path).unwrap();
        assert_eq!(blob, Blob::new(content.clone()), "same digest and size");
        assert_eq!(blob.len(), 3_000_000);
        assert_eq!(blob.stored(), Stored::File(&path));
        assert!(
            Blob::from_file(&dir.path().join("missing")).is_err(),
            "a missing file is an error, not an empty blob"
        );
    }
}
