//! `uplink init`, the uplink pod's short-lived privileged init container: turns on IPv4
//! forwarding in the pod's own network namespace (the agent's DNAT toward the targets needs
//! it, and `/proc/sys` is read-only for the unprivileged agent) and copies this replica's key,
//! and no other, from the keys Secret into the in-memory volume the agent mounts.

use std::io::Write;
use std::path::Path;

use crate::error::AgentError;
use crate::key::PrivateKey;

/// The namespaced sysctl that turns on IPv4 forwarding.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Whether IPv4 forwarding is on in this network namespace.
pub fn forwarding_enabled() -> bool {
    std::fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == "1")
}

/// Turns IPv4 forwarding on in this network namespace.
pub fn enable_forwarding() -> Result<(), AgentError> {
    std::fs::write(IP_FORWARD, "1").map_err(|source| AgentError::File {
        path: IP_FORWARD.into(),
        source,
    })
}

/// Copies `priv-<ordinal>` from `from` into `to` (mode 0400, written to a temporary file,
/// synced, then renamed), after checking it is a key. Nothing else is copied.
pub fn copy_key(from: &Path, to: &Path, ordinal: u32) -> Result<(), AgentError> {
    let name = format!("priv-{ordinal}");
    let source = from.join(&name);
    let text = crate::error::read(&source)?;
    text.trim()
        .parse::<PrivateKey>()
        .map_err(|_| AgentError::Key {
            path: source.clone(),
        })?;
    let target = to.join(&name);
    let temp = to.join(format!(".{name}.tmp"));
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::File { path, source }
    };
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o400)
            .open(&temp)
            .map_err(file_err(&temp))?;
        file.write_all(text.trim().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(file_err(&temp))?;
    }
    std::fs::rename(&temp, &target).map_err(file_err(&target))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_its_own_key() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        for o in 0..3 {
            std::fs::write(
                from.path().join(format!("priv-{o}")),
                PrivateKey::generate().unwrap().to_base64(),
            )
            .unwrap();
        }
        copy_key(from.path(), to.path(), 1).unwrap();
        let names: Vec<String> = std::fs::read_dir(to.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["priv-1"]);
        std::fs::write(from.path().join("priv-2"), "not a key").unwrap();
        assert!(matches!(
            copy_key(from.path(), to.path(), 2),
            Err(AgentError::Key { .. })
        ));
        assert!(copy_key(from.path(), to.path(), 7).is_err());
    }
}
