//! `tunnel render -f ...`, run as the real binary over the README's examples plus the Services
//! and Secrets they point at: every file is printed, private keys are redacted unless asked
//! for, and each binding's outcome is listed.

use std::path::Path;
use std::process::Command;

const EXTRA: &str = r"
apiVersion: v1
kind: Service
metadata: {name: my-web, namespace: default}
spec: {clusterIP: 10.96.0.20, ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: internal-ingress, namespace: networking}
spec: {clusterIP: None, ports: [{port: 443}]}
---
apiVersion: v1
kind: Secret
metadata: {name: web-tls, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    -----BEGIN CERTIFICATE-----
    ZmFrZQ==
    -----END CERTIFICATE-----
  tls.key: |
    -----BEGIN PRIVATE KEY-----
    c2VjcmV0LWtleS1ieXRlcw==
    -----END PRIVATE KEY-----
";

fn render(args: &[&str]) -> (bool, String, String) {
    render_with_stdin(args, "")
}

fn render_with_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .arg("render")
        .args(args)
        .current_dir(root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn renders_the_readme_examples_with_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.yaml");
    std::fs::write(&extra, EXTRA).unwrap();
    let extra = extra.to_str().unwrap();
    let args = [
        "-f",
        "tests/fixtures/readme/example1.yaml",
        "-f",
        "tests/fixtures/readme/example3.yaml",
        "-f",
        extra,
    ];
    let (ok, out, err) = render(&args);
    assert!(ok, "{err}");
    for want in [
        "# --- VPS /etc/envoy/envoy.yaml",
        "# --- VPS /etc/envoy/lds.yaml",
        "# --- VPS /etc/envoy/cds.yaml",
        "# --- VPS /etc/envoy/tls/default_web-tls.sds.yaml",
        "# --- VPS /etc/tunnel/relay.json",
        "uplink.json",
        "# WireGuard keys: placeholders",
        "default/public-web \"http\" TCP/80: planned",
        "default/public-tls \"https-offload\" TCP/9443: planned",
        "default/public-tls \"sni-passthrough\" TCP/8443: missing target (ServiceHeadless)",
        "default/public-tls \"grpc-mtls\" TCP/9444: missing target (ServiceNotFound)",
        "# 2/4 bindings planned",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains("c2VjcmV0LWtleS1ieXRlcw=="),
        "a private key was printed"
    );
    assert!(out.contains("<private key redacted; --show-secrets prints it>"));
    assert!(out.contains("\"privateKey\": \"<private key redacted; --show-secrets prints it>\""));
    assert!(out.contains("ZmFrZQ=="), "the certificate itself is shown");

    let mut with = args.to_vec();
    with.push("--show-secrets");
    let (ok, out, _) = render(&with);
    assert!(ok);
    assert!(out.contains("c2VjcmV0LWtleS1ieXRlcw=="));
}

#[test]
fn a_later_object_replaces_an_earlier_one() {
    // Examples 1 and 4 both define default/edge-node: one EdgeNode, Example 4's (3 replicas).
    let (ok, out, err) = render(&[
        "-f",
        "tests/fixtures/readme/example1.yaml",
        "-f",
        "tests/fixtures/readme/example4.yaml",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out.matches("# EdgeNode default/edge-node").count(),
        1,
        "{out}"
    );
    assert!(out.contains("\"10.200.0.4/32\""), "{out}");
}

#[test]
fn refuses_input_without_an_edge_node() {
    let (ok, _, err) = render(&["-f", "tests/fixtures/readme/example3.yaml"]);
    assert!(!ok);
    assert!(err.contains("no EdgeNode in the input files"), "{err}");
}

#[test]
fn real_named_key_secrets_from_standard_input_give_the_real_keys() {
    use std::fmt::Write as _;
    use tunnel_contract::PrivateKey;
    // The names the operator gives the key Secrets and the ConfigMap of default/edge-node.
    let names = tunnel::workload::UplinkNames::for_node("default", "edge-node");
    let relay = PrivateKey::from_bytes([7; 32]);
    let uplinks: Vec<PrivateKey> = (0..4u8)
        .map(|i| PrivateKey::from_bytes([40 + i; 32]))
        .collect();
    let mut secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: tunnel}}\nstringData:\n  priv: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: tunnel}}\nstringData:\n",
        names.vps_key_secret,
        relay.to_base64(),
        names.keys_secret
    );
    for (o, k) in uplinks.iter().enumerate() {
        let _ = writeln!(secrets, "  priv-{o}: {}", k.to_base64());
    }
    let (ok, out, err) = render_with_stdin(
        &["-f", "tests/fixtures/readme/example1.yaml", "-f", "-"],
        &secrets,
    );
    assert!(ok, "{err}");
    assert!(!out.contains("placeholders"), "{out}");
    assert!(out.contains(&relay.public_key().to_string()), "{out}");
    assert!(out.contains(&uplinks[0].public_key().to_string()), "{out}");
    assert!(
        out.contains(&format!("ConfigMap tunnel/{} key", names.config_map)),
        "{out}"
    );
    assert!(
        !out.contains(&relay.to_base64()),
        "the relay's private key was printed"
    );

    // Without them: placeholders, and the output names the Secrets to give.
    let (ok, out, _) = render(&["-f", "tests/fixtures/readme/example1.yaml"]);
    assert!(ok);
    assert!(out.contains("placeholders"), "{out}");
    assert!(
        out.contains(&format!("tunnel/{}", names.vps_key_secret)),
        "{out}"
    );
}

/// A policy value admission would refuse, reaching the planner through local files: only its
/// binding is refused (`InvalidSpec`, naming `policy.sourceRanges[1]`); the other binding of
/// the same PortBinding is planned with its policy.
#[test]
fn an_unparsable_source_range_refuses_only_its_binding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        r"
apiVersion: tunnel.achetronic.com/v1alpha1
kind: EdgeNode
metadata: {name: edge-node, namespace: default}
spec: {address: 203.0.113.10, ssh: {secretRef: {name: s}}}
---
apiVersion: tunnel.achetronic.com/v1alpha1
kind: PortBinding
metadata: {name: guarded, namespace: default}
spec:
  edgeNodeRef: {name: edge-node}
  bindings:
  - {name: bad, protocol: TCP, listenPort: 2222, policy: {sourceRanges: [10.0.0.0/8, 10.0.0.300/24]}, target: {address: 10.1.0.9, port: 22}}
  - {name: good, protocol: TCP, listenPort: 2223, policy: {sourceRanges: [198.51.100.0/24], maxConnections: 3}, target: {address: 10.1.0.9, port: 22}}
",
    )
    .unwrap();
    let (ok, out, err) = render(&["-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    for want in [
        "default/guarded \"bad\" TCP/2222: invalid (InvalidSpec)",
        "policy.sourceRanges[1]: \"10.0.0.300/24\" is not an IPv4 or IPv6 CIDR",
        "default/guarded \"good\" TCP/2223: planned",
        "address_prefix: 198.51.100.0",
        "tcp_2223_default_guarded_good_refused",
        "envoy.filters.network.connection_limit",
        "# 1/2 bindings planned",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains("port_value: 2222"),
        "the refused binding is not rendered"
    );
}
