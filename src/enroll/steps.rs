//! Pure planning of a pass: from the desired state and what the VPS holds, the list of steps
//! to run, in order. Nothing here does I/O, so every decision (what to write, what to
//! restart, what to leave alone) is tested directly.
//!
//! Rules:
//! - A file is written when its digest or mode on the VPS differs from the desired one (a
//!   hand edit or a deletion is drift and gets repaired); otherwise it is not touched.
//! - Order: binaries, relay document, SDS, CDS, LDS, bootstrap, units, sysctl; then stale SDS
//!   files and leftover temporary files are removed; then systemd is reloaded, units enabled,
//!   the relay restarted (new binary/unit, or not running; a new document needs nothing, the
//!   agent follows the file), Envoy
//!   restarted (new binary/bootstrap/unit, requested, or not running); then the sysctl drop-in
//!   applied; the state file last.
//! - LDS/CDS/SDS changes never restart Envoy: the files are replaced atomically and Envoy
//!   watches them.
//! - Restart decisions compare fingerprints in the state file, which is written after the
//!   restarts: a pass cut before its restarts redoes them on the next pass.

use std::collections::BTreeMap;
use std::fmt;

use super::EnrollError;
use super::desired::{Arch, Blob, DesiredState};
use super::layout;
use super::observe::Observed;
use super::state::{FileRecord, STATE_VERSION, State, fingerprint};
use super::units;
use crate::ssh::script::check_path;

/// Where a file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Pushed from the operator over SSH.
    Upload(Blob),
    /// Downloaded by the VPS from this URL, checked against the file's digest.
    Download(String),
}

/// A file the VPS should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedFile {
    /// Absolute path.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Where the content comes from.
    pub source: Source,
}

impl ManagedFile {
    fn upload(path: &str, mode: u32, blob: &Blob) -> Self {
        Self {
            path: path.to_owned(),
            mode,
            sha256: blob.sha256().to_owned(),
            source: Source::Upload(blob.clone()),
        }
    }

    /// The mode as `stat -c %a` prints it.
    pub fn mode_text(&self) -> String {
        format!("{:o}", self.mode)
    }
}

/// One thing a pass does on the VPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write a file atomically (upload or download).
    Write(ManagedFile),
    /// Remove a stale managed file or a leftover temporary file.
    Remove(String),
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// `systemctl enable <unit>...`.
    Enable(Vec<&'static str>),
    /// `systemctl restart <unit>` (starts it when stopped).
    Restart(&'static str),
    /// Apply the sysctl drop-in now (it is also applied at every boot by systemd).
    ApplySysctl {
        /// The socket buffer ceiling the drop-in sets, to check it took effect.
        max_socket_buffer_bytes: u64,
    },
    /// Write the state file (last).
    WriteState(Blob),
    /// Create Envoy's system user and group (before the first file they own).
    EnsureEnvoyUser,
    /// Keep a binary that was on the VPS before enrollment at `<path>.pre-tunnel` (teardown
    /// puts it back).
    Preserve(&'static str),
}

impl Step {
    /// Whether this step writes a file in directory `dir`.
    pub fn writes_under(&self, dir: &str) -> bool {
        match self {
            Self::Write(file) => std::path::Path::new(&file.path).starts_with(dir),
            _ => false,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Write(file) => match &file.source {
                Source::Upload(_) => write!(f, "write {} ({})", file.path, file.mode_text()),
                Source::Download(_) => write!(f, "download {}", file.path),
            },
            Self::Remove(path) => write!(f, "remove {path}"),
            Self::DaemonReload => f.write_str("systemctl daemon-reload"),
            Self::Enable(units) => write!(f, "enable {}", units.join(" ")),
            Self::Restart(unit) => write!(f, "restart {unit}"),
            Self::ApplySysctl { .. } => write!(f, "apply {}", layout::SYSCTL),
            Self::WriteState(_) => write!(f, "write {}", layout::STATE),
            Self::EnsureEnvoyUser => write!(
                f,
                "create user {} and make its directories root's",
                layout::ENVOY_USER
            ),
            Self::Preserve(path) => write!(f, "preserve {path}"),
        }
    }
}

/// What the caller asks of this pass beyond convergence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Restart Envoy even when nothing changed (the restart-envoy annotation).
    pub restart_envoy: bool,
}

/// The changes one pass makes to a VPS: the steps, in order, and the state they leave.
/// (The rendered configuration of an EdgeNode is [`crate::plan::Plan`]; "plan" means only that.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// The VPS's architecture.
    pub arch: Arch,
    /// The steps, in order; empty when the VPS already matches.
    pub steps: Vec<Step>,
    /// The state the VPS will hold afterwards.
    pub state: State,
}

