//! What the components group's operator tests share beyond the bed
//! ([`testbed::operator::OperatorBed`]): the user guide's examples as the tests apply them,
//! the logs to show when a wait fails, and TLS servers and clients for SNI and offload.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use testbed::netns::Netns;
use testbed::objects::apply_yaml;
use testbed::operator::{Operator, OperatorBed};
use testbed::uplinks::Uplinks;
use testbed::vps::Vps;
use tunnel::crd::{EdgeNode, PortBinding};

use crate::edge_support::bed::{client_config, server_config};

/// The documents of README example `name` (`tests/fixtures/readme/<name>.yaml`).
pub fn readme_example(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("tests/fixtures/readme/{name}.yaml")).unwrap();
    text.split("\n---\n").map(str::to_owned).collect()
}

/// README Example 1 applied unchanged but for the EdgeNode's address, pointed at `vps`.
pub async fn apply_example1(client: &Client, vps: &Vps) {
    let docs = readme_example("example1");
    let node = docs[0].replace("203.0.113.10", &vps.address().to_string());
    apply_yaml::<EdgeNode>(client, &node).await.unwrap();
    apply_yaml::<PortBinding>(client, &docs[1]).await.unwrap();
}

/// The operator (`--resync-period 20s`) started on `bed`, README Example 1 applied, and its
/// uplink pods running: how the step-by-step operator tests begin.
pub async fn run_example1(bed: &OperatorBed) -> (Operator, Uplinks) {
    let net = bed.net();
    let operator = bed
        .operator()
        .flags(&["--resync-period", "20s"])
        .start()
        .unwrap();
    apply_example1(&bed.client, &net.vps).await;
    let uplinks = Uplinks::start(&bed.client, "tunnel", "edge-node", &net.pods)
        .await
        .unwrap();
    (operator, uplinks)
}

/// The operator's log and the uplinks' logs, for a failure message.
pub fn logs_of(operator: &Operator, uplinks: &Uplinks) -> String {
    format!(
        "operator log:\n{}\nuplinks:\n{}",
        operator.log_text(),
        uplinks.logs()
    )
}

/// A UDP echo on `addr` in `ns`: each datagram comes back after `prefix`.
pub fn serve_udp_echo(ns: &Netns, addr: &'static str, prefix: &'static str) {
    let socket = ns.enter(move || UdpSocket::bind(addr).unwrap()).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let mut answer = prefix.as_bytes().to_vec();
            answer.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&answer, from);
        }
    });
}

/// One datagram to `addr` and its answer (1 s), if any.
pub fn udp_exchange(addr: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    sock.send_to(payload, addr).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// A TLS server answering `reply` after the handshake.
pub fn serve_tls(ns: &Netns, addr: &'static str, cert: &str, key: &str, reply: &'static [u8]) {
    let config = Arc::new(server_config(cert, key, None));
    let listener = ns
        .enter(move || std::net::TcpListener::bind(addr).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let _ = tls.write_all(reply);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.conn.complete_io(&mut tls.sock);
            });
        }
    });
}

/// A TLS exchange from the internet: the certificate the server presented, and its answer.
pub fn tls_exchange(
    addr: (Ipv4Addr, u16),
    sni: &str,
    ca: &str,
    client: Option<(&str, &str)>,
) -> std::io::Result<(Vec<u8>, String)> {
    testbed::tls::exchange_with(
        addr.into(),
        sni,
        Arc::new(client_config(ca, client)),
        b"hello\n",
    )
}

/// A `kubernetes.io/tls` Secret `default/<name>` (with `ca.crt` when given), applied as
/// cert-manager would ([`testbed::objects::tls_secret`]).
pub async fn tls_secret(
    client: &kube::Client,
    name: &str,
    cert: &str,
    key: &str,
    ca: Option<&str>,
) {
    testbed::objects::tls_secret(client, "default", name, cert, key, ca)
        .await
        .unwrap();
}
