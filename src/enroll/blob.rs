//! File content with its SHA-256, cheap to clone: what enrollment writes to a VPS. Small
//! documents live in memory. The binaries the operator carries (Envoy is about 100 MB) stay
//! on disk: their digest is computed once at start-up by streaming them, and a push streams
//! them again from the file, so the operator never holds one in memory. A binary may be kept
//! gzipped (`envoy-linux-amd64.gz`, as the operator image ships Envoy: about a third of the
//! bytes to upload): its digest and size are those of what it unpacks to, and the VPS
//! unpacks it. The VPS checks what it received against the digest before installing it, so a
//! binary replaced on disk after start-up is refused there, not installed under the old
//! digest.

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
    /// gzipped in a file of the operator's file system, `len` bytes long.
    Gzip {
        /// The file.
        path: &'a Path,
        /// Its size (packed).
        len: u64,
    },
}

#[derive(Clone)]
enum Content {
    Memory(Arc<Vec<u8>>),
    File(Arc<PathBuf>),
    Gzip { path: Arc<PathBuf>, len: u64 },
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
        let (len, sha256) = digest(std::fs::File::open(path)?)?;
        Ok(Self {
            content: Content::File(Arc::new(path.to_owned())),
            len,
            sha256,
        })
    }

    /// The gzip file at `path` (one or more members, as `gzip -dc` reads them): unpacked now
    /// by streaming to learn the digest and size of its content; pushed packed.
    pub fn from_gzip_file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let packed = file.metadata()?.len();
        let (len, sha256) = digest(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 20, file),
        ))?;
        Ok(Self {
            content: Content::Gzip {
                path: Arc::new(path.to_owned()),
                len: packed,
            },
            len,
            sha256,
        })
    }

    /// The size in bytes (unpacked).
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
            Content::Gzip { path, len } => Stored::Gzip { path, len: *len },
        }
    }
}

/// The size and SHA-256 of everything `reader` yields, read 1 MiB at a time.
fn digest(mut reader: impl Read) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        len += n as u64;
    }
    Ok((len, hex::encode(hasher.finalize())))
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

    #[test]
    fn a_gzip_file_is_known_by_what_it_unpacks_to_and_stays_packed() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("envoy-linux-amd64.gz");
        // Two members, as `cat a.gz b.gz` makes: `gzip -dc` reads both, and so do we.
        let mut packed = Vec::new();
        for half in content.chunks(1_500_000) {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(half).unwrap();
            packed.extend(gz.finish().unwrap());
        }
        std::fs::write(&path, &packed).unwrap();
        let blob = Blob::from_gzip_file(&path).unwrap();
        assert_eq!(blob, Blob::new(content), "the unpacked digest and size");
        assert_eq!(
            blob.stored(),
            Stored::Gzip {
                path: &path,
                len: packed.len() as u64
            }
        );
        assert!(packed.len() < 3_000_000 / 10, "it is pushed packed");
        // Not gzip, or cut short: an error, never taken for a missing file.
        for broken in [
            &b"not gzip, and long enough for a header"[..],
            &packed[..100],
        ] {
            std::fs::write(&path, broken).unwrap();
            let err = Blob::from_gzip_file(&path).unwrap_err();
            assert_ne!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        }
    }
}
