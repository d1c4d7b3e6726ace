//! The I/O shell around the [`Tunnel`] core: one TUN device, one UDP socket, and a thread
//! running an event loop (mio) that feeds the core and writes what it produces.
//!
//! The loop drains each ready source in bounded rounds (so neither direction starves the
//! other), runs the core's timers every [`TICK`], and takes commands (new peers, a status
//! snapshot, stop) through a channel plus a waker. The TUN device disappears when the
//! thread ends (it is not persistent).
//!
//! Batched I/O (issue 6), without touching the core: the TUN device is opened with
//! `IFF_VNET_HDR` and TSO/USO offloads, so one read returns a TCP super-packet that tun-rs
//! splits into MTU-sized packets ([`crate::offload`]); the encrypted datagrams go out through
//! the socket's GSO batch ([`crate::udp`]), one `sendmsg` per run of datagrams to one
//! endpoint; received GRO super-datagrams are cut, decrypted, and the packets collected and
//! coalesced back into GRO packets for one TUN write each (`send_multiple`). Every offload
//! the kernel refuses falls back to one syscall per packet, chosen at start-up, logged and
//! reported in [`DeviceStatus::offloads`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::gro::GroWriter;
use crate::key::PrivateKey;
use crate::offload::{IDEAL_BATCH_SIZE, OFFSET, Offloads, VIRTIO_NET_HDR_LEN};
use crate::tunnel::{DropStats, MAX_PACKET, PeerConfig, PeerStats, Sink, Tunnel};
use crate::udp::{RECV_BUFFER, Udp, datagrams};

/// How often the core's timers run.
pub const TICK: Duration = Duration::from_millis(100);
/// Reads from one source before the loop looks at the other one (with offloads one read
/// may carry up to 64 KiB: a TSO super-packet or a GRO super-datagram).
const ROUND: usize = 64;
/// Segments one TSO read can split into: 64 KiB at Linux's smallest MSS (48 bytes). With
/// fewer buffers, a super-packet of a small-MSS flow could never be split and its
/// connection would stall; about 2 MB per device.
const TSO_MAX_SEGMENTS: usize = MAX_PACKET / 48 + 1;
/// Packets the kernel queues for the loop to read from the TUN device (default 500).
const TX_QUEUE_LEN: u32 = 5000;
/// Capacity of a buffer for writing to the TUN device: room for the virtio header (twice, as
/// tun-rs's coalescer requires) and a whole GRO packet.
const GRO_BUFFER: usize = 2 * OFFSET + MAX_PACKET;
const TUN: Token = Token(0);
const UDP: Token = Token(1);
const WAKE: Token = Token(2);

/// The device could not be created or has stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Creating or configuring the TUN device failed.
    #[error("TUN device {name}: {source}")]
    Tun {
        /// Interface name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Binding or configuring the UDP socket failed.
    #[error("UDP socket on port {port}: {source}")]
    Socket {
        /// The port.
        port: u16,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Setting up the event loop failed.
    #[error("event loop: {0}")]
    Poll(#[source] io::Error),
    /// The device's thread is gone.
    #[error("the device has stopped")]
    Stopped,
}

impl DeviceError {
    /// A stable, low-cardinality name for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Tun { .. } => "TunDeviceFailed",
            Self::Socket { .. } => "UDPSocketFailed",
            Self::Poll(_) => "EventLoopFailed",
            Self::Stopped => "DeviceStopped",
        }
    }
}

/// The interface a device brings up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Interface name (`wg-relay`, `wg-uplink`).
    pub name: String,
    /// Address with prefix; the prefix's connected route goes through the tunnel.
    pub address: Ipv4Net,
    /// MTU.
    pub mtu: u16,
    /// UDP port to listen on (0: any).
    pub listen_port: u16,
}

/// A snapshot of the device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    /// Interface name.
    pub interface: String,
    /// UDP port actually bound.
    pub listen_port: u16,
    /// Per-peer counters.
    pub peers: Vec<PeerStats>,
    /// Dropped packets by reason.
    pub drops: DropStats,
    /// Datagrams the socket refused to send (buffer full) and packets the TUN device
    /// refused.
    pub send_errors: u64,
    /// The offloads in use (the plain per-packet path for each one that is off).
    pub offloads: Offloads,
}

