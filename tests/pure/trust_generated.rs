//! Generated input at the operator's doors (issue 12, "hostile input on every port"): what the
//! VPS answers (the observation and health commands' output) and the Secret's `knownHosts`.
//! Whatever the text, the parsers never panic, errors and messages stay bounded, and what a
//! well-formed answer says is read back exactly (round trips).
//!
//! Bounded by the number of cases; `PROPTEST_CASES=20000 cargo test -p tunnel --test pure
//! trust_generated` runs longer.

#![allow(clippy::format_push_string)]

use base64::Engine as _;
use proptest::prelude::*;
use tunnel::enroll::{health, observe};
use tunnel::ssh::known_hosts::{KnownHosts, Verdict};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A line as a hostile VPS might print it: a known tag with random fields, or anything.
fn vps_line() -> impl Strategy<Value = String> {
    let tag = prop_oneof![
        Just("arch"),
        Just("stat"),
        Just("dir"),
        Just("Id=tunnel-envoy.service"),
        Just("ActiveState=active"),
        Just("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef "),
        Just("unit"),
        Just("state"),
        Just("temp"),
        Just("user"),
        Just("preserved"),
        Just("relay"),
        Just("relay-exit"),
    ];
    prop_oneof![
        (tag, "[ -~]{0,80}").prop_map(|(t, rest)| format!("{t} {rest}")),
        "\\PC{0,120}",
        "[A-Za-z0-9+/=]{0,200}".prop_map(|b| format!("relay {b}")),
        "[A-Za-z0-9+/=]{0,200}".prop_map(|b| format!("state {b}")),
    ]
}

/// A key from a small fixed set (ed25519, base64 blobs).
const KEYS: [&str; 3] = [
    "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ",
    "AAAAC3NzaC1lZDI1NTE5AAAAILiOR9mLWh2dIKthKYrgnM4p9g5dwasSggHQoFwfMXBI",
    "AAAAC3NzaC1lZDI1NTE5AAAAIPUW6Dvv9q/uGQJ21DgGnvXK4AIYAFr95pBjuKMt6ARS",
];

fn key(i: usize) -> russh::keys::ssh_key::PublicKey {
    russh::keys::parse_public_key_base64(KEYS[i]).unwrap()
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,10}(\\.[a-z]{1,8}){0,2}",
        (any::<[u8; 4]>()).prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
    ]
}

