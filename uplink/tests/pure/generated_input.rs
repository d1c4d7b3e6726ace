//! Generated input at the agents' doors (issue 12, "hostile input on every port"):
//! - the packet path: arbitrary datagrams from the network (random bytes, WireGuard message
//!   types with random bodies, real initiations with flipped bits) and arbitrary packets from
//!   the TUN device never panic, never answer with more bytes than they brought (no
//!   amplification), are all accounted for, and leave the core serving: a real peer still
//!   handshakes and carries data afterwards;
//! - the receive path (issue 24, H3): datagrams of any size, empty and maximal included, sent
//!   one by one or as GSO batches, through the real socket ([`Udp::recv`], offloads on and
//!   off) and the device loop's cut ([`uplink::udp::datagrams`]) into the core, come out as
//!   exactly the datagrams sent, and nothing panics; the cut itself holds for any buffer and
//!   segment size;
//! - the TUN write path: whatever decrypted packets a peer sends, the GRO coalescer
//!   ([`uplink::offload::coalesce`]) never panics;
//! - the agent documents: arbitrary text and mutated valid documents never panic, and every
//!   valid document round-trips through its JSON;
//! - the `/ready` HTTP server (`tunnel-probe`, on loopback): any request, well-formed, huge or
//!   random bytes, gets at most a short answer with a known status, and the next prober is
//!   answered 200.
//!
//! Bounded by the number of cases; `PROPTEST_CASES=20000 cargo test -p uplink --test pure
//! generated_input` runs longer.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tunnel_contract::document::{
    Forward, Protocol, RelayDocument, RelayPeer, UplinkDocument, UplinkRelay,
};
use tunnel_contract::key::PrivateKey;
use uplink::tunnel::{MAX_PACKET, PeerConfig, Sink, Tunnel};
use uplink::udp::{RECV_BUFFER, Udp, datagrams};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[derive(Default)]
struct Collect {
    net: Vec<(SocketAddr, Vec<u8>)>,
    tun: Vec<Vec<u8>>,
}

impl Sink for Collect {
    fn to_network(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.net.push((to, datagram.to_vec()));
    }
    fn to_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

const RELAY_EP: &str = "192.0.2.1:51820";
const UPLINK_EP: &str = "198.51.100.7:40000";

/// A relay with one uplink peer (and the relay's public key), and that uplink (endpoint and
/// keepalive: it dials).
fn pair() -> (tunnel_contract::key::PublicKey, Tunnel, Tunnel) {
    let relay_key = PrivateKey::generate().unwrap();
    let uplink_key = PrivateKey::generate().unwrap();
    let mut relay = Tunnel::new(&relay_key);
    relay.set_peers(vec![PeerConfig {
        public_key: uplink_key.public_key(),
        name: Some("uplink-0".into()),
        endpoint: None,
        allowed_ips: vec!["10.200.0.2/32".parse().unwrap()],
        persistent_keepalive: 0,
    }]);
    let mut uplink = Tunnel::new(&uplink_key);
    uplink.set_peers(vec![PeerConfig {
        public_key: relay_key.public_key(),
        name: None,
        endpoint: Some(RELAY_EP.parse().unwrap()),
        allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
        persistent_keepalive: 25,
    }]);
    (relay_key.public_key(), relay, uplink)
}

/// A real initiation from `t` (its first tick dials).
fn initiation(t: &mut Tunnel) -> Vec<u8> {
    let mut out = Collect::default();
    t.tick(&mut out);
    out.net
        .into_iter()
        .find(|(_, d)| d.len() == 148)
        .map(|(_, d)| d)
        .unwrap()
}

/// A minimal IPv4/UDP packet 10.200.0.2 → 10.200.0.1.
fn packet(payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&Ipv4Addr::new(10, 200, 0, 2).octets());
    p[16..20].copy_from_slice(&Ipv4Addr::new(10, 200, 0, 1).octets());
    p[28..].copy_from_slice(payload);
    p
}