enum Command {
    SetPeers(Vec<PeerConfig>),
    Status(mpsc::Sender<DeviceStatus>),
    Stop,
}

/// A running WireGuard interface.
#[derive(Debug)]
pub struct Device {
    name: String,
    commands: mpsc::Sender<Command>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl Device {
    /// Creates the TUN device and the socket, then starts the loop with `peers`.
    ///
    /// Offloads (TUN `IFF_VNET_HDR` with TSO/USO, UDP GSO/GRO) are used where the kernel
    /// accepts them; each refused one falls back to the plain per-packet path, logged.
    /// `TUNNEL_OFFLOADS=off` in the environment asks for the plain path everywhere.
    pub fn start(
        config: &InterfaceConfig,
        key: &PrivateKey,
        peers: Vec<PeerConfig>,
    ) -> Result<Self, DeviceError> {
        let tun_err = |source| DeviceError::Tun {
            name: config.name.clone(),
            source,
        };
        let want_offloads = std::env::var("TUNNEL_OFFLOADS").map_or(true, |v| v != "off");
        let build = |offload: bool| {
            tun_rs::DeviceBuilder::new()
                .name(&config.name)
                .mtu(config.mtu)
                .ipv4(config.address.addr(), config.address.prefix_len(), None)
                .offload(offload)
                .build_sync()
        };
        let tun = if want_offloads {
            match build(true) {
                Ok(tun) => tun,
                Err(e) => {
                    tracing::warn!(interface = %config.name, error = %e, "TUN offloads refused; plain per-packet TUN I/O");
                    build(false).map_err(tun_err)?
                }
            }
        } else {
            build(false).map_err(tun_err)?
        };
        tun.set_nonblocking(true).map_err(tun_err)?;
        // Best effort: a longer queue rides out the moments the loop is not scheduled
        // (bursts of UDP from Envoy otherwise overflow the default 500 packets).
        if let Err(e) = tun.set_tx_queue_len(TX_QUEUE_LEN) {
            tracing::debug!(interface = %config.name, error = %e, "cannot set txqueuelen");
        }

        let mut udp =
            Udp::bind(config.listen_port, want_offloads).map_err(|source| DeviceError::Socket {
                port: config.listen_port,
                source,
            })?;
        let listen_port = udp.port();
        let offloads = offloads(&tun, &udp);

        let poll = Poll::new().map_err(DeviceError::Poll)?;
        let tun_fd = tun.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&tun_fd), TUN, Interest::READABLE)
            .map_err(DeviceError::Poll)?;
        poll.registry()
            .register(udp.socket_mut(), UDP, Interest::READABLE)
            .map_err(DeviceError::Poll)?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(DeviceError::Poll)?;

        let mut tunnel = Tunnel::new(key);
        tunnel.set_peers(peers);
        let (commands, inbox) = mpsc::channel();
        let name = config.name.clone();
        let mtu = usize::from(config.mtu);
        let thread = std::thread::Builder::new()
            .name(format!("wg:{name}"))
            .spawn({
                let name = name.clone();
                move || {
                    let mut io = Io {
                        name,
                        listen_port,
                        poll,
                        tun_in: TunIn::new(mtu),
                        tun_out: TunOut::new(tun.tcp_gso()),
                        tun,
                        udp,
                        tunnel,
                        inbox,
                    };
                    if let Err(e) = io.run() {
                        tracing::error!(interface = %io.name, error = %e, "WireGuard loop stopped");
                    }
                }
            })
            .map_err(DeviceError::Poll)?;
        tracing::info!(
            interface = %name,
            address = %config.address,
            mtu = config.mtu,
            listen_port,
            tun_vnet_hdr = offloads.tun_vnet_hdr,
            tun_uso = offloads.tun_uso,
            udp_gso = offloads.udp_gso,
            udp_gro = offloads.udp_gro,
            "interface up"
        );
        Ok(Self {
            name,
            commands,
            waker,
            thread: Some(thread),
        })
    }

    /// Replaces the peers (unchanged peers keep their sessions).
    pub fn set_peers(&self, peers: Vec<PeerConfig>) -> Result<(), DeviceError> {
        self.send(Command::SetPeers(peers))
    }

    /// A snapshot of the device's counters.
    pub fn status(&self) -> Result<DeviceStatus, DeviceError> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Status(tx))?;
        rx.recv_timeout(Duration::from_secs(2))
            .map_err(|_| DeviceError::Stopped)
    }

    /// Whether the loop still runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn send(&self, command: Command) -> Result<(), DeviceError> {
        self.commands
            .send(command)
            .map_err(|_| DeviceError::Stopped)?;
        self.waker.wake().map_err(|_| DeviceError::Stopped)
    }

    /// Stops the loop and removes the interface.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.send(Command::Stop);
            let _ = thread.join();
            tracing::info!(interface = %self.name, "interface down");
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Io {
    name: String,
    listen_port: u16,
    poll: Poll,
    tun: tun_rs::SyncDevice,
    tun_in: TunIn,
    tun_out: TunOut,
    udp: Udp,
    tunnel: Tunnel,
    inbox: mpsc::Receiver<Command>,
}