impl Changes {
    /// Whether Envoy gets (re)started by these changes.
    pub fn restarts_envoy(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(s, Step::Restart(u) if *u == layout::ENVOY_UNIT || *u == layout::RELAY_UNIT)
        })
    }
}

/// The files the VPS should hold, in write order.
pub fn managed_files(desired: &DesiredState, arch: Arch) -> Result<Vec<ManagedFile>, EnrollError> {
    desired.validate()?;
    let tunnelctl = desired
        .tunnelctl
        .get(&arch)
        .ok_or(EnrollError::MissingArtifact {
            what: "tunnelctl binary",
            arch: arch.uname(),
        })?;
    let envoy_sha = desired.envoy.sha256(arch)?;
    let envoy = if let Some(url) = desired.envoy.url(arch)? {
        ManagedFile {
            path: layout::ENVOY.into(),
            mode: layout::MODE_BINARY,
            sha256: envoy_sha,
            source: Source::Download(url),
        }
    } else {
        let super::desired::EnvoyInstall::Push { binaries, .. } = &desired.envoy else {
            return Err(super::error::DesiredError::EnvoyInstallMode.into());
        };
        let blob = binaries.get(&arch).ok_or(EnrollError::MissingArtifact {
            what: "Envoy binary",
            arch: arch.uname(),
        })?;
        ManagedFile::upload(layout::ENVOY, layout::MODE_BINARY, blob)
    };
    let relay_unit = Blob::new(units::relay_unit(&desired.host).into_bytes());
    let envoy_unit = Blob::new(units::envoy_unit().into_bytes());
    let sysctl = Blob::new(units::sysctl_drop_in(&desired.host).into_bytes());
    // The first group's files first ([`in_first_group`]): a first enrollment starts the relay
    // before it uploads Envoy, so the uplinks' handshakes happen during that upload.
    let mut files = vec![
        ManagedFile::upload(layout::TUNNELCTL, layout::MODE_BINARY, tunnelctl),
        ManagedFile::upload(
            layout::RELAY_DOCUMENT,
            layout::MODE_SECRET,
            &desired.relay_document,
        ),
        ManagedFile::upload(layout::RELAY_UNIT_FILE, layout::MODE_PUBLIC, &relay_unit),
        ManagedFile::upload(layout::ENVOY_UNIT_FILE, layout::MODE_PUBLIC, &envoy_unit),
        ManagedFile::upload(layout::SYSCTL, layout::MODE_PUBLIC, &sysctl),
        envoy,
    ];
    for (name, blob) in &desired.sds {
        files.push(ManagedFile::upload(
            &format!("{}/{name}", layout::ENVOY_TLS_DIR),
            layout::MODE_ENVOY,
            blob,
        ));
    }
    files.extend([
        ManagedFile::upload(layout::ENVOY_CDS, layout::MODE_ENVOY, &desired.envoy_cds),
        ManagedFile::upload(layout::ENVOY_LDS, layout::MODE_ENVOY, &desired.envoy_lds),
        ManagedFile::upload(
            layout::ENVOY_BOOTSTRAP,
            layout::MODE_ENVOY,
            &desired.envoy_bootstrap,
        ),
    ]);
    Ok(files)
}

