//! A hostile VPS cannot exhaust the operator's memory with what it prints (issue 24, M1): on
//! the real nspawn VPS over a real session, a command that prints 100 MB is refused past its
//! script's bound (`SSHOutputTooLarge`) and the session goes on; a `tunnelctl status` that
//! prints 12 MB of JSON (`[0,0,0,...]`, the review's demo) makes the health check fail with
//! the same reason instead of being read, parsed and cloned; an SDS directory with more files
//! than a pass accepts is refused before it becomes one command per file.
//!
//! Needs root and the test bed's VPS.

use std::time::Duration;

use crate::enroll_support::{placeholder_desired as desired, vps_text, with_session};
use testbed::netns::Netns;
use testbed::vps::{Vps, VpsOptions};
use tunnel::enroll::{self, Request};
use tunnel::ssh::{Script, Session};

/// Prints `[0,0,...,0]`, about 12 MB, like the review's demo relay.
const HUGE_STATUS: &str =
    "#!/bin/sh\nprintf '['; yes '0,' | head -n 6000000 | tr -d '\\n'; printf '0]\\n'\n";

#[test]
fn a_vps_that_prints_too_much_is_refused_unread_and_the_session_goes_on() {
    let internet = Netns::new("inet").unwrap();
    let vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();

    // Any command: 100 MB on standard output, 64 KiB allowed by default.
    let (flood, after) = with_session(&internet, &vps, async |s: &mut Session| {
        let flood = s.run(&Script::read("head -c 100000000 /dev/zero")).await;
        let after = s.run_ok(&Script::read("echo still here")).await;
        (flood, after.map(|o| o.stdout_text()))
    });
    match flood {
        Err(e) => {
            assert_eq!(e.category(), "SSHOutputTooLarge", "{e}");
            assert!(e.to_string().contains("65536 bytes"), "{e}");
        }
        Ok(o) => panic!("{} bytes of output were read", o.stdout.len()),
    }
    assert_eq!(after.unwrap(), "still here\n");

    // The relay's report: 12 MB of JSON is not read, parsed nor cloned.
    vps.ssh(
        &internet,
        &format!(
            "mkdir -p /usr/local/bin && printf '%s' '{}' > /usr/local/bin/tunnelctl && chmod 755 /usr/local/bin/tunnelctl",
            HUGE_STATUS.replace('\'', "'\\''")
        ),
    )
    .unwrap();
    assert!(
        vps_text(&vps, &internet, "/usr/local/bin/tunnelctl status | wc -c")
            .trim()
            .parse::<u64>()
            .unwrap()
            > 12_000_000
    );
    let health = with_session(&internet, &vps, async |s: &mut Session| {
        enroll::health::check(s).await
    });
    match health {
        Err(e) => assert_eq!(e.category(), "SSHOutputTooLarge", "{e}"),
        Ok(h) => panic!("a 12 MB relay report was read: {:?}", h.relay_status_error),
    }

    // More SDS files than a pass accepts: refused before planning a removal for each.
    vps.ssh(
        &internet,
        "mkdir -p /etc/envoy/tls && cd /etc/envoy/tls && seq 1100 | sed 's/$/.sds.yaml/' | xargs touch",
    )
    .unwrap();
    let plan = with_session(&internet, &vps, async |s: &mut Session| {
        enroll::dry_run(s, &desired(), Request::default()).await
    });
    match plan {
        Err(e) => {
            assert_eq!(e.category(), "EnrollObservationFailed", "{e}");
            assert!(e.to_string().contains("more than 1024 SDS files"), "{e}");
        }
        Ok(p) => panic!(
            "{} steps planned for a flooded SDS directory",
            p.steps.len()
        ),
    }
}
