//! TUN offloads: which ones a device runs with, and the segmentation (TSO → MTU-sized
//! packets) and coalescing (TCP/UDP segments → one GRO packet) the shell relies on.
//!
//! The split and coalesce code is tun-rs's port of wireguard-go's (`gso_split`,
//! `handle_gro`, used by `SyncDevice::recv_multiple`/`send_multiple` when the device is
//! opened with `IFF_VNET_HDR`). This module is the thin, tested surface over it: the unit and
//! property tests here pin the behaviour the data path depends on (segment sizes, sequence
//! numbers, IPv4 IDs, checksums, flags, and that split-then-coalesce gives back the stream).

use std::io;

use serde::Serialize;
use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VirtioNetHdr};

pub use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is to be filled.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

/// The offloads a device runs with, chosen at start-up (`false`: the plain per-packet path
/// for that part, because the kernel refused it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Offloads {
    /// The TUN device has `IFF_VNET_HDR` with TSO/checksum offload: reads may be TSO
    /// super-packets (split before encryption), writes may be GRO packets (coalesced after
    /// decryption).
    pub tun_vnet_hdr: bool,
    /// The TUN device also accepts UDP segmentation offload (USO, Linux ≥ 6.2), so decrypted
    /// UDP datagrams of one flow are coalesced too.
    pub tun_uso: bool,
    /// The UDP socket sends batches of datagrams to one endpoint as one `sendmsg` with
    /// `UDP_SEGMENT` (GSO).
    pub udp_gso: bool,
    /// The UDP socket receives coalesced datagrams (`UDP_GRO`) and splits them.
    pub udp_gro: bool,
}

/// How a TCP super-packet (as a TSO read from the TUN gives it) is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tso {
    /// Payload bytes per segment (the MSS).
    pub segment: u16,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
}

/// The offset of packet data in the buffers of [`split_tcp`]/[`coalesce`]: room for the
/// virtio header in front.
pub const OFFSET: usize = VIRTIO_NET_HDR_LEN;

/// Splits a TCP super-packet `packet` (IP header, TCP header, then payload; its checksum
/// fields need not be valid) into MTU-sized packets written at [`OFFSET`] of `out`, with
/// sequence numbers, IPv4 IDs, lengths and both checksums set; FIN/PSH stay on the last
/// segment only, CWR on the first. Returns how many buffers it filled; `sizes[i]` is the
/// length of packet `i`.
pub fn split_tcp<B: AsRef<[u8]> + AsMut<[u8]>>(
    packet: &mut [u8],
    tso: Tso,
    out: &mut [B],
    sizes: &mut [usize],
) -> io::Result<usize> {
    let ip_header = if tso.ipv6 {
        40
    } else {
        usize::from(packet.first().copied().unwrap_or(0) & 0x0f) * 4
    };
    let tcp_header = packet
        .get(ip_header + 12)
        .map(|b| usize::from(b >> 4) * 4)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet too short"))?;
    let to_u16 = |v: usize| {
        u16::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "header size"))
    };
    let header = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: if tso.ipv6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        },
        hdr_len: to_u16(ip_header + tcp_header)?,
        gso_size: tso.segment,
        csum_start: to_u16(ip_header)?,
        csum_offset: 16,
    };
    tun_rs::gso_split(packet, header, out, sizes, OFFSET, tso.ipv6)
}

/// Coalesces the packets in `bufs` (each buffer: [`OFFSET`] bytes of room, then exactly one
/// IP packet) the way `send_multiple` does before writing to a TUN with offloads: segments of
/// one TCP flow (and of one UDP flow when `udp` is set) that follow each other merge into the
/// first one's buffer, which gets a virtio header describing the GRO packet. `to_write`
/// receives the indices of the buffers to write, in order.
pub fn coalesce(bufs: &mut [Vec<u8>], udp: bool, to_write: &mut Vec<usize>) -> io::Result<()> {
    to_write.clear();
    // tun-rs does not export the tables' types; they are only reachable through inference.
    #[allow(clippy::default_trait_access)]
    let mut tcp_table = Default::default();
    #[allow(clippy::default_trait_access)]
    let mut udp_table = Default::default();
    tun_rs::handle_gro(bufs, OFFSET, &mut tcp_table, &mut udp_table, udp, to_write)
}

/// The virtio header in front of a buffer [`coalesce`] prepared.
pub fn header_of(buf: &[u8]) -> io::Result<VirtioNetHdr> {
    VirtioNetHdr::decode(buf)
}
