//! The shell's UDP socket, with segmentation offloads where the kernel has them.
//!
//! - **Send (GSO).** Encrypted datagrams for the same endpoint are appended to one buffer and
//!   leave as one `sendmsg` carrying `UDP_SEGMENT` (equal-size segments, the last one may be
//!   shorter). The batch is flushed when the endpoint changes, a datagram is larger than the
//!   segment size, the previous one was shorter, it is full, or the caller ends its round; so
//!   the order of datagrams is kept.
//! - **Receive (GRO).** With `UDP_GRO` on, one `recvmsg` returns a run of datagrams from one
//!   sender as a single buffer plus the segment size; [`Udp::recv`] reports it and the caller
//!   cuts the buffer with [`datagrams`].
//!
//! **Any size from anyone (issue 24, H3).** The socket is public: a datagram may have any
//! length, zero included. [`datagrams`] is the one place a receive is cut, and it never
//! panics: an empty datagram comes out as one empty datagram (the core counts it invalid), a
//! segment size of 0 means "one datagram". An empty datagram is never put in a GSO batch
//! (its segment size would be 0), it is sent on its own.
//!
//! Each offload is probed when the socket is opened; without it the socket sends and
//! receives one datagram per syscall. A kernel that accepts `UDP_SEGMENT` on the socket but
//! refuses it on send (`EIO`: no checksum offload on the route) turns GSO off for good; a
//! batch refused because a segment exceeds the path MTU (GSO does not fragment) is sent
//! again one datagram at a time, which the kernel may fragment.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, getsockopt, recvmsg, sendmsg,
    setsockopt, sockopt,
};

/// Socket buffer size asked for; as root (`CAP_NET_ADMIN`) beyond `rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;
/// Segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO send: a UDP payload of at most 65535 - 8 - 20, with some room.
pub const GSO_MAX_BYTES: usize = 65_000;
/// Size of a receive buffer for a GRO super-datagram.
pub const RECV_BUFFER: usize = 65_535;

/// The UDP socket of a device.
#[derive(Debug)]
pub struct Udp {
    socket: mio::net::UdpSocket,
    port: u16,
    gso: bool,
    gro: bool,
    /// The datagrams waiting to go to `dest`, back to back.
    batch: Vec<u8>,
    dest: Option<SocketAddr>,
    segment: usize,
    segments: usize,
    last_short: bool,
    cmsg: Vec<u8>,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
}

