//! `tunnel-images`: the operator and uplink images as OCI archives, written without any
//! container engine or registry (the test bed's writer, `testbed::images`), for
//! `deploy/images.sh` on machines with no docker, podman or buildah. The images carry what
//! the Dockerfile's `operator` and `uplink` stages carry, on a base of the shared libraries the
//! binaries load (no shell, no package manager: like the Dockerfile's distroless base).
//!
//! ```text
//! tunnel-images OUT_DIR TAG BIN_DIR ENVOY [REPO] [ARCH]
//! ```
//! `BIN_DIR` holds release builds of `tunnel`, `tunnelctl` and `uplink` for ARCH (`amd64`, the
//! default, or `arm64`, built on a machine of that architecture); `ENVOY` is the Envoy binary
//! the operator pushes to VPSes, gzipped when its name ends in `.gz` (as `deploy/images.sh`
//! gives it); `REPO` defaults to `ghcr.io/achetronic/tunnel`. Prints the
//! archives written, one per line: `<REPO>:<TAG>` and `<REPO>/uplink:<TAG>`.

use std::path::PathBuf;
use std::process::ExitCode;

use testbed::images;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=6).contains(&args.len()) {
        eprintln!("usage: tunnel-images OUT_DIR TAG BIN_DIR ENVOY [REPO] [ARCH]");
        return ExitCode::from(2);
    }
    let out = PathBuf::from(&args[0]);
    let tag = &args[1];
    let bin = PathBuf::from(&args[2]);
    let envoy = PathBuf::from(&args[3]);
    let repo = args
        .get(4)
        .map_or("ghcr.io/achetronic/tunnel", String::as_str);
    let arch = args.get(5).map_or("amd64", String::as_str);
    match write_all(&out, tag, &bin, &envoy, repo, arch) {
        Ok(archives) => {
            for archive in archives {
                println!("{}", archive.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tunnel-images: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(
    out: &std::path::Path,
    tag: &str,
    bin: &std::path::Path,
    envoy: &std::path::Path,
    repo: &str,
    arch: &str,
) -> Result<Vec<PathBuf>, testbed::TestbedError> {
    std::fs::create_dir_all(out).map_err(testbed::TestbedError::io("creating OUT_DIR"))?;
    let (tunnel, tunnelctl, uplink) = (
        bin.join("tunnel"),
        bin.join("tunnelctl"),
        bin.join("uplink"),
    );
    // Only what runs in the images needs its libraries: tunnelctl and Envoy are pushed to VPSes.
    let base = images::closure_layer(&[tunnel.clone(), uplink.clone()], out)?;
    let operator = images::operator_for(&format!("{repo}:{tag}"), arch, &tunnel, &tunnelctl, envoy);
    let uplink_image = images::uplink_for(&format!("{repo}/uplink:{tag}"), &uplink);
    [operator, uplink_image]
        .iter()
        .map(|spec| images::write_on(spec, out, &base, arch))
        .collect()
}
