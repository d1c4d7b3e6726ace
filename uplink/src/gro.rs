//! TUN writes of decrypted TCP: consecutive segments of one flow appended, as they are
//! decrypted, to one GRO packet, written with one `write` (issue 23).
//!
//! The general coalescer ([`crate::offload::coalesce`], tun-rs's port of wireguard-go's
//! `handle_gro`) first collects a batch of packets, copies each TCP packet into a fresh
//! `Vec`, verifies every segment's checksum in software, then copies its payload into the
//! head of its flow. Profiled on the bench (TCP 1 stream, uplink side) that was about a sixth
//! of the uplink's CPU: copies, allocations, checksums, table look-ups. This writer keeps one
//! open packet and appends each payload to it once, in decryption order:
//!
//! - **What joins.** An IPv4 TCP segment without IP options or fragmentation, with payload,
//!   flags ACK and PSH only, joins the open packet when it belongs to the same flow and
//!   follows it: the IP header equal except length, ID and checksum; the TCP ports,
//!   acknowledgment, header length, flags, window, urgent pointer and options equal; its
//!   sequence number is the next one expected; its payload no longer than the first segment's,
//!   and the open packet has no shorter segment yet (the kernel's GSO rules). A segment with
//!   PSH ends the packet. Everything else (other flows, gaps, SYN/FIN/RST, IPv6, UDP, ...)
//!   first writes the open packet, then goes on its own: order is kept.
//! - **Checksums.** A packet of several segments is written with a virtio header (GSO TCPv4,
//!   `NEEDS_CSUM`, the pseudo-header sum in the TCP checksum field), as tun-rs's coalescer
//!   writes its GRO packets; the segments' own checksums are not verified first. The
//!   datagram that carried each segment was authenticated by WireGuard's AEAD, which is what
//!   the kernel's WireGuard relies on too (it marks decrypted packets
//!   `CHECKSUM_UNNECESSARY`). A lone segment is written as it came, its checksum checked by
//!   the kernel as before.
//! - **Memory.** One buffer for the largest IP packet, allocated once; nothing per packet.
//!
//! The writer is generic over the write (`FnMut(&[u8])`), so the tests check it without a TUN
//! device.

use std::io;

use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VirtioNetHdr};

use crate::offload::VIRTIO_NET_HDR_LEN;

/// The largest IP packet (its total length is 16 bits).
const MAX_IP_PACKET: usize = 65_535;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const NEEDS_CSUM: u8 = 1;
const TCP: u8 = 6;
const IPV4_HEADER: usize = 20;
const FLAG_PSH: u8 = 0x08;
const FLAG_ACK: u8 = 0x10;
/// Segments in one packet at most (the kernel's `GSO_MAX_SEGS` is 65535; GRO stops at 64).
const MAX_SEGMENTS: usize = 64;

/// A decrypted IPv4 TCP segment that may join a GRO packet: its header lengths, payload
/// length and sequence number.
#[derive(Debug, Clone, Copy)]
struct Segment {
    tcp_header: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

impl Segment {
    /// `Some` for a segment that may be coalesced (see the module's "What joins").
    fn parse(packet: &[u8]) -> Option<Self> {
        let ip = packet.get(..IPV4_HEADER)?;
        // Version 4, no options; TCP; not a fragment (MF clear, offset 0); exact length.
        if ip[0] != 0x45 || ip[9] != TCP || ip[6] & 0x3f != 0 || ip[7] != 0 {
            return None;
        }
        if usize::from(u16::from_be_bytes([ip[2], ip[3]])) != packet.len() {
            return None;
        }
        let tcp = packet.get(IPV4_HEADER..IPV4_HEADER + 20)?;
        let tcp_header = usize::from(tcp[12] >> 4) * 4;
        let headers = IPV4_HEADER + tcp_header;
        if tcp_header < 20 || packet.len() <= headers {
            return None;
        }
        let flags = tcp[13];
        if flags & !(FLAG_ACK | FLAG_PSH) != 0 || flags & FLAG_ACK == 0 {
            return None;
        }
        Some(Self {
            tcp_header,
            payload: packet.len() - headers,
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            psh: flags & FLAG_PSH != 0,
        })
    }

