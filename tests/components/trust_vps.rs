//! Trust boundary 8 (issue 12): on a real nspawn VPS (real systemd), enrollment runs Envoy as
//! its own user `tunnel-envoy` with `CAP_NET_BIND_SERVICE` only and the relay with
//! `CAP_NET_ADMIN` only, both with `NoNewPrivileges` and systemd's sandbox. They start, serve
//! a public port below 1024, hot-reload a new listener (Envoy reads its files through its
//! group),
//! come back the same after a reboot, and teardown removes only what enrollment installed:
//! an Envoy binary that was on the VPS before is put back, the user enrollment made goes.
//!
//! Needs root, the test bed's VPS and Envoy, and `cargo build -p uplink --bins` first.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::enroll_support::with_session;
use testbed::netns::Netns;
use testbed::tools::agent_binary;
use testbed::vps::{Vps, VpsOptions};
use tunnel::enroll::{self, Arch, Blob, DesiredState, EnvoyInstall, HostTuning, PassOptions};
use tunnel::ssh::Session;
use tunnel_contract::document::{RelayDocument, RelayPeer};
use tunnel_contract::key::PrivateKey;

const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_ADMIN: u64 = 1 << 12;
const PRE_EXISTING: &str = "#!/bin/sh\necho pre-existing envoy\n";

fn relay_document() -> Blob {
    let doc = RelayDocument {
        version: 1,
        private_key: PrivateKey::generate().unwrap(),
        listen_port: 51821,
        address: "10.200.0.1/24".parse().unwrap(),
        mtu: 1420,
        peers: vec![RelayPeer {
            name: Some("edge-uplink-0".into()),
            public_key: PrivateKey::generate().unwrap().public_key(),
            allowed_ips: vec!["10.200.0.2/32".parse().unwrap()],
        }],
    };
    Blob::new(doc.to_json().into_bytes())
}

fn lds(ports: &[u16]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("resources:\n");
    for port in ports {
        let _ = write!(
            out,
            "- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n\
             \x20 name: tcp_{port}\n\
             \x20 address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}\n\
             \x20 filter_chains:\n\
             \x20 - filters:\n\
             \x20   - name: envoy.filters.network.tcp_proxy\n\
             \x20     typed_config:\n\
             \x20       \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n\
             \x20       stat_prefix: tcp_{port}\n\
             \x20       cluster: target\n"
        );
    }
    out
}

fn desired(
    agent: &Blob,
    envoy: &Blob,
    relay: &Blob,
    target: SocketAddr,
    ports: &[u16],
) -> DesiredState {
    let bootstrap = "node: {id: tunnel-edge, cluster: tunnel}\n\
         admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}\n\
         dynamic_resources:\n\
         \x20 lds_config: {path_config_source: {path: /etc/envoy/lds.yaml, watched_directory: {path: /etc/envoy}}, resource_api_version: V3}\n\
         \x20 cds_config: {path_config_source: {path: /etc/envoy/cds.yaml, watched_directory: {path: /etc/envoy}}, resource_api_version: V3}\n";
    let cds = format!(
        "resources:\n\
         - \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n\
         \x20 name: target\n\
         \x20 type: STATIC\n\
         \x20 connect_timeout: 2s\n\
         \x20 load_assignment:\n\
         \x20   cluster_name: target\n\
         \x20   endpoints:\n\
         \x20   - lb_endpoints:\n\
         \x20     - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n",
        target.ip(),
        target.port()
    );
    DesiredState {
        tunnelctl: BTreeMap::from([(Arch::X86_64, agent.clone())]),
        envoy: EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: BTreeMap::from([(Arch::X86_64, envoy.clone())]),
        },
        relay_document: relay.clone(),
        envoy_bootstrap: Blob::new(bootstrap.as_bytes().to_vec()),
        envoy_lds: Blob::new(lds(ports).into_bytes()),
        envoy_cds: Blob::new(cds.into_bytes()),
        sds: BTreeMap::from([(
            "demo.sds.yaml".to_owned(),
            Blob::new(b"resources: []\n".to_vec()),
        )]),
        host: HostTuning::default(),
    }
}

