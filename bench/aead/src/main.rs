//! The crypto floor of the data path (docs/benchmarks.md, issue 23): ChaCha20-Poly1305 seal
//! and open of one WireGuard-sized packet at a time, in memory, on one core, for each crate
//! a data path could use. Prints seconds per GB (the data-plane benchmark's unit) and Gbit/s.
//!
//! `cargo run --release --manifest-path bench/aead/Cargo.toml -- [packet bytes] [packets]`
//! (defaults 1420 and 400000). OpenSSL's figure comes from
//! `openssl speed -evp chacha20-poly1305 -bytes 1420`.

use std::time::Instant;

const KEY: [u8; 32] = [7; 32];
const TAG: usize = 16;

fn nonce(counter: usize) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&(counter as u64).to_le_bytes());
    n
}

fn report(name: &str, what: &str, seconds: f64, bytes: usize) {
    let bytes = bytes as f64;
    println!(
        "{name:<28} {what:<5} {:>6.3} s/GB {:>7.2} Gbit/s",
        seconds / bytes * 1e9,
        bytes * 8.0 / seconds / 1e9
    );
}

/// Seals `packets` packets of `len` bytes in place (tag after the payload), then opens them
/// again; `seal` and `open` return false on failure, which ends the run with an error.
fn measure(
    name: &str,
    len: usize,
    packets: usize,
    mut seal: impl FnMut([u8; 12], &mut [u8], &mut [u8]) -> bool,
    mut open: impl FnMut([u8; 12], &mut [u8]) -> bool,
) -> Result<(), String> {
    let mut sealed = vec![vec![0x5au8; len + TAG]; 64];
    let start = Instant::now();
    for i in 0..packets {
        let buf = &mut sealed[i % 64];
        buf[..len].fill(0x5a);
        let (payload, tag) = buf.split_at_mut(len);
        if !seal(nonce(i), payload, tag) {
            return Err(format!("{name}: seal failed"));
        }
    }
    report(name, "seal", start.elapsed().as_secs_f64(), len * packets);
    // Open the last 64 sealed packets over and over: each open is checked, and a copy
    // restores the ciphertext that the previous open decrypted in place.
    let originals = sealed.clone();
    let first = packets.saturating_sub(64);
    let start = Instant::now();
    for i in 0..packets {
        let slot = (first + i % 64) % 64;
        let buf = &mut sealed[slot];
        buf.copy_from_slice(&originals[slot]);
        if !open(nonce(first + i % 64), buf) {
            return Err(format!("{name}: open failed"));
        }
    }
    report(name, "open", start.elapsed().as_secs_f64(), len * packets);
    Ok(())
}

/// Measures a crate with ring's `aead` API (ring itself, aws-lc-rs).
macro_rules! ring_api {
    ($name:expr, $krate:ident, $len:expr, $packets:expr) => {{
        use $krate::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
        let key = UnboundKey::new(&CHACHA20_POLY1305, &KEY).map_err(|e| e.to_string())?;
        let key = LessSafeKey::new(key);
        measure(
            $name,
            $len,
            $packets,
            |n, payload, tag| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(n),
                    Aad::empty(),
                    payload,
                )
                .map(|t| tag.copy_from_slice(t.as_ref()))
                .is_ok()
            },
            |n, buf| {
                key.open_in_place(Nonce::assume_unique_for_key(n), Aad::empty(), buf)
                    .is_ok()
            },
        )?;
    }};
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let len: usize = args
        .next()
        .map_or(Ok(1420), |a| a.parse())
        .map_err(|e| format!("packet bytes: {e}"))?;
    let packets: usize = args
        .next()
        .map_or(Ok(400_000), |a| a.parse())
        .map_err(|e| format!("packets: {e}"))?;
    if packets < 64 {
        return Err("packets: at least 64".into());
    }
    println!(
        "{packets} packets of {len} bytes, one core (each open restores its packet with a copy first)"
    );

    ring_api!("ring 0.17", ring, len, packets);
    // aws-lc-rs has ring's API (and BoringSSL's assembly under it).
    ring_api!("aws-lc-rs 1", aws_lc_rs, len, packets);
    {
        use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Tag};
        let cipher = ChaCha20Poly1305::new(&KEY.into());
        measure(
            "RustCrypto chacha20poly1305",
            len,
            packets,
            |n, payload, tag| {
                cipher
                    .encrypt_inout_detached(&n.into(), &[], payload.into())
                    .map(|t| tag.copy_from_slice(&t))
                    .is_ok()
            },
            |n, buf| {
                let (payload, tag) = buf.split_at_mut(buf.len() - TAG);
                let Ok(tag) = Tag::try_from(&*tag) else {
                    return false;
                };
                cipher
                    .decrypt_inout_detached(&n.into(), &[], payload.into(), &tag)
                    .is_ok()
            },
        )?;
    }
    Ok(())
}
