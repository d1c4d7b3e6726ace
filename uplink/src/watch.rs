//! Noticing a changed config: the agents poll the file's content (and the key file's), which
//! follows Kubernetes ConfigMap updates (an atomic `..data` symlink swap) as well as plain
//! rewrites and renames, with no inotify subtleties. Reading a small file ten times a second
//! costs nothing, and a new binding's forward is in place a tenth of a second after its file.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the agents look at their files.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Remembers the last content seen of a set of files.
#[derive(Debug, Default)]
pub struct Watch {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Watch {
    /// Watches `paths`; the first [`Watch::changed`] reports a change.
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            files: paths.into_iter().map(|p| (p, None)).collect(),
        }
    }

    /// Whether any file's content differs from the last call (a missing file reads as empty).
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.files {
            let now = read(path);
            if seen.as_ref() != Some(&now) {
                *seen = Some(now);
                changed = true;
            }
        }
        changed
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_symlink_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let d1 = dir.path().join("..2026_1");
        let d2 = dir.path().join("..2026_2");
        std::fs::create_dir(&d1).unwrap();
        std::fs::create_dir(&d2).unwrap();
        std::fs::write(d1.join("uplink.json"), "one").unwrap();
        std::fs::write(d2.join("uplink.json"), "two").unwrap();
        std::os::unix::fs::symlink("..2026_1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/uplink.json", dir.path().join("uplink.json")).unwrap();
        let mut watch = Watch::new([dir.path().join("uplink.json")]);
        assert!(watch.changed());
        assert!(!watch.changed());
        // The kubelet's swap: a new symlink renamed over `..data`.
        std::os::unix::fs::symlink("..2026_2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(watch.changed());
        assert!(!watch.changed());
    }
}