/// Delivers datagrams both ways until quiet; returns what reached the relay's TUN.
fn pump(relay: &mut Tunnel, uplink: &mut Tunnel, mut from_uplink: Collect) -> Vec<Vec<u8>> {
    let mut relay_tun = Vec::new();
    for _ in 0..10 {
        let mut to_uplink = Collect::default();
        for (_, d) in std::mem::take(&mut from_uplink.net) {
            relay.handle_network(UPLINK_EP.parse().unwrap(), &d, &mut to_uplink);
        }
        relay_tun.append(&mut to_uplink.tun);
        if to_uplink.net.is_empty() {
            break;
        }
        for (_, d) in to_uplink.net {
            uplink.handle_network(RELAY_EP.parse().unwrap(), &d, &mut from_uplink);
        }
    }
    relay_tun
}

/// One datagram as a hostile network sends it: random bytes, a WireGuard message type with a
/// random body of a message's length, or a stranger's real initiation (right MACs, unknown
/// key) with a few bytes flipped or none.
#[derive(Debug, Clone)]
enum Hostile {
    Bytes(Vec<u8>),
    Typed(u8, usize, Vec<u8>),
    Stranger(Vec<(usize, u8)>),
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Hostile::Bytes),
        (
            1u8..=4,
            prop_oneof![Just(148usize), Just(92), Just(64), 4usize..300],
            proptest::collection::vec(any::<u8>(), 300)
        )
            .prop_map(|(t, len, body)| Hostile::Typed(t, len, body)),
        proptest::collection::vec((0usize..148, 1u8..=255), 0..4).prop_map(Hostile::Stranger),
    ]
}

fn source() -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)))
}

/// A tunnel with a key the relay does not know, dialing it.
fn stranger(relay: &tunnel_contract::key::PublicKey) -> Tunnel {
    let mut t = Tunnel::new(&PrivateKey::generate().unwrap());
    t.set_peers(vec![PeerConfig {
        public_key: *relay,
        name: None,
        endpoint: Some(RELAY_EP.parse().unwrap()),
        allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
        persistent_keepalive: 25,
    }]);
    t
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_packet_path_survives_any_datagram_and_keeps_serving(
        inputs in proptest::collection::vec((hostile(), source()), 1..48),
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1600), 0..16),
    ) {
        let (relay_key, mut relay, mut uplink) = pair();
        let sent = u64::try_from(inputs.len()).unwrap();
        for (h, from) in &inputs {
            let d = match h {
                Hostile::Bytes(b) => b.clone(),
                Hostile::Typed(t, len, body) => {
                    let mut d = body[..*len].to_vec();
                    d[..4].copy_from_slice(&[*t, 0, 0, 0]);
                    d
                }
                Hostile::Stranger(flips) => {
                    let mut d = initiation(&mut stranger(&relay_key));
                    for (at, mask) in flips {
                        d[*at] ^= mask;
                    }
                    d
                }
            };
            let mut out = Collect::default();
            relay.handle_network(*from, &d, &mut out);
            prop_assert!(out.tun.is_empty(), "garbage reached the TUN device");
            let answered: usize = out.net.iter().map(|(_, a)| a.len()).sum();
            prop_assert!(answered <= d.len(), "{} bytes answered to {}", answered, d.len());
            prop_assert!(out.net.iter().all(|(to, _)| to == from));
        }
        let drops = relay.drops();
        prop_assert!(drops.invalid + drops.rate_limited <= sent);
        // Arbitrary packets from the TUN device: nothing bigger than a packet plus
        // WireGuard's overhead ever leaves.
        for p in &packets {
            let mut out = Collect::default();
            relay.handle_tun(p, &mut out);
            prop_assert!(out.net.is_empty(), "the relay knows no endpoint yet");
            uplink.handle_tun(p, &mut out);
            prop_assert!(out.net.iter().all(|(_, d)| d.len() <= MAX_PACKET + 32));
        }
        // Still serving: the real uplink handshakes and its data arrives.
        let hello = packet(b"still serving");
        let mut out = Collect::default();
        uplink.handle_tun(&hello, &mut out);
        let mut got = pump(&mut relay, &mut uplink, out);
        prop_assert!(relay.stats()[0].last_handshake.is_some(), "no handshake after the garbage");
        let mut out = Collect::default();
        uplink.handle_tun(&hello, &mut out);
        got.extend(pump(&mut relay, &mut uplink, out));
        prop_assert!(got.contains(&hello), "no data after the garbage");
    }
}

