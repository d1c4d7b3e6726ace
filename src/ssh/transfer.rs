//! File transfer to the VPS with atomic replace: the bytes go on stdin into a temporary file
//! (created mode 0600 in the target's directory), are checked against their SHA-256 on the
//! VPS, get their final mode (and group, when not root's; `chown -h`), are synced to disk, and only then are
//! renamed over the target (the directory is synced after). An interrupted or
//! corrupted upload therefore never replaces anything; a leftover temporary file is named
//! `.tunnel.*` and swept by the next pass.
//!
//! An upload may take longer than a command: its timeout is the per-command timeout plus the
//! time the bytes need at [`SLOWEST_LINK_BYTES_PER_SECOND`] ([`transfer_timeout`]), so a
//! 100 MB Envoy binary on a slow link is not cut off at a minute.

use std::time::Duration;

use super::SshError;
use super::script::{Script, check_path};
use super::session::Session;
use crate::hash::sha256_hex;

/// The slowest link an upload must still complete on: 128 KiB/s (about 1 Mbit/s).
pub const SLOWEST_LINK_BYTES_PER_SECOND: u64 = 128 * 1024;

/// The timeout of uploading `bytes`: `base` (the per-command timeout, for the checks and the
/// rename) plus the bytes at [`SLOWEST_LINK_BYTES_PER_SECOND`], rounded up to a second.
pub fn transfer_timeout(base: Duration, bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    base.saturating_add(Duration::from_secs(
        bytes.div_ceil(SLOWEST_LINK_BYTES_PER_SECOND),
    ))
}

/// Prefix of temporary files (in the target's directory) while an upload is in flight.
pub const TEMP_PREFIX: &str = ".tunnel.";

/// Writes `content` to `path` on the VPS with permission bits `mode` (e.g. `0o600`),
/// creating the parent directory (0755) when missing. Atomic: readers see the old file or the
/// new one, never a partial one.
pub async fn write_file(
    session: &mut Session,
    path: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), SshError> {
    write_file_owned(session, path, content, mode, None).await
}

/// [`write_file`], the file owned by root and group `group` (root when `None`).
pub async fn write_file_owned(
    session: &mut Session,
    path: &str,
    content: &[u8],
    mode: u32,
    group: Option<&str>,
) -> Result<(), SshError> {
    let script = write_file_script_owned(path, &sha256_hex(content), mode, group)?;
    let timeout = transfer_timeout(session.options().command_timeout, content.len());
    session
        .run_ok_with_stdin_timeout(&script, content, timeout)
        .await?;
    Ok(())
}

/// [`write_file_owned`] with the `len` bytes of `content` streamed (a large binary is never
/// held in memory); `sha256` is what they must hash to, checked on the VPS before the file
/// replaces the old one.
pub async fn write_file_streamed<R>(
    session: &mut Session,
    path: &str,
    content: R,
    len: u64,
    sha256: &str,
    mode: u32,
    group: Option<&str>,
) -> Result<(), SshError>
where
    R: tokio::io::AsyncRead + Unpin + Send,
{
    let script = write_file_script_owned(path, sha256, mode, group)?;
    let timeout = transfer_timeout(
        session.options().command_timeout,
        usize::try_from(len).unwrap_or(usize::MAX),
    );
    session
        .run_ok_with_reader(&script, content, len, timeout)
        .await?;
    Ok(())
}

/// The script [`write_file`] runs (exposed for tests of its shape).
pub fn write_file_script(path: &str, sha256: &str, mode: u32) -> Result<Script, SshError> {
    write_file_script_owned(path, sha256, mode, None)
}

/// A plain system user name (`[a-z_][a-z0-9_-]*`, at most 32 bytes).
fn check_user(user: &str) -> Result<(), SshError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b == b'_' || (i > 0 && (b.is_ascii_digit() || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(SshError::UnsafeArgument(format!("bad user name {user:?}")))
    }
}

