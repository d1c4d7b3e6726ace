//! The upstream Gateway API conformance suite (`sigs.k8s.io/gateway-api/conformance`, issue 19;
//! docs/testing.md "Gateway API conformance") against a [`Node`]: the images its manifests
//! name, written offline from the binaries `tests/testbed/gateway-conformance-setup.sh` built and loaded
//! into the node's containerd, and the suite's test binary run with Tunnel's options, bounded
//! in time, its `ConformanceReport` and output returned.
//!
//! The manifests pull with `imagePullPolicy: IfNotPresent`, so images stored under exactly
//! their names are used and no registry is asked. Every `echo-basic` tag the suite names is the
//! one binary built from the pinned conformance module's own `echo-basic/` (the tags are older
//! builds of the same program: the HTTP, TLS, gRPC, TCP and UDP echo modes it selects by
//! environment); `coredns` is built from its Go module at the tag the base manifests name.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::images::{self, ImageSpec};
use crate::node::Node;
use crate::process::Process;
use crate::{TestbedError, tools};

/// The `echo-basic` images the suite's base and test manifests name (the mesh manifests'
/// `echo-advanced` is not needed by a Gateway profile).
pub const ECHO_BASIC: [&str; 3] = [
    "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
    "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2",
    "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3",
];
/// The DNS server of the base manifests (the UDPRoute tests' backend).
pub const COREDNS: &str = "registry.k8s.io/coredns/coredns:v1.12.2";
/// What the suite's namespaces are labelled with (`--namespace-labels`, as `key=value`): Pod
/// Security `baseline`. The upstream manifests run as root (CoreDNS binds :53 with
/// `NET_BIND_SERVICE`) and without the `restricted` profile's security context, which a node
/// whose API server enforces `restricted` by default (the test bed's) refuses; `baseline`
/// admits them.
pub const NAMESPACE_LABELS: [(&str, &str); 3] = [
    ("pod-security.kubernetes.io/enforce", "baseline"),
    ("pod-security.kubernetes.io/audit", "baseline"),
    ("pod-security.kubernetes.io/warn", "baseline"),
];
/// The namespaces of the suite's base manifests.
pub const BASE_NAMESPACES: [&str; 3] = [
    "gateway-conformance-infra",
    "gateway-conformance-app-backend",
    "gateway-conformance-web-backend",
];

/// Where the set-up script left the suite: `$TUNNEL_CACHE/gateway-api/conformance`.
pub fn dir() -> PathBuf {
    tools::cache_dir().join("gateway-api/conformance")
}

/// A binary of [`dir`] (`conformance.test`, `echo-basic`, `coredns`), checked to exist.
pub fn binary(name: &str) -> Result<PathBuf, TestbedError> {
    let path = dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::MissingTool {
            tool: format!("the Gateway API conformance suite's {name}"),
            path,
        })
    }
}

/// The images the suite needs, as the upstream ones are made: `/echo-basic` as user `nonroot`
/// (65532), and `/coredns` (as root: the upstream image is `nonroot` with a file capability to
/// bind :53, which the image writer's tar layers do not carry; the pod adds `NET_BIND_SERVICE`
/// and drops the rest, so root in it binds :53 with that one capability).
pub fn image_specs() -> Result<Vec<ImageSpec>, TestbedError> {
    let echo = binary("echo-basic")?;
    let coredns = binary("coredns")?;
    let mut specs: Vec<ImageSpec> = ECHO_BASIC
        .iter()
        .map(|name| ImageSpec {
            name: (*name).into(),
            files: vec![(echo.clone(), "/echo-basic".into())],
            user: "65532:65532".into(),
            entrypoint: vec!["/echo-basic".into()],
            ..ImageSpec::default()
        })
        .collect();
    specs.push(ImageSpec {
        name: COREDNS.into(),
        files: vec![(coredns, "/coredns".into())],
        entrypoint: vec!["/coredns".into()],
        ..ImageSpec::default()
    });
    Ok(specs)
}

/// Writes the suite's images ([`image_specs`]) into the test bed's images directory and imports
/// them into `node`'s containerd; returns their names.
pub fn load_images(node: &Node) -> Result<Vec<String>, TestbedError> {
    let specs = image_specs()?;
    for archive in images::write_all(&specs)? {
        node.import(&archive)?;
    }
    Ok(specs.into_iter().map(|s| s.name).collect())
}

