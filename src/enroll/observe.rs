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
    /// The identity of each file in `files` when it was looked at (`stat`: device, inode,
    /// size, modification and change times), for [`Known`].
    pub identities: BTreeMap<String, String>,
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

/// A file's identity as `stat -c` prints it: device, inode, size, modification and change
/// times to the nanosecond (the observation and [`identity_script`] share it).
macro_rules! identity_format {
    () => {
        "%d:%i:%s:%.9Y:%.9Z"
    };
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

/// Both units' state in one `systemctl` call: a block of `Id=`, `ActiveState=` and
/// `UnitFileState=` lines per unit, read by [`UnitBlocks`] (the observation and the health
/// check use it).
pub const UNITS_SCRIPT: &str = "systemctl show -p Id,ActiveState,UnitFileState tunnel-relay.service tunnel-envoy.service 2>/dev/null";

/// The observation command (read-only). It starts few processes (each costs milliseconds on a
/// small VPS): one `stat` for every managed file, one `sha256sum` for those that need hashing,
/// one `systemctl`. A file whose identity (device, inode, size, modification and change times
/// to the nanosecond) is the one `known` recorded is not hashed again: the binaries are 100 MB
/// and hashing them was most of a pass that changes a listener. Any write, rename or `chmod`
/// changes the change time, so an edit is still seen.
pub fn script(known: &Known) -> Result<Script, SshError> {
    let mut s = Script::read("printf 'arch %s\\n' \"$(uname -m)\"; set --; for p in");
    for path in FIXED_PATHS {
        s = s.code(" ").path(path)?;
    }
    s = s.code(concat!(
        " /etc/envoy/tls/*; do if [ -f \"$p\" ]; then set -- \"$@\" \"$p\"; fi; done; \
         o=; if [ $# -gt 0 ]; then o=$(stat -c '%a ",
        identity_format!(),
        " %n' -- \"$@\"); fi; set --; \
         while read -r m i p; do if [ -n \"$p\" ]; then printf 'stat %s %s %s\\n' \"$m\" \"$i\" \"$p\"; case \"$p $i\" in ",
    ));
    for (path, (identity, _)) in &known.files {
        s = s.quoted(&format!("{path} {identity}"))?.code(") ;; ");
    }
    s = s
        .code(
            "*) set -- \"$@\" \"$p\";; esac; fi; done <<EOF\n$o\nEOF\n\
         if [ $# -gt 0 ]; then sha256sum -- \"$@\"; fi; ",
        )
        .code(UNITS_SCRIPT)
        .code("; for p in");
    for dir in layout::TEMP_DIRS {
        s = s.code(" ").path(dir)?.code("/.tunnel.*");
    }
    Ok(s.code(
        "; do if [ -e \"$p\" ]; then printf 'temp %s\\n' \"$p\"; fi; done; \
         if [ -f /etc/tunnel/state.json ]; then printf 'state %s\\n' \"$(base64 -w0 < /etc/tunnel/state.json)\"; fi; \
         if getent passwd tunnel-envoy >/dev/null 2>&1; then echo 'user tunnel-envoy'; fi; \
         set --; for d in /etc/envoy /etc/envoy/tls /etc/tunnel; do if [ -L \"$d\" ]; then echo \"unsafe-dir $d\"; elif [ -d \"$d\" ]; then set -- \"$@\" \"$d\"; fi; done; \
         if [ $# -gt 0 ]; then stat -c 'dir %u %a %n' -- \"$@\"; fi; \
         if [ -e /usr/local/bin/envoy.pre-tunnel ]; then echo 'preserved /usr/local/bin/envoy'; fi; true",
    )
    .with_max_output(MAX_OUTPUT))
}

/// Reads the blocks [`UNITS_SCRIPT`] prints (in any order of lines; a block ends at an empty
/// line or at the end). A unit systemd does not know has an empty `UnitFileState`: "absent".
#[derive(Debug, Default)]
pub struct UnitBlocks {
    id: Option<String>,
    active: Option<String>,
    enabled: Option<String>,
    /// The units read so far, by name.
    pub units: BTreeMap<String, UnitFound>,
}

impl UnitBlocks {
    /// Takes one line; returns whether it was one of ours.
    pub fn line(&mut self, line: &str) -> bool {
        if line.trim().is_empty() {
            self.end();
            return false;
        }
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        let slot = match key {
            "Id" => &mut self.id,
            "ActiveState" => &mut self.active,
            "UnitFileState" => &mut self.enabled,
            _ => return false,
        };
        *slot = Some(value.trim().to_owned());
        true
    }

    /// Ends the block being read.
    pub fn end(&mut self) {
        let (id, active, enabled) = (self.id.take(), self.active.take(), self.enabled.take());
        if let Some(id) = id
            && self.units.len() < 2
        {
            let or = |v: Option<String>, default: &str| {
                quote_vps(
                    &v.filter(|v| !v.is_empty())
                        .unwrap_or_else(|| default.into()),
                )
            };
            self.units.insert(
                quote_vps(&id),
                UnitFound {
                    active: or(active, "inactive"),
                    enabled: or(enabled, "absent"),
                },
            );
        }
    }
}

/// Parses the observation command's output; `known` gives the digests of the files the
/// command was told not to hash (the `known` its script was made with).
pub fn parse(output: &str, known: &Known) -> Result<Observed, EnrollError> {
    let mut observed = Observed::default();
    let mut units = UnitBlocks::default();
    for line in output.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "arch" => rest.trim().clone_into(&mut observed.machine),
            "stat" => {
                let mut f = rest.splitn(3, ' ');
                let (Some(mode), Some(identity), Some(path)) = (f.next(), f.next(), f.next())
                else {
                    return Err(ObservationError::FileLine(quote_vps(line)).into());
                };
                if observed.files.len() >= FIXED_PATHS.len() + MAX_LISTED {
                    return Err(ObservationError::TooMany {
                        what: "managed",
                        limit: FIXED_PATHS.len() + MAX_LISTED,
                    }
                    .into());
                }
                let sha256 = known
                    .files
                    .get(path)
                    .filter(|(was, _)| was == identity)
                    .map(|(_, sha256)| sha256.clone())
                    .unwrap_or_default();
                observed.files.insert(
                    path.to_owned(),
                    FileFound {
                        sha256,
                        mode: mode.to_owned(),
                    },
                );
                if is_identity(identity) {
                    observed
                        .identities
                        .insert(path.to_owned(), identity.to_owned());
                }
                if let Some(name) = path
                    .strip_prefix(layout::ENVOY_TLS_DIR)
                    .and_then(|n| n.strip_prefix('/'))
                {
                    push_listed(&mut observed.tls_files, name, "SDS")?;
                }
            }
            "dir" => {
                let mut f = rest.splitn(3, ' ');
                if (f.next(), f.next()) != (Some("0"), Some("755")) {
                    observed.unsafe_dirs = true;
                }
            }
            _ if units.line(line) => {}
            _ if is_digest_line(line) => {
                // `sha256sum`: "<64 hex>  <path>", for a file listed by `stat` before it.
                let (sha256, path) = line.split_at(64);
                if let Some(found) = observed.files.get_mut(&path[2..]) {
                    sha256.clone_into(&mut found.sha256);
                }
            }
            "user" => observed.envoy_user |= rest.trim() == layout::ENVOY_USER,
            "unsafe-dir" => observed.unsafe_dirs = true,
            "preserved" => observed.envoy_preserved |= rest.trim() == layout::ENVOY,
            "temp" => push_listed(&mut observed.temp_files, rest, "temporary")?,
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
    units.end();
    observed.units = units.units;
    if observed.machine.is_empty() {
        return Err(ObservationError::NoArch.into());
    }
    Ok(observed)
}

/// Whether `line` is `sha256sum`'s: 64 hex digits, two spaces, a path.
fn is_digest_line(line: &str) -> bool {
    line.len() > 66 && line.get(..64).is_some_and(is_digest) && line.as_bytes()[64..66] == *b"  "
}

/// Whether `sha256` is a plain SHA-256 in hex (what `sha256sum` prints).
pub fn is_digest(sha256: &str) -> bool {
    sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `identity` is what the script prints: five `:`-separated fields of digits and dots.
fn is_identity(identity: &str) -> bool {
    identity.len() <= 100
        && identity.split(':').count() == 5
        && identity
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
        && identity.split(':').all(|f| !f.is_empty())
}

/// The size field of an identity.
fn identity_size(identity: &str) -> u64 {
    identity
        .split(':')
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Files no smaller than this are worth remembering the digest of (hashing a small file costs
/// less than the script's bytes to skip it).
pub const KNOWN_MIN_BYTES: u64 = 64 * 1024;

/// The most files remembered: the two binaries, with room to spare; it bounds the script.
pub const KNOWN_MAX_FILES: usize = 8;

/// What the operator remembers of a VPS's large files between passes of one connection: their
/// digest and the identity they had then. Learnt from the last observation only (what it did not
/// list is forgotten).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// Path → (identity, digest).
    files: BTreeMap<String, (String, String)>,
}

impl Known {
    /// Remembers the largest files of `observed` (at least [`KNOWN_MIN_BYTES`], at most
    /// [`KNOWN_MAX_FILES`]) and forgets everything else.
    pub fn learn(&mut self, observed: &Observed) {
        let mut large: Vec<(u64, &String, &String)> = observed
            .identities
            .iter()
            .map(|(path, identity)| (identity_size(identity), path, identity))
            .filter(|(size, ..)| *size >= KNOWN_MIN_BYTES)
            .collect();
        large.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        self.files = large
            .into_iter()
            .filter_map(|(_, path, identity)| {
                let sha256 = &observed.files.get(path)?.sha256;
                is_digest(sha256).then(|| (path.clone(), (identity.clone(), sha256.clone())))
            })
            .take(KNOWN_MAX_FILES)
            .collect();
    }

    /// Remembers that `path`, as the pass has just installed it with digest `sha256` (checked
    /// on the VPS before the rename), has `identity`: a large file only, within
    /// [`KNOWN_MAX_FILES`]. The next observation then trusts that digest while the identity
    /// holds, as for a file it hashed itself.
    pub fn record(&mut self, path: &str, identity: &str, sha256: &str) {
        let room = self.files.len() < KNOWN_MAX_FILES || self.files.contains_key(path);
        if is_digest(sha256)
            && room
            && is_identity(identity)
            && identity_size(identity) >= KNOWN_MIN_BYTES
        {
            self.files
                .insert(path.to_owned(), (identity.to_owned(), sha256.to_owned()));
        }
    }

    /// How many files are remembered.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Read-only: prints the identity of `path` (as the observation reads it) on a line
/// `identity <identity>`, nothing when it cannot. Run right after a large file is installed,
/// so the next observation need not hash what the pass has just checked ([`Known::record`]).
pub fn identity_script(path: &str) -> Result<Script, SshError> {
    Ok(
        Script::read(concat!("stat -c 'identity ", identity_format!(), "' -- "))
            .path(path)?
            .code(" 2>/dev/null || true"),
    )
}

/// The identity [`identity_script`] printed, if it printed a well-formed one.
pub fn parse_identity(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("identity "))
        .map(str::trim)
        .filter(|i| is_identity(i))
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
        let s = script(&Known::default()).unwrap();
        assert_eq!(s.access(), crate::ssh::Access::Read);
        assert!(s.as_str().contains("'/etc/tunnel/relay.json'"));
        assert!(s.as_str().contains("getent passwd tunnel-envoy"));
    }

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const ENVOY_ID: &str = "2049:77:107000000:1796000000.123456789:1796000000.123456789";

    fn typical() -> String {
        let state = State {
            version: 1,
            ..State::default()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(state.to_bytes());
        format!(
            "arch x86_64\n\
             stat 600 2049:10:40:1.5:1.5 /etc/tunnel/relay.json\n\
             stat 755 {ENVOY_ID} /usr/local/bin/envoy\n\
             stat 640 2049:11:30:1.5:1.5 /etc/envoy/tls/web.sds.yaml\n\
             {SHA_A}  /etc/tunnel/relay.json\n\
             {SHA_B}  /etc/envoy/tls/web.sds.yaml\n\
             {SHA_B}  /usr/local/bin/envoy\n\
             Id=tunnel-relay.service\nActiveState=active\nUnitFileState=enabled\n\n\
             ActiveState=inactive\nId=tunnel-envoy.service\nUnitFileState=\n\
             temp /etc/envoy/.tunnel.AbCd1234\nstate {b64}\nuser tunnel-envoy\n\
             dir 0 755 /etc/envoy\n"
        )
    }

    #[test]
    fn parses_a_typical_answer() {
        let o = parse(&typical(), &Known::default()).unwrap();
        assert_eq!(o.machine, "x86_64");
        assert_eq!(o.files["/etc/tunnel/relay.json"].mode, "600");
        assert_eq!(o.files["/etc/tunnel/relay.json"].sha256, SHA_A);
        assert_eq!(o.files["/etc/envoy/tls/web.sds.yaml"].sha256, SHA_B);
        assert_eq!(o.tls_files, vec!["web.sds.yaml"]);
        assert_eq!(o.temp_files, vec!["/etc/envoy/.tunnel.AbCd1234"]);
        assert!(o.unit("tunnel-relay.service").is_active());
        assert!(o.unit("tunnel-relay.service").is_enabled());
        assert!(!o.unit("tunnel-envoy.service").is_active());
        assert_eq!(o.unit("tunnel-envoy.service").enabled, "absent");
        assert_eq!(
            o.state,
            Some(State {
                version: 1,
                ..State::default()
            })
        );
        assert!(o.envoy_user);
        assert!(!o.envoy_preserved);
        assert!(!o.unsafe_dirs);
        for unsafe_dir in [
            "unsafe-dir /etc/envoy",
            "dir 1000 755 /etc/tunnel",
            "dir 0 775 /etc/envoy/tls",
        ] {
            let o = parse(&format!("{}{unsafe_dir}\n", typical()), &Known::default()).unwrap();
            assert!(o.unsafe_dirs, "{unsafe_dir}");
        }
    }

    /// The observation script `known` makes, which tells the VPS to skip Envoy's binary.
    fn skips_envoy(known: &Known) -> Script {
        let script = script(known).unwrap();
        assert!(
            script
                .as_str()
                .contains(&format!("'/usr/local/bin/envoy {ENVOY_ID}') ;;")),
            "{script}"
        );
        script
    }

    #[test]
    fn a_known_large_file_is_not_hashed_again_until_its_identity_changes() {
        let o = parse(&typical(), &Known::default()).unwrap();
        let mut known = Known::default();
        known.learn(&o);
        // Only the large file is remembered.
        assert_eq!(known.len(), 1);
        let script = skips_envoy(&known);
        assert!(
            !script.as_str().contains(SHA_B),
            "no digest goes to the VPS"
        );
        // The VPS did not hash it: its digest comes from what we knew.
        let unhashed = typical().replace(&format!("{SHA_B}  /usr/local/bin/envoy\n"), "");
        let again = parse(&unhashed, &known).unwrap();
        assert_eq!(again.files["/usr/local/bin/envoy"].sha256, SHA_B);
        // A new identity (an edit, a rename, a chmod) is a file we know nothing of.
        let edited = unhashed.replace(
            ENVOY_ID,
            "2049:77:107000000:1796000000.123456789:1796000009.1",
        );
        let edited = parse(&edited, &known).unwrap();
        assert_eq!(edited.files["/usr/local/bin/envoy"].sha256, "");
        // Identities that are not plain are not remembered.
        let odd = typical().replace(ENVOY_ID, "2049:77:107000000:x:'y");
        let mut known = Known::default();
        known.learn(&parse(&odd, &Known::default()).unwrap());
        assert!(known.is_empty());
    }

    #[test]
    fn a_file_the_pass_installed_is_known_by_the_identity_it_reported() {
        let out = format!("some noise\nidentity {ENVOY_ID}\n");
        assert_eq!(parse_identity(&out), Some(ENVOY_ID));
        assert_eq!(parse_identity("identity 1:2:3:x:$(reboot)\n"), None);
        assert_eq!(parse_identity(""), None);

        let mut known = Known::default();
        known.record("/usr/local/bin/envoy", ENVOY_ID, SHA_B);
        assert_eq!(known.len(), 1);
        // The next observation does not hash it, and takes the digest the upload was checked
        // against.
        skips_envoy(&known);
        let unhashed = typical().replace(&format!("{SHA_B}  /usr/local/bin/envoy\n"), "");
        assert_eq!(
            parse(&unhashed, &known).unwrap().files["/usr/local/bin/envoy"].sha256,
            SHA_B
        );
        // Small files, odd identities and digests, and more than the bound are not recorded.
        let mut small = Known::default();
        small.record("/etc/tunnel/relay.json", "2049:5:600:1.0:1.0", SHA_A);
        small.record("/usr/local/bin/envoy", "2049:77:x:1.0:1.0", SHA_B);
        small.record("/usr/local/bin/envoy", ENVOY_ID, "not-a-digest");
        assert!(small.is_empty());
        let mut full = Known::default();
        for i in 0..=KNOWN_MAX_FILES {
            full.record(&format!("/usr/local/bin/f{i}"), ENVOY_ID, SHA_B);
        }
        assert_eq!(full.len(), KNOWN_MAX_FILES);
    }

    #[test]
    fn listed_files_are_bounded() {
        use std::fmt::Write as _;
        let mut out = String::from("arch x86_64\n");
        for i in 0..MAX_LISTED {
            let _ = write!(
                out,
                "stat 640 1:{i}:1:1:1 /etc/envoy/tls/{i}.sds.yaml\ntemp /etc/envoy/.tunnel.{i}\n"
            );
        }
        let o = parse(&out, &Known::default()).unwrap();
        assert_eq!(
            (o.tls_files.len(), o.temp_files.len()),
            (MAX_LISTED, MAX_LISTED)
        );
        for extra in [
            "stat 640 1:1:1:1:1 /etc/envoy/tls/one-more.sds.yaml",
            "temp /etc/tunnel/.tunnel.x",
        ] {
            let e = parse(&format!("{out}{extra}\n"), &Known::default()).unwrap_err();
            assert_eq!(e.category(), "EnrollObservationFailed");
            assert!(e.to_string().contains("1024"), "{e}");
        }
        assert_eq!(script(&Known::default()).unwrap().max_output(), MAX_OUTPUT);
    }

    #[test]
    fn no_arch_is_an_error() {
        assert!(parse("", &Known::default()).is_err());
    }
}
