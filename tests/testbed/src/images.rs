//! Container images without a registry or a builder: OCI image archives written directly
//! (uncompressed layer tars, config, manifest, `index.json`, `oci-layout`) and imported into
//! the node's containerd (`ctr -n k8s.io images import`), as `real-node.md` §5 verified.
//!
//! Every image sits on one base layer made from the cached Debian root file system (read
//! only; documentation, locales, apt lists and the SSH host keys left out), so the layer is
//! stored once. The operator and uplink images carry what the Dockerfile's `operator` and
//! `uplink` stages do: the same files at the same paths, the same users and entrypoints
//! ([`operator`], [`uplink`]); the Dockerfile's base images are build arguments, so it still
//! builds where registries are reachable.
//!
//! The same writer is a user tool (`tunnel-images`, run by `deploy/images.sh` where no
//! container engine exists): there the base is [`closure_layer`], the shared libraries the
//! binaries load (what the Dockerfile's distroless `cc` base provides) and the two users,
//! instead of the test bed's Debian root file system.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::netns::run;
use crate::{TestbedError, tools};

/// The node's sandbox ("pause") image: the base with `sleep infinity`.
pub const PAUSE: &str = "docker.io/tbnode/pause:1";
/// The operator image, under the chart's default name (`image.repository:appVersion`).
pub const OPERATOR: &str = "ghcr.io/achetronic/tunnel:0.1.0";
/// The uplink image, under the name the chart gives the operator (`flags.imageRepo`/uplink:
/// `flags.imageTag`, which defaults to the chart's appVersion, like the operator's image).
pub const UPLINK: &str = "ghcr.io/achetronic/tunnel/uplink:0.1.0";
/// The echo workload of the end-to-end test and the demo (`tb-echo`).
pub const ECHO: &str = "docker.io/tbnode/echo:1";

/// One image to write.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Full name, e.g. `ghcr.io/achetronic/tunnel:0.1.0`.
    pub name: String,
    /// Files added on top of the base: (source on the host, absolute path in the image).
    pub files: Vec<(PathBuf, String)>,
    /// `USER` (`uid:gid`), empty for root.
    pub user: String,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
}

/// The operator image: `/usr/local/bin/tunnel`, the relay agent at
/// `/opt/tunnelctl/tunnelctl-linux-amd64` and Envoy at `/opt/envoy/envoy-linux-amd64.gz`
/// (push mode; `envoy-linux-amd64` when `envoy` is not gzipped, its name not ending in
/// `.gz`), user 65532 (distroless `nonroot`), `tunnel run`.
pub fn operator(tunnel: &Path, tunnelctl: &Path, envoy: &Path) -> ImageSpec {
    operator_for(OPERATOR, "amd64", tunnel, tunnelctl, envoy)
}

/// The operator image named `name` for `arch` (`amd64`, `arm64`: the names the operator looks
/// for in `--tunnelctl-dir` and `--envoy-dir`).
pub fn operator_for(
    name: &str,
    arch: &str,
    tunnel: &Path,
    tunnelctl: &Path,
    envoy: &Path,
) -> ImageSpec {
    ImageSpec {
        name: name.into(),
        files: vec![
            (tunnel.into(), "/usr/local/bin/tunnel".into()),
            (
                tunnelctl.into(),
                format!("/opt/tunnelctl/tunnelctl-linux-{arch}"),
            ),
            (
                envoy.into(),
                format!(
                    "/opt/envoy/envoy-linux-{arch}{}",
                    if envoy.extension().is_some_and(|e| e == "gz") {
                        ".gz"
                    } else {
                        ""
                    }
                ),
            ),
        ],
        user: "65532:65532".into(),
        entrypoint: vec!["/usr/local/bin/tunnel".into()],
        cmd: vec!["run".into()],
    }
}

/// The uplink image: `/usr/local/bin/uplink` as the entrypoint, user root (its container
/// drops every capability but `NET_ADMIN`).
pub fn uplink(binary: &Path) -> ImageSpec {
    uplink_for(UPLINK, binary)
}

/// The uplink image named `name`.
pub fn uplink_for(name: &str, binary: &Path) -> ImageSpec {
    ImageSpec {
        name: name.into(),
        files: vec![(binary.into(), "/usr/local/bin/uplink".into())],
        entrypoint: vec!["/usr/local/bin/uplink".into()],
        ..ImageSpec::default()
    }
}

/// The four images the node's tests and the demo use, written into
/// `$TUNNEL_CACHE/node/images` from the workspace's binaries in `bin_dir` (`tunnel`,
/// `tunnelctl`, `uplink`, `tb-echo`: `target/<profile>/`) and the cached Envoy.
pub fn standard(bin_dir: &Path) -> Result<Vec<PathBuf>, TestbedError> {
    write_all(&[
        pause(),
        operator(
            &agent(bin_dir, "tunnel")?,
            &agent(bin_dir, "tunnelctl")?,
            &tools::envoy_gz()?,
        ),
        uplink(&agent(bin_dir, "uplink")?),
        echo(bin_dir)?,
    ])
}