/// Buffers for reading the TUN device: one raw read (a TSO super-packet with offloads) and
/// the MTU-sized packets it is split into.
struct TunIn {
    raw: Box<[u8]>,
    bufs: Vec<Box<[u8]>>,
    sizes: Vec<usize>,
}

impl TunIn {
    fn new(mtu: usize) -> Self {
        Self {
            raw: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET].into_boxed_slice(),
            bufs: (0..TSO_MAX_SEGMENTS)
                .map(|_| vec![0; OFFSET + mtu.max(1280)].into_boxed_slice())
                .collect(),
            sizes: vec![0; TSO_MAX_SEGMENTS],
        }
    }
}

/// Decrypted packets waiting to be written to the TUN device (coalesced into GRO packets
/// with offloads). Buffers keep their capacity: no allocation per packet once warm.
struct TunOut {
    bufs: Vec<Vec<u8>>,
    len: usize,
    gro: tun_rs::GROTable,
    errors: u64,
    /// With `IFF_VNET_HDR`: TCP segments go through `tcp`, one GRO packet per run of a flow
    /// (issue 23); everything else through `bufs` and tun-rs's coalescer.
    vnet_hdr: bool,
    tcp: GroWriter,
}

impl TunOut {
    fn new(vnet_hdr: bool) -> Self {
        Self {
            vnet_hdr,
            tcp: GroWriter::new(),
            // The coalescer appends to a buffer only when it has room for a whole GRO packet
            // (it never reallocates); pages are touched only as far as they are used.
            bufs: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(GRO_BUFFER))
                .collect(),
            len: 0,
            gro: tun_rs::GROTable::new(),
            errors: 0,
        }
    }

    fn push(&mut self, tun: &tun_rs::SyncDevice, packet: &[u8]) {
        // Only one of the two paths holds packets at a time: the order is kept.
        if self.vnet_hdr && GroWriter::accepts(packet) {
            self.flush_batch(tun);
            self.tcp.push(packet, &mut |buf| tun.send(buf));
            return;
        }
        self.tcp.flush(&mut |buf| tun.send(buf));
        if self.len == self.bufs.len() {
            self.flush_batch(tun);
        }
        let buf = &mut self.bufs[self.len];
        buf.clear();
        buf.resize(OFFSET, 0);
        buf.extend_from_slice(packet);
        self.len += 1;
    }

    fn flush(&mut self, tun: &tun_rs::SyncDevice) {
        self.tcp.flush(&mut |buf| tun.send(buf));
        self.flush_batch(tun);
    }

    fn errors(&self) -> u64 {
        self.errors + self.tcp.errors
    }

    fn flush_batch(&mut self, tun: &tun_rs::SyncDevice) {
        if self.len == 0 {
            return;
        }
        if tun
            .send_multiple(&mut self.gro, &mut self.bufs[..self.len], OFFSET)
            .is_err()
        {
            self.errors += 1;
        }
        self.len = 0;
    }
}

