//! The input of enrollment: everything the VPS should hold, as bytes and settings. The
//! planner renders the documents (relay document, Envoy bootstrap/LDS/CDS/SDS); the operator
//! adds the binaries it carries and the host tuning of the EdgeNode. Enrollment owns the
//! systemd units and the sysctl drop-in (see [`super::units`]).

use std::collections::BTreeMap;

use super::EnrollError;
pub use super::blob::Blob;
use super::error::DesiredError;
use super::layout;
use crate::crd::HostSpec;

/// Machine architecture of a VPS, from `uname -m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// `x86_64` (`amd64`).
    X86_64,
    /// `aarch64` (`arm64`).
    Aarch64,
}

impl Arch {
    /// Reads `uname -m` output.
    pub fn from_uname(machine: &str) -> Result<Self, EnrollError> {
        match machine.trim() {
            "x86_64" | "amd64" => Ok(Self::X86_64),
            "aarch64" | "arm64" => Ok(Self::Aarch64),
            other => Err(EnrollError::UnsupportedArch {
                found: other.to_owned(),
            }),
        }
    }

    /// The name `uname -m` prints.
    pub fn uname(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }

    /// The name Envoy's release assets use (`x86_64`, `aarch_64`).
    pub fn envoy_release_name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch_64",
        }
    }
}

/// The default download URL template: Envoy's official GitHub release assets.
pub const ENVOY_RELEASE_URL_TEMPLATE: &str =
    "https://github.com/envoyproxy/envoy/releases/download/v{version}/envoy-{version}-linux-{arch}";

/// How the Envoy binary gets onto the VPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvoyInstall {
    /// The operator pushes the binary it carries (air-gapped VPSes).
    Push {
        /// Envoy version, for status and logs.
        version: String,
        /// The binary per architecture.
        binaries: BTreeMap<Arch, Blob>,
    },
    /// The VPS downloads the release itself (`curl`), and the download must match the pinned
    /// digest for its version and architecture, or nothing is replaced.
    Download {
        /// Envoy version, e.g. `1.40.0`.
        version: String,
        /// URL with `{version}` and `{arch}` placeholders (`{arch}` as Envoy names it:
        /// `x86_64`, `aarch_64`); point it at a mirror if the VPS cannot reach GitHub.
        url_template: String,
        /// Pinned lowercase hex SHA-256 per architecture for this version.
        sha256: BTreeMap<Arch, String>,
    },
}

impl EnvoyInstall {
    /// The version being installed.
    pub fn version(&self) -> &str {
        match self {
            Self::Push { version, .. } | Self::Download { version, .. } => version,
        }
    }

    /// The expected digest for `arch`.
    pub fn sha256(&self, arch: Arch) -> Result<String, EnrollError> {
        let missing = EnrollError::MissingArtifact {
            what: "Envoy binary (or pinned SHA-256)",
            arch: arch.uname(),
        };
        match self {
            Self::Push { binaries, .. } => binaries
                .get(&arch)
                .map(|b| b.sha256().to_owned())
                .ok_or(missing),
            Self::Download { sha256, .. } => {
                let digest = sha256.get(&arch).ok_or(missing)?;
                if super::observe::is_digest(digest) {
                    Ok(digest.to_ascii_lowercase())
                } else {
                    Err(DesiredError::PinnedDigest { arch: arch.uname() }.into())
                }
            }
        }
    }

    /// The download URL for `arch` (download mode only).
    pub fn url(&self, arch: Arch) -> Result<Option<String>, EnrollError> {
        let Self::Download {
            version,
            url_template,
            ..
        } = self
        else {
            return Ok(None);
        };
        let version_ok = !version.is_empty()
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !version_ok {
            return Err(DesiredError::EnvoyVersion {
                version: version.clone(),
            }
            .into());
        }
        let url = url_template
            .replace("{version}", version)
            .replace("{arch}", arch.envoy_release_name());
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return Err(DesiredError::UrlScheme.into());
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DesiredError::UrlCharacters.into());
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            // They would show in the VPS's process list and in command logs.
            return Err(DesiredError::UrlCredentials.into());
        }
        Ok(Some(url))
    }
}

