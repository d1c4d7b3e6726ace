//! The operator end to end, as a user drives it: README Examples 1 and 2 applied (only the
//! address and the Secret pointed at a real nspawn VPS) to a real API server, the `tunnel run`
//! binary reconciling them, the uplink pods run from the objects it wrote, and real clients on
//! the "internet" reaching the targets through the VPS. Then what a user does next: add and
//! remove a binding while a session on another stays open, a port conflict, a reference to a
//! missing EdgeNode and Secret, restart-envoy, an operator killed and restarted, and deletion.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use testbed::netns::Netns;
use tunnel::crd::{EdgeNode, PortBinding};

use crate::enroll_support::{Network, serve_greeting};
use crate::operator_support::{
    Operator, Uplinks, apply_example1, apply_yaml, artefact_dirs, binding_ready, condition,
    events_of, eventually, in_ns, logs_of, namespace, node_ready, readme_example, service,
    ssh_secret, until_node_ready,
};

const LONG: Duration = Duration::from_secs(180);

/// A PROXY-protocol server: answers `ingress saw <source address>` after the header.
fn serve_proxy_protocol(ns: &Netns, addr: &'static str) {
    let listener = ns
        .enter(move || std::net::TcpListener::bind(addr).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() {
                    return;
                }
                let source = header.split_whitespace().nth(2).unwrap_or("-").to_owned();
                let mut s = stream;
                let _ = s.write_all(format!("ingress saw {source}\n").as_bytes());
            });
        }
    });
}

/// A UDP echo.
fn serve_udp_echo(ns: &Netns, addr: &'static str) {
    let socket = ns.enter(move || UdpSocket::bind(addr).unwrap()).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
}

