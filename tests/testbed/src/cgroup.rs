//! A cgroup of its own for each VPS container.
//!
//! Without a systemd on the host, `systemd-nspawn --register=no --keep-unit` hands the
//! container's systemd the cgroup it was started in. VPSes booted by one test process would
//! all share that cgroup, and two systemds booting in it at once move each other's units
//! (units then fail with status 219/CGROUP and the boot ends `degraded`). So each container
//! starts in a fresh child cgroup, in every hierarchy systemd uses (the named `systemd`
//! hierarchy and the unified one, or the unified one alone on a pure cgroup v2 host), and the
//! cgroups are removed, innermost first, when the handle drops.

use std::path::{Path, PathBuf};

use crate::TestbedError;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directories made for one container.
#[derive(Debug)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates `tb-<name>` under the current process's cgroup in each hierarchy systemd uses.
    /// Hierarchies that cannot be found are skipped (the container then shares the caller's).
    pub fn create(name: &str) -> Result<Self, TestbedError> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(TestbedError::io("reading /proc/self/cgroup"))?;
        let mut dirs = Vec::new();
        for parent in parents(&own, Path::new(ROOT)) {
            let dir = parent.join(format!("tb-{name}"));
            std::fs::create_dir_all(&dir).map_err(TestbedError::io(format!(
                "creating cgroup {}",
                dir.display()
            )))?;
            dirs.push(dir);
        }
        Ok(Self { dirs })
    }

    /// The `cgroup.procs` files a process writes its PID to, to move itself in.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove_tree(dir);
        }
    }
}

/// The parent directories for a container's cgroups, from `/proc/self/cgroup`'s text and the
/// cgroup file system's mount point.
fn parents(own: &str, root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        let mount = match controllers {
            "name=systemd" => root.join("systemd"),
            "" if root.join("unified").is_dir() => root.join("unified"),
            "" if root.join("cgroup.controllers").is_file() => root.to_path_buf(),
            _ => continue,
        };
        if mount.is_dir() {
            out.push(mount.join(relative));
        }
    }
    out
}

/// Removes a cgroup directory and its children (only empty cgroups can go: the container's
/// processes are gone by then). Best effort.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_hierarchies_get_a_child_each() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("systemd")).unwrap();
        std::fs::create_dir_all(root.path().join("unified")).unwrap();
        let own = "9:name=systemd:/\n4:memory:/x/y\n0::/a\n";
        assert_eq!(
            parents(own, root.path()),
            vec![root.path().join("systemd/"), root.path().join("unified/a")]
        );
    }

    #[test]
    fn pure_v2_uses_the_root_mount() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(
            parents("0::/user.slice/test\n", root.path()),
            vec![root.path().join("user.slice/test")]
        );
    }
}