/// Kernel and NIC tuning of the VPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTuning {
    /// `net.core.rmem_max` and `net.core.wmem_max`.
    pub max_socket_buffer_bytes: u64,
    /// Turn off GRO/GSO/TSO on the uplink NIC at every relay start.
    pub disable_nic_offloads: bool,
}

impl Default for HostTuning {
    fn default() -> Self {
        Self::from(&HostSpec::default())
    }
}

impl From<&HostSpec> for HostTuning {
    fn from(spec: &HostSpec) -> Self {
        Self {
            max_socket_buffer_bytes: u64::try_from(spec.kernel_max_socket_buffer_bytes)
                .unwrap_or(26_214_400),
            disable_nic_offloads: spec.disable_nic_offloads,
        }
    }
}

/// Everything one VPS should hold after a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredState {
    /// The relay agent, per architecture.
    pub tunnelctl: BTreeMap<Arch, Blob>,
    /// The Envoy binary and how it is installed.
    pub envoy: EnvoyInstall,
    /// `/etc/tunnel/relay.json`.
    pub relay_document: Blob,
    /// `/etc/envoy/envoy.yaml`.
    pub envoy_bootstrap: Blob,
    /// `/etc/envoy/lds.yaml`.
    pub envoy_lds: Blob,
    /// `/etc/envoy/cds.yaml`.
    pub envoy_cds: Blob,
    /// `/etc/envoy/tls/<name>`, names ending in `.sds.yaml`.
    pub sds: BTreeMap<String, Blob>,
    /// Kernel and NIC tuning.
    pub host: HostTuning,
}

/// The binaries and tuning that come from the operator rather than from the planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    /// The relay agent, per architecture.
    pub tunnelctl: BTreeMap<Arch, Blob>,
    /// The Envoy binary and how it is installed.
    pub envoy: EnvoyInstall,
    /// Kernel and NIC tuning.
    pub host: HostTuning,
}

