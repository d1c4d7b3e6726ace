//! The segmentation (TSO super-packet → MTU-sized packets) and coalescing (segments → one GRO
//! packet) the batched data path relies on, on crafted packets: IPv4 and IPv6, TCP options,
//! sizes and last-segment edge cases, and every checksum checked by an independent
//! implementation here. A property test checks that split-then-coalesce gives back the
//! original byte stream.

use proptest::prelude::*;
use uplink::offload::{self, OFFSET, Tso, VIRTIO_NET_HDR_LEN};

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;
const SEQ: u32 = 0xfff0_0000; // close to wrapping
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;

/// The RFC 1071 one's-complement sum, folded (an independent implementation).
pub(crate) fn ones_sum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in chunks {
        let mut it = chunk.chunks_exact(2);
        for pair in &mut it {
            sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = it.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap()
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    ipv6: bool,
    ip_options: usize,
    tcp_options: usize,
}

impl Shape {
    fn ip_header(self) -> usize {
        if self.ipv6 { 40 } else { 20 + self.ip_options }
    }
    fn headers(self) -> usize {
        self.ip_header() + 20 + self.tcp_options
    }
}

/// An IP/TCP packet carrying `payload`, checksums zero (as a TSO read leaves them partial).
fn packet(shape: Shape, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let ip = shape.ip_header();
    let total = shape.headers() + payload.len();
    let mut p = vec![0u8; total];
    if shape.ipv6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&u16::try_from(total - 40).unwrap().to_be_bytes());
        p[6] = 6; // TCP
        p[7] = 64;
        p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p[0] = 0x40 | u8::try_from(ip / 4).unwrap();
        p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 200, 0, 1]);
        p[16..20].copy_from_slice(&[10, 200, 0, 2]);
        for (k, b) in p[20..ip].iter_mut().enumerate() {
            // Options: NOPs then end-of-list.
            *b = u8::from(k + 1 != shape.ip_options);
        }
    }
    let t = ip;
    p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    p[t + 12] = u8::try_from((20 + shape.tcp_options) / 4).unwrap() << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
    // TCP options: a timestamp-like option padded with NOPs.
    let opts = &mut p[t + 20..t + 20 + shape.tcp_options];
    for (k, b) in opts.iter_mut().enumerate() {
        *b = if k < 2 { 1 } else { u8::try_from(k).unwrap() };
    }
    p[shape.headers()..].copy_from_slice(payload);
    p
}

fn ip_header_len(p: &[u8]) -> usize {
    if p[0] >> 4 == 6 {
        40
    } else {
        usize::from(p[0] & 0x0f) * 4
    }
}

/// The TCP checksum over pseudo-header and segment, folded: 0xffff when valid.
fn tcp_sum(p: &[u8]) -> u16 {
    let ip = ip_header_len(p);
    let len = u32::try_from(p.len() - ip).unwrap();
    if p[0] >> 4 == 6 {
        let mut pseudo = [0u8; 40];
        pseudo[..32].copy_from_slice(&p[8..40]);
        pseudo[32..36].copy_from_slice(&len.to_be_bytes());
        pseudo[39] = 6;
        ones_sum(&[&pseudo, &p[ip..]])
    } else {
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&p[12..20]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        ones_sum(&[&pseudo, &p[ip..]])
    }
}

fn assert_valid(p: &[u8]) {
    let ip = ip_header_len(p);
    if p[0] >> 4 == 4 {
        assert_eq!(
            usize::from(u16::from_be_bytes([p[2], p[3]])),
            p.len(),
            "IPv4 total length"
        );
        assert_eq!(ones_sum(&[&p[..ip]]), 0xffff, "IPv4 header checksum");
    } else {
        assert_eq!(
            usize::from(u16::from_be_bytes([p[4], p[5]])),
            p.len() - 40,
            "IPv6 payload length"
        );
    }
    assert_eq!(tcp_sum(p), 0xffff, "TCP checksum");
}

