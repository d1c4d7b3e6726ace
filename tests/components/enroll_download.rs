//! Envoy's download mode against a real nspawn VPS: the VPS fetches the binary with curl from a
//! mirror (a small HTTP server in the test's "internet" namespace, standing in for GitHub
//! releases) through the URL template. A download whose SHA-256 is not the pinned one is
//! refused and replaces nothing (neither on a fresh VPS nor over an installed Envoy); a
//! matching one installs and runs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use testbed::netns::Netns;
use testbed::tools::agent_binary;
use testbed::vps::{Vps, VpsOptions};
use tunnel::enroll::{
    self, Arch, Blob, DesiredState, EnrollError, EnvoyInstall, HostTuning, PassOptions,
};
use tunnel::hash::sha256_hex;
use tunnel::ssh::{Credentials, Session, SshOptions};

use crate::enroll_support::{lone_relay_document, secret_data, ssh_options, vps_text};
use crate::envoy_files::BOOTSTRAP;

/// Serves `files` by path over HTTP/1.0 from the "internet" namespace.
fn start_mirror(internet: &Netns, addr: SocketAddr, files: BTreeMap<String, Arc<Vec<u8>>>) {
    let listener = internet.enter(|| TcpListener::bind(addr).unwrap()).unwrap();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let _ = match files.get(&path) {
                    Some(body) => stream
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(body)),
                    None => {
                        stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    }
                };
            });
        }
    });
}

fn desired(version: &str, template: &str, pinned: &str) -> DesiredState {
    static AGENT: std::sync::OnceLock<(Blob, Blob)> = std::sync::OnceLock::new();
    let (agent, relay) = AGENT.get_or_init(|| {
        (
            Blob::new(std::fs::read(agent_binary("tunnelctl").unwrap()).unwrap()),
            Blob::new(lone_relay_document()),
        )
    });
    DesiredState {
        tunnelctl: BTreeMap::from([(Arch::X86_64, agent.clone())]),
        envoy: EnvoyInstall::Download {
            version: version.into(),
            url_template: template.into(),
            sha256: BTreeMap::from([(Arch::X86_64, pinned.to_owned())]),
        },
        relay_document: relay.clone(),
        envoy_bootstrap: Blob::new(BOOTSTRAP.as_bytes().to_vec()),
        envoy_lds: Blob::new(b"resources: []\n".to_vec()),
        envoy_cds: Blob::new(b"resources: []\n".to_vec()),
        sds: BTreeMap::new(),
        host: HostTuning::default(),
    }
}

fn pass(
    internet: &Netns,
    vps: &Vps,
    want: &DesiredState,
) -> Result<enroll::PassReport, EnrollError> {
    let data = secret_data(vps);
    let options = SshOptions {
        reconnect_attempts: 2,
        ..ssh_options(vps)
    };
    internet
        .enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let mut s =
                        Session::connect(options, Credentials::from_secret_data(&data)?).await?;
                    let r = enroll::enroll(&mut s, want, &PassOptions::default()).await;
                    s.close().await;
                    r
                })
        })
        .unwrap()
}

/// The SHA-256 of the installed Envoy binary, as `sha256sum` prints it (with a newline).
fn envoy_digest(vps: &Vps, internet: &Netns) -> String {
    vps_text(
        vps,
        internet,
        "sha256sum < /usr/local/bin/envoy | cut -d' ' -f1",
    )
}

/// The running Envoy's PID (`0` when it is not running), with a newline.
fn envoy_pid(vps: &Vps, internet: &Netns) -> String {
    vps_text(
        vps,
        internet,
        "systemctl show -p MainPID --value tunnel-envoy.service",
    )
}

#[test]
fn envoy_download_installs_only_the_pinned_digest() {
    let genuine = Arc::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap());
    let digest = sha256_hex(&genuine);
    let mut tampered = genuine.as_ref().clone();
    tampered.extend_from_slice(b"tampered");
    let tampered = Arc::new(tampered);

    let internet = Netns::new("inet").unwrap();
    let vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();
    let [a, b, c, _] = vps.address().octets();
    let mirror = SocketAddr::from((Ipv4Addr::new(a, b, c, 1), 8088));
    start_mirror(
        &internet,
        mirror,
        BTreeMap::from([
            ("/envoy-1.40.0-linux-x86_64".to_owned(), genuine.clone()),
            ("/envoy-1.41.0-linux-x86_64".to_owned(), tampered),
        ]),
    );
    let template = format!("http://{mirror}/envoy-{{version}}-linux-{{arch}}");
    let no_temp = "ls -a /usr/local/bin | grep -c '^.tunnel' || true";

    // A fresh VPS and a wrong pin: refused, no Envoy binary, no temporary file.
    let wrong = "0".repeat(64);
    let e = pass(&internet, &vps, &desired("1.40.0", &template, &wrong)).unwrap_err();
    assert!(matches!(e, EnrollError::EnvoyDownload(_)), "{e}");
    assert!(e.to_string().contains("is pinned: refusing it"), "{e}");
    assert_eq!(
        vps_text(
            &vps,
            &internet,
            "test -e /usr/local/bin/envoy && echo present || echo absent"
        ),
        "absent\n"
    );
    assert_eq!(vps_text(&vps, &internet, no_temp), "0\n");

    // The right pin: installed, running, and a second pass downloads nothing.
    let report = pass(&internet, &vps, &desired("1.40.0", &template, &digest)).unwrap();
    assert!(
        report
            .steps
            .contains(&"download /usr/local/bin/envoy".to_owned()),
        "{:?}",
        report.steps
    );
    assert!(report.health.envoy_active(), "{:?}", report.health);
    assert_eq!(envoy_digest(&vps, &internet), format!("{digest}\n"));
    let report = pass(&internet, &vps, &desired("1.40.0", &template, &digest)).unwrap();
    assert!(!report.changed(), "{:?}", report.steps);

    // An upgrade whose download does not match its pin: refused, the installed Envoy stays
    // and keeps running.
    let pid = envoy_pid(&vps, &internet);
    let pinned_141 = sha256_hex(b"what the genuine 1.41.0 would hash to");
    let e = pass(&internet, &vps, &desired("1.41.0", &template, &pinned_141)).unwrap_err();
    assert!(matches!(e, EnrollError::EnvoyDownload(_)), "{e}");
    assert_eq!(envoy_digest(&vps, &internet), format!("{digest}\n"));
    assert_eq!(envoy_pid(&vps, &internet), pid);
    assert_eq!(vps_text(&vps, &internet, no_temp), "0\n");

    // A mirror without the file: a clear error, nothing replaced either.
    let e = pass(
        &internet,
        &vps,
        &desired("9.9.9", &template, &"1".repeat(64)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
    assert_eq!(envoy_digest(&vps, &internet), format!("{digest}\n"));
}