/// Only the images of the test bed itself (the sandbox and the echo workload), for a node
/// whose operator and uplink images come from `deploy/images.sh`.
pub fn test_only(bin_dir: &Path) -> Result<Vec<PathBuf>, TestbedError> {
    write_all(&[pause(), echo(bin_dir)?])
}

/// Writes `specs` into the shared images directory, holding its lock: two node tests of one
/// run write the same archives before either takes the node.
pub fn write_all(specs: &[ImageSpec]) -> Result<Vec<PathBuf>, TestbedError> {
    let out = images_dir();
    std::fs::create_dir_all(&out).map_err(TestbedError::io("creating the images dir"))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".lock"))
        .map_err(TestbedError::io("opening the images dir's lock"))?;
    lock.lock()
        .map_err(TestbedError::io("locking the images dir"))?;
    specs.iter().map(|spec| write(spec, &out)).collect()
}

/// `bin_dir/name`, which must exist.
fn agent(bin_dir: &Path, name: &str) -> Result<PathBuf, TestbedError> {
    let path = bin_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::MissingBinary {
            name: name.into(),
            path,
        })
    }
}

fn pause() -> ImageSpec {
    ImageSpec {
        name: PAUSE.into(),
        entrypoint: vec!["/bin/sleep".into(), "infinity".into()],
        ..ImageSpec::default()
    }
}

fn echo(bin_dir: &Path) -> Result<ImageSpec, TestbedError> {
    Ok(ImageSpec {
        name: ECHO.into(),
        files: vec![(agent(bin_dir, "tb-echo")?, "/usr/local/bin/tb-echo".into())],
        user: "65532:65532".into(),
        entrypoint: vec!["/usr/local/bin/tb-echo".into()],
        ..ImageSpec::default()
    })
}

fn images_dir() -> PathBuf {
    tools::cache_dir().join("node/images")
}

/// The base layer: a tar of the cached VPS root file system, rebuilt when that changes.
pub fn base_layer() -> Result<PathBuf, TestbedError> {
    let rootfs = tools::vps_rootfs()?;
    let dir = images_dir();
    std::fs::create_dir_all(&dir).map_err(TestbedError::io("creating the images dir"))?;
    let layer = dir.join("base.tar");
    let stamp = dir.join("base.stamp");
    let want = format!(
        "{:?}",
        std::fs::metadata(rootfs.join(".complete"))
            .and_then(|m| m.modified())
            .map_err(TestbedError::io("reading the rootfs stamp"))?
    );
    // A layer emptied by two writers of one run (before the images dir had its lock, one
    // truncated the hard link the other had made to it) is made again.
    let whole = std::fs::metadata(&layer).is_ok_and(|m| m.is_file() && m.len() > 0);
    if whole && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&want) {
        return Ok(layer);
    }
    let tmp = dir.join("base.tar.tmp");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(DETERMINISTIC)
        .args([
            "--exclude=./.complete",
            "--exclude=./usr/share/doc/*",
            "--exclude=./usr/share/man/*",
            "--exclude=./usr/share/locale/*",
            "--exclude=./usr/share/info/*",
            "--exclude=./var/lib/apt/lists/*",
            "--exclude=./var/cache/apt/*",
            "--exclude=./etc/ssh/ssh_host_*",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "--exclude=./run/*",
            "--exclude=./tmp/*",
            "-cf",
        ])
        .arg(&tmp)
        .arg("."))?;
    std::fs::rename(&tmp, &layer).map_err(TestbedError::io("storing the base layer"))?;
    std::fs::write(&stamp, want).map_err(TestbedError::io("writing the base stamp"))?;
    Ok(layer)
}

/// Same bytes for the same input: sorted names, fixed times and owners.
const DETERMINISTIC: &[&str] = &[
    "--sort=name",
    "--mtime=@0",
    "--numeric-owner",
    "--format=posix",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
];

/// Writes `spec` as an OCI archive in `out` and returns its path.
pub fn write(spec: &ImageSpec, out: &Path) -> Result<PathBuf, TestbedError> {
    write_on(spec, out, &base_layer()?, "amd64")
}

