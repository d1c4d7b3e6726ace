//! The read-only look at a VPS that starts every pass: architecture, digest and mode of every
//! managed file (so hand edits and deletions are seen, not just trusted from the state file),
//! the SDS files present, leftover temporary files, the state of both units, and the state
//! file. One command, one round trip; its output is parsed by a pure function.
//!
//! The VPS is not trusted with the size of its answer: the command may print at most
//! [`MAX_OUTPUT`], and at most [`MAX_LISTED`] SDS files and as many temporary files are
//! accepted (each would become a step of the pass).

use std::collections::BTreeMap;

use base64::Engine as _;

use super::EnrollError;
use super::error::{ObservationError, quote_vps};
use super::layout;
use super::state::State;
use crate::ssh::{Script, SshError};

/// A managed file as found on the VPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFound {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Permission bits in octal, e.g. `600`.
    pub mode: String,
}

/// A systemd unit as found on the VPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitFound {
    /// `systemctl is-active` (`active`, `inactive`, `failed`, `activating`, ...).
    pub active: String,
    /// `systemctl is-enabled` (`enabled`, `disabled`, `absent` when unknown).
    pub enabled: String,
}

impl UnitFound {
    /// Whether the unit runs.
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }

    /// Whether the unit starts at boot.
    pub fn is_enabled(&self) -> bool {
        self.enabled == "enabled"
    }
}

/// Everything a pass needs to know about the VPS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// `uname -m`.
    pub machine: String,
    /// Managed files present, by path (absent ones are missing from the map).
    pub files: BTreeMap<String, FileFound>,
    /// Names of the files in the SDS directory.
    pub tls_files: Vec<String>,
    /// Leftover `.tunnel.*` temporary files.
    pub temp_files: Vec<String>,
    /// Units by name.
    pub units: BTreeMap<String, UnitFound>,
    /// The parsed state file, when present and readable.
    pub state: Option<State>,
    /// The state file's exact bytes, when present.
    pub state_bytes: Option<Vec<u8>>,
    /// Whether Envoy's system user exists.
    pub envoy_user: bool,
    /// Whether a directory of ours is a link, or not root's with mode 0755 (as an earlier
    /// version left `/etc/envoy`): the pass makes them root's before writing there.
    pub unsafe_dirs: bool,
    /// Whether a binary found before enrollment is kept aside at `<envoy>.pre-tunnel`.
    pub envoy_preserved: bool,
}

impl Observed {
    /// The unit's state, or "absent".
    pub fn unit(&self, name: &str) -> UnitFound {
        self.units.get(name).cloned().unwrap_or(UnitFound {
            active: "inactive".into(),
            enabled: "absent".into(),
        })
    }
}

/// The most SDS files, and the most temporary files, an observation accepts: far more than
/// the TLS Secrets one EdgeNode serves; more is refused ([`ObservationError::TooMany`]),
/// since each would become a command of the pass.
pub const MAX_LISTED: usize = 1024;

/// The most the observation command may print: the fixed files, [`MAX_LISTED`] SDS files
/// (two lines each, names up to 200 characters) and temporary files, and the state file in
/// base64 (which lists every managed file). More is refused unread
/// ([`crate::ssh::SshError::OutputTooLarge`]).
pub const MAX_OUTPUT: usize = 2 * 1024 * 1024;

/// The fixed files every pass checks (SDS files are listed from their directory).
pub const FIXED_PATHS: [&str; 10] = [
    layout::TUNNELCTL,
    layout::ENVOY,
    layout::RELAY_DOCUMENT,
    layout::ENVOY_BOOTSTRAP,
    layout::ENVOY_LDS,
    layout::ENVOY_CDS,
    layout::RELAY_UNIT_FILE,
    layout::ENVOY_UNIT_FILE,
    layout::SYSCTL,
    layout::STATE,
];

/// The observation command (read-only).
pub fn script() -> Result<Script, SshError> {
    let mut s = Script::read("printf 'arch %s\\n' \"$(uname -m)\"; for p in");
    for path in FIXED_PATHS {
        s = s.code(" ").path(path)?;
    }
    s = s.code(
        "; do if [ -f \"$p\" ]; then printf 'file %s %s %s\\n' \"$(stat -c %a \"$p\")\" \"$(sha256sum < \"$p\" | cut -d' ' -f1)\" \"$p\"; fi; done; \
         for p in /etc/envoy/tls/*; do if [ -f \"$p\" ]; then printf 'file %s %s %s\\n' \"$(stat -c %a \"$p\")\" \"$(sha256sum < \"$p\" | cut -d' ' -f1)\" \"$p\"; printf 'tls %s\\n' \"${p##*/}\"; fi; done; \
         for u in tunnel-relay.service tunnel-envoy.service; do a=$(systemctl is-active \"$u\" 2>/dev/null); e=$(systemctl is-enabled \"$u\" 2>/dev/null); printf 'unit %s %s %s\\n' \"$u\" \"${a:-inactive}\" \"${e:-absent}\"; done; \
         find",
    );
    for dir in layout::TEMP_DIRS {
        s = s.code(" ").path(dir)?;
    }
    Ok(s.code(
        " -maxdepth 1 -name '.tunnel.*' 2>/dev/null | sed 's/^/temp /'; \
         if [ -f /etc/tunnel/state.json ]; then printf 'state %s\\n' \"$(base64 -w0 < /etc/tunnel/state.json)\"; fi; \
         if getent passwd tunnel-envoy >/dev/null 2>&1; then echo 'user tunnel-envoy'; fi; \
         for d in /etc/envoy /etc/envoy/tls /etc/tunnel; do if [ -L \"$d\" ] || { [ -d \"$d\" ] && [ \"$(stat -c '%u %a' \"$d\")\" != '0 755' ]; }; then echo \"unsafe-dir $d\"; fi; done; \
         if [ -e /usr/local/bin/envoy.pre-tunnel ]; then echo 'preserved /usr/local/bin/envoy'; fi; true",
    )
    .with_max_output(MAX_OUTPUT))
}

