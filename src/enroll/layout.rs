//! Where things live on the VPS (the contract of DESIGN.md §4) and their modes. Nothing outside
//! these paths is written.

/// The relay agent binary.
pub const TUNNELCTL: &str = "/usr/local/bin/tunnelctl";
/// The Envoy binary.
pub const ENVOY: &str = "/usr/local/bin/envoy";
/// Directory of the relay document and the state file.
pub const TUNNEL_DIR: &str = "/etc/tunnel";
/// The relay document (holds the relay's WireGuard private key).
pub const RELAY_DOCUMENT: &str = "/etc/tunnel/relay.json";
/// What the operator applied, with hashes (see [`super::state`]).
pub const STATE: &str = "/etc/tunnel/state.json";
/// Directory of Envoy's files.
pub const ENVOY_DIR: &str = "/etc/envoy";
/// Envoy bootstrap.
pub const ENVOY_BOOTSTRAP: &str = "/etc/envoy/envoy.yaml";
/// Envoy listeners (file-based LDS).
pub const ENVOY_LDS: &str = "/etc/envoy/lds.yaml";
/// Envoy clusters (file-based CDS).
pub const ENVOY_CDS: &str = "/etc/envoy/cds.yaml";
/// Directory of the SDS documents (`<name>.sds.yaml`, they hold private keys).
pub const ENVOY_TLS_DIR: &str = "/etc/envoy/tls";
/// Unit directory.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The relay unit's name.
pub const RELAY_UNIT: &str = "tunnel-relay.service";
/// The Envoy unit's name.
pub const ENVOY_UNIT: &str = "tunnel-envoy.service";
/// The relay unit's file.
pub const RELAY_UNIT_FILE: &str = "/etc/systemd/system/tunnel-relay.service";
/// The Envoy unit's file.
pub const ENVOY_UNIT_FILE: &str = "/etc/systemd/system/tunnel-envoy.service";
/// The sysctl drop-in.
pub const SYSCTL: &str = "/etc/sysctl.d/99-tunnel.conf";
/// The relay's WireGuard interface.
pub const RELAY_INTERFACE: &str = "wg-relay";
/// The system user (and group) Envoy runs as; its group reads Envoy's files.
pub const ENVOY_USER: &str = "tunnel-envoy";
/// The comment enrollment gives [`ENVOY_USER`]: teardown deletes the user only when it
/// carries it (a user of that name made by someone else is left alone).
pub const ENVOY_USER_COMMENT: &str = "Tunnel Envoy (managed by Tunnel)";
/// Where a binary that was on the VPS before enrollment is kept (teardown puts it back).
pub const PRESERVED_SUFFIX: &str = ".pre-tunnel";

/// The group a managed file gets, when not root's: Envoy's files are `root:tunnel-envoy`,
/// mode [`MODE_ENVOY`], so the unprivileged Envoy reads them and owns nothing (its unit also
/// mounts them read-only). The directories stay root's (review L8).
pub fn group_of(path: &str) -> Option<&'static str> {
    path.strip_prefix(ENVOY_DIR)
        .is_some_and(|rest| rest.starts_with('/'))
        .then_some(ENVOY_USER)
}

/// Directories of ours: root-owned, 0755; teardown removes each only when it is then empty.
pub const OWN_DIRS: [&str; 3] = [ENVOY_TLS_DIR, ENVOY_DIR, TUNNEL_DIR];

/// Mode of Envoy's files: read by the group [`ENVOY_USER`], written by root only.
pub const MODE_ENVOY: u32 = 0o640;
/// Mode of secrets and of everything not meant to be read by other users.
pub const MODE_SECRET: u32 = 0o600;
/// Mode of public configuration (units, sysctl drop-in).
pub const MODE_PUBLIC: u32 = 0o644;
/// Mode of binaries.
pub const MODE_BINARY: u32 = 0o755;

/// Directories where an interrupted upload may leave a `.tunnel.*` temporary file.
pub const TEMP_DIRS: [&str; 6] = [
    "/usr/local/bin",
    TUNNEL_DIR,
    ENVOY_DIR,
    ENVOY_TLS_DIR,
    UNIT_DIR,
    "/etc/sysctl.d",
];

/// Whether `name` is an acceptable SDS file name in [`ENVOY_TLS_DIR`].
pub fn is_sds_file_name(name: &str) -> bool {
    name.len() <= 200
        && name.ends_with(".sds.yaml")
        && name.len() > ".sds.yaml".len()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_reads_its_files_through_its_group() {
        assert_eq!(group_of(ENVOY_LDS), Some(ENVOY_USER));
        assert_eq!(group_of("/etc/envoy/tls/x.sds.yaml"), Some(ENVOY_USER));
        assert_eq!(group_of(RELAY_DOCUMENT), None);
        assert_eq!(group_of("/etc/envoyx/y"), None);
        assert_eq!(group_of(ENVOY), None);
    }

    #[test]
    fn sds_names() {
        assert!(is_sds_file_name("default-web-tls.sds.yaml"));
        for bad in [
            ".sds.yaml",
            "x.yaml",
            "../x.sds.yaml",
            "a b.sds.yaml",
            ".tunnel.x.sds.yaml",
        ] {
            assert!(!is_sds_file_name(bad), "{bad}");
        }
    }
}
