//! The leader's write fence is checked before every command that may change the VPS, not
//! only when an SSH job starts (issue 24, L3): on the real nspawn VPS, once the fence shuts,
//! an upload is refused with `NotLeader` before anything is sent and the file keeps its
//! content, reads still run, and an enrollment pass observes but sends no step at all.
//!
//! Needs root and the test bed's VPS.

use std::time::{Duration, Instant};

use crate::enroll_support::{placeholder_desired as desired, vps_text, with_session};
use testbed::netns::Netns;
use testbed::vps::{Vps, VpsOptions};
use tunnel::enroll::{self, PassOptions};
use tunnel::leader::fence::Fence;
use tunnel::ssh::{Access, Script, Session, write_file};

#[test]
fn a_shut_fence_stops_every_write_command_and_lets_reads_run() {
    let internet = Netns::new("inet").unwrap();
    let vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();

    let fence = Fence::shut();
    fence.open_until(Instant::now() + Duration::from_secs(3600));
    let (second, read, pass, commands) = with_session(&internet, &vps, async |s: &mut Session| {
        s.fence_writes(fence.clone());
        write_file(s, "/etc/tunnel/fenced", b"first\n", 0o600)
            .await
            .unwrap();
        // The Lease is lost between two steps.
        fence.close();
        let mark = s.log().len();
        let second = write_file(s, "/etc/tunnel/fenced", b"second\n", 0o600).await;
        let read = s
            .run_ok(&Script::read("cat /etc/tunnel/fenced"))
            .await
            .map(|o| o.stdout_text());
        let pass = enroll::enroll(s, &desired(), &PassOptions::default()).await;
        (second, read, pass, s.log().since(mark))
    });
    let e = second.unwrap_err();
    assert_eq!(e.category(), "NotLeader", "{e}");
    assert_eq!(read.unwrap(), "first\n", "reads still run");
    let e = pass.unwrap_err();
    assert_eq!(e.category(), "NotLeader", "{e}");
    assert!(
        commands.iter().all(|c| c.access == Access::Read),
        "only reads were sent after the fence shut: {:?}",
        commands.iter().map(|c| &c.command).collect::<Vec<_>>()
    );
    assert_eq!(
        vps_text(
            &vps,
            &internet,
            "cat /etc/tunnel/fenced; ls /usr/local/bin/tunnelctl 2>/dev/null; true"
        ),
        "first\n"
    );
}