fn seq_of(p: &[u8]) -> u32 {
    let t = ip_header_len(p);
    u32::from_be_bytes([p[t + 4], p[t + 5], p[t + 6], p[t + 7]])
}

fn flags_of(p: &[u8]) -> u8 {
    p[ip_header_len(p) + 13]
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| u8::try_from(i * 7 % 251).unwrap()).collect()
}

/// Splits and returns the packets (without the room in front).
fn split(shape: Shape, flags: u8, data: &[u8], mss: u16) -> Vec<Vec<u8>> {
    let mut sup = packet(shape, flags, SEQ, data);
    let mut out = vec![vec![0u8; OFFSET + shape.headers() + usize::from(mss)]; 128];
    let mut sizes = vec![0usize; 128];
    let n = offload::split_tcp(
        &mut sup,
        Tso {
            segment: mss,
            ipv6: shape.ipv6,
        },
        &mut out,
        &mut sizes,
    )
    .unwrap();
    out.iter()
        .zip(&sizes)
        .take(n)
        .map(|(b, &s)| b[OFFSET..OFFSET + s].to_vec())
        .collect()
}

/// Coalesces; returns each buffer to write as (virtio header, packet with its checksum
/// completed the way the kernel completes a `NEEDS_CSUM` packet).
fn coalesce(packets: &[Vec<u8>], udp: bool) -> Vec<(tun_rs::VirtioNetHdr, Vec<u8>)> {
    let mut bufs: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            // The coalescer only grows buffers with room for a whole GRO packet.
            let mut b = Vec::with_capacity(2 * OFFSET + 65_535);
            b.resize(OFFSET, 0);
            b.extend_from_slice(p);
            b
        })
        .collect();
    let mut to_write = Vec::new();
    offload::coalesce(&mut bufs, udp, &mut to_write).unwrap();
    to_write
        .iter()
        .map(|&i| {
            let hdr = offload::header_of(&bufs[i][OFFSET - VIRTIO_NET_HDR_LEN..]).unwrap();
            let mut p = bufs[i][OFFSET..].to_vec();
            if hdr.flags & 1 != 0 {
                let start = usize::from(hdr.csum_start);
                let at = start + usize::from(hdr.csum_offset);
                let sum = !ones_sum(&[&p[start..]]);
                p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
            }
            (hdr, p)
        })
        .collect()
}

fn check_split(shape: Shape, len: usize, mss: u16) {
    let data = payload(len);
    let flags = ACK | PSH | FIN | CWR;
    let segs = split(shape, flags, &data, mss);
    let mss_usize = usize::from(mss);
    assert_eq!(
        segs.len(),
        len.div_ceil(mss_usize),
        "{shape:?} len {len} mss {mss}"
    );
    let mut got = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert_valid(s);
        let body = &s[shape.headers()..];
        let expected = if i + 1 == segs.len() {
            len - i * mss_usize
        } else {
            mss_usize
        };
        assert_eq!(body.len(), expected, "segment {i}");
        assert_eq!(
            seq_of(s),
            SEQ.wrapping_add(u32::try_from(i * mss_usize).unwrap())
        );
        let f = flags_of(s);
        assert_eq!(
            f & (PSH | FIN) != 0,
            i + 1 == segs.len(),
            "PSH/FIN only on the last"
        );
        assert_eq!(f & CWR != 0, i == 0, "CWR only on the first");
        assert_ne!(f & ACK, 0);
        if !shape.ipv6 {
            let id = u16::from_be_bytes([s[4], s[5]]);
            assert_eq!(id, 0x1234 + u16::try_from(i).unwrap(), "IPv4 ID increments");
            assert_eq!(
                &s[20..shape.ip_header()],
                &packet(shape, 0, 0, &[])[20..shape.ip_header()]
            );
        }
        // TCP options copied into every segment.
        let t = shape.ip_header();
        assert_eq!(
            &s[t + 20..t + 20 + shape.tcp_options],
            &packet(shape, 0, 0, &[])[t + 20..t + 20 + shape.tcp_options]
        );
        got.extend_from_slice(body);
    }
    assert_eq!(got, data);
}

