//! The batched data path with real traffic through real TUN devices: a TCP bulk transfer
//! and UDP bursts from the VPS through the relay and an uplink (DNAT) to servers in the
//! cluster and back, checked byte for byte and in order; once through an uplink with every
//! offload (TSO/GRO on the TUN, UDP GSO/GRO) and once through one forced onto the plain
//! per-packet path (`TUNNEL_OFFLOADS=off`) against the same offloading relay. The status
//! reports (`tunnelctl status`, the uplink's `/status`) say which offloads are on. And a
//! stream kept at full speed across WireGuard's 120 s rekey: the timers still run under
//! saturation and the stream stays whole.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::support::{Lab, forward, tcp_echo, udp_echo};
use tunnel_contract::document::Protocol;

const BULK: usize = 4 << 20;

fn pattern(i: usize) -> u8 {
    u8::try_from((i * 131 + i / 7919) % 251).unwrap()
}

/// Sends `bulk` bytes through the echo server behind `addr` and checks every byte comes
/// back, in order. `mss`: an MSS for the VPS end (small: many tiny segments per TSO read).
fn tcp_bulk(lab: &Lab, addr: &str, bulk: usize, mss: Option<u32>) {
    let addr: SocketAddr = addr.parse().unwrap();
    let stream: TcpStream = lab
        .vps
        .enter(move || -> std::io::Result<TcpStream> {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            if let Some(mss) = mss {
                nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::TcpMaxSeg, &mss)?;
            }
            s.connect_timeout(&addr.into(), Duration::from_secs(5))?;
            Ok(s.into())
        })
        .unwrap()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let data: Vec<u8> = (0..bulk).map(pattern).collect();
        // Uneven writes: TSO super-packets of every size, short last segments.
        let mut at = 0;
        let mut k = 0;
        while at < data.len() {
            let n = [65_536, 1, 1419, 100_000, 7, 32_768][k % 6].min(data.len() - at);
            writer.write_all(&data[at..at + n]).unwrap();
            at += n;
            k += 1;
        }
    });
    let mut reader = stream;
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        reader.read_exact(&mut byte).unwrap();
        greeting.push(byte[0]);
    }
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    while got < bulk {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(got + k), "byte {} differs", got + k);
        }
        got += n;
    }
    sender.join().unwrap();
}

/// Bursts of UDP datagrams (equal sizes, the last one shorter, so they coalesce) through
/// the echo server behind `addr`: every answer comes back intact and in order.
fn udp_bursts(lab: &Lab, addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let socket = lab
        .vps
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for burst in 0..20usize {
        let size = [1200, 1300, 64, 1000][burst % 4];
        let count = 32;
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let len = if i + 1 == count { size / 2 } else { size };
                let mut p = format!("{burst:03}:{i:03}:").into_bytes();
                p.extend((p.len()..len).map(|k| pattern(k + i + burst)));
                p
            })
            .collect();
        for p in &payloads {
            socket.send_to(p, addr).unwrap();
        }
        for (i, p) in payloads.iter().enumerate() {
            let (n, _) = socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("burst {burst}, datagram {i}: {e}"));
            let answer = &buf[..n];
            let prefix = b"from 10.244.";
            assert!(answer.starts_with(prefix), "burst {burst}, datagram {i}");
            let body = &answer[answer
                .iter()
                .skip(prefix.len())
                .position(|&b| b == b' ')
                .unwrap()
                + prefix.len()
                + 1..];
            assert_eq!(
                body,
                &p[..],
                "burst {burst}, datagram {i}: out of order or damaged"
            );
        }
    }
}

