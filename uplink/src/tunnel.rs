//! The sans-IO WireGuard core: many peers over one private key, built on boringtun's
//! `noise::Tunn`. It owns no socket and no device; the I/O shell ([`crate::device`]) hands it
//! packets one at a time and it answers through a [`Sink`].
//!
//! - Packets from the TUN device are routed to a peer by longest-prefix match over the peers'
//!   allowed IPs (cryptokey routing), encrypted, and sent to the peer's current endpoint.
//! - Datagrams from the network are matched to a peer (by receiver index, or by the static key
//!   inside a handshake initiation), decrypted, checked against that peer's allowed IPs, and
//!   written to the TUN device. An authenticated datagram from a new address moves the peer's
//!   endpoint there (roaming).
//! - [`Tunnel::tick`] drives handshakes, retries, rekeys and keepalives (`update_timers`).
//!
//! Handshake floods: an initiation costs two Diffie-Hellman operations before it can be
//! attributed to a peer. Its MAC is checked first, and past [`HANDSHAKE_RATE_LIMIT`]
//! initiations a second every sender must prove its address with a cookie (boringtun's
//! `RateLimiter`). On top of that, as the kernel's WireGuard does, while under load each source
//! address gets at most [`PER_SOURCE_RATE`] initiations a second (bursts of
//! [`PER_SOURCE_BURST`]) through to the Diffie-Hellman ([`SourceLimiter`]): a flooder that
//! answers cookies from its own address cannot starve the loop, and a legitimate peer from
//! another address still gets its handshake through. Receiver indices are random, so they say
//! nothing about how many peers there are or in which order they came.
//!
//! The per-packet path does not allocate: one scratch buffer is reused, and the sink decides
//! whether to write at once or to collect a batch (the device collects one UDP GSO batch per
//! endpoint and one TUN write per coalesced run, see [`crate::device`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use ipnet::Ipv4Net;

use crate::key::{PrivateKey, PublicKey};
use tunnel_contract::rate::KeyedBuckets;

/// Largest packet the core handles (a TUN read, or a UDP datagram), plus WireGuard overhead.
pub const MAX_PACKET: usize = 65_535;
const SCRATCH: usize = MAX_PACKET + 64;
/// Handshakes per second accepted before cookies are required (boringtun's device default),
/// and before the per-source limit applies.
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Initiations per second one source address may have processed while under load (the
/// kernel's `PACKETS_PER_SECOND`).
pub const PER_SOURCE_RATE: u64 = 20;
/// Initiations one source address may send at once while under load (`PACKETS_BURSTABLE`).
pub const PER_SOURCE_BURST: u64 = 5;
/// Source addresses tracked at once; a new source past it is refused while under load.
pub const MAX_TRACKED_SOURCES: usize = 4096;
/// Size of a handshake initiation (message type 1).
const HANDSHAKE_INIT_LEN: usize = 148;
/// Size of a cookie reply, which is not proof that the sender holds the peer's key.
const COOKIE_REPLY_LEN: usize = 64;

/// How long a dialing peer with keepalive `keepalive` may stay silent before a handshake is
/// forced: two keepalive periods plus the handshake timeout, at least 15 s.
pub fn quiet_limit(keepalive: u16) -> Duration {
    Duration::from_secs((2 * u64::from(keepalive) + 5).max(15))
}

/// Where the core's output goes. The shell writes at once or collects batches.
pub trait Sink {
    /// An encrypted datagram for `to`.
    fn to_network(&mut self, to: SocketAddr, datagram: &[u8]);
    /// A decrypted IP packet for the TUN device.
    fn to_tun(&mut self, packet: &[u8]);
}

/// A peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key (its identity).
    pub public_key: PublicKey,
    /// A name for logs and status.
    pub name: Option<String>,
    /// Where to send until the peer is heard from (`None`: wait for it to call).
    pub endpoint: Option<SocketAddr>,
    /// What the peer may send from and receives.
    pub allowed_ips: Vec<Ipv4Net>,
    /// Seconds between keepalives (0: off).
    pub persistent_keepalive: u16,
}

/// One peer's counters, for `status` and readiness.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Its configured name.
    pub name: Option<String>,
    /// The endpoint in use (configured or learned).
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs.
    pub allowed_ips: Vec<Ipv4Net>,
    /// Time since the last completed handshake.
    pub last_handshake: Option<Duration>,
    /// Payload bytes received from the peer.
    pub rx_bytes: u64,
    /// Payload bytes sent to the peer.
    pub tx_bytes: u64,
}

