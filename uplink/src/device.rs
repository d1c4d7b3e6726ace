//! The I/O shell around the [`Tunnel`] core: one TUN device, one UDP socket, and a thread
//! running an event loop (mio) that feeds the core and writes what it produces.
//!
//! The loop drains each ready source in bounded rounds (so neither direction starves the
//! other), runs the core's timers every [`TICK`], and takes commands (new peers, a status
//! snapshot, stop) through a channel plus a waker. The TUN device disappears when the
//! thread ends (it is not persistent). Batching (recvmmsg/sendmmsg, GSO/GRO, several
//! workers) plugs in here and in the sink without touching the core (issue 6).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::key::PrivateKey;
use crate::tunnel::{DropStats, MAX_PACKET, PeerConfig, PeerStats, Sink, Tunnel};

/// How often the core's timers run.
pub const TICK: Duration = Duration::from_millis(100);
/// Packets read from one source before the loop looks at the other one.
const ROUND: usize = 128;
/// Socket buffer size asked for (the kernel caps it at `rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;
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
            Self::Tun { .. } => "tun",
            Self::Socket { .. } => "udp_socket",
            Self::Poll(_) => "event_loop",
            Self::Stopped => "stopped",
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
    /// Datagrams the socket refused to send (buffer full).
    pub send_errors: u64,
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
    listen_port: u16,
    commands: mpsc::Sender<Command>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl Device {
    /// Creates the TUN device and the socket, then starts the loop with `peers`.
    pub fn start(
        config: &InterfaceConfig,
        key: &PrivateKey,
        peers: Vec<PeerConfig>,
    ) -> Result<Self, DeviceError> {
        let tun_err = |source| DeviceError::Tun {
            name: config.name.clone(),
            source,
        };
        let tun = tun_rs::DeviceBuilder::new()
            .name(&config.name)
            .mtu(config.mtu)
            .ipv4(config.address.addr(), config.address.prefix_len(), None)
            .build_sync()
            .map_err(tun_err)?;
        tun.set_nonblocking(true).map_err(tun_err)?;

        let sock_err = |source| DeviceError::Socket {
            port: config.listen_port,
            source,
        };
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(sock_err)?;
        // Best effort: a small buffer only costs throughput.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.set_nonblocking(true).map_err(sock_err)?;
        let bind = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.listen_port));
        socket.bind(&bind.into()).map_err(sock_err)?;
        let std_socket: std::net::UdpSocket = socket.into();
        let listen_port = std_socket.local_addr().map_err(sock_err)?.port();
        let mut udp = mio::net::UdpSocket::from_std(std_socket);

        let poll = Poll::new().map_err(DeviceError::Poll)?;
        let tun_fd = tun.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&tun_fd), TUN, Interest::READABLE)
            .map_err(DeviceError::Poll)?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)
            .map_err(DeviceError::Poll)?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(DeviceError::Poll)?;

        let mut tunnel = Tunnel::new(key);
        tunnel.set_peers(peers);
        let (commands, inbox) = mpsc::channel();
        let name = config.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wg:{name}"))
            .spawn({
                let name = name.clone();
                move || {
                    let mut io = Io {
                        name,
                        listen_port,
                        poll,
                        tun,
                        udp,
                        tunnel,
                        inbox,
                        send_errors: 0,
                    };
                    if let Err(e) = io.run() {
                        tracing::error!(interface = %io.name, error = %e, "WireGuard loop stopped");
                    }
                }
            })
            .map_err(DeviceError::Poll)?;
        tracing::info!(interface = %name, address = %config.address, mtu = config.mtu, listen_port, "interface up");
        Ok(Self {
            name,
            listen_port,
            commands,
            waker,
            thread: Some(thread),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UDP port bound.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
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
    udp: mio::net::UdpSocket,
    tunnel: Tunnel,
    inbox: mpsc::Receiver<Command>,
    send_errors: u64,
}

struct IoSink<'a> {
    tun: &'a tun_rs::SyncDevice,
    udp: &'a mio::net::UdpSocket,
    send_errors: &'a mut u64,
}

impl Sink for IoSink<'_> {
    fn to_network(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.udp.send_to(datagram, to).is_err() {
            *self.send_errors += 1;
        }
    }

    fn to_tun(&mut self, packet: &[u8]) {
        if self.tun.send(packet).is_err() {
            *self.send_errors += 1;
        }
    }
}

impl Io {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(16);
        let mut buf = vec![0u8; MAX_PACKET].into_boxed_slice();
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
                udp: &self.udp,
                send_errors: &mut self.send_errors,
            };
            if tun_pending {
                for _ in 0..ROUND {
                    match self.tun.recv(&mut buf) {
                        Ok(n) => self.tunnel.from_tun(&buf[..n], &mut sink),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            tun_pending = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if udp_pending {
                for _ in 0..ROUND {
                    match self.udp.recv_from(&mut buf) {
                        Ok((n, from)) => self.tunnel.from_network(from, &buf[..n], &mut sink),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            udp_pending = false;
                            break;
                        }
                        // ICMP errors from earlier sends surface here; they are not fatal.
                        Err(_) => {}
                    }
                }
            }
            if Instant::now() >= next_tick {
                self.tunnel.tick(&mut sink);
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
            send_errors: self.send_errors,
        }
    }
}