/// A datagram size as anyone may send: mostly small, often empty, now and then the largest
/// an IPv4 UDP datagram can be (65 507 bytes) or close to it.
fn datagram_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..2048,
        2 => Just(0usize),
        1 => Just(1452usize),
        1 => prop_oneof![Just(65_507usize), 60_000usize..65_507],
    ]
}

/// Receives with `rx` and cuts as the device loop does, feeding every datagram to `core`,
/// until `got` holds `want` datagrams (bounded: 3 s without progress ends it).
fn receive(rx: &mut Udp, core: &mut Tunnel, got: &mut Vec<Vec<u8>>, want: usize) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < want && Instant::now() < deadline {
        match rx.recv(&mut buf) {
            Ok((n, from, segment)) => {
                for d in datagrams(&buf[..n], segment) {
                    let mut out = Collect::default();
                    core.handle_network(from, d, &mut out);
                    assert!(out.tun.is_empty(), "garbage reached the TUN device");
                    got.push(d.to_vec());
                }
                deadline = Instant::now() + Duration::from_secs(3);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("receive: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_receive_path_cuts_datagrams_of_any_size_with_offloads_on_and_off(
        sizes in proptest::collection::vec(datagram_size(), 1..16),
        batched in any::<bool>(),
        fill in any::<u8>(),
    ) {
        let sent: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![fill.wrapping_add(u8::try_from(i).unwrap()); n])
            .collect();
        for offloads in [true, false] {
            let mut rx = Udp::bind(0, offloads).unwrap();
            prop_assert_eq!(rx.gro(), offloads, "loopback accepts UDP_GRO");
            let to: SocketAddr = format!("127.0.0.1:{}", rx.port()).parse().unwrap();
            let (_, mut relay, _) = pair();
            let mut got = Vec::new();
            if batched {
                // GSO batches, which a GRO receiver gets as super-datagrams.
                let mut tx = Udp::bind(0, true).unwrap();
                for (i, d) in sent.iter().enumerate() {
                    tx.send(to, d);
                    if d.len() > 9000 {
                        tx.flush();
                        receive(&mut rx, &mut relay, &mut got, i + 1);
                    }
                }
                tx.flush();
                prop_assert_eq!(tx.send_errors, 0);
            } else {
                let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
                for (i, d) in sent.iter().enumerate() {
                    tx.send_to(d, to).unwrap();
                    receive(&mut rx, &mut relay, &mut got, i + 1);
                }
            }
            receive(&mut rx, &mut relay, &mut got, sent.len());
            prop_assert_eq!(&got, &sent, "offloads {}", offloads);
            // Every one was garbage to the core, and accounted for.
            let drops = relay.drops();
            prop_assert!(drops.invalid + drops.rate_limited <= sent.len() as u64);
            prop_assert!(drops.invalid >= sizes.iter().filter(|&&n| n == 0).count() as u64);
        }
    }

    #[test]
    fn the_cut_never_panics_and_gives_back_the_buffer(
        buf in proptest::collection::vec(any::<u8>(), 0..300),
        segment in prop_oneof![Just(0usize), 1usize..400, Just(usize::MAX)],
    ) {
        let pieces: Vec<&[u8]> = datagrams(&buf, segment).collect();
        prop_assert_eq!(pieces.concat(), buf.clone());
        if buf.is_empty() {
            // An empty datagram is one datagram, empty.
            prop_assert_eq!(pieces, vec![&[] as &[u8]]);
        } else {
            let size = if segment == 0 { buf.len() } else { segment.min(buf.len()) };
            prop_assert_eq!(pieces.len(), buf.len().div_ceil(size));
            let (last, full) = pieces.split_last().unwrap();
            prop_assert!(full.iter().all(|p| p.len() == size));
            prop_assert!(!last.is_empty() && last.len() <= size);
        }
    }

    #[test]
    fn the_tun_coalescer_survives_any_decrypted_packets(
        packets in proptest::collection::vec(tun_packet(), 1..24),
        udp in any::<bool>(),
    ) {
        let mut bufs: Vec<Vec<u8>> = packets
            .iter()
            .map(|p| {
                // Buffers as the device's: room for the virtio header twice and a GRO packet.
                let mut b = Vec::with_capacity(2 * uplink::offload::OFFSET + MAX_PACKET);
                b.resize(uplink::offload::OFFSET, 0);
                b.extend_from_slice(p);
                b
            })
            .collect();
        let mut to_write = Vec::new();
        if uplink::offload::coalesce(&mut bufs, udp, &mut to_write).is_ok() {
            prop_assert!(to_write.iter().all(|&i| i < bufs.len()));
        }
    }
}

/// A packet as a peer may put in the tunnel: random bytes, or an IPv4 TCP or UDP packet of
/// one flow (so the coalescer tries to merge them) with random header lengths, length
/// fields, flags, sequence numbers and payload sizes.
fn tun_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120),
        (
            any::<bool>(),
            0u8..16,
            prop_oneof![Just(None), any::<u16>().prop_map(Some)],
            0u8..16,
            any::<u8>(),
            any::<u32>(),
            prop_oneof![0usize..64, Just(1380usize), 1usize..1500],
        )
            .prop_map(|(tcp, ihl, total, offset, flags, seq, payload)| {
                let ip = usize::from(ihl.max(5)) * 4;
                let l4 = if tcp {
                    usize::from(offset.max(5)) * 4
                } else {
                    8
                };
                let len = ip + l4 + payload;
                let mut p = vec![0u8; len];
                p[0] = 0x40 | ihl;
                let total = total.unwrap_or(u16::try_from(len).unwrap_or(u16::MAX));
                p[2..4].copy_from_slice(&total.to_be_bytes());
                p[8] = 64;
                p[9] = if tcp { 6 } else { 17 };
                p[12..16].copy_from_slice(&[10, 200, 0, 2]);
                p[16..20].copy_from_slice(&[10, 96, 0, 10]);
                p[ip..ip + 4].copy_from_slice(&[0x9c, 0x40, 0x23, 0x28]);
                if tcp {
                    p[ip + 4..ip + 8].copy_from_slice(&seq.to_be_bytes());
                    p[ip + 12] = offset << 4;
                    p[ip + 13] = flags;
                } else {
                    let udp_len = u16::try_from(l4 + payload).unwrap_or(u16::MAX);
                    p[ip + 4..ip + 6].copy_from_slice(&udp_len.to_be_bytes());
                }
                p
            }),
    ]
}

