//! Enrollment of a real nspawn VPS over SSH, end to end: enroll from scratch (the test bed's
//! real Envoy pushed over SSH), traffic through the VPS's public port, a second pass that only
//! reads, drift repaired, an interrupted pass resumed, an LDS change applied without restarting
//! Envoy, a restart on request, a reboot after which Envoy and the relay come back by
//! themselves, teardown (also of a half-enrolled VPS) leaving nothing behind, and no secret in
//! the logs.
//!
//! The relay agent is the real `tunnelctl` (build it first: `cargo build -p uplink --bins`),
//! with a relay document that has no uplink connected: this test is about enrollment, so Envoy
//! proxies to a test server in the test's "internet" namespace, reachable from the VPS (the
//! full path over WireGuard is `enroll_data_path.rs`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use testbed::netns::Netns;
use testbed::tools::agent_binary;
use testbed::vps::{Vps, VpsOptions};
use tunnel::enroll::{
    self, Arch, Blob, DesiredState, EnrollError, EnvoyInstall, HostTuning, PassOptions, Request,
};
use tunnel::ssh::{Access, Credentials, Session};
use tunnel_contract::document::{RelayDocument, RelayPeer};
use tunnel_contract::key::PrivateKey;

use crate::enroll_support::{Capture, secret_data, ssh_options, vps_text};
use crate::envoy_files::{BOOTSTRAP, cds, lds};

const SDS_SECRET: &str = "SDS-PRIVATE-KEY-Pw27nVc";

/// A valid relay document (no uplink peers connect in this test); `mtu` varies it.
fn relay_document(key: &PrivateKey, mtu: u16) -> Blob {
    let doc = RelayDocument {
        version: 1,
        private_key: key.clone(),
        listen_port: 51821,
        address: "10.200.0.1/24".parse().unwrap(),
        mtu,
        peers: vec![RelayPeer {
            name: Some("edge-uplink-0".into()),
            public_key: PrivateKey::generate().unwrap().public_key(),
            allowed_ips: vec!["10.200.0.2/32".parse().unwrap()],
        }],
    };
    Blob::new(doc.to_json().into_bytes())
}

fn desired(
    agent: &Blob,
    envoy: &Blob,
    relay: &Blob,
    target: SocketAddr,
    ports: &[u16],
) -> DesiredState {
    DesiredState {
        tunnelctl: BTreeMap::from([(Arch::X86_64, agent.clone())]),
        envoy: EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: BTreeMap::from([(Arch::X86_64, envoy.clone())]),
        },
        relay_document: relay.clone(),
        envoy_bootstrap: Blob::new(BOOTSTRAP.as_bytes().to_vec()),
        envoy_lds: Blob::new(lds(ports, "target").into_bytes()),
        envoy_cds: Blob::new(cds("target", target).into_bytes()),
        sds: BTreeMap::from([(
            "demo.sds.yaml".to_owned(),
            Blob::new(format!("resources: [] # {SDS_SECRET}\n").into_bytes()),
        )]),
        host: HostTuning::default(),
    }
}

/// A TCP server in the "internet" namespace that greets and echoes one line.
fn start_target(internet: &Netns, addr: SocketAddr) {
    let listener = internet.enter(|| TcpListener::bind(addr).unwrap()).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                if let Ok(n) = stream.read(&mut buf) {
                    let _ = stream.write_all(b"target says: ");
                    let _ = stream.write_all(&buf[..n]);
                }
            });
        }
    });
}