/// [`NAMESPACE_LABELS`] as the suite's flag takes them (`k=v,k=v`).
fn namespace_labels() -> String {
    NAMESPACE_LABELS
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The suite's base manifests (`base/manifests.yaml` of the pinned module) as its applier makes
/// them: Gateways of `gateway_class`, Namespaces labelled with [`NAMESPACE_LABELS`]. For
/// checking, before a run, that its backends run on the node.
pub fn base_manifests(gateway_class: &str) -> Result<String, TestbedError> {
    let path = dir().join("src/conformance/base/manifests.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(TestbedError::io(format!("reading {}", path.display())))?;
    let mut out = String::new();
    for doc in text.split("\n---") {
        let doc = doc.replace("{GATEWAY_CLASS_NAME}", gateway_class);
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(&doc).map_err(|e| TestbedError::Command {
                command: format!("parsing {}", path.display()),
                detail: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        if value["kind"] == "Namespace" {
            let labels = &mut value["metadata"]["labels"];
            if !labels.is_mapping() {
                *labels = serde_yaml::Mapping::new().into();
            }
            for (k, v) in NAMESPACE_LABELS {
                labels[k] = v.into();
            }
        }
        let doc = serde_yaml::to_string(&value).map_err(|e| TestbedError::Command {
            command: "writing the base manifests".into(),
            detail: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}

/// How the suite is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The GatewayClass under test (`--gateway-class`).
    pub gateway_class: String,
    /// `--supported-features`.
    pub supported_features: Vec<String>,
    /// `--conformance-profiles`.
    pub profiles: Vec<String>,
    /// `--version` of the report's implementation.
    pub version: String,
    /// `--run-test`: one test instead of the whole suite.
    pub run_test: Option<String>,
    /// Extra flags, passed last (e.g. `--allow-crds-mismatch`, `--skip-tests=...`).
    pub extra: Vec<String>,
    /// The wall-clock cap: past it, the suite is stopped (SIGTERM, then SIGKILL by PID).
    pub cap: Duration,
}

impl Default for Options {
    /// Tunnel's claim (issue 19): the Gateway, TCPRoute, UDPRoute and TLSRoute profiles with
    /// ReferenceGrant.
    fn default() -> Self {
        Self {
            gateway_class: "tunnel".into(),
            supported_features: [
                "Gateway",
                "ReferenceGrant",
                "TCPRoute",
                "UDPRoute",
                "TLSRoute",
            ]
            .map(String::from)
            .to_vec(),
            profiles: ["GATEWAY-TCP", "GATEWAY-UDP", "GATEWAY-TLS"]
                .map(String::from)
                .to_vec(),
            version: env!("CARGO_PKG_VERSION").into(),
            run_test: None,
            extra: Vec::new(),
            cap: Duration::from_secs(60 * 60),
        }
    }
}

impl Options {
    /// The suite's flags (after the `go test` ones) for a report written to `report`.
    pub fn flags(&self, report: &Path) -> Vec<String> {
        let mut flags = vec![
            format!("--gateway-class={}", self.gateway_class),
            format!("--supported-features={}", self.supported_features.join(",")),
            format!("--conformance-profiles={}", self.profiles.join(",")),
            format!("--report-output={}", report.display()),
            format!("--namespace-labels={}", namespace_labels()),
            "--organization=achetronic".into(),
            "--project=tunnel".into(),
            "--url=https://github.com/achetronic/tunnel".into(),
            format!("--version={}", self.version),
            "--contact=https://github.com/achetronic/tunnel/issues".into(),
            "--mode=default".into(),
            "--cleanup-base-resources=true".into(),
        ];
        if let Some(test) = &self.run_test {
            flags.push(format!("--run-test={test}"));
        }
        flags.extend(self.extra.iter().cloned());
        flags
    }
}

/// One profile of a ConformanceReport: its name, its core result (`success`, `partial`,
/// `failure`) and the core tests that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileResult {
    /// e.g. `GATEWAY-TCP`.
    pub name: String,
    /// `core.result`.
    pub core: String,
    /// `core.failedTests`.
    pub failed: Vec<String>,
}

/// The profiles of a ConformanceReport (YAML). Empty when the suite stopped in its Setup
/// (it still writes a report, with `profiles: null`, e.g. when the GatewayClass was never
/// Accepted).
pub fn report_profiles(report: &str) -> Result<Vec<ProfileResult>, TestbedError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(report).map_err(|e| TestbedError::Command {
            command: "parsing the ConformanceReport".into(),
            detail: e.to_string(),
        })?;
    if value["kind"] != "ConformanceReport" {
        return Err(TestbedError::Command {
            command: "parsing the ConformanceReport".into(),
            detail: format!("kind is {:?}, not ConformanceReport", value["kind"]),
        });
    }
    let text = |v: &serde_yaml::Value| v.as_str().unwrap_or_default().to_owned();
    Ok(value["profiles"]
        .as_sequence()
        .map(|profiles| {
            profiles
                .iter()
                .map(|p| ProfileResult {
                    name: text(&p["name"]),
                    core: text(&p["core"]["result"]),
                    failed: p["core"]["failedTests"]
                        .as_sequence()
                        .map(|t| t.iter().map(text).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// What one run of the suite left.
#[derive(Debug)]
pub struct Outcome {
    /// The `ConformanceReport` (YAML), if the suite got far enough to write it.
    pub report: Option<PathBuf>,
    /// The suite's whole output (`go test -v`, stdout and stderr).
    pub output: PathBuf,
    /// Its exit code; `None` when it was stopped at the cap (or by a signal).
    pub exit_code: Option<i32>,
    /// Whether it was stopped at [`Options::cap`].
    pub capped: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs the suite's test binary (`-test.run '^TestConformance$' -test.v`) against the cluster of
/// `kubeconfig`, from this host, writing its output and report into `out` (created). Past
/// `options.cap` it is stopped by PID, its output kept.
pub fn run(kubeconfig: &Path, out: &Path, options: &Options) -> Result<Outcome, TestbedError> {
    std::fs::create_dir_all(out)
        .map_err(TestbedError::io(format!("creating {}", out.display())))?;
    let report = out.join("conformance-report.yaml");
    let _ = std::fs::remove_file(&report);
    let output = out.join("conformance.log");
    let mut command = Command::new(binary("conformance.test")?);
    command
        .current_dir(out)
        .env("KUBECONFIG", kubeconfig)
        .args([
            "-test.run",
            "^TestConformance$",
            "-test.v",
            // The cap is ours; Go's own (10 min by default) would end a full run early.
            &format!("-test.timeout={}s", options.cap.as_secs() + 60),
        ])
        .args(options.flags(&report));
    let started = Instant::now();
    let mut suite = Process::spawn("gateway-conformance", &mut command, Some(&output))?;
    let (exit_code, capped) = match suite.wait_exit(options.cap) {
        Ok(code) => (code, false),
        Err(TestbedError::Timeout { .. }) => {
            suite.stop(Duration::from_secs(10));
            (None, true)
        }
        Err(e) => return Err(e),
    };
    Ok(Outcome {
        report: report.is_file().then_some(report),
        output,
        exit_code,
        capped,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_of_a_failed_setup_has_no_profiles_and_a_run_one_has_them() {
        // What v1.6.3 wrote when the GatewayClass was never Accepted (2026-12-06).
        let setup_failed = "apiVersion: gateway.networking.k8s.io/v1\nkind: ConformanceReport\nmode: default\nprofiles: null\n";
        assert_eq!(report_profiles(setup_failed).unwrap(), []);
        let ran = "apiVersion: gateway.networking.k8s.io/v1\nkind: ConformanceReport\nprofiles:\n- name: GATEWAY-TCP\n  core:\n    result: failure\n    statistics: {Failed: 1, Passed: 2, Skipped: 0}\n    failedTests: [TCPRouteWeightedRouting]\n- name: GATEWAY-UDP\n  core: {result: success, statistics: {Failed: 0, Passed: 3, Skipped: 0}}\n";
        assert_eq!(
            report_profiles(ran).unwrap(),
            [
                ProfileResult {
                    name: "GATEWAY-TCP".into(),
                    core: "failure".into(),
                    failed: vec!["TCPRouteWeightedRouting".into()],
                },
                ProfileResult {
                    name: "GATEWAY-UDP".into(),
                    core: "success".into(),
                    failed: vec![],
                },
            ]
        );
        assert!(report_profiles("kind: Pod\n").is_err());
    }
}