fn start_target(internet: &Netns, addr: SocketAddr) {
    let listener = internet.enter(|| TcpListener::bind(addr).unwrap()).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
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

fn traffic_flows(internet: &Netns, vps: Ipv4Addr, port: u16) -> Result<(), String> {
    internet
        .enter(|| {
            let mut last = String::new();
            for _ in 0..60 {
                let attempt = (|| -> std::io::Result<String> {
                    let mut s = TcpStream::connect_timeout(
                        &SocketAddr::from((vps, port)),
                        Duration::from_secs(2),
                    )?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(b"ping\n")?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    Ok(out)
                })();
                match attempt {
                    Ok(a) if a == "target says: ping\n" => return Ok(()),
                    Ok(a) => last = format!("answer {a:?}"),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(last)
        })
        .unwrap()
}

fn text(vps: &Vps, internet: &Netns, cmd: &str) -> String {
    String::from_utf8_lossy(&vps.ssh(internet, cmd).unwrap().stdout).into_owned()
}

/// (uid, effective capabilities, no_new_privs) of a unit's main process.
fn process_of(vps: &Vps, internet: &Netns, unit: &str) -> (u32, u64, bool) {
    let status = text(
        vps,
        internet,
        &format!("cat /proc/$(systemctl show -p MainPID --value {unit})/status"),
    );
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .trim()
            .to_owned()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let caps = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    (uid, caps, field("NoNewPrivs:") == "1")
}

fn assert_least_privilege(vps: &Vps, internet: &Netns) {
    let (uid, caps, nnp) = process_of(vps, internet, "tunnel-envoy.service");
    assert_ne!(uid, 0, "Envoy runs as its own user");
    assert_eq!(caps, CAP_NET_BIND_SERVICE, "Envoy's capabilities");
    assert!(nnp, "Envoy has no_new_privs");
    let (uid, caps, nnp) = process_of(vps, internet, "tunnel-relay.service");
    assert_eq!(uid, 0);
    assert_eq!(caps, CAP_NET_ADMIN, "the relay's capabilities");
    assert!(nnp, "the relay has no_new_privs");
    for unit in ["tunnel-envoy.service", "tunnel-relay.service"] {
        let props = text(
            vps,
            internet,
            &format!(
                "systemctl show -p ProtectSystem -p ProtectHome -p PrivateTmp -p NoNewPrivileges {unit}"
            ),
        );
        for want in [
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
        ] {
            assert!(props.contains(want), "{unit}: {want} in {props}");
        }
    }
    assert_eq!(
        text(
            vps,
            internet,
            "stat -c '%U:%G %a %n' /etc/envoy/lds.yaml /etc/envoy/tls/demo.sds.yaml /etc/tunnel/relay.json"
        ),
        "root:tunnel-envoy 640 /etc/envoy/lds.yaml\nroot:tunnel-envoy 640 /etc/envoy/tls/demo.sds.yaml\nroot:root 600 /etc/tunnel/relay.json\n"
    );
}

#[test]
fn envoy_and_the_relay_run_with_least_privilege_across_a_reboot_and_teardown_keeps_what_was_there()
{
    let envoy = Blob::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap());
    let agent = Blob::new(std::fs::read(agent_binary("tunnelctl").unwrap()).unwrap());
    let relay = relay_document();
    let internet = Netns::new("inet").unwrap();
    let mut vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();
    let [a, b, c, _] = vps.address().octets();
    let target = SocketAddr::from((Ipv4Addr::new(a, b, c, 1), 9000));
    start_target(&internet, target);

    // Someone's own Envoy binary was there first.
    vps.ssh(
        &internet,
        &format!(
            "mkdir -p /usr/local/bin && printf '{}' > /usr/local/bin/envoy && chmod 755 /usr/local/bin/envoy",
            PRE_EXISTING.replace('\n', "\\n")
        ),
    )
    .unwrap();

    let want = desired(&agent, &envoy, &relay, target, &[443]);
    let report = with_session(&internet, &vps, async |s: &mut Session| {
        enroll::enroll(s, &want, &PassOptions::default()).await
    })
    .unwrap();
    assert!(
        report
            .steps
            .contains(&"preserve /usr/local/bin/envoy".to_owned()),
        "{:?}",
        report.steps
    );
    assert!(
        report
            .steps
            .contains(&"create user tunnel-envoy and make its directories root's".to_owned()),
        "{:?}",
        report.steps
    );
    assert!(report.health.envoy_active(), "{:?}", report.health);
    assert!(report.health.relay_active(), "{:?}", report.health);
    traffic_flows(&internet, vps.address(), 443).unwrap();
    assert_least_privilege(&vps, &internet);

    // A new listener is hot-reloaded: the unprivileged Envoy reads the file just written.
    let pid = text(
        &vps,
        &internet,
        "systemctl show -p MainPID --value tunnel-envoy.service",
    );
    let want = desired(&agent, &envoy, &relay, target, &[443, 8443]);
    with_session(&internet, &vps, async |s: &mut Session| {
        enroll::enroll(s, &want, &PassOptions::default()).await
    })
    .unwrap();
    traffic_flows(&internet, vps.address(), 8443).unwrap();
    assert_eq!(
        text(
            &vps,
            &internet,
            "systemctl show -p MainPID --value tunnel-envoy.service"
        ),
        pid,
        "hot reload, no restart"
    );

    // Reboot: both come back by themselves, just as confined.
    vps.reboot(&internet).unwrap();
    let states = text(
        &vps,
        &internet,
        "for i in $(seq 60); do systemctl is-active --quiet tunnel-envoy.service && break; sleep 0.5; done; systemctl is-active tunnel-relay.service tunnel-envoy.service",
    );
    assert_eq!(states, "active\nactive\n");
    traffic_flows(&internet, vps.address(), 443).unwrap();
    traffic_flows(&internet, vps.address(), 8443).unwrap();
    assert_least_privilege(&vps, &internet);
    let report = with_session(&internet, &vps, async |s: &mut Session| {
        enroll::enroll(s, &want, &PassOptions::default()).await
    })
    .unwrap();
    assert!(!report.changed(), "{:?}", report.steps);

    // Teardown: the pre-existing binary is back, our user is gone, nothing of ours is left.
    with_session(&internet, &vps, async |s: &mut Session| {
        enroll::teardown(s).await.unwrap();
        enroll::teardown(s).await.unwrap();
    });
    assert_eq!(
        text(&vps, &internet, "cat /usr/local/bin/envoy"),
        PRE_EXISTING
    );
    assert_eq!(
        text(
            &vps,
            &internet,
            "getent passwd tunnel-envoy; getent group tunnel-envoy; ls -d /etc/envoy /etc/tunnel /usr/local/bin/tunnelctl /usr/local/bin/envoy.pre-tunnel 2>/dev/null; true"
        ),
        ""
    );
}

/// Security review L8, on a real VPS: the directories of ours are root's (0755) and Envoy's
/// files `0640 root:tunnel-envoy`, so the service user can plant nothing where root writes;
/// a VPS left by an earlier version (the directories the user's, a file of ours replaced by
/// a link to a root-only file) is repaired by a pass without root following the link; Envoy
/// still serves; and teardown removes only our files: what someone else put in `/etc/envoy`
/// stays, and so does the directory holding it.
#[test]
fn root_never_writes_where_envoys_user_can_plant_links_and_teardown_removes_only_our_files() {
    let envoy = Blob::new(std::fs::read(testbed::tools::envoy().unwrap()).unwrap());
    let agent = Blob::new(std::fs::read(agent_binary("tunnelctl").unwrap()).unwrap());
    let relay = relay_document();
    let internet = Netns::new("inet").unwrap();
    let vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();
    let [a, b, c, _] = vps.address().octets();
    let target = SocketAddr::from((Ipv4Addr::new(a, b, c, 1), 9000));
    start_target(&internet, target);
    let pass = |want: &DesiredState| {
        with_session(&internet, &vps, async |s: &mut Session| {
            enroll::enroll(s, want, &PassOptions::default()).await
        })
    };
    let owners = "stat -c '%a %U:%G %n' /etc/envoy /etc/envoy/tls /etc/tunnel /etc/envoy/envoy.yaml /etc/envoy/lds.yaml /etc/envoy/cds.yaml /etc/envoy/tls/demo.sds.yaml /etc/tunnel/relay.json";
    let expected = "755 root:root /etc/envoy\n755 root:root /etc/envoy/tls\n755 root:root /etc/tunnel\n\
                    640 root:tunnel-envoy /etc/envoy/envoy.yaml\n640 root:tunnel-envoy /etc/envoy/lds.yaml\n\
                    640 root:tunnel-envoy /etc/envoy/cds.yaml\n640 root:tunnel-envoy /etc/envoy/tls/demo.sds.yaml\n\
                    600 root:root /etc/tunnel/relay.json\n";

    let want = desired(&agent, &envoy, &relay, target, &[443]);
    let report = pass(&want).unwrap();
    assert!(report.health.envoy_active(), "{:?}", report.health);
    traffic_flows(&internet, vps.address(), 443).unwrap();
    assert_eq!(text(&vps, &internet, owners), expected);
    // Envoy's unit no longer hands the directory to its user when it starts.
    assert!(
        !text(
            &vps,
            &internet,
            "cat /etc/systemd/system/tunnel-envoy.service"
        )
        .contains("chown")
    );
    // The service user can plant nothing in our directories.
    for dir in ["/etc/envoy", "/etc/envoy/tls", "/etc/tunnel"] {
        let planted = vps.ssh(
            &internet,
            &format!("runuser -u tunnel-envoy -- ln -s /etc/victim.conf {dir}/.tunnel.planted"),
        );
        assert!(
            planted
                .as_ref()
                .is_err_and(|e| format!("{e:?}").contains("Permission denied")),
            "tunnel-envoy planted a link in {dir}: {planted:?}"
        );
    }

    // A VPS as an earlier version left it: /etc/envoy and /etc/envoy/tls the user's, and the
    // user replaced lds.yaml and the SDS file with links to root-only files.
    vps.ssh(
        &internet,
        "printf 'root only\\n' > /etc/victim.conf; chmod 600 /etc/victim.conf; \
         mkdir -p /etc/victim.d; chmod 700 /etc/victim.d; \
         chown tunnel-envoy:tunnel-envoy /etc/envoy /etc/envoy/tls; \
         runuser -u tunnel-envoy -- sh -c 'rm -f /etc/envoy/lds.yaml && ln -s /etc/victim.conf /etc/envoy/lds.yaml && rm -f /etc/envoy/tls/demo.sds.yaml && ln -s /etc/victim.conf /etc/envoy/tls/demo.sds.yaml'",
    )
    .unwrap();
    let report = pass(&want).unwrap();
    assert!(
        report
            .steps
            .contains(&"write /etc/envoy/lds.yaml (640)".to_owned()),
        "{:?}",
        report.steps
    );
    assert_eq!(
        text(
            &vps,
            &internet,
            "stat -c '%a %U:%G' /etc/victim.conf; cat /etc/victim.conf"
        ),
        "600 root:root\nroot only\n",
        "root followed a link"
    );
    assert_eq!(text(&vps, &internet, owners), expected, "repaired");
    assert_eq!(
        text(&vps, &internet, "find /etc/envoy -type l"),
        "",
        "the links were replaced, not followed"
    );
    traffic_flows(&internet, vps.address(), 443).unwrap();

    // Someone else's files in our directories survive teardown; ours go.
    vps.ssh(
        &internet,
        "printf 'mine\\n' > /etc/envoy/notes.txt; printf 'mine too\\n' > /etc/envoy/tls/other.pem",
    )
    .unwrap();
    with_session(&internet, &vps, async |s: &mut Session| {
        enroll::teardown(s).await
    })
    .unwrap();
    assert_eq!(
        text(
            &vps,
            &internet,
            "cat /etc/envoy/notes.txt /etc/envoy/tls/other.pem; ls -A /etc/envoy /etc/envoy/tls; \
             [ -e /etc/tunnel ] && echo '/etc/tunnel left'; systemctl is-active tunnel-envoy.service; true"
        ),
        "mine\nmine too\n/etc/envoy:\nnotes.txt\ntls\n\n/etc/envoy/tls:\nother.pem\ninactive\n"
    );
    assert_eq!(
        text(&vps, &internet, "cat /etc/victim.conf"),
        "root only\n",
        "teardown left the victim alone"
    );
}
