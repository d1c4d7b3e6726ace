//! What the tests on the real node share (`node_e2e`, `node_upgrade`, and the Gateway API
//! conformance runner `tests/gateway_conformance/`, which includes this file): kubectl with the
//! node's kubeconfig, waiting for a condition, and a client on the "internet" asking the VPS
//! over HTTP and UDP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testbed::netns::Netns;
use testbed::node::Node;

pub const LONG: Duration = Duration::from_secs(240);
/// The operator's namespace, as the README installs it (the uplinks live in `tunnel`, which
/// the chart creates and labels for Pod Security).
pub const OPERATOR_NS: &str = "tunnel-system";

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("tests/fixtures/readme/{name}.yaml")).unwrap()
}

/// `kubectl args...`, stdin `input`; panics with stderr on failure.
pub fn kubectl(node: &Node, args: &[&str], input: Option<&str>) -> String {
    try_kubectl(node, args, input).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// The `Ready` condition's status of `kind/name` (in `namespace`, when given), if it can be read.
pub fn ready_status(
    node: &Node,
    namespace: Option<&str>,
    kind: &str,
    name: &str,
) -> Option<String> {
    let mut args = Vec::new();
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    args.extend([
        "get",
        kind,
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    try_kubectl(node, &args, None).ok()
}

pub fn try_kubectl(node: &Node, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut cmd = node.kubectl().unwrap();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Polls `f` every 500 ms until it returns `Some`, or panics naming `what` and `context()`.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn http_get(ns: &Netns, addr: SocketAddr) -> Option<String> {
    http_attempt(ns, addr)
        .ok()
        .filter(|t| t.starts_with("HTTP/1.0 200"))
}

/// One GET; the answer, or what went wrong.
pub fn http_attempt(ns: &Netns, addr: SocketAddr) -> Result<String, String> {
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes)
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    })
    .map_err(|e| e.to_string())?
}

/// A TLS ClientHello naming `sni` sent raw to `addr` (the write side closed after it), and
/// whatever comes back: through a passthrough listener, the plain echo pod the SNI name routes
/// to answers `hello from <pod>` (it takes any bytes as a request).
pub fn sni_ask(ns: &Netns, addr: SocketAddr, sni: &'static str) -> Option<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No trust anchors: only the ClientHello is sent.
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let name = rustls::pki_types::ServerName::try_from(sni).ok()?;
    let mut conn = rustls::ClientConnection::new(config, name).ok()?;
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).ok()?;
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(&hello).ok()?;
        s.shutdown(std::net::Shutdown::Write).ok()?;
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).ok()?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (!text.is_empty()).then_some(text)
    })
    .ok()
    .flatten()
}

pub fn udp_ask(ns: &Netns, addr: SocketAddr, payload: &'static [u8]) -> Option<String> {
    ns.enter(move || {
        let any = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let s = UdpSocket::bind(any).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.send_to(payload, addr).ok()?;
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .ok()
    .flatten()
}

/// The pods, the operator's and the uplinks' logs, and the Events: a failure's context.
pub fn operator_logs(node: &Node, operator_ns: &str) -> String {
    format!(
        "operator pods:\n{}\nlogs:\n{}\nuplink pods:\n{}\nevents:\n{}",
        try_kubectl(node, &["get", "pods", "-A", "-o", "wide"], None).unwrap_or_else(|e| e),
        try_kubectl(
            node,
            &["-n", operator_ns, "logs", "deploy/tunnel", "--tail=60"],
            None
        )
        .unwrap_or_else(|e| e),
        try_kubectl(
            node,
            &[
                "-n",
                "tunnel",
                "logs",
                "-l",
                "app.kubernetes.io/name=uplink",
                "--tail=20",
                "--all-containers"
            ],
            None
        )
        .unwrap_or_else(|e| e),
        try_kubectl(
            node,
            &["get", "events", "-A", "--sort-by=.lastTimestamp"],
            None
        )
        .unwrap_or_else(|e| e),
    )
}

/// Waits until the operator's Deployment has rolled out (`kubectl rollout status`).
pub fn operator_rolled_out(node: &Node) {
    kubectl(
        node,
        &[
            "-n",
            OPERATOR_NS,
            "rollout",
            "status",
            "deploy/tunnel",
            "--timeout=180s",
        ],
        None,
    );
}

/// `kubectl get pods` of the operator (label `app.kubernetes.io/name=tunnel` in
/// [`OPERATOR_NS`]), printed with `jsonpath`.
pub fn operator_pods(node: &Node, jsonpath: &str) -> Result<String, String> {
    try_kubectl(
        node,
        &[
            "-n",
            OPERATOR_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=tunnel",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ],
        None,
    )
}

/// `helm install tunnel charts/tunnel -n tunnel-system --create-namespace` (the README's
/// command, from the repository's root), then waits for the operator to roll out.
pub fn helm_install_chart(node: &Node) {
    let helm = node
        .helm()
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "install",
            "tunnel",
            "charts/tunnel",
            "-n",
            OPERATOR_NS,
            "--create-namespace",
        ])
        .output()
        .unwrap();
    assert!(
        helm.status.success(),
        "helm install: {}\n{}",
        String::from_utf8_lossy(&helm.stderr),
        operator_logs(node, OPERATOR_NS)
    );
    operator_rolled_out(node);
}
