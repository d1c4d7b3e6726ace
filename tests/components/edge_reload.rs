//! Hot reload with Envoy running: a binding is added and removed and the edge certificate is
//! rotated (SDS file swap), 20 times, by atomic renames of the planner's files; the added
//! binding includes a passthrough binding on a port shared by SNI. A plain TCP session, a TLS
//! (offload) session and a passthrough session on that shared port, all on untouched
//! bindings, stay open throughout and echo after every reload: the number of resets must be 0.
//!
//! Needs root (network namespaces) and the test bed's Envoy.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use crate::edge_support::bed::{Bed, peer_cert, pem_der, read_line};
use crate::edge_support::{leaf, pki};
use crate::plan_inputs::{input, node, pb};
use tunnel::plan::{SourceInput, StaticResolver, TlsSecret, plan};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\nedge: {healthCheck: {interval: 300ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 1}}\n";

fn uplink(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 200, 0, 2), port))
}

/// One echo round trip on a kept session; false means the session is gone.
fn ping<S: std::io::Read + Write>(r: &mut BufReader<S>, msg: &str) -> bool {
    if writeln!(r.get_mut(), "{msg}").is_err() || r.get_mut().flush().is_err() {
        return false;
    }
    let mut line = String::new();
    r.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() == msg
}

#[test]
fn sessions_on_untouched_bindings_survive_20_reloads_and_cert_rotations() {
    let mut bed = Bed::new(1);
    bed.ready(Ipv4Addr::new(10, 200, 0, 2));
    bed.tcp_echo(uplink(7000), "keep", false);
    bed.tcp_echo(uplink(7443), "tls-keep", false);
    bed.tcp_echo(uplink(7100), "extra", false);

    let ca = pki(&["web.example.com"]);
    let certs: Vec<(String, String)> = vec![
        (ca.server_pem.clone(), ca.server_key_pem.clone()),
        leaf(&ca, &["web.example.com"]),
    ];
    let base = || {
        vec![pb(
            "default",
            "kept",
            Some(1),
            "- {name: tcp, protocol: TCP, listenPort: 7000, target: {address: 10.96.0.1, port: 80}}\n\
             - {name: tls, protocol: TCP, listenPort: 7443, tls: {mode: offload, secretRef: {name: web-tls}}, target: {address: 10.96.0.1, port: 80}}\n\
             - {name: sni, protocol: TCP, listenPort: 8443, tls: {mode: passthrough, serverNames: [a.example.com]}, target: {address: 10.96.0.2, port: 443}}",
        )]
    };
    let extra = || {
        pb(
            "default",
            "extra",
            Some(2),
            "- {name: tcp, protocol: TCP, listenPort: 7100, target: {address: 10.96.0.1, port: 80}}\n\
             - {name: sni, protocol: TCP, listenPort: 8443, tls: {mode: passthrough, serverNames: [x.example.com]}, target: {address: 10.96.0.3, port: 443}}",
        )
    };
    let layout = bed.layout();
    let render = |pbs: Vec<SourceInput>, cert: &(String, String)| {
        let resolver = StaticResolver::default().with_secret(
            "default",
            "web-tls",
            TlsSecret {
                certificate_chain: Some(cert.0.clone()),
                private_key: Some(cert.1.clone()),
                ca: None,
            },
        );
        plan(&input(node(NODE), pbs, layout.clone()), &resolver).unwrap()
    };

    // Passthrough backends on the tunnel ports the planner gives the two SNI bindings.
    let backend = pki(&["a.example.com", "x.example.com"]);
    let with_extra = render(base().into_iter().chain([extra()]).collect(), &certs[0]);
    for b in with_extra.planned.iter().filter(|b| b.listen_port == 8443) {
        let tag = format!("sni-{}", b.id.source);
        bed.tls_echo(
            uplink(b.tunnel_port),
            &tag,
            &backend.server_pem,
            &backend.server_key_pem,
        );
    }
    let first = render(base(), &certs[0]);
    bed.apply(&first);
    bed.wait_for("TCP 7000", || bed.tcp_tag(7000).as_deref() == Some("keep"));
    let served_cert = |bed: &Bed| -> Option<Vec<u8>> {
        let tls = bed
            .tls_connect(7443, "web.example.com", &ca.ca_pem, None)
            .ok()?;
        let der = peer_cert(&tls);
        let mut r = BufReader::new(tls);
        (read_line(&mut r)?.as_str() == "tls-keep").then_some(der)
    };
    bed.wait_for("TLS 7443", || served_cert(&bed).is_some());

    // The long-lived sessions.
    let mut tcp: BufReader<TcpStream> = BufReader::new(bed.connect(7000).unwrap());
    assert_eq!(read_line(&mut tcp).as_deref(), Some("keep"));
    let tls = bed
        .tls_connect(7443, "web.example.com", &ca.ca_pem, None)
        .unwrap();
    let mut tls = BufReader::new(tls);
    assert_eq!(read_line(&mut tls).as_deref(), Some("tls-keep"));
    bed.wait_for("passthrough 8443", || {
        bed.tls_connect(8443, "a.example.com", &backend.ca_pem, None)
            .is_ok_and(|t| read_line(&mut BufReader::new(t)).as_deref() == Some("sni-kept"))
    });
    let sni = bed
        .tls_connect(8443, "a.example.com", &backend.ca_pem, None)
        .unwrap();
    let mut sni = BufReader::new(sni);
    assert_eq!(read_line(&mut sni).as_deref(), Some("sni-kept"));
    for s in [
        tcp.get_ref(),
        tls.get_ref().get_ref(),
        sni.get_ref().get_ref(),
    ] {
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
    }

    let mut resets = 0;
    for i in 0..20 {
        let add = i % 2 == 0;
        let cert = &certs[(i + 1) % 2];
        let mut pbs = base();
        if add {
            pbs.push(extra());
        }
        bed.apply(&render(pbs, cert));
        if add {
            bed.wait_for("binding added", || {
                bed.tcp_tag(7100).as_deref() == Some("extra")
            });
        } else {
            bed.wait_for("binding removed", || bed.connect(7100).is_err());
            bed.wait_for("SNI binding removed", || {
                bed.tls_connect(8443, "x.example.com", &backend.ca_pem, None)
                    .map_or(true, |t| read_line(&mut BufReader::new(t)).is_none())
            });
        }
        let want = pem_der(&cert.0);
        bed.wait_for("certificate rotated", || {
            served_cert(&bed).as_ref() == Some(&want)
        });
        if !ping(&mut tcp, &format!("tcp {i}")) {
            resets += 1;
        }
        if !ping(&mut tls, &format!("tls {i}")) {
            resets += 1;
        }
        if !ping(&mut sni, &format!("sni {i}")) {
            resets += 1;
        }
    }
    assert_eq!(resets, 0, "sessions on untouched bindings were reset");

    // Envoy really reloaded: listeners were added and removed, secrets updated.
    let stats = bed.admin("/stats?filter=^listener_manager\\.listener_(added|removed)$");
    let count = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("listener_manager.{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {stats}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(count("listener_added") >= 12, "{stats}");
    assert!(count("listener_removed") >= 10, "{stats}");
}