impl DesiredState {
    /// Assembles the desired state from the planner's rendered VPS files (absolute path and
    /// bytes: `/etc/tunnel/relay.json`, `/etc/envoy/envoy.yaml`, `lds.yaml`, `cds.yaml` and
    /// `/etc/envoy/tls/*.sds.yaml`) and what the operator carries. A missing file, or one at a
    /// path enrollment does not manage, is an error.
    pub fn from_rendered<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        carried: Carried,
    ) -> Result<Self, EnrollError> {
        let mut relay = None;
        let mut bootstrap = None;
        let mut lds = None;
        let mut cds = None;
        let mut sds = BTreeMap::new();
        for (path, bytes) in files {
            let blob = Some(Blob::new(bytes.to_vec()));
            match path {
                layout::RELAY_DOCUMENT => relay = blob,
                layout::ENVOY_BOOTSTRAP => bootstrap = blob,
                layout::ENVOY_LDS => lds = blob,
                layout::ENVOY_CDS => cds = blob,
                _ => {
                    let name = path
                        .strip_prefix(layout::ENVOY_TLS_DIR)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .filter(|name| layout::is_sds_file_name(name))
                        .ok_or_else(|| DesiredError::Unmanaged {
                            path: path.to_owned(),
                        })?;
                    sds.insert(name.to_owned(), Blob::new(bytes.to_vec()));
                }
            }
        }
        let missing = |path: &'static str| DesiredError::Missing { path };
        let desired = Self {
            tunnelctl: carried.tunnelctl,
            envoy: carried.envoy,
            relay_document: relay.ok_or_else(|| missing(layout::RELAY_DOCUMENT))?,
            envoy_bootstrap: bootstrap.ok_or_else(|| missing(layout::ENVOY_BOOTSTRAP))?,
            envoy_lds: lds.ok_or_else(|| missing(layout::ENVOY_LDS))?,
            envoy_cds: cds.ok_or_else(|| missing(layout::ENVOY_CDS))?,
            sds,
            host: carried.host,
        };
        desired.validate()?;
        Ok(desired)
    }

    /// Checks what can be checked without the VPS.
    pub fn validate(&self) -> Result<(), EnrollError> {
        for name in self.sds.keys() {
            if !layout::is_sds_file_name(name) {
                return Err(DesiredError::SdsName { name: name.clone() }.into());
            }
        }
        if self.tunnelctl.is_empty() {
            return Err(DesiredError::NoTunnelctl.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(Arch::from_uname("x86_64\n").unwrap(), Arch::X86_64);
        assert_eq!(Arch::from_uname("arm64").unwrap(), Arch::Aarch64);
        assert_eq!(
            Arch::from_uname("riscv64").unwrap_err().category(),
            "EnrollUnsupportedArch"
        );
    }

    fn carried() -> Carried {
        Carried {
            tunnelctl: BTreeMap::from([(Arch::X86_64, Blob::new(b"t".to_vec()))]),
            envoy: EnvoyInstall::Push {
                version: "1.40.0".into(),
                binaries: BTreeMap::from([(Arch::X86_64, Blob::new(b"e".to_vec()))]),
            },
            host: HostTuning::default(),
        }
    }

    #[test]
    fn from_the_planners_files() {
        let files: Vec<(&str, &[u8])> = vec![
            ("/etc/envoy/cds.yaml", b"cds"),
            ("/etc/envoy/envoy.yaml", b"bootstrap"),
            ("/etc/envoy/lds.yaml", b"lds"),
            ("/etc/envoy/tls/default_web.sds.yaml", b"sds"),
            ("/etc/tunnel/relay.json", b"relay"),
        ];
        let d = DesiredState::from_rendered(files.clone(), carried()).unwrap();
        assert_eq!(
            d.envoy_lds.stored(),
            crate::enroll::blob::Stored::Memory(b"lds")
        );
        assert_eq!(
            d.sds.keys().collect::<Vec<_>>(),
            vec!["default_web.sds.yaml"]
        );

        let mut stray = files.clone();
        stray.push(("/etc/passwd", b"x"));
        assert!(DesiredState::from_rendered(stray, carried()).is_err());
        let missing = files[1..].to_vec();
        assert!(
            DesiredState::from_rendered(missing, carried())
                .unwrap_err()
                .to_string()
                .contains("cds.yaml")
        );
    }

    #[test]
    fn download_url_from_the_template() {
        let install = EnvoyInstall::Download {
            version: "1.40.0".into(),
            url_template: ENVOY_RELEASE_URL_TEMPLATE.into(),
            sha256: BTreeMap::from([(Arch::Aarch64, "ab".repeat(32))]),
        };
        assert_eq!(
            install.url(Arch::Aarch64).unwrap().unwrap(),
            "https://github.com/envoyproxy/envoy/releases/download/v1.40.0/envoy-1.40.0-linux-aarch_64"
        );
        assert!(install.sha256(Arch::X86_64).is_err());
        assert_eq!(install.sha256(Arch::Aarch64).unwrap(), "ab".repeat(32));
        let bad = EnvoyInstall::Download {
            version: "1.0; rm -rf /".into(),
            url_template: ENVOY_RELEASE_URL_TEMPLATE.into(),
            sha256: BTreeMap::new(),
        };
        assert!(bad.url(Arch::X86_64).is_err());
        let with_credentials = EnvoyInstall::Download {
            version: "1.40.0".into(),
            url_template: "https://user:secret@mirror.example/envoy-{version}".into(),
            sha256: BTreeMap::new(),
        };
        let e = with_credentials.url(Arch::X86_64).unwrap_err().to_string();
        assert!(e.contains("credentials") && !e.contains("secret"), "{e}");
    }
}