impl Udp {
    /// Binds `0.0.0.0:port` (0: any), non-blocking, with `offloads` tried (`false`: plain).
    pub fn bind(port: u16, offloads: bool) -> io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Best effort: a small buffer only costs throughput (and loss under bursts).
        if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
            let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        }
        if setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
            let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        }
        socket.set_nonblocking(true)?;
        let bind = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        socket.bind(&bind.into())?;
        let gso = offloads && getsockopt(&socket, sockopt::UdpGsoSegment).is_ok();
        let gro = offloads && setsockopt(&socket, sockopt::UdpGroSegment, &true).is_ok();
        let std_socket: std::net::UdpSocket = socket.into();
        let port = std_socket.local_addr()?.port();
        Ok(Self {
            socket: mio::net::UdpSocket::from_std(std_socket),
            port,
            gso,
            gro,
            batch: Vec::with_capacity(if gso { GSO_MAX_BYTES } else { 0 }),
            dest: None,
            segment: 0,
            segments: 0,
            last_short: false,
            cmsg: nix::cmsg_space!(libc_int),
            send_errors: 0,
        })
    }

    /// The port bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether sends use UDP GSO (it can be turned off by the kernel's first refusal).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Whether receives use UDP GRO.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// The socket, to register with the event loop.
    pub fn socket_mut(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// Queues (GSO) or sends `datagram` to `to`.
    pub fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        if !self.gso {
            self.send_one(to, datagram);
            return;
        }
        // A batch's segment size cannot be 0: an empty datagram goes alone, in order.
        if datagram.is_empty() {
            self.flush();
            self.send_one(to, datagram);
            return;
        }
        if self.segments > 0
            && (self.dest != Some(to)
                || datagram.len() > self.segment
                || self.last_short
                || self.segments >= GSO_MAX_SEGMENTS
                || self.batch.len() + datagram.len() > GSO_MAX_BYTES)
        {
            self.flush();
        }
        if self.segments == 0 {
            self.dest = Some(to);
            self.segment = datagram.len();
        }
        self.last_short = datagram.len() < self.segment;
        self.batch.extend_from_slice(datagram);
        self.segments += 1;
    }

    /// Sends what is queued.
    pub fn flush(&mut self) {
        let (Some(to), segments) = (self.dest, self.segments) else {
            return;
        };
        if segments == 1 {
            let batch = std::mem::take(&mut self.batch);
            self.send_one(to, &batch);
            self.batch = batch;
        } else if let Err(e) = self.send_gso(to) {
            match e {
                // The device cannot segment (no checksum offload): never again.
                Errno::EIO => {
                    tracing::warn!(error = %e, "UDP GSO refused on send; sending one datagram per syscall from now on");
                    self.gso = false;
                    self.send_each(to);
                }
                // A segment larger than the path MTU: GSO does not fragment, plain sends do.
                Errno::EMSGSIZE | Errno::EINVAL => self.send_each(to),
                _ => self.send_errors += segments as u64,
            }
        }
        self.batch.clear();
        self.segments = 0;
        self.last_short = false;
        self.dest = None;
    }

    fn send_each(&mut self, to: SocketAddr) {
        let batch = std::mem::take(&mut self.batch);
        for datagram in datagrams(&batch, self.segment) {
            self.send_one(to, datagram);
        }
        self.batch = batch;
    }

    fn send_gso(&self, to: SocketAddr) -> Result<usize, Errno> {
        let segment = u16::try_from(self.segment).map_err(|_| Errno::EMSGSIZE)?;
        let addr = SockaddrStorage::from(to);
        loop {
            match sendmsg(
                self.socket.as_raw_fd(),
                &[IoSlice::new(&self.batch)],
                &[ControlMessage::UdpGsoSegments(&segment)],
                MsgFlags::empty(),
                Some(&addr),
            ) {
                Err(Errno::EINTR) => {}
                other => return other,
            }
        }
    }

    fn send_one(&mut self, to: SocketAddr, datagram: &[u8]) {
        if self.socket.send_to(datagram, to).is_err() {
            self.send_errors += 1;
        }
    }

    /// Receives into `buf`: `(bytes, sender, segment size)`. With GRO the buffer may hold
    /// several datagrams of `segment` bytes each (the last one may be shorter); without it,
    /// or for a single datagram, `segment` equals `bytes` (0 for an empty datagram). Cut
    /// `buf[..bytes]` with [`datagrams`], never with `chunks(segment)`.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
        if !self.gro {
            let (n, from) = self.socket.recv_from(buf)?;
            return Ok((n, from, n));
        }
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        let bytes = msg.bytes;
        let mut segment = bytes;
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::UdpGroSegments(size) = cmsg {
                    segment = usize::try_from(size).unwrap_or(bytes);
                }
            }
        }
        let from = msg
            .address
            .as_ref()
            .and_then(SockaddrStorage::as_sockaddr_in)
            .map(|a| SocketAddr::V4(SocketAddrV4::from(*a)))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no IPv4 sender"))?;
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated"));
        }
        Ok((bytes, from, segment.clamp(1, bytes.max(1))))
    }
}

/// The datagrams of one receive: `buf` (what [`Udp::recv`] filled) cut every `segment`
/// bytes, the last one possibly shorter. Never panics, whatever the sizes: an empty `buf` is
/// one empty datagram (a 0-byte datagram is a datagram: the caller accounts for it), and a
/// `segment` of 0 (a plain receive of an empty datagram, or a control message that says 0)
/// leaves `buf` whole. The device loop, the GSO fallback and the tests all cut with this.
pub fn datagrams(buf: &[u8], segment: usize) -> impl Iterator<Item = &[u8]> {
    let size = if segment == 0 { buf.len() } else { segment };
    let empty = buf.is_empty().then_some(buf);
    empty.into_iter().chain(buf.chunks(size.max(1)))
}

/// The C `int` of the `UDP_GRO` control message.
#[allow(non_camel_case_types)]
type libc_int = i32;