/// A base layer for `binaries` without any root file system: every shared library they load
/// (`ldd`, the dynamic loader included, copied from this machine at the same paths), `/etc/passwd`
/// and `/etc/group` with root and `nonroot` (65532, the operator's user), and `/tmp`. Written to
/// `out/base.tar`.
pub fn closure_layer(binaries: &[PathBuf], out: &Path) -> Result<PathBuf, TestbedError> {
    let staging = out.join("base.d");
    let _ = std::fs::remove_dir_all(&staging);
    let mut libraries = std::collections::BTreeSet::new();
    for binary in binaries {
        let listing = Command::new("ldd")
            .arg(binary)
            .output()
            .map_err(TestbedError::io("running ldd"))?;
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(path) = path {
                libraries.insert(path);
            }
        }
    }
    if libraries.is_empty() {
        return Err(TestbedError::MissingBinary {
            name: "a dynamically linked binary (ldd found no libraries)".into(),
            path: binaries.first().cloned().unwrap_or_default(),
        });
    }
    for library in &libraries {
        let dest = staging.join(library.strip_prefix("/").unwrap_or(library));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(TestbedError::io("staging a library"))?;
        }
        // Follows symbolic links: the image holds the file under the name the loader asks for.
        std::fs::copy(library, &dest)
            .map_err(TestbedError::io(format!("copying {}", library.display())))?;
    }
    let etc = staging.join("etc");
    std::fs::create_dir_all(&etc).map_err(TestbedError::io("staging /etc"))?;
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .map_err(TestbedError::io("writing /etc/passwd"))?;
    std::fs::write(etc.join("group"), "root:x:0:\nnonroot:x:65532:\n")
        .map_err(TestbedError::io("writing /etc/group"))?;
    std::fs::create_dir_all(staging.join("tmp")).map_err(TestbedError::io("staging /tmp"))?;
    run(Command::new("chmod").arg("1777").arg(staging.join("tmp")))?;
    let layer = out.join("base.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&staging)
        .args(DETERMINISTIC)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&layer)
        .arg("."))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(layer)
}

/// Writes `spec` as an OCI archive for `arch` (`amd64`, `arm64`) in `out`, on the layer
/// `base`, and returns its path.
pub fn write_on(
    spec: &ImageSpec,
    out: &Path,
    base: &Path,
    arch: &str,
) -> Result<PathBuf, TestbedError> {
    let base = base.to_path_buf();
    let slug: String = spec
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let work = out.join(format!("{slug}.d"));
    let _ = std::fs::remove_dir_all(&work);
    let blobs = work.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(TestbedError::io("creating the blobs dir"))?;

    let mut layers = vec![base];
    if !spec.files.is_empty() {
        let staging = work.join("staging");
        for (source, target) in &spec.files {
            let dest = staging.join(target.trim_start_matches('/'));
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(TestbedError::io("staging a file"))?;
            }
            // Debug builds carry their debug info (the operator's is ~280 MB): left out, as
            // a release build would be, so the image and what the operator pushes stay small.
            // A gzipped file (Envoy as the image ships it) goes as it is.
            if source.extension().is_some_and(|e| e == "gz") {
                std::fs::copy(source, &dest).map_err(TestbedError::io("staging a gzip file"))?;
            } else {
                run(Command::new("strip")
                    .arg("--strip-debug")
                    .arg("-o")
                    .arg(&dest)
                    .arg(source))?;
            }
        }
        let layer = work.join("layer.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&staging)
            .args(DETERMINISTIC)
            .args(["--owner=0", "--group=0", "-cf"])
            .arg(&layer)
            .arg("."))?;
        layers.push(layer);
    }

    let mut layer_descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &layers {
        let (digest, size) = digest_file(layer)?;
        link_or_copy(layer, &blobs.join(&digest))?;
        diff_ids.push(format!("sha256:{digest}"));
        layer_descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{digest}"),
            "size": size,
        }));
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": spec.user,
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_desc = put_blob(&blobs, &config, "application/vnd.oci.image.config.v1+json")?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descriptors,
    });
    let mut manifest_desc = put_blob(
        &blobs,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    )?;
    let tag = spec.name.rsplit_once(':').map_or("latest", |(_, t)| t);
    manifest_desc["annotations"] = serde_json::json!({
        "io.containerd.image.name": spec.name,
        "org.opencontainers.image.ref.name": tag,
    });
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc]});
    std::fs::write(work.join("index.json"), index.to_string())
        .map_err(TestbedError::io("writing index.json"))?;
    std::fs::write(work.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(TestbedError::io("writing oci-layout"))?;
    // Written aside and renamed: another node test of the run may be importing the archive
    // of the same name (after `write_all` let go of the lock) while this one is made, and
    // must read the old file whole, not one being rewritten under it (`ctr` then fails
    // with "unexpected EOF").
    let archive = out.join(format!("{slug}.tar"));
    let tmp = out.join(format!("{slug}.tar.tmp"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&work)
        .args(["--hard-dereference", "-cf"])
        .arg(&tmp)
        .args(["oci-layout", "index.json", "blobs"]))?;
    let _ = std::fs::remove_dir_all(&work);
    std::fs::rename(&tmp, &archive).map_err(TestbedError::io("storing an image archive"))?;
    Ok(archive)
}

fn put_blob(
    blobs: &Path,
    value: &serde_json::Value,
    media_type: &str,
) -> Result<serde_json::Value, TestbedError> {
    let bytes = value.to_string().into_bytes();
    let digest = hex::encode(Sha256::digest(&bytes));
    std::fs::write(blobs.join(&digest), &bytes).map_err(TestbedError::io("writing a blob"))?;
    Ok(serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{digest}"),
        "size": bytes.len(),
    }))
}

fn digest_file(path: &Path) -> Result<(String, u64), TestbedError> {
    let mut file = std::fs::File::open(path)
        .map_err(TestbedError::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(TestbedError::io("reading a layer"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), TestbedError> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(drop)
        .map_err(TestbedError::io("copying a layer"))
}