/// The script [`write_file_owned`] runs.
pub fn write_file_script_owned(
    path: &str,
    sha256: &str,
    mode: u32,
    group: Option<&str>,
) -> Result<Script, SshError> {
    check_path(path)?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SshError::UnsafeArgument("bad SHA-256 digest".into()));
    }
    let (dir, _) = path
        .rsplit_once('/')
        .ok_or_else(|| SshError::UnsafeArgument(format!("{path:?} has no directory")))?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let script = Script::write("set -eu; d=")
        .quoted(dir)?
        .code("; p=")
        .path(path)?
        .code(
            "; mkdir -p -m 0755 \"$d\"; t=$(umask 077 && mktemp \"$d/.tunnel.XXXXXXXX\"); \
             trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; \
             [ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" = ",
        )
        .quoted(sha256)?
        .code(" ] || { echo 'uploaded content does not match its SHA-256' >&2; exit 3; }; ");
    // `$t` is the file mktemp just made; `-h` all the same: nothing here follows a link.
    let script = match group {
        Some(group) => {
            check_user(group)?;
            script
                .code("chown -h -- ")
                .quoted(&format!("root:{group}"))?
                .code(" \"$t\"; ")
        }
        None => script,
    };
    Ok(script
        .code("chmod ")
        .code(mode_literal(mode)?)
        .code(
            " \"$t\"; sync -- \"$t\"; mv -f \"$t\" \"$p\"; trap - EXIT; sync -- \"$d\" 2>/dev/null || true",
        ))
}

/// Only the modes the contract uses, as literals (so the script stays static code).
fn mode_literal(mode: u32) -> Result<&'static str, SshError> {
    match mode {
        0o600 => Ok("0600"),
        0o640 => Ok("0640"),
        0o644 => Ok("0644"),
        0o700 => Ok("0700"),
        0o755 => Ok("0755"),
        other => Err(SshError::UnsafeArgument(format!(
            "unsupported file mode {other:o}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_the_path_and_never_holds_content() {
        let s = write_file_script("/etc/tunnel/relay.json", &sha256_hex(b"secret"), 0o600).unwrap();
        let text = s.as_str();
        assert!(text.contains("p='/etc/tunnel/relay.json'"), "{text}");
        assert!(text.contains("chmod 0600"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn the_file_is_synced_before_the_rename_and_owned_when_asked() {
        let h = sha256_hex(b"x");
        let plain = write_file_script("/etc/envoy/lds.yaml", &h, 0o600).unwrap();
        let text = plain.as_str();
        let (sync, mv) = (
            text.find("sync -- \"$t\"").unwrap(),
            text.find("mv -f").unwrap(),
        );
        assert!(sync < mv, "{text}");
        assert!(text.contains("sync -- \"$d\""), "{text}");
        assert!(!text.contains("chown"), "{text}");
        let owned = write_file_script_owned("/etc/envoy/lds.yaml", &h, 0o600, Some("tunnel-envoy"))
            .unwrap();
        assert!(
            owned
                .as_str()
                .contains("chown -h -- 'root:tunnel-envoy' \"$t\""),
            "{}",
            owned.as_str()
        );
        assert!(write_file_script_owned("/etc/x", &h, 0o600, Some("root;reboot")).is_err());
        assert!(write_file_script_owned("/etc/x", &h, 0o600, Some("")).is_err());
    }

    #[test]
    fn the_transfer_timeout_grows_with_the_size() {
        let base = Duration::from_secs(60);
        assert_eq!(transfer_timeout(base, 0), base);
        assert_eq!(transfer_timeout(base, 1), base + Duration::from_secs(1));
        // A 100 MB Envoy binary: 60 s + 763 s at 128 KiB/s.
        assert_eq!(
            transfer_timeout(base, 100_000_000),
            base + Duration::from_secs(763)
        );
        assert!(transfer_timeout(base, usize::MAX) > base);
    }

    #[test]
    fn bad_paths_and_modes_are_refused() {
        let h = sha256_hex(b"");
        assert!(write_file_script("/etc/x;reboot", &h, 0o600).is_err());
        assert!(write_file_script("/etc/x", &h, 0o777).is_err());
        assert!(write_file_script("/etc/x", "zz", 0o600).is_err());
    }
}
