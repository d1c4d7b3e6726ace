//! Helpers shared by the tests that enroll a real VPS and run the real agents: finding the
//! data-plane binaries, bounded waiting, an SSH session opened from the internet namespace,
//! the internet/VPS/cluster/pods network, and a greeting server with its client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use testbed::netns::Netns;
use testbed::vps::Vps;
use tunnel::ssh::{Credentials, Session, SshOptions};

/// A data-plane binary next to this test's own target directory.
pub fn agent_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p uplink --bins` first",
        path.display()
    );
    path
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("timed out waiting for {what}");
}

pub fn with_session<R: Send>(
    internet: &Netns,
    vps: &Vps,
    f: impl AsyncFnOnce(&mut Session) -> R + Send,
) -> R {
    let data = BTreeMap::from([
        (
            "privateKey".to_owned(),
            vps.client_private_key().unwrap().into_bytes(),
        ),
        (
            "knownHosts".to_owned(),
            vps.known_hosts_line().unwrap().into_bytes(),
        ),
    ]);
    let host = vps.address().to_string();
    internet
        .enter(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut spec: tunnel::crd::SshSpec = serde_json::from_str(
                        r#"{"secretRef":{"name":"vps-ssh"},"connectTimeout":"20s"}"#,
                    )
                    .unwrap();
                    spec.port = 22;
                    let options = SshOptions::from_spec(&host, &spec).unwrap();
                    let mut s =
                        Session::connect(options, Credentials::from_secret_data(&data).unwrap())
                            .await
                            .unwrap();
                    let out = f(&mut s).await;
                    s.close().await;
                    out
                })
        })
        .unwrap()
}

/// The network of the enrollment tests: `internet` ── VPS, and `internet` ── `cluster` ──
/// pod `i` (`10.244.<i>.2/24`, gateway `.1` in the cluster). The internet routes the pod
/// network to the cluster; the cluster holds the ClusterIP `10.96.0.10` on its loopback. The
/// VPS is booting when this returns: call `vps.wait_ready` once the rest of the set-up is done.
pub struct Network {
    pub internet: Netns,
    pub vps: Vps,
    pub cluster: Netns,
    pub pods: Vec<Netns>,
}

impl Network {
    pub fn new(pods: usize) -> Self {
        use std::net::Ipv4Addr;
        use testbed::netns::{End, veth};
        use testbed::vps::VpsOptions;

        let internet = Netns::new("inet").unwrap();
        let vps = Vps::boot(&internet, &VpsOptions::default()).unwrap();
        let cluster = Netns::new("cluster").unwrap();
        veth(
            End {
                ns: &internet,
                ifname: "k8s0",
                cidr: "198.51.100.1/24",
            },
            End {
                ns: &cluster,
                ifname: "up0",
                cidr: "198.51.100.2/24",
            },
        )
        .unwrap();
        internet.enable_forwarding().unwrap();
        internet
            .run(&["ip", "route", "add", "10.244.0.0/16", "via", "198.51.100.2"])
            .unwrap();
        cluster.enable_forwarding().unwrap();
        cluster
            .default_route(Ipv4Addr::new(198, 51, 100, 1))
            .unwrap();
        cluster.addr("lo", "10.96.0.10/32").unwrap();
        let pods: Vec<Netns> = (0..pods).map(|_| Netns::new("pod").unwrap()).collect();
        for (i, pod) in pods.iter().enumerate() {
            veth(
                End {
                    ns: &cluster,
                    ifname: &format!("p{i}"),
                    cidr: &format!("10.244.{i}.1/24"),
                },
                End {
                    ns: pod,
                    ifname: "eth0",
                    cidr: &format!("10.244.{i}.2/24"),
                },
            )
            .unwrap();
            pod.default_route(Ipv4Addr::new(10, 244, u8::try_from(i).unwrap(), 1))
                .unwrap();
        }
        Self {
            internet,
            vps,
            cluster,
            pods,
        }
    }
}

/// A TCP server in `ns` at `addr` that answers each connection's first read with `greeting`
/// followed by what it read, then closes.
pub fn serve_greeting(ns: &Netns, addr: &str, greeting: &'static [u8]) {
    use std::io::{Read, Write};
    let addr = addr.to_owned();
    let listener = ns
        .enter(move || std::net::TcpListener::bind(addr).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                if let Ok(n) = stream.read(&mut buf) {
                    let _ = stream.write_all(greeting);
                    let _ = stream.write_all(&buf[..n]);
                }
            });
        }
    });
}

/// Sends `ping` to `addr` and returns everything the server answered before closing.
pub fn exchange(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"ping\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Whether a client on the internet reaches the cluster's greeting server through the VPS's
/// public port 8080 within 30 s (`cluster says: ping`).
pub fn traffic_flows(internet: &Netns, vps: std::net::Ipv4Addr) -> bool {
    internet
        .enter(|| {
            for _ in 0..60 {
                if exchange(std::net::SocketAddr::from((vps, 8080)))
                    .is_ok_and(|a| a == "cluster says: ping\n")
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            false
        })
        .unwrap()
}