/// Counters of packets the core dropped, by reason (`tunnelctl status` shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DropStats {
    /// TUN packets whose destination no peer's allowed IPs cover.
    pub no_route: u64,
    /// TUN packets for a peer with no known endpoint yet.
    pub no_endpoint: u64,
    /// Datagrams that matched no peer, failed authentication, or were malformed.
    pub invalid: u64,
    /// Decrypted packets whose source the sending peer may not use.
    pub spoofed: u64,
    /// Handshake initiations refused because their source sent too many while under load.
    pub rate_limited: u64,
}

/// A token bucket per source address for handshake initiations under load, bounded in size
/// ([`MAX_TRACKED_SOURCES`]).
#[derive(Debug)]
pub struct SourceLimiter {
    buckets: KeyedBuckets<IpAddr>,
}

impl Default for SourceLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            buckets: KeyedBuckets::new(PER_SOURCE_RATE, PER_SOURCE_BURST, MAX_TRACKED_SOURCES),
        }
    }

    /// Whether an initiation from `source` at `now` may go on.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        self.buckets.allow(source, now)
    }

    /// Forgets sources whose bucket has been full again for a while (they cost nothing to
    /// re-create), so the table holds only recent senders.
    pub fn forget_idle(&mut self, now: Instant) {
        self.buckets.forget_idle(now, Duration::from_secs(1));
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

struct Peer {
    config: PeerConfig,
    tunn: Tunn,
    index: u32,
    endpoint: Option<SocketAddr>,
    /// A dialing peer (endpoint and keepalive known) starts its handshake at once, as the
    /// kernel does, instead of waiting for the first keepalive.
    initiate: bool,
    /// When the peer was last heard from (authenticated), at tick granularity.
    last_rx: Instant,
    /// When a handshake was last forced because the peer went quiet.
    last_forced: Instant,
}

/// The multi-peer WireGuard state machine.
pub struct Tunnel {
    private: boringtun::x25519::StaticSecret,
    public: boringtun::x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
    /// Initiations that passed their MAC check since `load_since`.
    load_count: u64,
    load_since: Instant,
    sources: SourceLimiter,
    peers: Vec<Peer>,
    /// Receiver index (upper 24 bits) → position in `peers`.
    by_index: HashMap<u32, usize>,
    /// (network, peer position), longest prefix first.
    routes: Vec<(Ipv4Net, usize)>,
    scratch: Box<[u8]>,
    drops: DropStats,
    /// The time of the last tick: per-packet code stamps with it instead of reading the clock.
    now: Instant,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("peers", &self.peers.len())
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// A core with `key` and no peers.
    pub fn new(key: &PrivateKey) -> Self {
        let private = boringtun::x25519::StaticSecret::from(*key.as_bytes());
        let public = boringtun::x25519::PublicKey::from(&private);
        Self {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            load_count: 0,
            load_since: Instant::now(),
            sources: SourceLimiter::new(),
            private,
            public,
            peers: Vec::new(),
            by_index: HashMap::new(),
            routes: Vec::new(),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            drops: DropStats::default(),
            now: Instant::now(),
        }
    }

    /// This end's public key (the tests' peers are made from it).
    #[cfg(test)]
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.public.to_bytes())
    }

    /// Replaces the peer set. A peer whose key and keepalive are unchanged keeps its sessions,
    /// counters and learned endpoint, so a re-apply does not interrupt its traffic.
    pub fn set_peers(&mut self, configs: Vec<PeerConfig>) {
        let mut old: HashMap<PublicKey, Peer> = self
            .peers
            .drain(..)
            .map(|p| (p.config.public_key, p))
            .collect();
        // Kept peers keep their indices: new ones must not take them.
        let taken: Vec<u32> = old.values().map(|p| p.index).collect();
        self.by_index.clear();
        for config in configs {
            let peer = match old.remove(&config.public_key) {
                Some(mut peer)
                    if peer.config.persistent_keepalive == config.persistent_keepalive =>
                {
                    if config.endpoint != peer.config.endpoint && config.endpoint.is_some() {
                        peer.endpoint = config.endpoint;
                    }
                    peer.config = config;
                    peer
                }
                _ => self.new_peer(config, &taken),
            };
            self.by_index.insert(peer.index, self.peers.len());
            self.peers.push(peer);
        }
        self.rebuild_routes();
    }

    /// A random receiver index (24 bits: boringtun numbers sessions in the low 8) that no
    /// current peer uses, nor one in `taken`.
    fn random_index(&self, taken: &[u32]) -> u32 {
        let mut attempt: u32 = 0;
        loop {
            let mut bytes = [0u8; 4];
            let raw = match getrandom::fill(&mut bytes) {
                Ok(()) => u32::from_le_bytes(bytes),
                // Not expected on Linux once booted; distinct values still come out.
                Err(_) => attempt.wrapping_mul(0x9e37_79b9) ^ std::process::id(),
            };
            attempt = attempt.wrapping_add(1);
            let index = raw & 0x00ff_ffff;
            if index != 0 && !taken.contains(&index) && !self.peers.iter().any(|p| p.index == index)
            {
                return index;
            }
        }
    }

    fn new_peer(&mut self, config: PeerConfig, taken: &[u32]) -> Peer {
        let index = self.random_index(taken);
        let keepalive = (config.persistent_keepalive > 0).then_some(config.persistent_keepalive);
        let tunn = Tunn::new(
            self.private.clone(),
            boringtun::x25519::PublicKey::from(*config.public_key.as_bytes()),
            None,
            keepalive,
            index,
            // Each session keeps boringtun's own per-peer limiter (10 handshakes/s, reset by
            // its timers); the shared one guards the attribution of initiations above.
            None,
        );
        Peer {
            endpoint: config.endpoint,
            initiate: config.endpoint.is_some() && config.persistent_keepalive > 0,
            last_rx: self.now,
            last_forced: self.now,
            config,
            tunn,
            index,
        }
    }

    fn rebuild_routes(&mut self) {
        self.routes = self
            .peers
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.config.allowed_ips.iter().map(move |n| (*n, i)))
            .collect();
        self.routes
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    }

    fn route(&self, dst: IpAddr) -> Option<usize> {
        let IpAddr::V4(dst) = dst else { return None };
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&dst))
            .map(|(_, i)| *i)
    }

    /// A packet read from the TUN device: encrypt it for the peer that owns its destination.
    pub fn handle_tun(&mut self, packet: &[u8], sink: &mut impl Sink) {
        let Some(i) = Tunn::dst_address(packet).and_then(|dst| self.route(dst)) else {
            self.drops.no_route += 1;
            return;
        };
        let peer = &mut self.peers[i];
        match peer.tunn.encapsulate(packet, &mut self.scratch) {
            TunnResult::WriteToNetwork(out) => match peer.endpoint {
                Some(to) => sink.to_network(to, out),
                None => self.drops.no_endpoint += 1,
            },
            TunnResult::Err(e) => {
                tracing::debug!(peer = %peer.config.public_key.short(), error = ?e, "encapsulate failed");
            }
            _ => {}
        }
    }

    /// A datagram received from `from`: handshake, cookie, keepalive or data.
    pub fn handle_network(&mut self, from: SocketAddr, datagram: &[u8], sink: &mut impl Sink) {
        // A handshake initiation costs a Diffie-Hellman to attribute to a peer: check its MAC
        // and shed load (cookie replies) with the shared limiter first.
        if datagram.len() == HANDSHAKE_INIT_LEN && datagram[0] == 1 {
            let mut cookie = [0u8; COOKIE_REPLY_LEN];
            match self
                .rate_limiter
                .verify_packet(Some(from.ip()), datagram, &mut cookie)
            {
                Ok(_) => {
                    // Under load (past the cookie threshold) the sender proved its address;
                    // it still gets only its share.
                    self.load_count += 1;
                    if self.load_count > HANDSHAKE_RATE_LIMIT
                        && !self.sources.allow(from.ip(), self.now)
                    {
                        self.drops.rate_limited += 1;
                        return;
                    }
                }
                Err(TunnResult::WriteToNetwork(reply)) => {
                    self.load_count += 1;
                    sink.to_network(from, reply);
                    return;
                }
                Err(_) => {
                    self.drops.invalid += 1;
                    return;
                }
            }
        }
        let Some((i, authenticates)) = self.peer_for(datagram) else {
            self.drops.invalid += 1;
            return;
        };
        let peer = &mut self.peers[i];
        let result = peer
            .tunn
            .decapsulate(Some(from.ip()), datagram, &mut self.scratch);
        let moved;
        match result {
            TunnResult::Err(e) => {
                self.drops.invalid += 1;
                tracing::debug!(peer = %peer.config.public_key.short(), error = ?e, "datagram refused");
                return;
            }
            TunnResult::Done => moved = authenticates,
            TunnResult::WriteToNetwork(out) => {
                // A cookie reply is sent before any authentication: no roaming on it.
                moved = authenticates && out.len() != COOKIE_REPLY_LEN;
                sink.to_network(from, out);
                // Packets queued while there was no session go out now.
                while let TunnResult::WriteToNetwork(out) =
                    peer.tunn.decapsulate(None, &[], &mut self.scratch)
                {
                    sink.to_network(from, out);
                }
            }
            TunnResult::WriteToTunnelV4(out, src) => {
                moved = authenticates;
                if peer.config.allowed_ips.iter().any(|n| n.contains(&src)) {
                    sink.to_tun(out);
                } else {
                    self.drops.spoofed += 1;
                }
            }
            TunnResult::WriteToTunnelV6(..) => {
                moved = authenticates;
                self.drops.spoofed += 1;
            }
        }
        if moved {
            peer.last_rx = self.now;
        }
        if moved && peer.endpoint != Some(from) {
            tracing::info!(peer = %peer.config.public_key.short(), endpoint = %from, "peer endpoint");
            peer.endpoint = Some(from);
        }
    }

    /// The peer a datagram is for, and whether a successful decryption proves the sender.
    fn peer_for(&self, datagram: &[u8]) -> Option<(usize, bool)> {
        match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(init) => {
                let half = parse_handshake_anon(&self.private, &self.public, &init).ok()?;
                let key = PublicKey::from_bytes(half.peer_static_public);
                let i = self.peers.iter().position(|p| p.config.public_key == key)?;
                Some((i, true))
            }
            Packet::HandshakeResponse(p) => Some((self.by_receiver(p.receiver_idx)?, true)),
            Packet::PacketCookieReply(p) => Some((self.by_receiver(p.receiver_idx)?, false)),
            Packet::PacketData(p) => Some((self.by_receiver(p.receiver_idx)?, true)),
        }
    }

    fn by_receiver(&self, receiver: u32) -> Option<usize> {
        self.by_index.get(&(receiver >> 8)).copied()
    }

    /// Runs every peer's timers (call every ~100-250 ms): handshake (re)tries, rekeys,
    /// keepalives, session expiry.
    pub fn tick(&mut self, sink: &mut impl Sink) {
        self.tick_at(Instant::now(), sink);
    }

    /// [`Tunnel::tick`] at a given time (tests move the clock).
    ///
    /// Besides boringtun's timers, a dialing peer (endpoint and keepalive configured) that
    /// has heard nothing from its peer for [`quiet_limit`] forces a new handshake: after the
    /// other end restarted (a relay upgrade, a VPS reboot) its sessions are gone and it cannot
    /// dial back, and plain WireGuard would stay silent until the next rekey (up to 2 min).
    pub fn tick_at(&mut self, now: Instant, sink: &mut impl Sink) {
        self.now = now;
        // The shared limiter counts handshakes; nobody else resets it (boringtun's Tunn only
        // resets its own). It resets at most once a second, whatever the tick rate.
        self.rate_limiter.reset_count();
        if now.saturating_duration_since(self.load_since) >= Duration::from_secs(1) {
            self.load_count = 0;
            self.load_since = now;
            self.sources.forget_idle(now);
        }
        for peer in &mut self.peers {
            let keepalive = peer.config.persistent_keepalive;
            if keepalive > 0
                && let Some(to) = peer.endpoint
                && now.duration_since(peer.last_rx) > quiet_limit(keepalive)
                && now.duration_since(peer.last_forced) > quiet_limit(keepalive)
            {
                peer.last_forced = now;
                tracing::debug!(peer = %peer.config.public_key.short(), "peer quiet; new handshake");
                if let TunnResult::WriteToNetwork(out) = peer
                    .tunn
                    .format_handshake_initiation(&mut self.scratch, true)
                {
                    sink.to_network(to, out);
                }
            }
            if std::mem::take(&mut peer.initiate)
                && let (Some(to), TunnResult::WriteToNetwork(out)) = (
                    peer.endpoint,
                    peer.tunn
                        .format_handshake_initiation(&mut self.scratch, false),
                )
            {
                sink.to_network(to, out);
            }
            match peer.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(out) => {
                    if let Some(to) = peer.endpoint {
                        sink.to_network(to, out);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    tracing::debug!(peer = %peer.config.public_key.short(), "session expired");
                }
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %peer.config.public_key.short(), error = ?e, "timer error");
                }
                _ => {}
            }
        }
    }

    /// Each peer's counters.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .map(|p| {
                let (last_handshake, tx, rx, _, _) = p.tunn.stats();
                PeerStats {
                    public_key: p.config.public_key,
                    name: p.config.name.clone(),
                    endpoint: p.endpoint,
                    allowed_ips: p.config.allowed_ips.clone(),
                    last_handshake,
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                }
            })
            .collect()
    }

    /// Packets dropped so far, by reason.
    pub fn drops(&self) -> DropStats {
        self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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

    /// A minimal IPv4/UDP packet from `src` to `dst` (checksums are not checked here).
    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[28..].copy_from_slice(payload);
        p
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    struct Net {
        relay: Tunnel,
        uplinks: Vec<Tunnel>,
    }

    const RELAY_EP: &str = "192.0.2.1:51820";

    fn uplink_ep(i: usize) -> SocketAddr {
        addr(&format!("198.51.100.{}:4000{i}", 10 + i))
    }

    fn net(n: usize) -> Net {
        let relay_key = PrivateKey::generate().unwrap();
        let mut relay = Tunnel::new(&relay_key);
        let mut uplinks = Vec::new();
        let mut peers = Vec::new();
        for i in 0..n {
            let key = PrivateKey::generate().unwrap();
            let mut up = Tunnel::new(&key);
            up.set_peers(vec![PeerConfig {
                public_key: relay.public_key(),
                name: None,
                endpoint: Some(addr(RELAY_EP)),
                allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
                persistent_keepalive: 25,
            }]);
            peers.push(PeerConfig {
                public_key: up.public_key(),
                name: Some(format!("uplink-{i}")),
                endpoint: None,
                allowed_ips: vec![format!("10.200.0.{}/32", i + 2).parse().unwrap()],
                persistent_keepalive: 0,
            });
            uplinks.push(up);
        }
        relay.set_peers(peers);
        Net { relay, uplinks }
    }

    /// Delivers everything in flight until quiet; returns what reached each TUN.
    fn pump(
        net: &mut Net,
        mut relay_out: Collect,
        mut up_out: Vec<Collect>,
    ) -> (Vec<Vec<u8>>, Vec<Vec<Vec<u8>>>) {
        let mut relay_tun = Vec::new();
        let mut up_tun = vec![Vec::new(); net.uplinks.len()];
        for _ in 0..20 {
            let mut quiet = true;
            for (to, d) in std::mem::take(&mut relay_out.net) {
                quiet = false;
                let i = (0..net.uplinks.len())
                    .find(|&i| uplink_ep(i) == to)
                    .unwrap();
                net.uplinks[i].handle_network(addr(RELAY_EP), &d, &mut up_out[i]);
            }
            for (i, out) in up_out.iter_mut().enumerate() {
                for (to, d) in std::mem::take(&mut out.net) {
                    quiet = false;
                    assert_eq!(to, addr(RELAY_EP));
                    net.relay.handle_network(uplink_ep(i), &d, &mut relay_out);
                }
                up_tun[i].append(&mut out.tun);
            }
            relay_tun.append(&mut relay_out.tun);
            if quiet {
                break;
            }
        }
        (relay_tun, up_tun)
    }

    /// An IPv4 packet between two overlay addresses `10.200.0.<from>` and `10.200.0.<to>`.
    fn overlay(from: u8, to: u8, payload: &[u8]) -> Vec<u8> {
        ipv4(
            Ipv4Addr::new(10, 200, 0, from),
            Ipv4Addr::new(10, 200, 0, to),
            payload,
        )
    }

    /// One empty sink per uplink.
    fn sinks(n: usize) -> Vec<Collect> {
        (0..n).map(|_| Collect::default()).collect()
    }

    #[test]
    fn handshake_then_data_both_ways_with_routing_by_allowed_ips() {
        let mut net = net(3);
        // Uplink 1 sends first (it knows the relay's endpoint); the packet is queued until
        // the handshake completes, then delivered.
        let hello = overlay(3, 1, b"hi");
        let mut outs: Vec<Collect> = sinks(3);
        net.uplinks[1].handle_tun(&hello, &mut outs[1]);
        let (relay_tun, _) = pump(&mut net, Collect::default(), outs);
        assert_eq!(relay_tun, vec![hello]);

        // The relay learned uplink 1's endpoint and routes 10.200.0.3 to it only.
        let stats = net.relay.stats();
        assert_eq!(stats[1].endpoint, Some(uplink_ep(1)));
        assert!(stats[1].last_handshake.is_some());
        assert!(stats[0].last_handshake.is_none());
        let reply = overlay(1, 3, b"yo");
        let mut relay_out = Collect::default();
        net.relay.handle_tun(&reply, &mut relay_out);
        assert_eq!(relay_out.net.len(), 1);
        let outs = sinks(3);
        let (_, up_tun) = pump(&mut net, relay_out, outs);
        assert_eq!(up_tun[1], vec![reply]);
        assert!(up_tun[0].is_empty() && up_tun[2].is_empty());

        // No peer for 10.200.0.9; no endpoint yet for uplink 0.
        let mut relay_out = Collect::default();
        net.relay.handle_tun(&overlay(1, 9, b""), &mut relay_out);
        net.relay.handle_tun(&overlay(1, 2, b""), &mut relay_out);
        assert!(relay_out.net.is_empty());
        assert_eq!(net.relay.drops().no_route, 1);
        assert_eq!(net.relay.drops().no_endpoint, 1);
        assert!(net.relay.stats()[1].rx_bytes > 0);
    }

    #[test]
    fn spoofed_source_and_unknown_peers_are_dropped() {
        let mut net = net(2);
        // Uplink 0 claims uplink 1's address.
        let spoof = overlay(3, 1, b"x");
        let mut outs: Vec<Collect> = sinks(2);
        net.uplinks[0].handle_tun(&spoof, &mut outs[0]);
        let (relay_tun, _) = pump(&mut net, Collect::default(), outs);
        assert!(relay_tun.is_empty());
        assert_eq!(net.relay.drops().spoofed, 1);

        // A stranger's handshake matches no peer.
        let mut stranger = Tunnel::new(&PrivateKey::generate().unwrap());
        stranger.set_peers(vec![PeerConfig {
            public_key: net.relay.public_key(),
            name: None,
            endpoint: Some(addr(RELAY_EP)),
            allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
            persistent_keepalive: 0,
        }]);
        let mut out = Collect::default();
        stranger.handle_tun(&spoof, &mut out);
        let mut relay_out = Collect::default();
        net.relay
            .handle_network(addr("203.0.113.1:1"), &out.net[0].1, &mut relay_out);
        assert!(relay_out.net.is_empty());
        assert_eq!(net.relay.drops().invalid, 1);
    }

    #[test]
    fn roaming_and_reconfiguration_keep_sessions() {
        let mut net = net(1);
        let hello = overlay(2, 1, b"a");
        let mut outs = vec![Collect::default()];
        net.uplinks[0].handle_tun(&hello, &mut outs[0]);
        pump(&mut net, Collect::default(), outs);
        // Same peers again (a re-apply): the session survives, no new handshake needed.
        let peers: Vec<PeerConfig> = net.relay.peers.iter().map(|p| p.config.clone()).collect();
        net.relay.set_peers(peers);
        let mut out = Collect::default();
        net.uplinks[0].handle_tun(&hello, &mut out);
        assert_eq!(out.net.len(), 1);
        // The uplink's packet now arrives from a new address (NAT rebinding): the relay moves.
        let mut relay_out = Collect::default();
        let moved = addr("198.51.100.99:50000");
        net.relay
            .handle_network(moved, &out.net[0].1, &mut relay_out);
        assert_eq!(relay_out.tun.len(), 1);
        assert_eq!(net.relay.stats()[0].endpoint, Some(moved));
        let mut relay_out = Collect::default();
        net.relay.handle_tun(&overlay(1, 2, b"b"), &mut relay_out);
        assert_eq!(relay_out.net[0].0, moved);
        // Removing the peer removes its route.
        net.relay.set_peers(Vec::new());
        let mut relay_out = Collect::default();
        net.relay.handle_tun(&overlay(1, 2, b"b"), &mut relay_out);
        assert!(relay_out.net.is_empty());
    }

    #[test]
    fn a_quiet_relay_gets_a_new_handshake_after_it_restarted() {
        let mut net = net(1);
        let mut outs = vec![Collect::default()];
        net.uplinks[0].tick(&mut outs[0]);
        pump(&mut net, Collect::default(), outs);
        assert!(net.relay.stats()[0].last_handshake.is_some());
        // The relay restarts: same key, no sessions, no endpoint for the uplink.
        let peers: Vec<PeerConfig> = net.relay.peers.iter().map(|p| p.config.clone()).collect();
        net.relay = Tunnel::new(&PrivateKey::from_bytes(*net.relay.private.as_bytes()));
        net.relay.set_peers(peers);
        assert!(net.relay.stats()[0].last_handshake.is_none());
        // Before the quiet limit nothing is forced; after it, the uplink re-handshakes.
        let start = Instant::now();
        let mut out = Collect::default();
        net.uplinks[0].tick_at(start + Duration::from_secs(10), &mut out);
        assert!(
            out.net.iter().all(|(_, d)| d.len() != 148),
            "no initiation yet"
        );
        let mut outs = vec![Collect::default()];
        net.uplinks[0].tick_at(
            start + quiet_limit(25) + Duration::from_secs(1),
            &mut outs[0],
        );
        assert!(
            outs[0].net.iter().any(|(_, d)| d.len() == 148),
            "a handshake initiation"
        );
        pump(&mut net, Collect::default(), outs);
        assert!(net.relay.stats()[0].last_handshake.is_some());
    }

    #[test]
    fn the_handshake_rate_limit_resets_every_second() {
        let mut net = net(1);
        let relay_ep = addr(RELAY_EP);
        let from = uplink_ep(0);
        // Answer kind of the relay to one fresh initiation: 92 = response, 64 = cookie reply.
        let answer = |net: &mut Net| -> usize {
            let mut out = Collect::default();
            net.uplinks[0].peers[0].initiate = true;
            net.uplinks[0].peers[0].tunn = Tunn::new(
                net.uplinks[0].private.clone(),
                boringtun::x25519::PublicKey::from(*net.relay.public_key().as_bytes()),
                None,
                None,
                7,
                None,
            );
            net.uplinks[0].tick(&mut out);
            let (to, init) = out.net.pop().unwrap();
            assert_eq!(to, relay_ep);
            let mut back = Collect::default();
            net.relay.handle_network(from, &init, &mut back);
            back.net.first().map_or(0, |(_, d)| d.len())
        };
        let answers: Vec<usize> = (0..HANDSHAKE_RATE_LIMIT + 5)
            .map(|_| answer(&mut net))
            .collect();
        assert_eq!(answers[0], 92);
        assert_eq!(*answers.last().unwrap(), 64, "over the limit: cookies");
        std::thread::sleep(Duration::from_millis(1100));
        net.relay.tick(&mut Collect::default());
        assert_eq!(answer(&mut net), 92, "a second later the limit is reset");
    }

    /// A stranger (a key the relay does not know) that floods the relay from `from` with
    /// initiations whose MACs are right, answering the cookie reply as a real flooder would.
    /// Returns the answers' sizes.
    fn flood(net: &mut Net, from: SocketAddr, count: usize) -> Vec<usize> {
        let mut stranger = Tunnel::new(&PrivateKey::generate().unwrap());
        stranger.set_peers(vec![PeerConfig {
            public_key: net.relay.public_key(),
            name: None,
            endpoint: Some(addr(RELAY_EP)),
            allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
            persistent_keepalive: 0,
        }]);
        let mut answers = Vec::new();
        for _ in 0..count {
            let init = match stranger.peers[0]
                .tunn
                .format_handshake_initiation(&mut stranger.scratch, true)
            {
                TunnResult::WriteToNetwork(out) => out.to_vec(),
                other => panic!("{other:?}"),
            };
            let mut back = Collect::default();
            net.relay.handle_network(from, &init, &mut back);
            answers.push(back.net.first().map_or(0, |(_, d)| d.len()));
            for (_, reply) in back.net {
                stranger.handle_network(addr(RELAY_EP), &reply, &mut Collect::default());
            }
        }
        answers
    }

    #[test]
    fn a_flood_from_one_source_is_limited_and_a_peer_elsewhere_still_handshakes() {
        let mut net = net(1);
        net.relay.tick(&mut Collect::default());
        let flooder = addr("203.0.113.66:9999");
        let answers = flood(&mut net, flooder, 600);
        // Past the load threshold the flooder got a cookie and answered with it: without a
        // per-source limit each of its initiations would cost a Diffie-Hellman.
        assert!(answers.contains(&COOKIE_REPLY_LEN), "cookies under load");
        let drops = net.relay.drops();
        let through = drops.invalid; // initiations that reached the DH and matched no peer
        assert!(
            through <= HANDSHAKE_RATE_LIMIT + PER_SOURCE_BURST + 1,
            "{through} flood initiations reached the Diffie-Hellman"
        );
        assert!(drops.rate_limited >= 400, "{drops:?}");
        // The same second, a legitimate uplink from another address: a cookie first (under
        // load), then its retry with the cookie completes the handshake.
        let mut outs = vec![Collect::default()];
        net.uplinks[0].tick(&mut outs[0]);
        pump(&mut net, Collect::default(), outs);
        let up = &mut net.uplinks[0];
        let init = match up.peers[0]
            .tunn
            .format_handshake_initiation(&mut up.scratch, true)
        {
            TunnResult::WriteToNetwork(out) => out.to_vec(),
            other => panic!("{other:?}"),
        };
        let mut back = Collect::default();
        net.relay.handle_network(uplink_ep(0), &init, &mut back);
        let mut up_out = vec![Collect::default()];
        for (_, d) in back.net {
            net.uplinks[0].handle_network(addr(RELAY_EP), &d, &mut up_out[0]);
        }
        pump(&mut net, Collect::default(), up_out);
        assert!(
            net.relay.stats()[0].last_handshake.is_some(),
            "the legitimate peer got through the flood"
        );
        // A second later the flooder has earned its share again, not more.
        let later = Instant::now() + Duration::from_secs(2);
        net.relay.tick_at(later, &mut Collect::default());
        let before = net.relay.drops().invalid;
        flood(&mut net, flooder, 300);
        let through = net.relay.drops().invalid - before;
        assert!(
            through <= HANDSHAKE_RATE_LIMIT + PER_SOURCE_BURST + 1,
            "{through} after the reset"
        );
    }

    #[test]
    fn the_source_table_is_bounded() {
        let mut limiter = SourceLimiter::new();
        let now = Instant::now();
        for i in 0..MAX_TRACKED_SOURCES + 100 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(
                0x0b00_0000 + u32::try_from(i).unwrap(),
            ));
            let allowed = limiter.allow(ip, now);
            assert_eq!(allowed, i < MAX_TRACKED_SOURCES, "{ip}");
        }
        assert_eq!(limiter.len(), MAX_TRACKED_SOURCES);
        // A source gets its burst, then one per 1/rate seconds.
        let mut limiter = SourceLimiter::new();
        let ip = IpAddr::from(std::net::Ipv4Addr::new(10, 0, 0, 1));
        let allowed = (0..10).filter(|_| limiter.allow(ip, now)).count();
        assert_eq!(u64::try_from(allowed).unwrap(), PER_SOURCE_BURST);
        assert!(!limiter.allow(ip, now + Duration::from_millis(10)));
        assert!(limiter.allow(ip, now + Duration::from_millis(60)));
        limiter.forget_idle(now + Duration::from_secs(5));
        assert!(limiter.is_empty());
    }

    #[test]
    fn receiver_indices_are_random_and_distinct() {
        let configs = |n: usize| -> Vec<PeerConfig> {
            (0..n)
                .map(|_| PeerConfig {
                    public_key: PrivateKey::generate().unwrap().public_key(),
                    name: None,
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    persistent_keepalive: 0,
                })
                .collect()
        };
        let key = PrivateKey::generate().unwrap();
        let mut a = Tunnel::new(&key);
        let mut b = Tunnel::new(&key);
        let peers = configs(64);
        a.set_peers(peers.clone());
        b.set_peers(peers);
        let ia: Vec<u32> = a.peers.iter().map(|p| p.index).collect();
        let ib: Vec<u32> = b.peers.iter().map(|p| p.index).collect();
        let distinct: std::collections::HashSet<u32> = ia.iter().copied().collect();
        assert_eq!(distinct.len(), 64);
        assert!(ia.iter().all(|i| *i != 0 && *i <= 0x00ff_ffff));
        assert_ne!(ia, ib, "two relays number the same peers differently");
        let sequential = ia.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(sequential < 4, "{ia:?}");
        // A kept peer keeps its index; a new one gets a fresh one.
        let mut more = a.peers.iter().map(|p| p.config.clone()).collect::<Vec<_>>();
        more.extend(configs(1));
        a.set_peers(more);
        assert_eq!(
            a.peers[..64].iter().map(|p| p.index).collect::<Vec<_>>(),
            ia
        );
        assert!(!ia.contains(&a.peers[64].index));
    }

    #[test]
    fn timers_start_the_handshake_for_keepalive_peers() {
        let mut net = net(1);
        let mut out = Collect::default();
        // The relay knows no endpoint: it stays quiet. The uplink (endpoint and keepalive
        // known) starts its handshake on the first tick, and the relay answers.
        net.relay.tick(&mut out);
        assert!(out.net.is_empty());
        let mut outs = vec![Collect::default()];
        net.uplinks[0].tick(&mut outs[0]);
        assert_eq!(outs[0].net.len(), 1);
        assert_eq!(outs[0].net[0].0, addr(RELAY_EP));
        pump(&mut net, Collect::default(), outs);
        assert!(net.relay.stats()[0].last_handshake.is_some());
        assert!(net.uplinks[0].stats()[0].last_handshake.is_some());
    }
}
