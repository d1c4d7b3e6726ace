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

/// How the bytes of a streamed upload are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// As they are.
    Plain,
    /// gzip: unpacked on the VPS by its `gzip` (a required package of Debian and Ubuntu, in
    /// BusyBox too); the digest is the unpacked file's.
    Gzip,
}

/// A file streamed to the VPS ([`write_file_streamed`]): where it goes, how many bytes are
/// sent and how they are packed, what it must hash to once unpacked, its mode and group.
#[derive(Clone, Copy, Debug)]
pub struct StreamedFile<'a> {
    /// Absolute path on the VPS.
    pub path: &'a str,
    /// Bytes sent (packed).
    pub len: u64,
    /// How they are packed.
    pub packing: Packing,
    /// The unpacked file's SHA-256, checked on the VPS before it replaces the old one.
    pub sha256: &'a str,
    /// Permission bits.
    pub mode: u32,
    /// The file's group when not root.
    pub group: Option<&'a str>,
}

/// [`write_file_owned`] with the `file.len` bytes of `content` streamed (a large binary is
/// never held in memory), packed as `file.packing` says, then `then` in the same command
/// (read-only; its output is returned, e.g. what the file looks like once in place).
pub async fn write_file_streamed<R>(
    session: &mut Session,
    file: &StreamedFile<'_>,
    content: R,
    then: Option<&Script>,
) -> Result<super::Output, SshError>
where
    R: tokio::io::AsyncRead + Unpin + Send,
{
    let mut script = file_script(file.path, file.sha256, file.mode, file.group, file.packing)?;
    if let Some(then) = then {
        script = script.then(then);
    }
    let timeout = transfer_timeout(
        session.options().command_timeout,
        usize::try_from(file.len).unwrap_or(usize::MAX),
    );
    session
        .run_ok_with_reader(&script, content, file.len, timeout)
        .await
}

/// One change of a [`write_batch`], in the order it takes effect.
#[derive(Clone, Copy, Debug)]
pub enum BatchItem<'a> {
    /// Write `content` to `path` with permission bits `mode`, root's and group `group`'s.
    Write {
        /// Absolute path.
        path: &'a str,
        /// The bytes.
        content: &'a [u8],
        /// Permission bits.
        mode: u32,
        /// The file's group when not root.
        group: Option<&'a str>,
    },
    /// Remove `path` (no error when it is missing).
    Remove(&'a str),
}