/// Connects from the "internet" to the VPS's public port and checks the answer comes from the
/// target through Envoy. Retries a bounded number of times (Envoy may still be starting).
fn traffic_flows(internet: &Netns, vps: Ipv4Addr, port: u16) -> Result<(), String> {
    internet
        .enter(|| {
            let mut last = String::new();
            for _ in 0..60 {
                match exchange(SocketAddr::from((vps, port))) {
                    Ok(answer) if answer == "target says: ping\n" => return Ok(()),
                    Ok(answer) => last = format!("answer {answer:?}"),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(last)
        })
        .unwrap()
}

fn exchange(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"ping\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn envoy_pid(vps: &Vps, internet: &Netns) -> String {
    vps_text(
        vps,
        internet,
        "systemctl show -p MainPID --value tunnel-envoy.service",
    )
    .trim()
    .to_owned()
}

/// Runs `f` with a session to the VPS, from inside the internet namespace, with logs captured.
fn with_session<R: Send>(
    internet: &Netns,
    vps: &Vps,
    logs: &Capture,
    f: impl AsyncFnOnce(&mut Session) -> R + Send,
) -> R {
    let data = secret_data(vps);
    let options = ssh_options(vps);
    let writer = logs.clone();
    internet
        .enter(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async move {
                        let mut session = Session::connect(
                            options,
                            Credentials::from_secret_data(&data).unwrap(),
                        )
                        .await
                        .unwrap();
                        let out = f(&mut session).await;
                        session.close().await;
                        out
                    })
            })
        })
        .unwrap()
}

/// A pass with `options`.
fn pass_with(
    internet: &Netns,
    vps: &Vps,
    logs: &Capture,
    want: &DesiredState,
    options: &PassOptions,
) -> Result<enroll::PassReport, EnrollError> {
    with_session(internet, vps, logs, async |s: &mut Session| {
        enroll::enroll(s, want, options).await
    })
}

/// A pass with the default options.
fn full_pass(
    internet: &Netns,
    vps: &Vps,
    logs: &Capture,
    want: &DesiredState,
) -> Result<enroll::PassReport, EnrollError> {
    pass_with(internet, vps, logs, want, &PassOptions::default())
}

/// A pass that stops on purpose after `steps` steps.
fn cut_pass(
    internet: &Netns,
    vps: &Vps,
    logs: &Capture,
    want: &DesiredState,
    steps: usize,
) -> Result<enroll::PassReport, EnrollError> {
    let options = PassOptions {
        stop_after_steps: Some(steps),
        ..PassOptions::default()
    };
    pass_with(internet, vps, logs, want, &options)
}

const MANAGED: &[&str] = &[
    "/usr/local/bin/tunnelctl",
    "/usr/local/bin/envoy",
    "/etc/tunnel",
    "/etc/envoy",
    "/etc/systemd/system/tunnel-relay.service",
    "/etc/systemd/system/tunnel-envoy.service",
    "/etc/systemd/system/multi-user.target.wants/tunnel-relay.service",
    "/etc/systemd/system/multi-user.target.wants/tunnel-envoy.service",
    "/etc/sysctl.d/99-tunnel.conf",
];

fn assert_nothing_left(vps: &Vps, internet: &Netns) {
    let check = format!(
        "for p in {}; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"left: $p\"; fi; done; \
         systemctl list-units --all --no-legend 'tunnel-*' | sed 's/^/unit: /'; \
         ip -o link show | grep -q wg-relay && echo 'left: wg-relay'; \
         ss -ltn | grep -q ':8080 ' && echo 'left: listener'; true",
        MANAGED.join(" ")
    );
    assert_eq!(
        vps_text(vps, internet, &check),
        "",
        "teardown left something"
    );
}