/// The changes that bring the VPS from `observed` to `desired` (pure).
pub fn changes(
    desired: &DesiredState,
    observed: &Observed,
    request: Request,
) -> Result<Changes, EnrollError> {
    let arch = Arch::from_uname(&observed.machine)?;
    let files = managed_files(desired, arch)?;
    let by_path: BTreeMap<&str, &ManagedFile> =
        files.iter().map(|f| (f.path.as_str(), f)).collect();
    let previous = observed.state.clone().unwrap_or_default();
    let digest = |path: &str| by_path.get(path).map_or("", |f| f.sha256.as_str());
    let relay_started_with =
        fingerprint(&[digest(layout::TUNNELCTL), digest(layout::RELAY_UNIT_FILE)]);
    let relay_document = digest(layout::RELAY_DOCUMENT).to_owned();
    let relay_restart = previous.relay_started_with != relay_started_with
        || !observed.unit(layout::RELAY_UNIT).is_active();
    let envoy_started_with = fingerprint(&[
        digest(layout::ENVOY),
        digest(layout::ENVOY_BOOTSTRAP),
        digest(layout::ENVOY_UNIT_FILE),
    ]);
    let envoy_restart = request.restart_envoy
        || previous.envoy_started_with != envoy_started_with
        || !observed.unit(layout::ENVOY_UNIT).is_active();

    // Two groups. First what the relay needs and both units: their files, one reload, one
    // enable, the relay's restart. The relay needs nothing of Envoy's, so it runs (and uplinks
    // can reach it) while Envoy's binary, the bulk of a first enrollment, is still on its way.
    // Then Envoy's files and its restart (Envoy `Requires=` the relay and starts after it).
    let mut writer = Writer {
        observed,
        previous: &previous,
        max_socket_buffer_bytes: desired.host.max_socket_buffer_bytes,
        // The user, and our directories root's (review L8), before the first write of Envoy's.
        user_ensured: observed.envoy_user && !observed.unsafe_dirs,
        steps: Vec::new(),
    };
    let mut units_changed = false;
    for file in files.iter().filter(|f| in_first_group(&f.path)) {
        let unit = file.path == layout::RELAY_UNIT_FILE || file.path == layout::ENVOY_UNIT_FILE;
        units_changed |= writer.write(file) && unit;
    }
    let mut steps = writer.steps;
    if units_changed {
        steps.push(Step::DaemonReload);
    }
    let disabled: Vec<&'static str> = [layout::RELAY_UNIT, layout::ENVOY_UNIT]
        .into_iter()
        .filter(|unit| !observed.unit(unit).is_enabled())
        .collect();
    if !disabled.is_empty() {
        steps.push(Step::Enable(disabled));
    }
    // A new relay document needs no restart: the agent follows the file.
    if relay_restart {
        steps.push(Step::Restart(layout::RELAY_UNIT));
    }
    writer.steps = steps;
    for file in files.iter().filter(|f| !in_first_group(&f.path)) {
        writer.write(file);
    }
    let mut steps = writer.steps;
    removals(&mut steps, observed, &by_path);
    // Restarting the relay restarts Envoy too (`Requires=`); an explicit restart after it
    // makes sure Envoy runs even if it was stopped or failed.
    if envoy_restart || relay_restart {
        steps.push(Step::Restart(layout::ENVOY_UNIT));
    }

    let state = State {
        version: STATE_VERSION,
        envoy_version: desired.envoy.version().to_owned(),
        files: files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    FileRecord {
                        sha256: f.sha256.clone(),
                        mode: f.mode_text(),
                    },
                )
            })
            .collect(),
        relay_started_with,
        relay_document_applied: relay_document,
        envoy_started_with,
    };
    let state_bytes = state.to_bytes();
    let state_same = observed.state_bytes.as_deref() == Some(state_bytes.as_slice())
        && observed
            .files
            .get(layout::STATE)
            .is_some_and(|f| f.mode == "600");
    if !steps.is_empty() || !state_same {
        steps.push(Step::WriteState(Blob::new(state_bytes)));
    }
    Ok(Changes { arch, steps, state })
}

/// Whether `path` is written in a pass's first group: what the relay needs (its binary,
/// document and unit, the socket-buffer drop-in) and Envoy's unit, so one reload and one
/// enable serve both units.
pub(super) fn in_first_group(path: &str) -> bool {
    [
        layout::TUNNELCTL,
        layout::RELAY_DOCUMENT,
        layout::RELAY_UNIT_FILE,
        layout::ENVOY_UNIT_FILE,
        layout::SYSCTL,
    ]
    .contains(&path)
}

