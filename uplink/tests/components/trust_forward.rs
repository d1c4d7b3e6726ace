//! Trust boundary 1 (issue 12): from the VPS, through an uplink, only the configured
//! forwards and `/ready` answer. A hostile VPS that routes cluster addresses into the tunnel
//! (here: the relay's peer allows 10.96.0.0/16 and the VPS routes it over `wg-relay`) reaches
//! nothing: not a listening cluster address that is not forwarded, not a forwarded port
//! addressed to anything but the replica's own tunnel address, not another port of the pod.
//! Forwards, the admin bridge (from the cluster) and established sessions across a document
//! change still work.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Conn, Lab, forward, tcp_echo, udp_request};
use testbed::netns::Netns;
use testbed::wait::wait_until;
use tunnel_contract::document::Protocol;

/// A TCP listener in `ns` that counts the connections it accepts (and answers `hit`).
fn counting_tcp(ns: &Netns, addr: &str) -> Arc<AtomicUsize> {
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = ns.enter(move || TcpListener::bind(addr)).unwrap().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"hit\n");
        }
    });
    hits
}

/// A UDP socket in `ns` that counts the datagrams it receives (and answers them).
fn counting_udp(ns: &Netns, addr: &str) -> Arc<AtomicUsize> {
    let addr: SocketAddr = addr.parse().unwrap();
    let socket = ns.enter(move || UdpSocket::bind(addr)).unwrap().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    hits
}

/// Tries a TCP connection from `ns` and reads what the server says first.
fn try_tcp(ns: &Netns, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.enter(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    })
    .unwrap()
}

#[test]
fn the_vps_reaches_only_forwards_and_ready() {
    let lab = Lab::new(1);
    tcp_echo(&lab.cluster, "10.96.0.10:9000");
    let unforwarded = counting_tcp(&lab.cluster, "10.96.0.10:9001");
    let unforwarded_udp = counting_udp(&lab.cluster, "10.96.0.10:9054");
    let forwarded_listen_port = counting_tcp(&lab.cluster, "10.96.0.10:8080");
    let pod_port = counting_tcp(&lab.pods[0], "0.0.0.0:9100");

    // The hostile relay: replica 0 may also "own" the Service range, and the VPS routes it
    // into the tunnel, so packets to 10.96.0.10 from the VPS reach the uplink.
    let mut relay_doc = lab.relay_doc();
    relay_doc.peers[0]
        .allowed_ips
        .push("10.96.0.0/16".parse().unwrap());
    let _relay = lab.start_relay(&relay_doc);
    let mut forwards = vec![
        forward(Protocol::Tcp, 8080, 9000),
        forward(Protocol::Udp, 5353, 9053),
    ];
    crate::support::udp_echo(&lab.cluster, "10.96.0.10:9053");
    lab.publish_uplink(&lab.uplink_doc(forwards.clone()));
    let _uplink = lab.start_uplink(0);
    lab.wait_uplinks_ready(1);
    lab.vps
        .run(&["ip", "route", "add", "10.96.0.0/16", "dev", "wg-relay"])
        .unwrap();
    // The admin bridge's far end: a stand-in for Envoy's admin on the relay address.
    tcp_echo(&lab.vps, "10.200.0.1:40600");

    // The forwards work, TCP and UDP, addressed to the replica's tunnel address.
    let mut long = Conn::open(&lab.vps, "10.200.0.2:8080").unwrap();
    assert_eq!(long.greeting, "from 10.244.0.2");
    assert_eq!(long.echo("hello").unwrap(), "hello");
    let answer = udp_request(&lab.vps, "10.200.0.2:5353", "dns?").unwrap();
    assert_eq!(answer, "from 10.244.0.2 dns?");
    // /ready answers over the tunnel.
    assert_eq!(lab.ready(0).0, 200);

    // A listening cluster address that is not forwarded: nothing reaches it.
    let refused = try_tcp(&lab.vps, "10.96.0.10:9001");
    assert!(
        refused.is_err(),
        "reached an unforwarded target: {refused:?}"
    );
    assert!(udp_request(&lab.vps, "10.96.0.10:9054", "x").is_err());
    // A forwarded port, but addressed past the uplink: not DNAT'ed, not forwarded.
    let past = try_tcp(&lab.vps, "10.96.0.10:8080");
    assert!(past.is_err(), "reached the target directly: {past:?}");
    // Another port of the pod itself (not /ready): dropped.
    let local = try_tcp(&lab.vps, "10.200.0.2:9100");
    assert!(local.is_err(), "reached a pod port: {local:?}");
    assert_eq!(unforwarded.load(Ordering::SeqCst), 0);
    assert_eq!(unforwarded_udp.load(Ordering::SeqCst), 0);
    assert_eq!(forwarded_listen_port.load(Ordering::SeqCst), 0);
    assert_eq!(pod_port.load(Ordering::SeqCst), 0);

    // The admin bridge still works from the cluster side.
    let bridged = Conn::open(&lab.cluster, "10.244.0.2:40600").unwrap();
    assert_eq!(bridged.greeting, "from 10.200.0.2");

    // A document change: the established session survives, the new forward works, and the
    // filter still holds.
    forwards.push(forward(Protocol::Tcp, 8081, 9000));
    lab.publish_uplink(&lab.uplink_doc(forwards));
    wait_until("8081 forwarded", Duration::from_secs(20), || {
        Conn::open(&lab.vps, "10.200.0.2:8081").is_ok()
    });
    assert_eq!(long.echo("after").unwrap(), "after", "the session survived");
    assert!(try_tcp(&lab.vps, "10.96.0.10:9001").is_err());
    assert_eq!(unforwarded.load(Ordering::SeqCst), 0);
}