/// Parses the observation command's output.
pub fn parse(output: &str) -> Result<Observed, EnrollError> {
    let mut observed = Observed::default();
    for line in output.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "arch" => rest.trim().clone_into(&mut observed.machine),
            "file" => {
                let mut f = rest.splitn(3, ' ');
                let (Some(mode), Some(sha256), Some(path)) = (f.next(), f.next(), f.next()) else {
                    return Err(ObservationError::FileLine(quote_vps(line)).into());
                };
                if observed.files.len() >= FIXED_PATHS.len() + MAX_LISTED {
                    return Err(ObservationError::TooMany {
                        what: "managed",
                        limit: FIXED_PATHS.len() + MAX_LISTED,
                    }
                    .into());
                }
                observed.files.insert(
                    path.to_owned(),
                    FileFound {
                        sha256: sha256.to_owned(),
                        mode: mode.to_owned(),
                    },
                );
            }
            "tls" => push_listed(&mut observed.tls_files, rest, "SDS")?,
            "user" => observed.envoy_user |= rest.trim() == layout::ENVOY_USER,
            "unsafe-dir" => observed.unsafe_dirs = true,
            "preserved" => observed.envoy_preserved |= rest.trim() == layout::ENVOY,
            "temp" => push_listed(&mut observed.temp_files, rest, "temporary")?,
            "unit" => {
                let mut f = rest.splitn(3, ' ');
                let (Some(name), Some(active), Some(enabled)) = (f.next(), f.next(), f.next())
                else {
                    return Err(ObservationError::UnitLine(quote_vps(line)).into());
                };
                observed.units.insert(
                    name.to_owned(),
                    UnitFound {
                        active: quote_vps(active),
                        enabled: quote_vps(enabled),
                    },
                );
            }
            "state" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .map_err(ObservationError::StateEncoding)?;
                observed.state = State::parse(&bytes);
                observed.state_bytes = Some(bytes);
            }
            _ => {}
        }
    }
    if observed.machine.is_empty() {
        return Err(ObservationError::NoArch.into());
    }
    Ok(observed)
}

/// Adds a listed file name, refusing more than [`MAX_LISTED`].
fn push_listed(
    list: &mut Vec<String>,
    name: &str,
    what: &'static str,
) -> Result<(), ObservationError> {
    if list.len() >= MAX_LISTED {
        return Err(ObservationError::TooMany {
            what,
            limit: MAX_LISTED,
        });
    }
    list.push(name.to_owned());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_only_reads() {
        let s = script().unwrap();
        assert_eq!(s.access(), crate::ssh::Access::Read);
        assert!(s.as_str().contains("'/etc/tunnel/relay.json'"));
        assert!(s.as_str().contains("getent passwd tunnel-envoy"));
    }

    #[test]
    fn parses_a_typical_answer() {
        let state = State {
            version: 1,
            ..State::default()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(state.to_bytes());
        let out = format!(
            "arch x86_64\nfile 600 abcd /etc/tunnel/relay.json\nfile 600 ef01 /etc/envoy/tls/web.sds.yaml\ntls web.sds.yaml\nunit tunnel-relay.service active enabled\nunit tunnel-envoy.service inactive absent\ntemp /etc/envoy/.tunnel.AbCd1234\nstate {b64}\nuser tunnel-envoy\n"
        );
        let o = parse(&out).unwrap();
        assert_eq!(o.machine, "x86_64");
        assert_eq!(o.files["/etc/tunnel/relay.json"].mode, "600");
        assert_eq!(o.tls_files, vec!["web.sds.yaml"]);
        assert_eq!(o.temp_files, vec!["/etc/envoy/.tunnel.AbCd1234"]);
        assert!(o.unit("tunnel-relay.service").is_active());
        assert!(!o.unit("tunnel-envoy.service").is_enabled());
        assert_eq!(o.state, Some(state));
        assert!(o.envoy_user);
        assert!(!o.envoy_preserved);
        assert!(!o.unsafe_dirs);
        let o = parse(&format!("{out}unsafe-dir /etc/envoy\n")).unwrap();
        assert!(o.unsafe_dirs);
    }

    #[test]
    fn listed_files_are_bounded() {
        use std::fmt::Write as _;
        let mut out = String::from("arch x86_64\n");
        for i in 0..MAX_LISTED {
            let _ = write!(out, "tls {i}.sds.yaml\ntemp /etc/envoy/.tunnel.{i}\n");
        }
        let o = parse(&out).unwrap();
        assert_eq!(
            (o.tls_files.len(), o.temp_files.len()),
            (MAX_LISTED, MAX_LISTED)
        );
        for extra in ["tls one-more.sds.yaml", "temp /etc/tunnel/.tunnel.x"] {
            let e = parse(&format!("{out}{extra}\n")).unwrap_err();
            assert_eq!(e.category(), "EnrollObservationFailed");
            assert!(e.to_string().contains("1024"), "{e}");
        }
        assert_eq!(script().unwrap().max_output(), MAX_OUTPUT);
    }

    #[test]
    fn no_arch_is_an_error() {
        assert!(parse("").is_err());
    }
}
