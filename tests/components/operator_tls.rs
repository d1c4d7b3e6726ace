//! TLS at the edge through the running operator: README Example 4's EdgeNode (three uplinks)
//! and Example 3's PortBinding applied unchanged (only the address and Secret pointed at the
//! test VPS): SNI passthrough reaches a TLS backend with its own certificate, offload presents
//! the Secret's certificate and reaches a plain backend, mutual TLS refuses a client without a
//! certificate. Then a cert-manager-style rotation of the offload Secret: clients see the new
//! certificate and Envoy keeps its PID (the SDS file is swapped and hot-reloaded).

use kube::api::Api;
use tunnel::crd::{EdgeNode, PortBinding};

use crate::edge_support::bed::pem_der;
use crate::edge_support::{client_cert, leaf, pki};
use crate::operator_support::{serve_tls, tls_exchange, tls_secret};
use testbed::netns::{in_ns, until_in};
use testbed::network::serve_greeting;
use testbed::objects::{apply_yaml, events_of, namespace, service, until_ready};
use testbed::operator::OperatorBed;
use testbed::uplinks::Uplinks;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("tests/fixtures/readme/{name}.yaml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readme_tls_examples_and_a_certificate_rotation() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bed = OperatorBed::example_1(3).await.unwrap();
    let client = bed.client.clone();
    let net = bed.net();
    let (internet, vps, cluster, pods) = (&net.internet, &net.vps, &net.cluster, &net.pods);

    let web = pki(&["web.example.test"]);
    let grpc = pki(&["grpc.example.test"]);
    let ingress = pki(&["ingress.example.test"]);
    cluster.addr("lo", "10.96.0.20/32").unwrap();
    cluster.addr("lo", "10.96.0.40/32").unwrap();
    serve_greeting(cluster, "10.96.0.40:50051", b"grpc: ").unwrap();
    serve_tls(
        cluster,
        "10.96.0.20:443",
        &ingress.server_pem,
        &ingress.server_key_pem,
        b"ingress-tls\n",
    );
    namespace(&client, "networking").await.unwrap();
    service(
        &client,
        "networking",
        "internal-ingress",
        "10.96.0.20",
        &[(443, "TCP")],
    )
    .await
    .unwrap();
    service(
        &client,
        "default",
        "grpc-api",
        "10.96.0.40",
        &[(50051, "TCP")],
    )
    .await
    .unwrap();
    tls_secret(
        &client,
        "web-tls",
        &web.server_pem,
        &web.server_key_pem,
        None,
    )
    .await;
    tls_secret(
        &client,
        "grpc-mtls",
        &grpc.server_pem,
        &grpc.server_key_pem,
        Some(&grpc.ca_pem),
    )
    .await;

    let operator = bed.operator().start().unwrap();
    let node_yaml = fixture("example4").replace("203.0.113.10", &vps.address().to_string());
    apply_yaml::<EdgeNode>(&client, &node_yaml).await.unwrap();
    apply_yaml::<PortBinding>(&client, &fixture("example3"))
        .await
        .unwrap();
    let uplinks = Uplinks::start(&client, "tunnel", "edge-node", pods)
        .await
        .unwrap();
    assert_eq!(
        uplinks.processes.len(),
        3,
        "Example 4 asks for three replicas"
    );
    let nodes: Api<EdgeNode> = Api::namespaced(client.clone(), "default");
    let pbs: Api<PortBinding> = Api::namespaced(client.clone(), "default");
    let describe = || {
        format!(
            "operator:\n{}\nuplinks:\n{}",
            operator.log_text(),
            uplinks.logs()
        )
    };
    until_ready(&nodes, "edge-node", describe).await;
    until_ready(&pbs, "public-tls", describe).await;
    let st = pbs.get("public-tls").await.unwrap().status.unwrap();
    assert_eq!(st.ports.as_deref(), Some("8443/TCP,9443/TCP,9444/TCP"));

    let public = vps.address();
    // SNI passthrough: the backend's own certificate, end to end.
    let (ingress_ca, ingress_cert) = (ingress.ca_pem.clone(), pem_der(&ingress.server_pem));
    assert!(
        until_in(internet, move || {
            tls_exchange((public, 8443), "ingress.example.test", &ingress_ca, None)
                .is_ok_and(|(cert, reply)| cert == ingress_cert && reply == "ingress-tls\n")
        }),
        "SNI passthrough\n{}",
        describe()
    );
    // Offload: the Secret's certificate at the edge, plain to the Service.
    let (web_ca, web_cert) = (web.ca_pem.clone(), pem_der(&web.server_pem));
    let ca = web_ca.clone();
    assert!(
        until_in(internet, move || {
            tls_exchange((public, 9443), "web.example.test", &ca, None)
                .is_ok_and(|(cert, reply)| cert == web_cert && reply == "my-web: hello\n")
        }),
        "TLS offload\n{}",
        describe()
    );
    // Mutual: a client certificate from the Secret's CA is required.
    let (grpc_ca, (client_pem, client_key)) = (grpc.ca_pem.clone(), client_cert(&grpc, "client"));
    let ca = grpc_ca.clone();
    assert!(
        until_in(internet, move || {
            tls_exchange(
                (public, 9444),
                "grpc.example.test",
                &ca,
                Some((&client_pem, &client_key)),
            )
            .is_ok_and(|(_, reply)| reply == "grpc: hello\n")
        }),
        "mutual TLS with a client certificate\n{}",
        describe()
    );
    let ca = grpc_ca.clone();
    let anonymous = in_ns(internet, move || {
        tls_exchange((public, 9444), "grpc.example.test", &ca, None)
    });
    assert!(
        !anonymous
            .as_ref()
            .is_ok_and(|(_, reply)| reply.contains("grpc")),
        "a client without a certificate is refused: {anonymous:?}"
    );

    // The private keys went to the VPS, and the user was told.
    let events = events_of(&client, "default", "edge-node").await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("PrivateKeyOnEdge") && e.contains("default/web-tls")),
        "{events:?}"
    );

    // Rotation: a new certificate in the same Secret reaches clients; Envoy keeps running.
    let envoy_pid = || {
        let out = vps
            .ssh(
                internet,
                "systemctl show -p MainPID --value tunnel-envoy.service",
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let pid = envoy_pid();
    let (new_cert, new_key) = leaf(&web, &["web.example.test"]);
    tls_secret(&client, "web-tls", &new_cert, &new_key, None).await;
    let rotated = pem_der(&new_cert);
    let ca = web_ca.clone();
    assert!(
        until_in(internet, move || {
            tls_exchange((public, 9443), "web.example.test", &ca, None)
                .is_ok_and(|(cert, reply)| cert == rotated && reply == "my-web: hello\n")
        }),
        "clients see the rotated certificate\n{}",
        describe()
    );
    assert_eq!(envoy_pid(), pid, "the rotation did not restart Envoy");
    drop(uplinks);
}