/// Makes several changes in one command, one round trip: every file's bytes go on stdin one
/// after the other into its own temporary file, each is checked against its SHA-256, gets its
/// mode and group and is synced; only when all are in place are they renamed over their
/// targets (and the removals made) in the order given, then the directories synced. A failure
/// before the renames changes nothing; the renames themselves take microseconds. `then` runs
/// after (e.g. the health check), its output is the command's.
pub async fn write_batch(
    session: &mut Session,
    items: &[BatchItem<'_>],
    then: Option<&Script>,
) -> Result<super::session::Output, SshError> {
    let mut script = write_batch_script(items)?;
    if let Some(then) = then {
        script = script.then(then);
    }
    let stdin: Vec<u8> = items
        .iter()
        .flat_map(|item| match item {
            BatchItem::Write { content, .. } => *content,
            BatchItem::Remove(_) => &[],
        })
        .copied()
        .collect();
    let timeout = transfer_timeout(session.options().command_timeout, stdin.len());
    session
        .run_ok_with_stdin_timeout(&script, &stdin, timeout)
        .await
}

/// The script [`write_batch`] runs (ends with `set +e`, so what follows runs as usual).
pub fn write_batch_script(items: &[BatchItem<'_>]) -> Result<Script, SshError> {
    let mut s = Script::write("set -eu; T=; trap 'rm -f $T' EXIT; ");
    let mut dirs: Vec<&str> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let BatchItem::Write {
            path,
            content,
            mode,
            group,
        } = *item
        else {
            continue;
        };
        check_path(path)?;
        let dir = parent(path)?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        let i = i as u64;
        s = s
            .code("d=")
            .quoted(dir)?
            .code("; mkdir -p -m 0755 \"$d\"; t")
            .number(i)
            .code("=$(umask 077 && mktemp \"$d/.tunnel.XXXXXXXX\"); T=\"$T $t")
            .number(i)
            .code("\"; head -c ")
            .number(content.len() as u64)
            .code(" > \"$t")
            .number(i)
            .code("\"; [ \"$(sha256sum < \"$t")
            .number(i)
            .code("\" | cut -d' ' -f1)\" = ")
            .quoted(&sha256_hex(content))?
            .code(" ] || { echo ")
            .quoted(&format!(
                "uploaded content of {path} does not match its SHA-256"
            ))?
            .code(" >&2; exit 3; }; ");
        if let Some(group) = group {
            check_user(group)?;
            s = s
                .code("chown -h -- ")
                .quoted(&format!("root:{group}"))?
                .code(" \"$t")
                .number(i)
                .code("\"; ");
        }
        s = s
            .code("chmod ")
            .code(mode_literal(mode)?)
            .code(" \"$t")
            .number(i)
            .code("\"; ");
    }
    if !dirs.is_empty() {
        s = s.code("sync -- $T; ");
    }
    for (i, item) in items.iter().enumerate() {
        s = match *item {
            BatchItem::Write { path, .. } => s
                .code("mv -f \"$t")
                .number(i as u64)
                .code("\" ")
                .path(path)?
                .code("; "),
            BatchItem::Remove(path) => s.code("rm -f -- ").path(path)?.code("; "),
        };
    }
    s = s.code("T=; trap - EXIT; set +e");
    if !dirs.is_empty() {
        s = s.code("; sync --");
        for dir in dirs {
            s = s.code(" ").quoted(dir)?;
        }
        s = s.code(" 2>/dev/null || true");
    }
    Ok(s)
}

/// The directory of an absolute path (`/` for a file at the root).
fn parent(path: &str) -> Result<&str, SshError> {
    let (dir, _) = path
        .rsplit_once('/')
        .ok_or_else(|| SshError::UnsafeArgument(format!("{path:?} has no directory")))?;
    Ok(if dir.is_empty() { "/" } else { dir })
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
    file_script(path, sha256, mode, group, Packing::Plain)
}

/// The script of a one-file upload, its bytes packed as `packing`.
fn file_script(
    path: &str,
    sha256: &str,
    mode: u32,
    group: Option<&str>,
    packing: Packing,
) -> Result<Script, SshError> {
    check_path(path)?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SshError::UnsafeArgument("bad SHA-256 digest".into()));
    }
    let dir = parent(path)?;
    let script = Script::write("set -eu; d=")
        .quoted(dir)?
        .code("; p=")
        .path(path)?
        .code(
            "; mkdir -p -m 0755 \"$d\"; t=$(umask 077 && mktemp \"$d/.tunnel.XXXXXXXX\"); \
             trap 'rm -f \"$t\"' EXIT; ",
        )
        .code(match packing {
            Packing::Plain => "cat > \"$t\"; ",
            // Without gzip the bytes are read all the same (the operator's write ends
            // cleanly) and the error says what is missing. `-x`: bash's `command -v` also
            // names a file on the PATH that may not be run.
            Packing::Gzip => {
                "if ! g=$(command -v gzip) || [ ! -x \"$g\" ]; then cat >/dev/null; \
                 echo 'gzip is not installed on the VPS: it unpacks the binaries the operator uploads compressed; install gzip' >&2; exit 3; fi; \
                 gzip -dc > \"$t\"; "
            }
        })
        .code("[ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" = ")
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
    fn a_batch_checks_everything_before_it_renames_anything_and_keeps_the_order() {
        let items = [
            BatchItem::Write {
                path: "/etc/envoy/cds.yaml",
                content: b"secret cds",
                mode: 0o640,
                group: Some("tunnel-envoy"),
            },
            BatchItem::Remove("/etc/envoy/tls/old.sds.yaml"),
            BatchItem::Write {
                path: "/etc/tunnel/state.json",
                content: b"{}",
                mode: 0o600,
                group: None,
            },
        ];
        let s = write_batch_script(&items).unwrap();
        let text = s.as_str();
        assert_eq!(s.access(), crate::ssh::Access::Write);
        assert!(!text.contains("secret cds"), "content travels on stdin");
        assert!(text.contains(&sha256_hex(b"secret cds")), "{text}");
        assert!(text.contains("head -c 10 "), "{text}");
        let last_check = text.rfind("exit 3").unwrap();
        let first_rename = text.find("mv -f").unwrap();
        assert!(last_check < first_rename, "{text}");
        let (cds, old, state) = (
            text.find("mv -f \"$t0\" '/etc/envoy/cds.yaml'").unwrap(),
            text.find("rm -f -- '/etc/envoy/tls/old.sds.yaml'").unwrap(),
            text.find("mv -f \"$t2\" '/etc/tunnel/state.json'").unwrap(),
        );
        assert!(cds < old && old < state, "{text}");
        assert!(
            text.contains("chown -h -- 'root:tunnel-envoy' \"$t0\""),
            "{text}"
        );
        assert!(!text.contains("\"$t2\"; chown"), "{text}");
        // Unsafe input is refused, not quoted into a command.
        for bad in [
            BatchItem::Remove("/etc/envoy/../shadow"),
            BatchItem::Write {
                path: "/etc/x",
                content: b"",
                mode: 0o777,
                group: None,
            },
            BatchItem::Write {
                path: "/etc/x",
                content: b"",
                mode: 0o600,
                group: Some("root;rm"),
            },
        ] {
            assert!(write_batch_script(&[bad]).is_err(), "{bad:?}");
        }
    }

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
    fn a_packed_upload_is_unpacked_before_its_digest_is_checked() {
        let h = sha256_hex(b"unpacked");
        let packed = file_script("/usr/local/bin/envoy", &h, 0o755, None, Packing::Gzip).unwrap();
        let text = packed.as_str();
        let (unpack, check, rename) = (
            text.find("gzip -dc > \"$t\"").unwrap(),
            text.find("sha256sum < \"$t\"").unwrap(),
            text.find("mv -f").unwrap(),
        );
        assert!(unpack < check && check < rename, "{text}");
        // Without gzip: stdin is read to its end, then the error names what is missing.
        assert!(
            text.contains("if ! g=$(command -v gzip) || [ ! -x \"$g\" ]; then cat >/dev/null;"),
            "{text}"
        );
        assert!(text.contains("gzip is not installed on the VPS"), "{text}");
        let plain = file_script("/usr/local/bin/envoy", &h, 0o755, None, Packing::Plain).unwrap();
        assert!(!plain.as_str().contains("gzip"), "{}", plain.as_str());
        assert_eq!(
            plain.as_str(),
            write_file_script_owned("/usr/local/bin/envoy", &h, 0o755, None)
                .unwrap()
                .as_str()
        );
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