fn relay_doc() -> impl Strategy<Value = RelayDocument> {
    (
        1u16..=65535,
        1280u16..=9000,
        proptest::collection::vec(proptest::option::of("[a-z0-9-]{1,20}"), 0..6),
    )
        .prop_map(|(listen_port, mtu, names)| RelayDocument {
            version: 1,
            private_key: PrivateKey::generate().unwrap(),
            listen_port,
            address: "10.200.0.1/24".parse().unwrap(),
            mtu,
            peers: names
                .into_iter()
                .enumerate()
                .map(|(i, name)| RelayPeer {
                    name,
                    public_key: PrivateKey::generate().unwrap().public_key(),
                    allowed_ips: vec![format!("10.200.0.{}/32", i + 2).parse().unwrap()],
                })
                .collect(),
        })
}

fn uplink_doc() -> impl Strategy<Value = UplinkDocument> {
    (
        1280u16..=9000,
        0u16..=600,
        "[a-z0-9.-]{1,30}:[0-9]{1,5}",
        proptest::collection::btree_set(
            (any::<bool>(), 1u16..=65535, any::<[u8; 4]>(), 1u16..=65535),
            0..8,
        ),
        proptest::option::of((any::<[u8; 4]>(), 1u16..=65535)),
    )
        .prop_map(
            |(mtu, keepalive, endpoint, forwards, admin)| UplinkDocument {
                version: 1,
                network: "10.200.0.0/24".parse().unwrap(),
                mtu,
                relay: UplinkRelay {
                    public_key: PrivateKey::generate().unwrap().public_key(),
                    endpoint,
                    allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
                    persistent_keepalive: keepalive,
                },
                forwards: forwards
                    .into_iter()
                    .map(|(tcp, listen_port, ip, target_port)| Forward {
                        protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
                        listen_port,
                        target_ip: Ipv4Addr::from(ip),
                        target_port,
                    })
                    .collect(),
                admin_bridge: admin.map(|(ip, port)| std::net::SocketAddrV4::new(ip.into(), port)),
            },
        )
}