const V4: Shape = Shape {
    ipv6: false,
    ip_options: 0,
    tcp_options: 0,
};
const V4_TS: Shape = Shape {
    ipv6: false,
    ip_options: 0,
    tcp_options: 12,
};
const V4_IPOPT: Shape = Shape {
    ipv6: false,
    ip_options: 4,
    tcp_options: 12,
};
const V6: Shape = Shape {
    ipv6: true,
    ip_options: 0,
    tcp_options: 0,
};
const V6_TS: Shape = Shape {
    ipv6: true,
    ip_options: 0,
    tcp_options: 12,
};

#[test]
fn split_sizes_and_last_segment_edges() {
    for shape in [V4, V4_TS, V4_IPOPT, V6, V6_TS] {
        for (len, mss) in [
            (1, 1368),        // a single 1-byte segment
            (1368, 1368),     // exactly one full segment
            (1369, 1368),     // the last segment holds 1 byte
            (2 * 1368, 1368), // last segment full
            (2 * 1368 - 1, 1368),
            (45 * 1368, 1368), // a 64 KiB-class super-packet
            (65_000 - 80, 1448),
            (1000, 536),
        ] {
            check_split(shape, len, mss);
        }
    }
}

#[test]
fn split_of_an_empty_payload_yields_nothing() {
    assert!(split(V4_TS, ACK, &[], 1368).is_empty());
}

#[test]
fn split_refuses_too_few_output_buffers() {
    let mut sup = packet(V4, ACK, SEQ, &payload(10 * 1000));
    let mut out = vec![vec![0u8; OFFSET + 1100]; 4];
    let mut sizes = vec![0; 4];
    assert!(
        offload::split_tcp(
            &mut sup,
            Tso {
                segment: 1000,
                ipv6: false
            },
            &mut out,
            &mut sizes
        )
        .is_err()
    );
}

#[test]
fn split_ipv4_header_checksum_known_value() {
    // 45 00 008c 1234 4000 40 06 ____ 0ac80001 0ac80002: computed by hand (RFC 1071) = 0x12a6.
    let segs = split(V4, ACK, &payload(100), 1000);
    assert_eq!(segs[0].len(), 140);
    assert_eq!(u16::from_be_bytes([segs[0][10], segs[0][11]]), 0x12a6);
}

fn check_coalesce(shape: Shape, len: usize, mss: u16) {
    let data = payload(len);
    let segs = split(shape, ACK | PSH, &data, mss);
    let out = coalesce(&segs, true);
    let mut got = Vec::new();
    let mut next_seq = SEQ;
    for (hdr, p) in &out {
        assert_valid(p);
        assert_eq!(seq_of(p), next_seq);
        let body = &p[shape.headers()..];
        if body.len() > usize::from(mss) {
            assert_eq!(
                hdr.gso_type & 0x7f,
                if shape.ipv6 { GSO_TCPV6 } else { GSO_TCPV4 }
            );
            assert_eq!(hdr.gso_size, mss);
            assert_eq!(usize::from(hdr.csum_start), shape.ip_header());
            assert_eq!(hdr.csum_offset, 16);
        } else {
            assert_eq!(hdr.gso_type, 0);
        }
        next_seq = next_seq.wrapping_add(u32::try_from(body.len()).unwrap());
        got.extend_from_slice(body);
    }
    assert_eq!(got, data, "{shape:?} len {len} mss {mss}");
    assert_eq!(
        flags_of(&out.last().unwrap().1) & PSH,
        PSH,
        "PSH kept on the end"
    );
}