#[test]
fn bulk_tcp_and_udp_bursts_through_the_offload_path_and_the_plain_one() {
    let lab = Lab::new(2);
    tcp_echo(&lab.cluster, "10.96.0.10:9000");
    udp_echo(&lab.cluster, "10.96.0.10:9053");
    let _relay = lab.start_relay(&lab.relay_doc());
    lab.publish_uplink(&lab.uplink_doc(vec![
        forward(Protocol::Tcp, 8080, 9000),
        forward(Protocol::Udp, 5353, 9053),
    ]));
    let _offloading = lab.start_uplink(0);
    let _plain = lab.start_uplink_with(1, "TUNNEL_OFFLOADS=off");
    lab.wait_uplinks_ready(2);

    // What each end reports.
    let status = lab.relay_status();
    let offloads = &status["offloads"];
    for name in ["tunVnetHdr", "udpGso", "udpGro"] {
        assert_eq!(offloads[name], true, "relay {name}: {status}");
    }
    assert!(offloads["tunUso"].is_boolean(), "{status}");
    let report = |i: usize| -> serde_json::Value {
        let (code, body) =
            crate::support::http_get(&lab.vps, &format!("10.200.0.{}:40500", i + 2), "/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let on = report(0);
    for name in ["tunVnetHdr", "udpGso", "udpGro"] {
        assert_eq!(on["offloads"][name], true, "uplink 0 {name}: {on}");
    }
    let off = report(1);
    for name in ["tunVnetHdr", "tunUso", "udpGso", "udpGro"] {
        assert_eq!(off["offloads"][name], false, "uplink 1 {name}: {off}");
    }
    let log = lab.log("relay.log");
    let up = log
        .lines()
        .find(|l| l.contains("interface up"))
        .unwrap_or_default();
    for name in ["tun_vnet_hdr", "tun_uso", "udp_gso", "udp_gro"] {
        assert!(
            up.contains(name),
            "the start-up log names the offloads: {up}"
        );
    }

    // Real traffic, both ways, through each uplink.
    for i in 0..2 {
        tcp_bulk(&lab, &format!("10.200.0.{}:8080", i + 2), BULK, None);
        udp_bursts(&lab, &format!("10.200.0.{}:5353", i + 2));
    }

    // The smallest MSS Linux lets a socket ask for: tiny segments, split and coalesced intact.
    tcp_bulk(&lab, "10.200.0.2:8080", 1 << 20, Some(88));

    // Nothing was refused on the way.
    let status = lab.relay_status();
    for peer in status["peers"].as_array().unwrap() {
        assert!(peer["rxBytes"].as_u64().unwrap() > BULK as u64, "{status}");
    }
    for i in 0..2 {
        let r = report(i);
        assert_eq!(r["drops"]["invalid"], 0, "{r}");
        assert_eq!(r["drops"]["sendErrors"], 0, "{r}");
    }
}

/// WireGuard replaces a session's keys after 120 s of use (`REKEY_AFTER_TIME`; the uplink
/// dials, so it starts the new handshake). A TCP stream kept at full speed through the batched
/// path across that point: the relay sees a new handshake while the stream flows (the timers
/// still run under saturation), the stream keeps moving after it, and every byte arrives
/// intact and in order. Bounded: it stops at the first rekey, or after 200 s.
#[test]
fn a_rekey_under_saturation_keeps_the_stream_whole() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    let lab = Lab::new(1);
    tcp_echo(&lab.cluster, "10.96.0.10:9000");
    let _relay = lab.start_relay(&lab.relay_doc());
    lab.publish_uplink(&lab.uplink_doc(vec![forward(Protocol::Tcp, 8080, 9000)]));
    let _uplink = lab.start_uplink(0);
    lab.wait_uplinks_ready(1);
    let handshake_age = || lab.relay_status()["peers"][0]["lastHandshakeSecondsAgo"].as_u64();
    let first = handshake_age().expect("a handshake before the stream");

    let addr: SocketAddr = "10.200.0.2:8080".parse().unwrap();
    let stream = lab
        .vps
        .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    let mut writer = stream;
    let mut greeting = [0u8; 1];
    while greeting[0] != b'\n' {
        reader.read_exact(&mut greeting).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicUsize::new(0));
    let sender = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let chunk: Vec<u8> = (0..65_536).map(pattern).collect();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Whole chunks keep the pattern aligned: byte i of the stream is pattern(i % 65536).
                writer.write_all(&chunk).unwrap();
                sent += chunk.len();
            }
            sent
        }
    });
    let checker = std::thread::spawn({
        let received = Arc::clone(&received);
        let stop = Arc::clone(&stop);
        move || {
            let mut got = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        for (k, b) in buf[..n].iter().enumerate() {
                            assert_eq!(*b, pattern((got + k) % 65_536), "byte {} differs", got + k);
                        }
                        got += n;
                        received.store(got, Ordering::Relaxed);
                    }
                    // Once the sender stopped, a quiet connection means everything arrived.
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(e) => panic!("stream stalled after {got} bytes: {e}"),
                }
            }
            got
        }
    });

    // Watch the relay's view of the handshake while the stream runs.
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut previous = first;
    let mut at_rekey = None;
    while Instant::now() < deadline && at_rekey.is_none() {
        std::thread::sleep(Duration::from_secs(1));
        let age = handshake_age().expect("the session stays up");
        if age < previous {
            at_rekey = Some(received.load(Ordering::Relaxed));
        }
        previous = age;
    }
    let at_rekey = at_rekey.expect("no new handshake within 200 s of saturating traffic");
    // The stream keeps moving after the new keys are in use.
    let after = received.load(Ordering::Relaxed);
    let moving = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < after + (8 << 20) && Instant::now() < moving {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let got = checker.join().unwrap();
    assert!(
        got > after + (8 << 20),
        "the stream stalled after the rekey at {at_rekey} bytes"
    );
    assert_eq!(got, sent, "bytes lost");

    let (code, body) = crate::support::http_get(&lab.vps, "10.200.0.2:40500", "/status");
    assert_eq!(code, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["drops"]["invalid"], 0, "{r}");
    assert_eq!(r["drops"]["sendErrors"], 0, "{r}");
}
