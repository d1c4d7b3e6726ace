//! The TUN writer for decrypted TCP ([`uplink::gro::GroWriter`], issue 23), on generated
//! input: runs of segments of a few flows, in order and with gaps, with PSH, FIN, SYN, pure
//! ACKs, short segments, IP options, options that change, and packets that are not TCP at all.
//! Whatever it writes, segmented again the way the kernel does (`offload::split_tcp`), gives
//! back exactly the packets that went in, in the same order, with valid checksums; what it
//! merges follows the kernel's GSO rules; and it never panics.

use proptest::prelude::*;
use uplink::gro::GroWriter;
use uplink::offload::{self, OFFSET, Tso, VIRTIO_NET_HDR_LEN};

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

// RFC 1071 sum over `chunks`, folded, independent of the crate's: the offload tests' own.
use super::offload::ones_sum;

/// One generated packet: which flow, its place in the flow's stream, how it looks.
#[derive(Debug, Clone)]
struct Spec {
    flow: u8,
    payload: usize,
    flags: u8,
    gap: bool,
    ip_options: bool,
    tcp_options: u8,
    not_tcp: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..3,
        prop_oneof![4 => Just(1380usize), 2 => 0usize..1400, 1 => Just(0usize)],
        prop_oneof![6 => Just(ACK), 2 => Just(ACK | PSH), 1 => any::<u8>()],
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.03),
        prop_oneof![8 => Just(0u8), 1 => Just(12u8), 1 => Just(4u8)],
        prop::bool::weighted(0.03),
    )
        .prop_map(
            |(flow, payload, flags, gap, ip_options, tcp_options, not_tcp)| Spec {
                flow,
                payload,
                flags,
                gap,
                ip_options,
                tcp_options,
                not_tcp,
            },
        )
}