#[test]
fn coalesce_restores_one_gro_packet() {
    for shape in [V4, V4_TS, V6, V6_TS] {
        for (len, mss) in [
            (1368, 1368),
            (1369, 1368),
            (2 * 1368, 1368),
            (45 * 1368, 1368),
            (4000, 1000),
        ] {
            check_coalesce(shape, len, mss);
        }
        // A whole super-packet's segments merge into one write.
        let segs = split(shape, ACK, &payload(40 * 1368), 1368);
        assert_eq!(coalesce(&segs, true).len(), 1, "{shape:?}");
    }
}

#[test]
fn ipv4_packets_with_ip_options_are_written_unchanged() {
    let segs = split(V4_IPOPT, ACK, &payload(3 * 1000), 1000);
    let out = coalesce(&segs, true);
    assert_eq!(out.len(), 3);
    for ((hdr, p), s) in out.iter().zip(&segs) {
        assert_eq!(hdr.gso_type, 0);
        assert_eq!(p, s);
    }
}

#[test]
fn coalesce_keeps_flows_and_gaps_apart() {
    // Two flows interleaved, and a gap in the sequence: never merged across.
    let a = split(V4_TS, ACK, &payload(3 * 1000), 1000);
    let mut b = split(V4_TS, ACK, &payload(3 * 1000), 1000);
    for p in &mut b {
        let t = 20;
        p[t..t + 2].copy_from_slice(&40001u16.to_be_bytes());
        // Fix the checksum for the new port (one's complement arithmetic).
        p[t + 16] = 0;
        p[t + 17] = 0;
        let sum = !tcp_sum(p);
        p[t + 16..t + 18].copy_from_slice(&sum.to_be_bytes());
        assert_valid(p);
    }
    let mixed = vec![
        a[0].clone(),
        b[0].clone(),
        a[1].clone(),
        b[1].clone(),
        a[2].clone(),
        b[2].clone(),
    ];
    let out = coalesce(&mixed, true);
    assert_eq!(out.len(), 2);
    for (_, p) in &out {
        assert_valid(p);
        assert_eq!(p.len(), 20 + 32 + 3000);
    }
    let gap = vec![a[0].clone(), a[2].clone()];
    assert_eq!(coalesce(&gap, true).len(), 2);
}

#[test]
fn coalesce_refuses_a_bad_checksum() {
    let mut segs = split(V4, ACK, &payload(3 * 1000), 1000);
    let last = segs[1].len() - 1;
    segs[1][last] ^= 0xff; // corrupt the payload of the middle segment
    let out = coalesce(&segs, true);
    assert!(out.len() >= 2, "a corrupted segment is not merged");
    let total: usize = out.iter().map(|(_, p)| p.len() - 40).sum();
    assert_eq!(total, 3000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn split_then_coalesce_is_the_identity(
        ipv6 in any::<bool>(),
        tcp_options in prop::sample::select(vec![0usize, 4, 8, 12, 20, 40]),
        mss in 536u16..=1460,
        len in 1usize..=60_000,
        seed in any::<u8>(),
    ) {
        let shape = Shape { ipv6, ip_options: 0, tcp_options };
        let data: Vec<u8> = (0..len).map(|i| u8::try_from((i * 31 + usize::from(seed)) % 256).unwrap()).collect();
        let segs = split(shape, ACK | PSH, &data, mss);
        prop_assert_eq!(segs.len(), len.div_ceil(usize::from(mss)));
        for s in &segs {
            assert_valid(s);
        }
        let out = coalesce(&segs, true);
        let mut stream = Vec::new();
        let mut next_seq = SEQ;
        for (_, p) in &out {
            assert_valid(p);
            prop_assert_eq!(seq_of(p), next_seq);
            let body = &p[shape.headers()..];
            next_seq = next_seq.wrapping_add(u32::try_from(body.len()).unwrap());
            stream.extend_from_slice(body);
        }
        prop_assert_eq!(stream, data);
    }
}
