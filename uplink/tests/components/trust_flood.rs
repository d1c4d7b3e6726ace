//! A handshake flood at the real relay (issue 12, finding 10): a stranger in the client
//! namespace sends WireGuard initiations with valid MACs at the relay's public port and
//! answers the relay's cookie replies, as a flooder with a real address can. The initiations
//! that reach the Diffie-Hellman (counted by the relay as `invalid`: they match no peer) stay
//! within the global and per-source limits, the rest are counted `rateLimited`, and an uplink
//! started during the flood still handshakes and becomes ready.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use tunnel_contract::document::Protocol;
use tunnel_contract::key::PrivateKey;
use uplink::tunnel::{HANDSHAKE_RATE_LIMIT, PER_SOURCE_BURST, PER_SOURCE_RATE};

use crate::support::{Lab, RELAY_PORT, forward};

/// A UDP socket in the client namespace, connected to the relay's public port.
fn flood_socket(lab: &Lab) -> UdpSocket {
    let sock = lab
        .client
        .enter(|| UdpSocket::bind("192.0.2.2:0"))
        .unwrap()
        .unwrap();
    sock.connect(("192.0.2.1", RELAY_PORT)).unwrap();
    sock
}

/// Floods the relay through `sock` until `stop` or `limit` packets; returns how many
/// initiations carried a cookie.
fn flood(sock: &UdpSocket, relay: [u8; 32], stop: &AtomicBool, limit: usize) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let stranger = PrivateKey::generate().unwrap();
    let mut tunn = Tunn::new(
        boringtun::x25519::StaticSecret::from(*stranger.as_bytes()),
        boringtun::x25519::PublicKey::from(relay),
        None,
        None,
        1,
        None,
    );
    let mut out = vec![0u8; 2048];
    let mut back = vec![0u8; 2048];
    let mut with_cookie = 0;
    let mut have_cookie = false;
    for n in 0..limit {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut out, true)
        else {
            panic!("no initiation");
        };
        let _ = sock.send(init);
        if have_cookie {
            with_cookie += 1;
            // About 2000 a second: far past both limits, gentle on a shared machine.
            if n % 2 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        // Until a cookie arrives: bursts past the cookie threshold, then the answers are read
        // (a cookie reply names an initiation's index; only the last one's is taken).
        if n % 150 != 149 {
            continue;
        }
        while let Ok(len) = sock.recv(&mut back) {
            let mut scratch = vec![0u8; 2048];
            if len == 64
                && !matches!(
                    tunn.decapsulate(None, &back[..len], &mut scratch),
                    TunnResult::Err(_)
                )
            {
                have_cookie = true;
            }
        }
    }
    with_cookie
}

#[test]
fn a_handshake_flood_does_not_keep_an_uplink_out() {
    let lab = Lab::new(1);
    let _relay = lab.start_relay(&lab.relay_doc());
    let relay_public = *lab.relay_key.public_key().as_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flooder = {
        let stop = stop.clone();
        let sock = flood_socket(&lab);
        std::thread::spawn(move || flood(&sock, relay_public, &stop, 60_000))
    };
    // The flood is on (cookies demanded) before the uplink starts.
    std::thread::sleep(Duration::from_secs(2));
    lab.publish_uplink(&lab.uplink_doc(vec![forward(Protocol::Tcp, 8080, 9000)]));
    let _uplink = lab.start_uplink(0);
    lab.wait_uplinks_ready(1);
    stop.store(true, Ordering::SeqCst);
    let with_cookie = flooder.join().unwrap();
    let elapsed = started.elapsed().as_secs() + 2;

    let status = lab.relay_status();
    let drops = &status["drops"];
    let through = drops["invalid"].as_u64().unwrap();
    let limited = drops["rateLimited"].as_u64().unwrap();
    eprintln!(
        "flood: {with_cookie} initiations with a cookie in {elapsed}s; {through} reached the DH, {limited} rate-limited"
    );
    assert!(
        with_cookie > 1000,
        "the flood ran with cookies: {with_cookie}"
    );
    assert!(limited > 0, "{status}");
    // At most the cookie-free share and one source's share a second reach the DH.
    let bound = elapsed * (HANDSHAKE_RATE_LIMIT + PER_SOURCE_RATE + PER_SOURCE_BURST);
    assert!(
        through <= bound,
        "{through} flood initiations reached the Diffie-Hellman in {elapsed}s (bound {bound}); {status}"
    );
    assert_eq!(status["peers"][0]["handshakeFresh"], true, "{status}");
}