/// `text` with a few bytes replaced, cut at a char boundary.
fn mutate(text: &str, edits: &[(usize, u8)], cut: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for (at, b) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = *b;
        }
    }
    bytes.truncate(bytes.len().saturating_sub(cut));
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn relay_documents_round_trip_and_mutations_never_panic(
        doc in relay_doc(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in 0usize..40,
        junk in "\\PC{0,200}",
    ) {
        let text = doc.to_json();
        match RelayDocument::parse(&text) {
            Ok(back) => prop_assert_eq!(back, doc),
            // Only what validation refuses: the generator may make a duplicate key.
            Err(e) => prop_assert!(e.to_string().contains("peers"), "{}", e),
        }
        let _ = RelayDocument::parse(&mutate(&text, &edits, cut));
        let _ = RelayDocument::parse(&junk);
    }

    #[test]
    fn uplink_documents_round_trip_and_mutations_never_panic(
        doc in uplink_doc(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in 0usize..40,
        junk in "\\PC{0,200}",
    ) {
        let text = doc.to_json();
        if let Ok(back) = UplinkDocument::parse(&text) {
            prop_assert_eq!(&back, &doc);
            prop_assert_eq!(back.to_json(), text.clone());
        }
        let _ = UplinkDocument::parse(&mutate(&text, &edits, cut));
        let _ = UplinkDocument::parse(&junk);
    }
}

/// The probe server under test: `/ready` answers 200, anything else 404.
struct Ready;

impl uplink::http::Handler for Ready {
    fn get(&self, path: &str, _query: Option<&str>) -> uplink::http::Reply {
        if path == "/ready" {
            uplink::http::Reply::text(200, "ok\n")
        } else {
            uplink::http::Reply::not_found()
        }
    }
}

/// One probe server on loopback for all cases, with short timeouts so a case that leaves a
/// head unfinished is cut quickly.
fn probe_server() -> SocketAddr {
    static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = uplink::http::Limits {
            header_read_timeout: std::time::Duration::from_millis(500),
            connection_timeout: std::time::Duration::from_secs(2),
            ..uplink::http::Limits::default()
        };
        uplink::http::spawn(listener, Ready, limits).unwrap();
        addr
    })
}

/// Sends `bytes`, half-closes when `half_close` (hyper then may close without answering, as
/// it does by default), and reads the answer (bounded: 64 KiB, 3 s).
fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut out);
    out
}

/// A request as a hostile client writes it: random method, path and headers, some huge.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET".to_owned()),
        Just("HEAD".to_owned()),
        Just("POST".to_owned()),
        "[A-Z]{0,12}"
    ];
    let path = prop_oneof![Just("/ready".to_owned()), "/[ -~]{0,64}", "[^\r\n]{0,64}"];
    let header = prop_oneof![
        "[A-Za-z-]{1,20}: [ -~]{0,40}",
        "[ -~]{0,200}",
        (1usize..20_000).prop_map(|n| format!("X-Long: {}", "a".repeat(n))),
    ];
    (
        method,
        path,
        prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/9"), Just("")],
        proptest::collection::vec(header, 0..40),
        any::<bool>(),
    )
        .prop_map(|(m, p, v, headers, finished)| {
            let mut r = format!("{m} {p} {v}\r\n");
            for h in headers {
                r.push_str(&h);
                r.push_str("\r\n");
            }
            if finished {
                r.push_str("\r\n");
            }
            r.into_bytes()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_ready_endpoint_answers_any_request_shortly_and_keeps_serving(
        hostile in prop_oneof![request(), proptest::collection::vec(any::<u8>(), 0..4096)],
    ) {
        let addr = probe_server();
        let answer = exchange(addr, &hostile, true);
        // Nothing but a short answer, if any: a status line of a known code.
        prop_assert!(answer.len() < 1024, "{} bytes answered", answer.len());
        if !answer.is_empty() {
            let text = String::from_utf8_lossy(&answer);
            let code = text.get(9..12).unwrap_or("");
            prop_assert!(
                ["200", "400", "404", "405", "408", "414", "431", "505"].contains(&code),
                "{}",
                text
            );
        }
        // And the next prober is answered.
        let ok = exchange(addr, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n", false);
        let ok = String::from_utf8_lossy(&ok);
        prop_assert!(ok.starts_with("HTTP/1.1 200"), "{}", ok);
        prop_assert!(ok.ends_with("ok\n"), "{}", ok);
    }
}