/// Adds the steps that write the files that differ from what was observed.
struct Writer<'a> {
    observed: &'a Observed,
    previous: &'a State,
    max_socket_buffer_bytes: u64,
    user_ensured: bool,
    steps: Vec<Step>,
}

impl Writer<'_> {
    /// Adds the write of `file` (and what must come before it) unless the VPS has it; whether
    /// it does.
    fn write(&mut self, file: &ManagedFile) -> bool {
        let found = self.observed.files.get(&file.path);
        if found.is_some_and(|f| f.sha256 == file.sha256 && f.mode == file.mode_text()) {
            return false;
        }
        // A binary we did not put there (no record of it, and not ours by digest) is kept.
        if file.path == layout::ENVOY
            && found.is_some()
            && !self.observed.envoy_preserved
            && !self.previous.files.contains_key(layout::ENVOY)
        {
            self.steps.push(Step::Preserve(layout::ENVOY));
        }
        if !self.user_ensured && layout::group_of(&file.path).is_some() {
            self.steps.push(Step::EnsureEnvoyUser);
            self.user_ensured = true;
        }
        self.steps.push(Step::Write(file.clone()));
        if file.path == layout::SYSCTL {
            // Applied before the relay (re)starts, so its sockets get the larger buffers.
            self.steps.push(Step::ApplySysctl {
                max_socket_buffer_bytes: self.max_socket_buffer_bytes,
            });
        }
        true
    }
}

/// Removes the SDS files no longer desired and the temporary files a cut pass left. Only
/// plainly named files are removed: anything else in the directory was not made by us, cannot
/// be referenced by Envoy's config, and is left alone rather than wedging every pass on a name
/// that cannot be passed to a command safely.
fn removals(steps: &mut Vec<Step>, observed: &Observed, desired: &BTreeMap<&str, &ManagedFile>) {
    for name in &observed.tls_files {
        let path = format!("{}/{name}", layout::ENVOY_TLS_DIR);
        if !desired.contains_key(path.as_str()) && check_path(&path).is_ok() {
            steps.push(Step::Remove(path));
        }
    }
    for temp in &observed.temp_files {
        if check_path(temp).is_ok()
            && temp
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(".tunnel."))
        {
            steps.push(Step::Remove(temp.clone()));
        }
    }
}

/// A desired state and a fresh VPS, for the tests of the pass's steps and of what they tell.
#[cfg(test)]
pub(super) mod fixtures {
    use std::collections::BTreeMap;

    use super::{Arch, DesiredState, Observed};
    use crate::enroll::blob::Blob;
    use crate::enroll::desired::{EnvoyInstall, HostTuning};

    /// Every file of a VPS, Envoy pushed, one certificate.
    pub fn desired() -> DesiredState {
        DesiredState {
            tunnelctl: BTreeMap::from([(Arch::X86_64, Blob::new(b"tunnelctl".to_vec()))]),
            envoy: EnvoyInstall::Push {
                version: "1.40.0".into(),
                binaries: BTreeMap::from([(Arch::X86_64, Blob::new(b"envoy".to_vec()))]),
            },
            relay_document: Blob::new(b"{\"relay\":1}".to_vec()),
            envoy_bootstrap: Blob::new(b"bootstrap".to_vec()),
            envoy_lds: Blob::new(b"lds".to_vec()),
            envoy_cds: Blob::new(b"cds".to_vec()),
            sds: BTreeMap::from([("web.sds.yaml".into(), Blob::new(b"sds".to_vec()))]),
            host: HostTuning::default(),
        }
    }