/// The `|1|salt|hmac` form of `name`.
fn hashed(name: &str, salt: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
    mac.update(name.as_bytes());
    let engine = base64::engine::general_purpose::STANDARD;
    format!(
        "|1|{}|{}",
        engine.encode(salt),
        engine.encode(mac.finalize().into_bytes())
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn observation_output_never_panics_and_reads_back(
        lines in proptest::collection::vec(vps_line(), 0..40),
        machine in "[a-z0-9_]{1,12}",
        files in proptest::collection::btree_map("/etc/[a-z]{1,8}/[a-z.]{1,12}", ("[0-7]{3}", "[0-9a-f]{64}"), 0..6),
    ) {
        let known = observe::Known::default();
        if let Err(e) = observe::parse(&lines.join("\n"), &known) {
            prop_assert!(e.to_string().chars().count() < 400, "{}", e);
        }
        // A hostile VPS's megabyte line is quoted, not copied, into the error.
        let long = format!("arch x\nstat {}\n", "y".repeat(100_000));
        let e = observe::parse(&long, &known).unwrap_err();
        prop_assert!(e.to_string().chars().count() < 400);
        // A well-formed answer is read back exactly.
        let mut text = format!("arch {machine}\n");
        for (path, (mode, sha)) in &files {
            text.push_str(&format!("stat {mode} 1:2:3:4.5:6.7 {path}\n{sha}  {path}\n"));
        }
        let o = observe::parse(&text, &known).unwrap();
        prop_assert_eq!(&o.machine, &machine);
        prop_assert_eq!(o.files.len(), files.len());
        for (path, (mode, sha)) in &files {
            let f = &o.files[path];
            prop_assert_eq!((&f.mode, &f.sha256), (mode, sha));
        }
    }

    #[test]
    fn health_output_never_panics_and_its_error_stays_short(
        lines in proptest::collection::vec(vps_line(), 0..40),
        junk in proptest::collection::vec(any::<u8>(), 0..20_000),
        ready in any::<bool>(),
    ) {
        let h = health::parse(&lines.join("\n"));
        for unit in [&h.envoy, &h.relay].into_iter().flatten() {
            prop_assert!(unit.active.chars().count() <= 203 && unit.enabled.chars().count() <= 203);
        }
        let long = format!(
            "Id=tunnel-relay.service\nActiveState={}\nUnitFileState={}\n",
            "a".repeat(50_000),
            "e ".repeat(50_000)
        );
        let relay = health::parse(&long).relay.unwrap();
        prop_assert!(relay.active.len() <= 203 && relay.enabled.len() <= 203);
        if let Some(e) = &h.relay_status_error {
            prop_assert!(e.chars().count() < 400, "{} chars", e.chars().count());
        }
        // A relay that prints megabytes of junk: the message quotes a bounded part of it.
        let b64 = base64::engine::general_purpose::STANDARD.encode(&junk);
        let h = health::parse(&format!("relay-exit 1\nrelay {b64}\n"));
        if let Some(e) = &h.relay_status_error {
            prop_assert!(e.chars().count() < 400);
        }
        // A well-formed report is read back.
        let report = serde_json::json!({ "interface": "wg-relay", "ready": ready, "peers": [], "extra": { "x": 1 } });
        let b64 = base64::engine::general_purpose::STANDARD.encode(report.to_string());
        let h = health::parse(&format!(
            "unit tunnel-relay.service active enabled\nrelay-exit 0\nrelay {b64}\n"
        ));
        let status = h.relay_status.unwrap();
        prop_assert_eq!(status.ready, ready);
        prop_assert_eq!(status.interface, "wg-relay");
    }

    #[test]
    fn known_hosts_text_never_panics(text in "\\PC{0,400}", lines in proptest::collection::vec("[ -~]{0,120}", 0..10)) {
        for t in [text, lines.join("\n")] {
            if let Ok(kh) = KnownHosts::parse(&t) {
                let _ = kh.verify("vps.example", 22, &key(0));
                let _ = kh.algorithms_for("vps.example", 2222);
            }
        }
    }

    #[test]
    fn known_hosts_entries_read_back(
        entries in proptest::collection::vec((host(), proptest::option::of(1u16..=65535), 0usize..3, any::<bool>(), any::<[u8; 20]>()), 1..8),
    ) {
        let mut text = String::new();
        for (h, port, k, hash, salt) in &entries {
            let name = match port {
                Some(p) if *p != 22 => format!("[{h}]:{p}"),
                _ => h.clone(),
            };
            let name = if *hash { hashed(&name, salt) } else { name };
            text.push_str(&format!("{name} ssh-ed25519 {}\n", KEYS[*k]));
        }
        let kh = KnownHosts::parse(&text).unwrap();
        for (h, port, k, _, _) in &entries {
            let port = port.unwrap_or(22);
            prop_assert_eq!(kh.verify(h, port, &key(*k)), Verdict::Trusted, "{}:{}", h, port);
            // A key that no line pins for this host is not trusted.
            let pinned: Vec<usize> = entries
                .iter()
                .filter(|(h2, p2, ..)| h2.eq_ignore_ascii_case(h) && p2.unwrap_or(22) == port)
                .map(|(_, _, k2, _, _)| *k2)
                .collect();
            for other in 0..KEYS.len() {
                if !pinned.contains(&other) {
                    prop_assert!(kh.verify(h, port, &key(other)) != Verdict::Trusted);
                }
            }
        }
    }
}
