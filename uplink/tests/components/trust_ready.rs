//! Trust boundary 4 (issue 12): `/ready` never waits on I/O. The uplink resolves the relay's
//! name on every reconcile; here cluster DNS (a tiny responder in the cluster namespace, the
//! pod's only nameserver) answers at first and then stalls. While a lookup hangs, `/ready`
//! over the tunnel keeps answering 200 every time, and `/healthz` (liveness) stays 200 too.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Lab, RELAY_PORT, http_get};
use testbed::netns::Netns;
use testbed::wait::wait_until;

const RELAY_NAME: &str = "relay.tunnel.test";

/// `/etc/netns/<ns>/resolv.conf` (what `ip netns exec` mounts over `/etc/resolv.conf`),
/// removed on drop.
struct Resolv(PathBuf);

impl Resolv {
    fn new(ns: &Netns, nameserver: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:5 attempts:3\n"),
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for Resolv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// A DNS responder in `ns` on `addr`: `A` for [`RELAY_NAME`] is `answer`, other types are
/// empty; while `stall` is set it counts queries and answers none.
fn dns(ns: &Netns, addr: &str, answer: [u8; 4]) -> (Arc<AtomicBool>, Arc<AtomicUsize>) {
    let addr: SocketAddr = addr.parse().unwrap();
    let socket = ns.enter(move || UdpSocket::bind(addr)).unwrap().unwrap();
    let stall = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicUsize::new(0));
    let (s, q) = (Arc::clone(&stall), Arc::clone(&queries));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            q.fetch_add(1, Ordering::SeqCst);
            if s.load(Ordering::SeqCst) || n < 12 {
                continue;
            }
            // The question: labels up to the root, then type and class.
            let mut i = 12;
            while i < n && buf[i] != 0 {
                i += usize::from(buf[i]) + 1;
            }
            let end = i + 5;
            if end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([buf[i + 1], buf[i + 2]]);
            let is_a = qtype == 1;
            let mut reply = Vec::with_capacity(end + 16);
            reply.extend_from_slice(&buf[..2]);
            reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
            reply.extend_from_slice(&buf[12..end]);
            if is_a {
                reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
                reply.extend_from_slice(&answer);
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    (stall, queries)
}

#[test]
fn ready_stays_200_while_cluster_dns_stalls() {
    let lab = Lab::new(1);
    let _resolv = Resolv::new(&lab.pods[0], "10.244.0.1");
    let (stall, queries) = dns(&lab.cluster, "10.244.0.1:53", [198, 51, 100, 1]);

    let _relay = lab.start_relay(&lab.relay_doc());
    let mut doc = lab.uplink_doc(vec![]);
    doc.relay.endpoint = format!("{RELAY_NAME}:{RELAY_PORT}");
    lab.publish_uplink(&doc);
    let _uplink = lab.start_uplink_with(0, "RECONCILE_SECONDS=1");
    lab.wait_uplinks_ready(1);
    assert!(
        queries.load(Ordering::SeqCst) > 0,
        "the relay was resolved by DNS"
    );

    // DNS stalls; wait until a reconcile's lookup hangs on it.
    stall.store(true, Ordering::SeqCst);
    let seen = queries.load(Ordering::SeqCst);
    wait_until("a stalled lookup", Duration::from_secs(45), || {
        queries.load(Ordering::SeqCst) > seen
    });
    // While it hangs (the stall lasts until the test lifts it), every probe is answered, and
    // 200: a count of probes, however long each takes on this machine.
    for _ in 0..20 {
        let (code, body) = lab.ready(0);
        assert_eq!(code, 200, "/ready during a DNS stall: {body}");
        let (code, body) = http_get(&lab.vps, "10.200.0.2:40500", "/healthz");
        assert_eq!(code, 200, "/healthz during a DNS stall: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    stall.store(false, Ordering::SeqCst);
    assert_eq!(lab.ready(0).0, 200);
}
