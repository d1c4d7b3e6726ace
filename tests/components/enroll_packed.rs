//! Envoy pushed gzipped (as the operator image ships it) to a real nspawn VPS: what crosses
//! the SSH connection is the packed file, the VPS unpacks it with its gzip and checks the
//! digest of what it unpacked, and Envoy runs from it. A VPS without gzip gets an error that
//! names gzip, with the relay (which needs none) already running and Envoy untouched; a full
//! disk stops the upload at once with the VPS's own error; with gzip and room back the next
//! pass installs it, and the observation after it trusts what the pass installed (by the
//! identity the VPS reported) instead of hashing the binaries again.

use std::collections::BTreeMap;
use std::time::Duration;

use testbed::netns::Netns;
use testbed::tools::agent_binary;
use testbed::vps::{Vps, VpsOptions};
use tunnel::enroll::observe::{self, Known};
use tunnel::enroll::{self, Arch, Blob, DesiredState, EnvoyInstall, HostTuning, PassOptions};
use tunnel::ssh::Session;

use crate::enroll_support::{lone_relay_document, vps_text, with_session};
use crate::envoy_files::BOOTSTRAP;

fn desired(envoy: &Blob) -> DesiredState {
    DesiredState {
        tunnelctl: BTreeMap::from([(
            Arch::X86_64,
            Blob::from_file(&agent_binary("tunnelctl").unwrap()).unwrap(),
        )]),
        envoy: EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: BTreeMap::from([(Arch::X86_64, envoy.clone())]),
        },
        relay_document: Blob::new(lone_relay_document()),
        envoy_bootstrap: Blob::new(BOOTSTRAP.as_bytes().to_vec()),
        envoy_lds: Blob::new(b"resources: []\n".to_vec()),
        envoy_cds: Blob::new(b"resources: []\n".to_vec()),
        sds: BTreeMap::new(),
        host: HostTuning::default(),
    }
}

#[test]
fn envoy_goes_packed_is_checked_unpacked_and_a_missing_gzip_is_named() {
    let packed_path = testbed::tools::envoy_gz().unwrap();
    let envoy = Blob::from_gzip_file(&packed_path).unwrap();
    let plain = Blob::from_file(&testbed::tools::envoy().unwrap()).unwrap();
    assert_eq!(envoy, plain, "the same Envoy, known by its unpacked digest");
    let packed_len = std::fs::metadata(&packed_path).unwrap().len();
    assert!(
        packed_len * 2 < envoy.len(),
        "{packed_len} of {}",
        envoy.len()
    );
    let want = desired(&envoy);

    let internet = Netns::new("inet").unwrap();
    let vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();
    let pass = |vps: &Vps| {
        with_session(&internet, vps, async |s: &mut Session| {
            let r = enroll::enroll(s, &want, &PassOptions::default()).await;
            (r, s.log().entries())
        })
    };

    // 1. No gzip on the VPS (not executable, so `command -v` does not find it).
    vps.ssh(
        &internet,
        "chmod a-x \"$(readlink -f \"$(command -v gzip)\")\"",
    )
    .unwrap();
    let (result, _) = pass(&vps);
    let err = result.unwrap_err().to_string();
    // The VPS's own answer (exit status 3 and its message), not a timeout whose command
    // text happens to hold the message.
    assert!(
        err.contains("exit status 3: gzip is not installed on the VPS"),
        "{err}"
    );
    assert_eq!(
        vps_text(
            &vps,
            &internet,
            "systemctl is-active tunnel-relay.service; [ -e /usr/local/bin/envoy ] && echo envoy; ls -A /usr/local/bin | grep -c '^\\.tunnel\\.' || true"
        ),
        "active\n0\n",
        "the relay runs (it needs no gzip); no Envoy and no temporary file"
    );

    // 2. gzip back, but a full disk where the binaries go (16 MiB of tmpfs over
    // /usr/local/bin): the VPS stops taking the upload at once, and the pass fails with its
    // own words, not with a timeout after the rest of the bytes.
    vps.ssh(
        &internet,
        "chmod a+x \"$(readlink -f \"$(command -v gzip || echo /usr/bin/gzip)\")\" && mount -t tmpfs -o size=16m tmpfs /usr/local/bin",
    )
    .unwrap();
    let (result, commands) = pass(&vps);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("timed out"), "{err}");
    let upload = commands
        .iter()
        .find(|c| c.stdin_bytes > 16 << 20)
        .expect("an upload larger than the disk was tried");
    assert!(
        upload.status.is_some_and(|s| s != 0),
        "the upload ended with the command's own failure: {upload:?}"
    );
    vps.ssh(&internet, "umount /usr/local/bin").unwrap();

    // 3. Room again: the packed bytes cross, the unpacked file is installed and runs.
    // One connection, as the operator keeps one per VPS: what the pass installs it knows by
    // the identity the VPS reported right after, so the next observation hashes neither
    // binary again (they were checked on arrival).
    let (result, commands, observed) = with_session(&internet, &vps, async |s: &mut Session| {
        let mut known = Known::default();
        let r = enroll::enroll_telling(s, &want, &PassOptions::default(), &mut known, &mut |_| {})
            .await;
        let out = s.run_ok(&observe::script(&known).unwrap()).await.unwrap();
        let observed = observe::parse(&out.stdout_text(), &known).map(|o| (out.stdout_text(), o));
        (r, s.log().entries(), observed)
    });
    let report = result.unwrap();
    assert!(report.health.envoy_active(), "{:?}", report.health);
    let (text, observed) = observed.unwrap();
    for (path, blob) in [
        ("/usr/local/bin/envoy", &envoy),
        ("/usr/local/bin/tunnelctl", &want.tunnelctl[&Arch::X86_64]),
    ] {
        assert!(
            !text.lines().any(|l| l.ends_with(&format!("  {path}"))),
            "{path} hashed again:\n{text}"
        );
        assert_eq!(observed.files[path].sha256, blob.sha256(), "{path}");
    }
    let sent: Vec<usize> = commands
        .iter()
        .filter(|c| c.command.contains("gzip -dc"))
        .map(|c| c.stdin_bytes)
        .collect();
    assert_eq!(
        sent,
        [usize::try_from(packed_len).unwrap()],
        "one upload of the packed file"
    );
    assert_eq!(
        vps_text(
            &vps,
            &internet,
            "sha256sum < /usr/local/bin/envoy | cut -d' ' -f1"
        )
        .trim(),
        envoy.sha256()
    );
}
