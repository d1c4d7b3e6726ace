//! A handshake flood at the real relay (issue 12, finding 10): a stranger in the client
//! namespace sends WireGuard initiations with valid MACs at the relay's public port and
//! answers the relay's cookie replies, as a flooder with a real address can. The initiations
//! that reach the Diffie-Hellman (counted by the relay as `invalid`: they match no peer) stay
//! within the global and per-source limits, the rest are counted `rateLimited`, and an uplink
//! started during the flood still handshakes and becomes ready.
//!
//! Nothing here depends on how fast the machine is. The uplink starts once the flood sends
//! with a cookie (an event); the flood then goes on until the uplink is ready and the relay
//! has counted at least three times as many initiations past its cookie check as the limits
//! let through in the time that actually passed (counts, read from the relay), so a relay
//! without the limits would break the bound; the bound is computed from the measured duration.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use testbed::wait::wait_until;
use tunnel_contract::document::Protocol;
use tunnel_contract::key::PrivateKey;
use uplink::tunnel::{HANDSHAKE_RATE_LIMIT, PER_SOURCE_BURST, PER_SOURCE_RATE};

use crate::support::{Lab, RELAY_PORT, forward};

/// Initiations past the relay's cookie check it must count at least, whatever else holds.
const MIN_OFFERED: u64 = 1_500;
/// Initiations with a cookie sent before the uplink starts (the relay is under load by then).
const BEFORE_UPLINK: u64 = 200;
/// Each generated initiation is sent this many times: the relay checks MACs, cookies and
/// limits per datagram and keeps no memory of one it refused, so a copy costs it what a fresh
/// initiation does, and the flood's rate does not hang on how fast this machine computes them.
const COPIES: u64 = 8;
/// A hard cap on the flood (datagrams).
const MAX_DATAGRAMS: u64 = 1_000_000;

/// The most flood initiations the limits let through to the Diffie-Hellman in `elapsed`.
///
/// The relay's global allowance resets at most once a second, so `elapsed` spans at most
/// `elapsed.as_secs() + 2` windows of [`HANDSHAKE_RATE_LIMIT`] each; past it the flooder's one
/// address gets [`PER_SOURCE_RATE`] a second and one burst of [`PER_SOURCE_BURST`].
fn bound(elapsed: Duration) -> u64 {
    let windows = elapsed.as_secs() + 2;
    windows * (HANDSHAKE_RATE_LIMIT + PER_SOURCE_RATE) + PER_SOURCE_BURST
}

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

/// What the flood thread shares with the test.
#[derive(Default)]
struct Flood {
    /// Initiations sent with a cookie so far.
    with_cookie: AtomicU64,
    /// Set by the test when the flood has done its work.
    stop: AtomicBool,
}

/// Stops the flood when the test ends, also while a failed assertion unwinds.
struct StopOnDrop(Arc<Flood>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// Floods the relay through `sock` until told to stop or [`MAX_DATAGRAMS`]; returns how many
/// initiations carried a cookie. A cookie reply while sending with one means the relay's
/// cookie secret moved on (every 128 s): a fresh cookie is fetched.
fn flood(sock: &UdpSocket, relay: [u8; 32], shared: &Flood) -> u64 {
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
    let mut scratch = vec![0u8; 2048];
    let mut with_cookie = 0u64;
    let mut have_cookie = false;
    let mut sent = 0u64;
    while sent < MAX_DATAGRAMS && !shared.stop.load(Ordering::SeqCst) {
        let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut out, true)
        else {
            panic!("no initiation");
        };
        if have_cookie {
            for _ in 0..COPIES {
                let _ = sock.send(init);
            }
            sent += COPIES;
            with_cookie += COPIES;
            shared.with_cookie.store(with_cookie, Ordering::SeqCst);
            // A pause per batch: far past both limits, gentle on a shared machine.
            std::thread::sleep(Duration::from_millis(1));
            sock.set_nonblocking(true).unwrap();
            while let Ok(len) = sock.recv(&mut back) {
                have_cookie &= len != 64;
            }
            sock.set_nonblocking(false).unwrap();
            continue;
        }
        let _ = sock.send(init);
        sent += 1;
        // Until a cookie arrives: bursts past the cookie threshold, then the answers are read
        // (a cookie reply names an initiation's index; only the last one's is taken).
        if !sent.is_multiple_of(150) {
            continue;
        }
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        while let Ok(len) = sock.recv(&mut back) {
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

/// Flood initiations the relay counted past its cookie check: those that reached the
/// Diffie-Hellman (`invalid`: they match no peer) and those the limits refused.
fn counted(status: &serde_json::Value) -> (u64, u64) {
    let drops = &status["drops"];
    (
        drops["invalid"].as_u64().unwrap_or(0),
        drops["rateLimited"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_handshake_flood_does_not_keep_an_uplink_out() {
    let lab = Lab::new(1);
    let _relay = lab.start_relay(&lab.relay_doc());
    let relay_public = *lab.relay_key.public_key().as_bytes();

    let shared = Arc::new(Flood::default());
    let _stop = StopOnDrop(shared.clone());
    let started = Instant::now();
    let flooder = {
        let shared = shared.clone();
        let sock = flood_socket(&lab);
        std::thread::spawn(move || flood(&sock, relay_public, &shared))
    };
    // The flood is on, with cookies demanded, before the uplink starts.
    wait_until(
        "the flood to get a cookie and send with it",
        Duration::from_secs(120),
        || shared.with_cookie.load(Ordering::SeqCst) >= BEFORE_UPLINK || flooder.is_finished(),
    );
    assert!(
        !flooder.is_finished(),
        "the flood ended before it got a cookie"
    );
    lab.publish_uplink(&lab.uplink_doc(vec![forward(Protocol::Tcp, 8080, 9000)]));
    let _uplink = lab.start_uplink(0);
    lab.wait_uplinks_ready(1);
    // The uplink got in during the flood; the flood goes on until the relay has counted
    // enough of it (a count, whatever this machine's speed).
    wait_until(
        "the relay to count the flood",
        Duration::from_secs(300),
        || {
            let (through, limited) = counted(&lab.relay_status());
            let offered = through + limited;
            (offered >= MIN_OFFERED && offered >= 3 * bound(started.elapsed()))
                || flooder.is_finished()
        },
    );
    shared.stop.store(true, Ordering::SeqCst);
    let with_cookie = flooder.join().unwrap();

    let status = lab.relay_status();
    // Measured after the relay's counters were read: everything counted happened before it.
    let elapsed = started.elapsed();
    let (through, limited) = counted(&status);
    let bound = bound(elapsed);
    eprintln!(
        "flood: {with_cookie} initiations sent with a cookie in {elapsed:.1?}; the relay let \
         {through} reach the DH (bound {bound}) and rate-limited {limited}"
    );
    // The precondition, by count: the relay saw at least twice what the limits allow in the
    // time this took, so without them `through` would have passed the bound.
    assert!(
        through + limited >= 2 * bound,
        "the relay counted only {} flood initiations in {elapsed:?} (needs {}): {status}",
        through + limited,
        2 * bound
    );
    assert!(limited > 0, "{status}");
    assert!(
        through <= bound,
        "{through} flood initiations reached the Diffie-Hellman in {elapsed:?} (bound {bound}); {status}"
    );
    assert_eq!(status["peers"][0]["handshakeFresh"], true, "{status}");
}