    fn headers(&self) -> usize {
        IPV4_HEADER + self.tcp_header
    }
}

/// The packet being built in [`GroWriter::buf`].
#[derive(Debug, Clone, Copy)]
struct Open {
    first: Segment,
    next_seq: u32,
    segments: usize,
    short: bool,
}

/// Appends consecutive TCP segments of one flow into one GRO packet; see the module doc.
#[derive(Debug)]
pub struct GroWriter {
    /// The virtio header, then the open packet.
    buf: Vec<u8>,
    open: Option<Open>,
    /// Writes the device refused.
    pub errors: u64,
}

impl Default for GroWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GroWriter {
    /// A writer with its buffer allocated.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(VIRTIO_NET_HDR_LEN + MAX_IP_PACKET),
            open: None,
            errors: 0,
        }
    }

    /// Whether `packet` is a segment this writer coalesces; anything else must go another way
    /// (after [`GroWriter::flush`], to keep the order).
    pub fn accepts(packet: &[u8]) -> bool {
        Segment::parse(packet).is_some()
    }

    /// Whether a packet is open (not yet written).
    pub fn is_pending(&self) -> bool {
        self.open.is_some()
    }

    /// Adds `packet` (an IP packet) to the open GRO packet, or writes the open one and starts
    /// a new one with it; a packet that cannot be coalesced is written on its own.
    pub fn push(&mut self, packet: &[u8], write: &mut impl FnMut(&[u8]) -> io::Result<usize>) {
        let Some(segment) = Segment::parse(packet) else {
            self.flush(write);
            self.write_alone(packet, write);
            return;
        };
        if let Some(open) = self.open {
            if self.follows(open, segment, packet) {
                let headers = segment.headers();
                self.buf.extend_from_slice(&packet[headers..]);
                let open = Open {
                    next_seq: open.next_seq.wrapping_add(payload_u32(segment.payload)),
                    segments: open.segments + 1,
                    short: segment.payload < open.first.payload,
                    first: open.first,
                };
                self.open = Some(open);
                if segment.psh {
                    // PSH ends a GRO packet: mark it on the packet and write it.
                    let flags = VIRTIO_NET_HDR_LEN + IPV4_HEADER + 13;
                    self.buf[flags] |= FLAG_PSH;
                    self.flush(write);
                }
                return;
            }
            self.flush(write);
        }
        if segment.psh {
            self.write_alone(packet, write);
            return;
        }
        self.buf.clear();
        self.buf.resize(VIRTIO_NET_HDR_LEN, 0);
        self.buf.extend_from_slice(packet);
        self.open = Some(Open {
            first: segment,
            next_seq: segment.seq.wrapping_add(payload_u32(segment.payload)),
            segments: 1,
            short: false,
        });
    }

    /// Whether `segment` (`packet`) continues the open packet.
    fn follows(&self, open: Open, segment: Segment, packet: &[u8]) -> bool {
        let first = open.first;
        if segment.tcp_header != first.tcp_header
            || segment.seq != open.next_seq
            || segment.payload > first.payload
            || open.short
            || open.segments >= MAX_SEGMENTS
            || self.buf.len() + segment.payload > VIRTIO_NET_HDR_LEN + MAX_IP_PACKET
        {
            return false;
        }
        let Some(head) = self
            .buf
            .get(VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + first.headers())
        else {
            return false;
        };
        let headers = &packet[..segment.headers()];
        // IP: version/IHL and TOS; flags (DF) and TTL, protocol; addresses. Not the length,
        // ID or checksum.
        let ip_same = head[0..2] == headers[0..2]
            && head[6..10] == headers[6..10]
            && head[12..20] == headers[12..20];
        // TCP: ports; (sequence checked above) acknowledgment; header length, flags and
        // window (the kernel's GRO compares this word too); urgent pointer and options.
        // The open packet has no PSH (a PSH segment closes it), so flags compare without it.
        let t = IPV4_HEADER;
        let tcp_same = head[t..t + 4] == headers[t..t + 4]
            && head[t + 8..t + 13] == headers[t + 8..t + 13]
            && head[t + 13] == headers[t + 13] & !FLAG_PSH
            && head[t + 14..t + 16] == headers[t + 14..t + 16]
            && head[t + 18..] == headers[t + 18..];
        ip_same && tcp_same
    }

    /// Writes the open packet, if any.
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8]) -> io::Result<usize>) {
        let Some(open) = self.open.take() else {
            return;
        };
        // A lone segment: no offload asked of the kernel (GSO none, checksum as it came).
        let header = if open.segments == 1 {
            VirtioNetHdr::default()
        } else {
            let headers = open.first.headers();
            let packet = &mut self.buf[VIRTIO_NET_HDR_LEN..];
            let total = packet.len();
            // Total length, then the IPv4 header checksum over the new header.
            packet[2..4].copy_from_slice(&len_u16(total).to_be_bytes());
            packet[10..12].copy_from_slice(&[0, 0]);
            let ip_sum = !fold(sum(&packet[..IPV4_HEADER], 0));
            packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            // CHECKSUM_PARTIAL: the pseudo-header's sum in the TCP checksum field, the
            // kernel adds the segment's own when it (re)segments or delivers.
            let tcp_len = total - IPV4_HEADER;
            let pseudo = sum(&packet[12..20], u64::from(TCP) + tcp_len as u64);
            let check = IPV4_HEADER + 16;
            packet[check..check + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
            VirtioNetHdr {
                flags: NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
                hdr_len: len_u16(headers),
                gso_size: len_u16(open.first.payload),
                csum_start: len_u16(IPV4_HEADER),
                csum_offset: 16,
            }
        };
        if header.encode(&mut self.buf[..VIRTIO_NET_HDR_LEN]).is_err() || write(&self.buf).is_err()
        {
            self.errors += 1;
        }
    }

    /// Writes `packet` alone (no offload asked of the kernel).
    fn write_alone(&mut self, packet: &[u8], write: &mut impl FnMut(&[u8]) -> io::Result<usize>) {
        self.buf.clear();
        self.buf.resize(VIRTIO_NET_HDR_LEN, 0);
        self.buf.extend_from_slice(packet);
        if VirtioNetHdr::default()
            .encode(&mut self.buf[..VIRTIO_NET_HDR_LEN])
            .is_err()
            || write(&self.buf).is_err()
        {
            self.errors += 1;
        }
    }
}

/// A payload length as a sequence-number step (lengths here are below 64 KiB).
fn payload_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A length of a packet or header as 16 bits (this module keeps them below 64 KiB).
fn len_u16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// The one's-complement sum of `bytes` (big-endian 16-bit words) added to `initial`, unfolded.
fn sum(bytes: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut words = bytes.chunks_exact(2);
    for pair in &mut words {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a one's-complement sum to 16 bits (not inverted).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(0xffff)
}
