//! The UDP socket's batching over loopback: GSO batches arrive as the datagrams that were
//! queued, in order, whether the receiver uses GRO (one super-datagram plus its segment
//! size) or not; a change of destination or size flushes; the plain path does the same.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use uplink::udp::Udp;

fn datagrams(n: usize, size: usize, tag: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = if i + 1 == n { size / 3 } else { size };
            let mut d = vec![tag; len];
            d[0] = u8::try_from(i).unwrap();
            d
        })
        .collect()
}

fn plain_receiver() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

/// Receives with `udp` until `want` datagrams arrived (cutting GRO super-datagrams); also
/// how many receive calls that took.
fn recv_all(udp: &mut Udp, want: usize) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut calls = 0;
    let mut buf = vec![0u8; uplink::udp::RECV_BUFFER];
    let deadline = Instant::now() + Duration::from_secs(3);
    while out.len() < want && Instant::now() < deadline {
        match udp.recv(&mut buf) {
            Ok((n, _, segment)) => {
                calls += 1;
                out.extend(buf[..n].chunks(segment).map(<[u8]>::to_vec));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    (out, calls)
}

#[test]
fn gso_batches_arrive_in_order_at_a_plain_receiver() {
    for offloads in [true, false] {
        let mut tx = Udp::bind(0, offloads).unwrap();
        assert_eq!(tx.gso(), offloads, "loopback accepts UDP_SEGMENT");
        let (a, a_addr) = plain_receiver();
        let (b, b_addr) = plain_receiver();
        let first = datagrams(40, 1452, 1);
        let second = datagrams(5, 600, 2);
        let third = datagrams(3, 1452, 3);
        for d in &first {
            tx.send(a_addr, d);
        }
        for d in &second {
            tx.send(b_addr, d); // a new destination flushes the first batch
        }
        for d in &third {
            tx.send(a_addr, d);
        }
        tx.flush();
        assert_eq!(tx.send_errors, 0);
        let mut buf = [0u8; 2048];
        for d in first.iter().chain(&third) {
            let n = a.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &d[..]);
        }
        for d in &second {
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &d[..]);
        }
    }
}

#[test]
fn gro_receiver_gets_super_datagrams_and_their_segment_size() {
    let mut rx = Udp::bind(0, true).unwrap();
    assert!(rx.gro());
    let to: SocketAddr = format!("127.0.0.1:{}", rx.port()).parse().unwrap();
    let mut tx = Udp::bind(0, true).unwrap();
    // 70 datagrams: more than one GSO send (64 segments at most), a short one in the middle
    // (it ends a batch), and a short last one.
    let mut sent = datagrams(30, 1452, 7);
    sent.extend(datagrams(40, 1452, 8));
    for d in &sent {
        tx.send(to, d);
    }
    tx.flush();
    let (got, calls) = recv_all(&mut rx, sent.len());
    assert_eq!(got, sent);
    assert!(
        calls < sent.len() / 4,
        "GRO coalesced: {calls} receives for {} datagrams",
        sent.len()
    );
}

#[test]
fn plain_socket_receives_one_datagram_per_call() {
    let mut rx = Udp::bind(0, false).unwrap();
    assert!(!rx.gro() && !rx.gso());
    let to: SocketAddr = format!("127.0.0.1:{}", rx.port()).parse().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = datagrams(10, 1000, 9);
    for d in &sent {
        s.send_to(d, to).unwrap();
    }
    assert_eq!(recv_all(&mut rx, sent.len()), (sent, 10));
}