/// A line echo that keeps the connection open.
fn serve_line_echo(ns: &Netns, addr: &'static str) {
    let listener = ns
        .enter(move || std::net::TcpListener::bind(addr).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut s = stream;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if s.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
}

fn tcp_exchange(addr: SocketAddr, send: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(send).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn udp_exchange(addr: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    sock.send_to(payload, addr).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Retries `f` inside `ns` for up to 60 s until it returns `true`.
fn until_in(ns: &Netns, f: impl Fn() -> bool + Send) -> bool {
    in_ns(ns, move || {
        for _ in 0..120 {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readme_examples_are_served_through_the_running_operator() {
    let (
        server,
        client,
        Network {
            internet,
            vps,
            cluster,
            pods,
        },
    ) = crate::operator_support::start_bed(2).await;

    // The targets, in the cluster: my-web (Example 1), internal-ingress with PROXY protocol
    // and a DNS-like UDP echo (Example 2), and a long-lived echo for the session test.
    cluster.addr("lo", "10.96.0.20/32").unwrap();
    cluster.addr("lo", "10.96.0.30/32").unwrap();
    serve_greeting(&cluster, "10.96.0.10:8080", b"my-web: ");
    serve_proxy_protocol(&cluster, "10.96.0.20:443");
    serve_udp_echo(&cluster, "10.96.0.10:53");
    serve_line_echo(&cluster, "10.96.0.30:7000");
    namespace(&client, "networking").await;
    service(&client, "default", "my-web", "10.96.0.10", &[(8080, "TCP")]).await;
    service(
        &client,
        "networking",
        "internal-ingress",
        "10.96.0.20",
        &[(443, "TCP")],
    )
    .await;
    service(&client, "default", "echo", "10.96.0.30", &[(7000, "TCP")]).await;

    let dirs = artefact_dirs();
    let logs = tempfile::tempdir().unwrap();
    let mut operator = Operator::start(
        &internet,
        &server,
        &dirs,
        &logs.path().join("operator-1.log"),
        &["--resync-period", "20s"],
    );
    vps.wait_ready(&internet, Duration::from_secs(90)).unwrap();

    // README Example 1, pointed at the VPS, and its SSH Secret.
    ssh_secret(&client, "default", "vps-ssh-secret", &vps).await;
    apply_example1(&client, &vps).await;

    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let pbs: Api<PortBinding> = Api::namespaced(client.clone(), "default");
    let uplinks = Uplinks::start(&client, "tunnel", "edge-node", &pods).await;
    let describe = || logs_of(&operator, &uplinks);

    // Served: Ready, every condition, and traffic.
    let ready = until_node_ready(&nodes, "edge-node", describe).await;
    assert_eq!(ready.1, "AllHealthy");
    let node = nodes.get("edge-node").await.unwrap();
    let st = node.status.clone().unwrap();
    for type_ in ["Enrolled", "ConfigApplied", "UplinksReady"] {
        assert_eq!(
            condition(&st.conditions, type_).unwrap().0,
            "True",
            "{type_}"
        );
    }
    assert_eq!(st.observed_generation, node.metadata.generation);
    assert!(st.public_key.is_some());
    assert_eq!(
        st.uplink.len(),
        1,
        "Example 1 keeps the default of one replica"
    );
    assert_eq!(st.applied_bindings, vec!["default/public-web".to_owned()]);
    assert!(
        node.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"tunnel.achetronic.com/teardown".to_owned())
    );
    let pb_ready = eventually(
        "PortBinding public-web Ready=True",
        LONG,
        async || {
            binding_ready(&pbs, "public-web")
                .await
                .filter(|c| c.0 == "True")
        },
        describe,
    )
    .await;
    assert_eq!(pb_ready.1, "Served");
    let pb = pbs.get("public-web").await.unwrap().status.unwrap();
    assert_eq!(pb.ports.as_deref(), Some("80/TCP"));
    assert_eq!(pb.bindings[0].state, "Served");
    let public = vps.address();
    assert!(
        until_in(&internet, move || tcp_exchange(
            (public, 80).into(),
            b"hello\n"
        )
        .is_some_and(|a| a == "my-web: hello\n")),
        "TCP :80 through the VPS\n{}",
        describe()
    );

    // Example 2 unchanged: PROXY protocol to a Service in another namespace, UDP to an IP.
    let example2 = readme_example("example2");
    apply_yaml::<PortBinding>(&client, &example2[0]).await;
    eventually(
        "PortBinding public-edge Ready=True",
        LONG,
        async || {
            binding_ready(&pbs, "public-edge")
                .await
                .filter(|c| c.0 == "True")
        },
        describe,
    )
    .await;
    let client_ip = {
        let [a, b, c, _] = public.octets();
        format!("{a}.{b}.{c}.1")
    };
    let expected = format!("ingress saw {client_ip}\n");
    assert!(
        until_in(&internet, move || tcp_exchange((public, 443).into(), b"")
            .is_some_and(|a| a == expected)),
        "PROXY protocol carries the client's address\n{}",
        describe()
    );
    assert!(
        until_in(&internet, move || udp_exchange(
            (public, 53).into(),
            b"query"
        )
        .is_some_and(|a| a == b"query")),
        "UDP :53 through the VPS\n{}",
        describe()
    );

    // A long-lived session on a binding of its own, kept open while bindings come and go.
    apply_yaml::<PortBinding>(
        &client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: session, namespace: default}\nspec:\n  edgeNodeRef: {name: edge-node}\n  bindings:\n  - name: echo\n    protocol: TCP\n    listenPort: 7000\n    target: {service: {name: echo, namespace: default, port: 7000}}\n",
    )
    .await;
    eventually(
        "PortBinding session Ready=True",
        LONG,
        async || {
            binding_ready(&pbs, "session")
                .await
                .filter(|c| c.0 == "True")
        },
        describe,
    )
    .await;
    let session = in_ns(&internet, move || {
        for _ in 0..60 {
            if let Ok(s) =
                TcpStream::connect_timeout(&(public, 7000).into(), Duration::from_secs(2))
            {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                if w.write_all(b"one\n").is_ok()
                    && r.read_line(&mut line).is_ok()
                    && line == "one\n"
                {
                    return Some((w, r));
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    })
    .expect("a session on :7000");
    let (mut session_w, mut session_r) = session;
    let mut echo = |text: &str| -> bool {
        let mut line = String::new();
        session_w.write_all(text.as_bytes()).is_ok()
            && session_r.read_line(&mut line).is_ok()
            && line == text
    };

    // A newer PortBinding that wants port 80 too: the older keeps it, the newer is told who
    // holds it, and its other binding (to the Service port by its name) is served.
    apply_yaml::<PortBinding>(
        &client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: newer, namespace: default}\nspec:\n  edgeNodeRef: {name: edge-node}\n  bindings:\n  - name: also-http\n    protocol: TCP\n    listenPort: 80\n    target: {service: {name: my-web, namespace: default, port: 8080}}\n  - name: other\n    protocol: TCP\n    listenPort: 8081\n    target: {service: {name: my-web, namespace: default, port: p8080-tcp}}\n",
    )
    .await;
    let conflict = eventually(
        "PortBinding newer to report the conflict",
        LONG,
        async || {
            binding_ready(&pbs, "newer")
                .await
                .filter(|c| c.1 == "PortConflict")
        },
        describe,
    )
    .await;
    assert_eq!(conflict.0, "False");
    assert!(
        conflict.2.contains("public-web"),
        "names the winner: {}",
        conflict.2
    );
    let newer = pbs.get("newer").await.unwrap().status.unwrap();
    assert_eq!(newer.ports.as_deref(), Some("8081/TCP"));
    assert!(
        until_in(&internet, move || tcp_exchange(
            (public, 8081).into(),
            b"x\n"
        )
        .is_some_and(|a| a == "my-web: x\n")),
        "the newer PortBinding's other binding, to a named Service port, is served\n{}",
        describe()
    );
    assert!(echo("two\n"), "the session survives a binding being added");

    // Removing a binding closes its port only.
    let passes_before_delete = operator.log_text().lines().count();
    pbs.delete("newer", &DeleteParams::default()).await.unwrap();
    assert!(
        until_in(&internet, move || tcp_exchange(
            (public, 8081).into(),
            b"x\n"
        )
        .is_none()),
        "port 8081 closed after its PortBinding was deleted\n{}",
        describe()
    );
    assert!(
        echo("three\n"),
        "the session survives a binding being removed"
    );
    assert!(
        in_ns(&internet, move || tcp_exchange((public, 80).into(), b"y\n"))
            .is_some_and(|a| a == "my-web: y\n")
    );

    // Bad input admission cannot catch: a missing EdgeNode, a missing SSH Secret.
    apply_yaml::<PortBinding>(
        &client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {name: orphan, namespace: default}\nspec:\n  edgeNodeRef: {name: nope}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: 9000\n    target: {address: 10.96.0.10, port: 8080}\n",
    )
    .await;
    let orphan = eventually(
        "PortBinding orphan to report its missing EdgeNode",
        LONG,
        async || binding_ready(&pbs, "orphan").await,
        describe,
    )
    .await;
    assert_eq!(
        (orphan.0.as_str(), orphan.1.as_str()),
        ("False", "EdgeNodeNotFound")
    );
    assert!(orphan.2.contains("default/nope"), "{}", orphan.2);
    apply_yaml::<EdgeNode>(
        &client,
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {name: no-secret, namespace: default}\nspec:\n  address: 192.0.2.99\n  ssh: {secretRef: {name: not-there}}\n",
    )
    .await;
    let broken = eventually(
        "EdgeNode no-secret to report its missing Secret",
        LONG,
        async || node_ready(&nodes, "no-secret").await,
        describe,
    )
    .await;
    assert_eq!(
        (broken.0.as_str(), broken.1.as_str()),
        ("False", "SSHSecretNotFound")
    );
    assert!(broken.2.contains("default/not-there"), "{}", broken.2);
    let events = events_of(&client, "default", "no-secret").await;
    assert!(
        events.iter().any(|e| e.starts_with("SSHSecretNotFound")),
        "{events:?}"
    );
    assert!(
        echo("four\n"),
        "a broken EdgeNode does not disturb the served one"
    );

    let envoy_pid = || {
        let out = vps
            .ssh(
                &internet,
                "systemctl show -p MainPID --value tunnel-envoy.service",
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let pid_before = envoy_pid();
    // The operator killed and started again: it converges without changing the VPS. First,
    // the last change is on the VPS: after the deletion, a pass that changed the VPS, then one
    // that found nothing to do. (The uplinks drop port 8081 before the VPS's pass has
    // finished, so the port looking closed does not say that; killed mid-pass, the operator
    // would leave work for the next one.)
    eventually(
        "the deletion applied, then a pass with nothing to do",
        LONG,
        async || {
            let log = operator.log_text();
            let mut planned = log
                .lines()
                .skip(passes_before_delete)
                .filter(|l| l.contains("enrollment pass planned"));
            planned.by_ref().find(|l| !l.contains("steps=0"))?;
            planned.any(|l| l.contains("steps=0")).then_some(())
        },
        || operator.log_text(),
    )
    .await;
    operator.process.signal("KILL");
    let _ = operator.process.wait_exit(Duration::from_secs(10));
    let statuses_before = (
        nodes
            .get("edge-node")
            .await
            .unwrap()
            .metadata
            .resource_version,
        pbs.get("public-web")
            .await
            .unwrap()
            .metadata
            .resource_version,
    );
    let second = Operator::start(
        &internet,
        &server,
        &dirs,
        &logs.path().join("operator-2.log"),
        &["--resync-period", "20s"],
    );
    eventually(
        "the new operator to finish a pass on edge-node",
        LONG,
        async || {
            second
                .log_text()
                .lines()
                .any(|l| l.contains("enrollment pass planned") && l.contains("steps=0"))
                .then_some(())
        },
        || second.log_text(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = second.log_text();
    assert!(
        !log.contains("enrollment step"),
        "the restarted operator changed the VPS:\n{log}"
    );
    let statuses_after = (
        nodes
            .get("edge-node")
            .await
            .unwrap()
            .metadata
            .resource_version,
        pbs.get("public-web")
            .await
            .unwrap()
            .metadata
            .resource_version,
    );
    assert_eq!(
        statuses_before, statuses_after,
        "nothing unchanged was rewritten"
    );
    assert_eq!(
        envoy_pid(),
        pid_before,
        "Envoy untouched by the new operator"
    );
    assert!(echo("five\n"), "sessions survive an operator restart");

    // restart-envoy: a new Envoy process (sessions through Envoy end with it), and the
    // annotation is consumed.
    nodes
        .patch(
            "edge-node",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"tunnel.achetronic.com/restart-envoy": "true"}}})),
        )
        .await
        .unwrap();
    eventually(
        "the restart-envoy annotation to be consumed",
        LONG,
        async || {
            let n = nodes.get("edge-node").await.ok()?;
            (!n.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("tunnel.achetronic.com/restart-envoy"))
            .then_some(())
        },
        || second.log_text(),
    )
    .await;
    let pid_after = envoy_pid();
    assert_ne!(pid_before, pid_after, "Envoy was restarted");
    assert!(
        until_in(&internet, move || tcp_exchange((public, 80).into(), b"z\n")
            .is_some_and(|a| a == "my-web: z\n")),
        "served again after the restart\n{}",
        second.log_text()
    );

    // No secret reaches a log or an Event.
    let key = vps.client_private_key().unwrap();
    let key_line = key.lines().nth(1).unwrap().to_owned();
    let mut everything = operator.log_text() + &second.log_text();
    for name in ["edge-node", "public-web", "no-secret", "orphan"] {
        everything.push_str(&events_of(&client, "default", name).await.join("\n"));
    }
    assert!(
        !everything.contains(&key_line),
        "the SSH private key leaked"
    );

    // Deletion: Envoy and the relay stop, everything of ours leaves the VPS, then the
    // uplink objects, then the EdgeNode.
    drop(session_w);
    nodes
        .delete("edge-node", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the EdgeNode to be gone",
        LONG,
        async || {
            nodes
                .get_opt("edge-node")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
        || second.log_text(),
    )
    .await;
    let left = vps
        .ssh(
            &internet,
            "for p in /etc/envoy /etc/tunnel /usr/local/bin/tunnelctl /usr/local/bin/envoy /etc/systemd/system/tunnel-relay.service /etc/systemd/system/tunnel-envoy.service; do [ -e $p ] && echo $p; done; ip link show wg-relay >/dev/null 2>&1 && echo wg-relay; true",
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "left on the VPS"
    );
    let names = tunnel::workload::UplinkNames::for_node("default", "edge-node");
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), "tunnel");
    assert!(sts.get_opt(&names.workload).await.unwrap().is_none());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "tunnel");
    assert!(secrets.get_opt(&names.keys_secret).await.unwrap().is_none());
    assert!(
        secrets
            .get_opt(&names.vps_key_secret)
            .await
            .unwrap()
            .is_none()
    );
    let torn = events_of(&client, "default", "edge-node").await;
    assert!(torn.iter().any(|e| e.starts_with("TornDown")), "{torn:?}");
    drop(uplinks);
}