/// Builds the packets of `specs` with valid checksums; each flow's sequence numbers run on
/// (plus a gap where asked), starting near the 32-bit wrap.
fn build(specs: &[Spec]) -> Vec<Vec<u8>> {
    let mut seq = [0xffff_f000u32; 3];
    let mut out = Vec::new();
    for (n, s) in specs.iter().enumerate() {
        let f = usize::from(s.flow);
        if s.gap {
            seq[f] = seq[f].wrapping_add(1000);
        }
        let ip_len = if s.ip_options { 24 } else { 20 };
        let tcp_len = 20 + usize::from(s.tcp_options);
        let total = ip_len + tcp_len + s.payload;
        let mut p = vec![0u8; total];
        p[0] = 0x40 | u8::try_from(ip_len / 4).unwrap();
        p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        p[4..6].copy_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = if s.not_tcp { 17 } else { 6 };
        p[12..16].copy_from_slice(&[10, 0, 0, 1 + s.flow]);
        p[16..20].copy_from_slice(&[10, 0, 0, 9]);
        let t = ip_len;
        p[t..t + 2].copy_from_slice(&(40000 + u16::from(s.flow)).to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq[f].to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        p[t + 12] = u8::try_from(tcp_len / 4).unwrap() << 4;
        p[t + 13] = s.flags;
        p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        for (i, b) in p[t + 20..t + tcp_len].iter_mut().enumerate() {
            // 4 bytes: NOPs, the same on every packet; 12: two NOPs and a timestamp-like
            // value that changes with the packet.
            *b = if s.tcp_options == 4 || i < 2 {
                1
            } else {
                u8::try_from(n % 251).unwrap()
            };
        }
        for (i, b) in p[t + tcp_len..].iter_mut().enumerate() {
            *b = u8::try_from((n * 31 + i) % 256).unwrap();
        }
        let ip_sum = !ones_sum(&[&p[..ip_len]]);
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        if !s.not_tcp {
            let pseudo = [
                &p[12..20],
                &[0, 6],
                &u16::try_from(total - ip_len).unwrap().to_be_bytes(),
            ]
            .concat();
            let tcp_sum = !ones_sum(&[&pseudo, &p[t..]]);
            p[t + 16..t + 18].copy_from_slice(&tcp_sum.to_be_bytes());
        }
        seq[f] = seq[f].wrapping_add(u32::try_from(s.payload).unwrap());
        out.push(p);
    }
    out
}

/// The packets a written buffer stands for: itself without its virtio header, or the
/// segments of a GRO packet cut the way the kernel does.
fn unfold(written: &[u8]) -> Vec<Vec<u8>> {
    let header = offload::header_of(written).unwrap();
    let mut packet = written[VIRTIO_NET_HDR_LEN..].to_vec();
    if header.gso_type == 0 {
        assert_eq!(header.flags, 0, "a lone packet asks for no offload");
        return vec![packet];
    }
    assert_eq!(header.gso_type, 1, "TCPv4");
    assert_eq!(header.flags, 1, "NEEDS_CSUM");
    assert_eq!(header.csum_start, 20);
    assert_eq!(header.csum_offset, 16);
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    assert_eq!(total, packet.len(), "IPv4 total length of the GRO packet");
    assert_eq!(ones_sum(&[&packet[..20]]), 0xffff, "IPv4 header checksum");
    let pseudo = [
        &packet[12..20],
        &[0, 6],
        &u16::try_from(total - 20).unwrap().to_be_bytes(),
    ]
    .concat();
    assert_eq!(
        u16::from_be_bytes([packet[36], packet[37]]),
        ones_sum(&[&pseudo]),
        "the pseudo-header sum, for CHECKSUM_PARTIAL"
    );
    let mut bufs = vec![vec![0u8; OFFSET + 1500]; 64];
    let mut sizes = vec![0usize; 64];
    let n = offload::split_tcp(
        &mut packet,
        Tso {
            segment: header.gso_size,
            ipv6: false,
        },
        &mut bufs,
        &mut sizes,
    )
    .unwrap();
    assert!(n >= 2, "a GRO packet holds at least two segments");
    bufs.iter()
        .zip(&sizes)
        .take(n)
        .map(|(b, &s)| b[OFFSET..OFFSET + s].to_vec())
        .collect()
}

/// The packet with the fields a re-segmentation rewrites (IPv4 ID, both checksums) cleared;
/// the checksums are checked before.
fn normalized(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    let ip = usize::from(p[0] & 0x0f) * 4;
    assert_eq!(ones_sum(&[&p[..ip]]), 0xffff, "IPv4 header checksum");
    if p[9] == 6 {
        let pseudo = [
            &p[12..20],
            &[0, 6],
            &u16::try_from(p.len() - ip).unwrap().to_be_bytes(),
        ]
        .concat();
        assert_eq!(ones_sum(&[&pseudo, &p[ip..]]), 0xffff, "TCP checksum");
        p[ip + 16..ip + 18].copy_from_slice(&[0, 0]);
    }
    p[4..6].copy_from_slice(&[0, 0]);
    p[10..12].copy_from_slice(&[0, 0]);
    p
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn what_the_writer_writes_segments_back_into_what_went_in(
        specs in prop::collection::vec(spec(), 1..160),
        flush_every in 1usize..200,
    ) {
        let packets = build(&specs);
        let mut writer = GroWriter::new();
        let mut written: Vec<Vec<u8>> = Vec::new();
        let mut write = |buf: &[u8]| {
            written.push(buf.to_vec());
            Ok(buf.len())
        };
        for (i, p) in packets.iter().enumerate() {
            writer.push(p, &mut write);
            if (i + 1) % flush_every == 0 {
                writer.flush(&mut write);
            }
        }
        writer.flush(&mut write);
        prop_assert!(!writer.is_pending());
        prop_assert_eq!(writer.errors, 0);
        let mut back = Vec::new();
        for w in &written {
            let segments = unfold(w);
            // PSH only ever on the last segment of a GRO packet.
            for s in &segments[..segments.len() - 1] {
                prop_assert_eq!(s[33] & PSH, 0);
            }
            back.extend(segments);
        }
        prop_assert_eq!(back.len(), packets.len());
        for (got, sent) in back.iter().zip(&packets) {
            prop_assert_eq!(normalized(got), normalized(sent));
        }
        // It merges: a run of full segments of one flow never takes a write each.
        let full_runs = specs.windows(2).filter(|w| {
            w[0].flow == w[1].flow && w[0].flags == ACK && w[1].flags == ACK
                && w[0].payload == 1380 && w[1].payload == 1380
                && !w[1].gap && !w[0].ip_options && !w[1].ip_options
                && w[0].tcp_options == 0 && w[1].tcp_options == 0
                && !w[0].not_tcp && !w[1].not_tcp
        }).count();
        if flush_every > packets.len() && full_runs > 0 {
            prop_assert!(written.len() < packets.len());
        }
    }

    #[test]
    fn any_bytes_are_written_whole_and_never_panic(
        packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..40),
    ) {
        let mut writer = GroWriter::new();
        let mut written = 0usize;
        let mut write = |buf: &[u8]| {
            written += 1;
            Ok(buf.len())
        };
        for p in &packets {
            writer.push(p, &mut write);
        }
        writer.flush(&mut write);
        prop_assert!(written <= packets.len());
    }
}

#[test]
fn a_run_of_full_segments_is_one_write_and_a_write_error_is_counted() {
    let specs: Vec<Spec> = (0..40)
        .map(|i| Spec {
            flow: 0,
            payload: if i == 39 { 100 } else { 1380 },
            flags: if i == 39 { ACK | PSH } else { ACK },
            gap: false,
            ip_options: false,
            tcp_options: 0,
            not_tcp: false,
        })
        .collect();
    let packets = build(&specs);
    let mut writer = GroWriter::new();
    let mut written = Vec::new();
    let mut write = |buf: &[u8]| {
        written.push(buf.len());
        Ok(buf.len())
    };
    for p in &packets {
        writer.push(p, &mut write);
    }
    // The PSH segment closed and wrote the packet: nothing left open.
    assert!(!writer.is_pending());
    assert_eq!(written, vec![VIRTIO_NET_HDR_LEN + 40 + 39 * 1380 + 100]);

    let mut failing = |_: &[u8]| Err(std::io::Error::other("device gone"));
    writer.push(&packets[0], &mut failing);
    writer.flush(&mut failing);
    assert_eq!(writer.errors, 1);
}