/// The core's output: encrypted datagrams to the socket's GSO batch, decrypted packets to
/// the TUN batch. The loop flushes both at the end of each round.
struct IoSink<'a> {
    tun: &'a tun_rs::SyncDevice,
    tun_out: &'a mut TunOut,
    udp: &'a mut Udp,
}

impl IoSink<'_> {
    fn flush(&mut self) {
        self.udp.flush();
        self.tun_out.flush(self.tun);
    }
}

impl Sink for IoSink<'_> {
    fn to_network(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.udp.send(to, datagram);
    }

    fn to_tun(&mut self, packet: &[u8]) {
        self.tun_out.push(self.tun, packet);
    }
}

impl Io {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(16);
        let mut buf = vec![0u8; RECV_BUFFER].into_boxed_slice();
        let mut next_tick = Instant::now();
        let (mut tun_pending, mut udp_pending) = (false, false);
        loop {
            let now = Instant::now();
            let timeout = if tun_pending || udp_pending {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in &events {
                match event.token() {
                    TUN => tun_pending = true,
                    UDP => udp_pending = true,
                    _ => {}
                }
            }
            while let Ok(command) = self.inbox.try_recv() {
                match command {
                    Command::SetPeers(peers) => self.tunnel.set_peers(peers),
                    Command::Status(reply) => {
                        let _ = reply.send(self.status());
                    }
                    Command::Stop => return Ok(()),
                }
            }
            let mut sink = IoSink {
                tun: &self.tun,
                tun_out: &mut self.tun_out,
                udp: &mut self.udp,
            };
            if tun_pending {
                let tun_in = &mut self.tun_in;
                for _ in 0..ROUND {
                    match self.tun.recv_multiple(
                        &mut tun_in.raw,
                        &mut tun_in.bufs,
                        &mut tun_in.sizes,
                        OFFSET,
                    ) {
                        Ok(n) => {
                            for (buf, &size) in tun_in.bufs.iter().zip(&tun_in.sizes).take(n) {
                                // tun-rs keeps `size` within the buffer; a size that is not
                                // (a future change there) drops the packet, never panics.
                                if let Some(packet) = OFFSET
                                    .checked_add(size)
                                    .and_then(|end| buf.get(OFFSET..end))
                                {
                                    self.tunnel.handle_tun(packet, &mut sink);
                                } else {
                                    tracing::debug!(size, "TUN read of an impossible size dropped");
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            tun_pending = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // A read the offload code cannot split (malformed): dropped.
                        Err(e) if e.raw_os_error().is_none() => {
                            tracing::debug!(error = %e, "TUN read dropped");
                        }
                        Err(e) => return Err(e),
                    }
                }
                sink.flush();
            }
            if udp_pending {
                for _ in 0..ROUND {
                    match sink.udp.recv(&mut buf) {
                        Ok((n, from, segment)) => {
                            // Any size, zero included (issue 24, H3): cut by `datagrams`.
                            for datagram in datagrams(&buf[..n.min(buf.len())], segment) {
                                self.tunnel.handle_network(from, datagram, &mut sink);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            udp_pending = false;
                            break;
                        }
                        // ICMP errors from earlier sends surface here; they are not fatal.
                        Err(_) => {}
                    }
                }
                sink.flush();
            }
            if Instant::now() >= next_tick {
                self.tunnel.tick(&mut sink);
                sink.flush();
                next_tick = Instant::now() + TICK;
            }
        }
    }

    fn status(&self) -> DeviceStatus {
        DeviceStatus {
            interface: self.name.clone(),
            listen_port: self.listen_port,
            peers: self.tunnel.stats(),
            drops: self.tunnel.drops(),
            send_errors: self.udp.send_errors + self.tun_out.errors(),
            // Derived each time: GSO can be switched off by the kernel's first refusal.
            offloads: offloads(&self.tun, &self.udp),
        }
    }
}

/// The offloads a TUN device and a socket run with.
fn offloads(tun: &tun_rs::SyncDevice, udp: &Udp) -> Offloads {
    Offloads {
        tun_vnet_hdr: tun.tcp_gso(),
        tun_uso: tun.udp_gso(),
        udp_gso: udp.gso(),
        udp_gro: udp.gro(),
    }
}