#[test]
fn enroll_converges_resumes_repairs_survives_reboot_and_tears_down() {
    let envoy = Blob::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap());
    let agent = Blob::new(std::fs::read(agent_binary("tunnelctl").unwrap()).unwrap());
    let relay_key = PrivateKey::generate().unwrap();
    let relay_v1 = relay_document(&relay_key, 1420);
    let relay_v2 = relay_document(&relay_key, 1400);
    let internet = Netns::new("inet").unwrap();
    let mut vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();
    let [a, b, c, _] = vps.address().octets();
    let target = SocketAddr::from((Ipv4Addr::new(a, b, c, 1), 9000));
    start_target(&internet, target);
    let logs = Capture::default();

    // 1. From scratch.
    let want = desired(&agent, &envoy, &relay_v1, target, &[8080]);
    let report = full_pass(&internet, &vps, &logs, &want).unwrap();
    assert!(report.changed());
    // The only acceptable warning: a container VPS (like this nspawn one) keeping its own
    // socket buffer ceilings.
    assert!(
        report
            .warnings
            .iter()
            .all(|w| w.contains("net.core.rmem_max")),
        "{:?}",
        report.warnings
    );
    eprintln!("first pass warnings: {:?}", report.warnings);
    assert!(report.health.envoy_active(), "{:?}", report.health);
    assert!(report.health.relay_active(), "{:?}", report.health);
    let relay = report.health.relay_status.clone().expect("relay report");
    assert_eq!(relay.interface, "wg-relay");
    traffic_flows(&internet, vps.address(), 8080).unwrap();
    let modes = vps_text(
        &vps,
        &internet,
        "stat -c '%a %n' /usr/local/bin/tunnelctl /usr/local/bin/envoy /etc/tunnel/relay.json /etc/tunnel/state.json /etc/envoy/envoy.yaml /etc/envoy/lds.yaml /etc/envoy/cds.yaml /etc/envoy/tls/demo.sds.yaml /etc/systemd/system/tunnel-relay.service /etc/systemd/system/tunnel-envoy.service /etc/sysctl.d/99-tunnel.conf; systemctl is-enabled tunnel-relay.service tunnel-envoy.service",
    );
    assert_eq!(
        modes,
        "755 /usr/local/bin/tunnelctl\n755 /usr/local/bin/envoy\n600 /etc/tunnel/relay.json\n600 /etc/tunnel/state.json\n640 /etc/envoy/envoy.yaml\n640 /etc/envoy/lds.yaml\n640 /etc/envoy/cds.yaml\n640 /etc/envoy/tls/demo.sds.yaml\n644 /etc/systemd/system/tunnel-relay.service\n644 /etc/systemd/system/tunnel-envoy.service\n644 /etc/sysctl.d/99-tunnel.conf\nenabled\nenabled\n"
    );

    // 2. Nothing changed: no step, and only read-only commands ran; no file was touched.
    let snapshot = "find /etc/tunnel /etc/envoy /usr/local/bin /etc/systemd/system -newer /etc/tunnel/state.json -o -name '.tunnel.*' | sort; stat -c '%Y %i' /etc/tunnel/state.json";
    let before = vps_text(&vps, &internet, snapshot);
    let (report, commands) = with_session(&internet, &vps, &logs, async |s: &mut Session| {
        let r = enroll::enroll(s, &want, &PassOptions::default()).await;
        (r, s.log().entries())
    });
    let report = report.unwrap();
    assert!(!report.changed(), "{:?}", report.steps);
    assert!(!commands.is_empty());
    assert!(
        commands
            .iter()
            .all(|c| c.access == Access::Read && c.stdin_bytes == 0),
        "{commands:#?}"
    );
    assert_eq!(vps_text(&vps, &internet, snapshot), before);

    // 3. Drift: hand edits, a deleted file, a loosened mode, a stray SDS file, Envoy stopped.
    vps.ssh(
        &internet,
        "echo '# hand edit' >> /etc/envoy/lds.yaml; rm /etc/envoy/cds.yaml; chmod 644 /etc/tunnel/relay.json; \
         touch /etc/envoy/tls/stale.sds.yaml; systemctl stop tunnel-envoy.service",
    )
    .unwrap();
    let report = full_pass(&internet, &vps, &logs, &want).unwrap();
    assert_eq!(
        report.steps,
        vec![
            "write /etc/tunnel/relay.json (600)",
            "write /etc/envoy/cds.yaml (640)",
            "write /etc/envoy/lds.yaml (640)",
            "remove /etc/envoy/tls/stale.sds.yaml",
            "restart tunnel-envoy.service",
            "write /etc/tunnel/state.json",
        ]
    );
    traffic_flows(&internet, vps.address(), 8080).unwrap();

    // 4. A pass cut after its first step resumes where it stopped; the LDS change (a second
    //    listener) reaches the running Envoy without a restart.
    let pid = envoy_pid(&vps, &internet);
    let want = desired(&agent, &envoy, &relay_v2, target, &[8080, 8081]);
    let cut = cut_pass(&internet, &vps, &logs, &want, 1);
    assert!(
        matches!(cut, Err(EnrollError::Interrupted { done: 1, total: 3 })),
        "{cut:?}"
    );
    let report = full_pass(&internet, &vps, &logs, &want).unwrap();
    assert_eq!(
        report.steps,
        vec![
            "write /etc/envoy/lds.yaml (640)",
            "write /etc/tunnel/state.json"
        ],
        "the relay document written before the cut is not written again"
    );
    traffic_flows(&internet, vps.address(), 8081).unwrap();
    traffic_flows(&internet, vps.address(), 8080).unwrap();
    assert_eq!(
        envoy_pid(&vps, &internet),
        pid,
        "LDS changes do not restart Envoy"
    );

    // 5. Restart on request.
    let report = with_session(&internet, &vps, &logs, async |s: &mut Session| {
        enroll::enroll(
            s,
            &want,
            &PassOptions {
                request: Request {
                    restart_envoy: true,
                },
                ..PassOptions::default()
            },
        )
        .await
    })
    .unwrap();
    assert!(
        report
            .steps
            .contains(&"restart tunnel-envoy.service".to_owned())
    );
    assert_ne!(envoy_pid(&vps, &internet), pid, "Envoy was restarted");
    traffic_flows(&internet, vps.address(), 8080).unwrap();

    // 6. Reboot: both services come back on their own, traffic flows, and the next pass is a
    //    no-op (the state on disk still matches).
    vps.reboot(&internet).unwrap();
    let states = vps_text(
        &vps,
        &internet,
        "for i in $(seq 60); do systemctl is-active --quiet tunnel-envoy.service && break; sleep 0.5; done; systemctl is-active tunnel-relay.service tunnel-envoy.service",
    );
    assert_eq!(states, "active\nactive\n");
    traffic_flows(&internet, vps.address(), 8080).unwrap();
    let report = full_pass(&internet, &vps, &logs, &want).unwrap();
    assert!(!report.changed(), "{:?}", report.steps);
    assert!(report.health.envoy_active() && report.health.relay_active());

    // 7. Teardown leaves nothing (Envoy stopped before the relay), and is idempotent.
    with_session(&internet, &vps, &logs, async |s: &mut Session| {
        enroll::teardown(s).await.unwrap();
        enroll::teardown(s).await.unwrap();
    });
    assert_nothing_left(&vps, &internet);
    let order = vps_text(
        &vps,
        &internet,
        "journalctl -b --no-pager -o cat -u tunnel-envoy.service -u tunnel-relay.service | grep -E '^Stopped' ",
    );
    let envoy_stop = order
        .find("Stopped tunnel-envoy")
        .or(order.find("Stopped Envoy"));
    let relay_stop = order
        .find("Stopped tunnel-relay")
        .or(order.find("Stopped Tunnel relay"));
    assert!(
        envoy_stop.is_some() && relay_stop.is_some() && envoy_stop < relay_stop,
        "Envoy stops before the relay: {order}"
    );

    // 8. A half-enrolled VPS (cut after the relay's group, the relay running, and Envoy's
    //    binary) tears down too.
    let cut = cut_pass(&internet, &vps, &logs, &want, 10);
    assert!(
        matches!(cut, Err(EnrollError::Interrupted { done: 10, .. })),
        "{cut:?}"
    );
    assert_eq!(
        vps_text(
            &vps,
            &internet,
            "systemctl is-active tunnel-relay.service tunnel-envoy.service || true"
        ),
        "active
inactive
"
    );
    assert_eq!(
        vps_text(&vps, &internet, "ls /usr/local/bin /etc/tunnel"),
        "/etc/tunnel:\nrelay.json\n\n/usr/local/bin:\nenvoy\ntunnelctl\n"
    );
    with_session(&internet, &vps, &logs, async |s: &mut Session| {
        enroll::teardown(s).await.unwrap();
    });
    assert_nothing_left(&vps, &internet);

    // No secret reached the logs, though the logs saw every step.
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("write /etc/tunnel/relay.json"),
        "logs were captured"
    );
    let key = vps.client_private_key().unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!logs.contains(line), "SSH key material in the logs");
    }
    assert!(
        !logs.contains(&relay_key.to_base64()),
        "relay private key in the logs"
    );
    assert!(!logs.contains(SDS_SECRET), "SDS private key in the logs");
}
