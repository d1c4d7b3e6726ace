//! The nspawn VPS: it boots with real systemd and sshd, answers SSH with its own pinned host
//! key, refuses a client that pins another key, and comes back after a reboot with its disk.

use std::time::Duration;

use testbed::netns::Netns;
use testbed::vps::{Vps, VpsOptions};

#[test]
fn vps_boots_answers_ssh_with_a_pinned_key_and_survives_a_reboot() {
    let internet = Netns::new("inet").unwrap();
    let mut vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();

    // Real systemd as PID 1, real sshd, and a TUN device usable with CAP_NET_ADMIN.
    let out = vps.ssh(&internet, "cat /proc/1/comm; systemctl is-active ssh; ip tuntap add dev tb0 mode tun && ip link show tb0 >/dev/null && echo tun-ok").unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("systemd"), "{text}");
    assert!(text.contains("active"), "{text}");
    assert!(text.contains("tun-ok"), "{text}");

    // A file written before the reboot is still there after it, and /run is fresh.
    vps.ssh(&internet, "echo kept > /root/marker; touch /run/volatile")
        .unwrap();
    vps.reboot(&internet).unwrap();
    assert_eq!(vps.boots(), 2);
    let out = vps
        .ssh(
            &internet,
            "cat /root/marker; test -e /run/volatile && echo run-kept || echo run-fresh",
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kept\n"), "{text}");
    assert!(text.contains("run-fresh"), "{text}");
}

#[test]
fn a_second_vps_on_the_same_address_is_refused_by_the_pinned_key() {
    let internet = Netns::new("inet").unwrap();
    let options = VpsOptions {
        address: Some("10.98.0.2".parse().unwrap()),
        peer_address: Some("10.98.0.1".parse().unwrap()),
        peer_ifname: Some("wan0".into()),
    };
    let first = Vps::boot(&internet, &options).unwrap();
    first
        .wait_ready(&internet, Duration::from_secs(90))
        .unwrap();
    let pinned = first.known_hosts_line().unwrap();
    drop(first);

    let second = Vps::boot(&internet, &options).unwrap();
    second
        .wait_ready(&internet, Duration::from_secs(90))
        .unwrap();
    assert_ne!(
        second.known_hosts_line().unwrap(),
        pinned,
        "each VPS has its own host key"
    );

    // ssh with the first VPS's key pinned must refuse the second one.
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, format!("{pinned}\n")).unwrap();
    let err = second
        .ssh_pinned(&internet, &known, "true")
        .expect_err("the pinned key of another host is refused");
    let stderr = err.to_string();
    assert!(
        stderr.contains("HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("Host key verification failed"),
        "{stderr}"
    );
}