    /// A VPS with nothing of ours on it.
    pub fn fresh() -> Observed {
        Observed {
            machine: "x86_64".into(),
            ..Observed::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{desired, fresh};
    use super::*;
    use crate::enroll::observe::{FileFound, UnitFound};

    /// What the VPS looks like after `changes` ran completely.
    fn converged(changes: &Changes) -> Observed {
        let mut o = fresh();
        for (path, rec) in &changes.state.files {
            o.files.insert(
                path.clone(),
                FileFound {
                    sha256: rec.sha256.clone(),
                    mode: rec.mode.clone(),
                },
            );
        }
        o.files.insert(
            layout::STATE.into(),
            FileFound {
                sha256: String::new(),
                mode: "600".into(),
            },
        );
        o.tls_files = vec!["web.sds.yaml".into()];
        o.envoy_user = true;
        for unit in [layout::RELAY_UNIT, layout::ENVOY_UNIT] {
            o.units.insert(
                unit.into(),
                UnitFound {
                    active: "active".into(),
                    enabled: "enabled".into(),
                },
            );
        }
        o.state_bytes = Some(changes.state.to_bytes());
        o.state = Some(changes.state.clone());
        o
    }

    fn names(changes: &Changes) -> Vec<String> {
        changes.steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_binary_found_before_enrollment_is_kept_aside_once() {
        let mut o = fresh();
        o.files.insert(
            layout::ENVOY.into(),
            FileFound {
                sha256: "theirs".into(),
                mode: "755".into(),
            },
        );
        let steps = names(&changes(&desired(), &o, Request::default()).unwrap());
        let preserve = steps
            .iter()
            .position(|s| s == "preserve /usr/local/bin/envoy");
        let write = steps
            .iter()
            .position(|s| s == "write /usr/local/bin/envoy (755)");
        assert!(preserve.is_some() && preserve < write, "{steps:?}");
        // Already kept, or recorded as ours in the state: not again.
        o.envoy_preserved = true;
        let steps = names(&changes(&desired(), &o, Request::default()).unwrap());
        assert!(
            !steps.iter().any(|s| s.starts_with("preserve")),
            "{steps:?}"
        );
        let p = changes(&desired(), &fresh(), Request::default()).unwrap();
        let mut ours = converged(&p);
        ours.files.get_mut(layout::ENVOY).unwrap().sha256 = "changed".into();
        let steps = names(&changes(&desired(), &ours, Request::default()).unwrap());
        assert!(
            !steps.iter().any(|s| s.starts_with("preserve")),
            "{steps:?}"
        );
        assert!(
            !steps.iter().any(|s| s.starts_with("create user")),
            "{steps:?}"
        );
    }

    #[test]
    fn a_fresh_vps_gets_everything_in_order() {
        let p = changes(&desired(), &fresh(), Request::default()).unwrap();
        assert_eq!(
            names(&p),
            vec![
                // The relay and both units first, the relay running before Envoy's binary
                // is uploaded.
                "write /usr/local/bin/tunnelctl (755)",
                "write /etc/tunnel/relay.json (600)",
                "write /etc/systemd/system/tunnel-relay.service (644)",
                "write /etc/systemd/system/tunnel-envoy.service (644)",
                "write /etc/sysctl.d/99-tunnel.conf (644)",
                "apply /etc/sysctl.d/99-tunnel.conf",
                "systemctl daemon-reload",
                "enable tunnel-relay.service tunnel-envoy.service",
                "restart tunnel-relay.service",
                "write /usr/local/bin/envoy (755)",
                "create user tunnel-envoy and make its directories root's",
                "write /etc/envoy/tls/web.sds.yaml (640)",
                "write /etc/envoy/cds.yaml (640)",
                "write /etc/envoy/lds.yaml (640)",
                "write /etc/envoy/envoy.yaml (640)",
                "restart tunnel-envoy.service",
                "write /etc/tunnel/state.json",
            ]
        );
    }

    #[test]
    fn a_converged_vps_needs_nothing() {
        let first = changes(&desired(), &fresh(), Request::default()).unwrap();
        let again = changes(&desired(), &converged(&first), Request::default()).unwrap();
        assert!(again.steps.is_empty(), "{:?}", names(&again));
    }

    #[test]
    fn lds_change_rewrites_only_lds_without_restart() {
        let first = changes(&desired(), &fresh(), Request::default()).unwrap();
        let mut d = desired();
        d.envoy_lds = Blob::new(b"lds v2".to_vec());
        let p = changes(&d, &converged(&first), Request::default()).unwrap();
        assert_eq!(
            names(&p),
            vec![
                "write /etc/envoy/lds.yaml (640)",
                "write /etc/tunnel/state.json"
            ]
        );
    }

    #[test]
    fn directories_an_earlier_version_gave_away_are_made_roots_before_envoys_files_are_written() {
        let first = changes(&desired(), &fresh(), Request::default()).unwrap();
        let mut d = desired();
        d.envoy_lds = Blob::new(b"lds v2".to_vec());
        let mut o = converged(&first);
        o.unsafe_dirs = true;
        let p = changes(&d, &o, Request::default()).unwrap();
        assert_eq!(
            names(&p),
            vec![
                "create user tunnel-envoy and make its directories root's",
                "write /etc/envoy/lds.yaml (640)",
                "write /etc/tunnel/state.json"
            ]
        );
    }

    #[test]
    fn relay_document_change_only_rewrites_it() {
        let first = changes(&desired(), &fresh(), Request::default()).unwrap();
        let mut d = desired();
        d.relay_document = Blob::new(b"{\"relay\":2}".to_vec());
        let p = changes(&d, &converged(&first), Request::default()).unwrap();
        assert_eq!(
            names(&p),
            vec![
                "write /etc/tunnel/relay.json (600)",
                "write /etc/tunnel/state.json"
            ]
        );
    }

    #[test]
    fn drift_is_repaired() {
        let first = changes(&desired(), &fresh(), Request::default()).unwrap();
        let mut o = converged(&first);
        o.files.get_mut(layout::ENVOY_CDS).unwrap().sha256 = "edited".into();
        o.files.remove(layout::ENVOY_LDS);
        o.files.get_mut(layout::RELAY_DOCUMENT).unwrap().mode = "644".into();
        o.units.get_mut(layout::ENVOY_UNIT).unwrap().active = "inactive".into();
        o.tls_files.push("old.sds.yaml".into());
        o.tls_files.push("odd name $(x).pem".into());
        o.temp_files.push("/etc/envoy/.tunnel.x1".into());
        let p = changes(&desired(), &o, Request::default()).unwrap();
        assert_eq!(
            names(&p),
            vec![
                "write /etc/tunnel/relay.json (600)",
                "write /etc/envoy/cds.yaml (640)",
                "write /etc/envoy/lds.yaml (640)",
                "remove /etc/envoy/tls/old.sds.yaml",
                "remove /etc/envoy/.tunnel.x1",
                "restart tunnel-envoy.service",
                "write /etc/tunnel/state.json",
            ]
        );
    }

    #[test]
    fn an_interrupted_pass_redoes_its_restarts() {
        // The files were written but the state (and so the restarts) never were.
        let first = changes(&desired(), &fresh(), Request::default()).unwrap();
        let mut o = converged(&first);
        o.state = None;
        o.state_bytes = None;
        let p = changes(&desired(), &o, Request::default()).unwrap();
        assert_eq!(
            names(&p),
            vec![
                "restart tunnel-relay.service",
                "restart tunnel-envoy.service",
                "write /etc/tunnel/state.json"
            ]
        );
    }

    #[test]
    fn restart_on_request_and_on_new_bootstrap() {
        let first = changes(&desired(), &fresh(), Request::default()).unwrap();
        let p = changes(
            &desired(),
            &converged(&first),
            Request {
                restart_envoy: true,
            },
        )
        .unwrap();
        assert_eq!(
            names(&p),
            vec![
                "restart tunnel-envoy.service",
                "write /etc/tunnel/state.json"
            ]
        );
        let mut d = desired();
        d.envoy_bootstrap = Blob::new(b"bootstrap v2".to_vec());
        let p = changes(&d, &converged(&first), Request::default()).unwrap();
        assert!(p.restarts_envoy());
    }

    #[test]
    fn missing_arch_and_bad_sds_names_are_refused() {
        let mut o = fresh();
        o.machine = "aarch64".into();
        assert_eq!(
            changes(&desired(), &o, Request::default())
                .unwrap_err()
                .category(),
            "EnrollUnsupportedArch"
        );
        let mut d = desired();
        d.sds
            .insert("../../etc/passwd".into(), Blob::new(b"x".to_vec()));
        assert!(changes(&d, &fresh(), Request::default()).is_err());
    }
}
