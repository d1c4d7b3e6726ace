//! Shared support for the data-plane tests: a lab of network namespaces (client, vps,
//! cluster, one namespace per uplink pod), the agents' documents, ConfigMap-style config
//! directories, echo servers and clients that live inside the namespaces, and Envoy.
//!
//! Addresses: client 192.0.2.2 ─ vps 192.0.2.1 (public) / 198.51.100.1 ─ cluster
//! 198.51.100.2 (router, targets on 10.96.0.10) ─ pod i 10.244.i.2 (gateway 10.244.i.1).
//! Tunnel 10.200.0.0/24: relay .1, replica i .(2+i). Nothing leaves these namespaces.

#![allow(clippy::format_collect, clippy::format_push_string)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use testbed::netns::{End, Netns, veth};
use testbed::pods::PodNetwork;
use testbed::process::Process;
use testbed::wait::wait_until;
use tunnel_contract::document::{
    Forward, Protocol, RelayDocument, RelayPeer, UplinkDocument, UplinkRelay,
};
use tunnel_contract::key::PrivateKey;

pub const RELAY_PORT: u16 = 51820;
pub const TARGET_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A forward from the relay's `listen_port` to `TARGET_IP:target_port`.
pub fn forward(protocol: Protocol, listen_port: u16, target_port: u16) -> Forward {
    Forward {
        protocol,
        listen_port,
        target_ip: TARGET_IP,
        target_port,
    }
}

pub fn tunnelctl() -> &'static str {
    env!("CARGO_BIN_EXE_tunnelctl")
}

pub fn uplink_bin() -> &'static str {
    env!("CARGO_BIN_EXE_uplink")
}

/// The namespaces and keys of one test.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub client: Netns,
    pub vps: Netns,
    pub cluster: Netns,
    pub pods: Vec<Netns>,
    pub relay_key: PrivateKey,
    pub uplink_keys: Vec<PrivateKey>,
}

impl Lab {
    pub fn new(replicas: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client = Netns::new("client").unwrap();
        let vps = Netns::new("vps").unwrap();
        veth(
            End {
                ns: &client,
                ifname: "eth0",
                cidr: "192.0.2.2/24",
            },
            End {
                ns: &vps,
                ifname: "pub0",
                cidr: "192.0.2.1/24",
            },
        )
        .unwrap();
        let PodNetwork { cluster, pods } = PodNetwork::new(&vps, replicas).unwrap();
        let uplink_keys = (0..replicas)
            .map(|_| PrivateKey::generate().unwrap())
            .collect();
        let lab = Self {
            dir,
            client,
            vps,
            cluster,
            pods,
            relay_key: PrivateKey::generate().unwrap(),
            uplink_keys,
        };
        std::fs::create_dir_all(lab.keys_dir()).unwrap();
        for (i, key) in lab.uplink_keys.iter().enumerate() {
            std::fs::write(lab.keys_dir().join(format!("priv-{i}")), key.to_base64()).unwrap();
        }
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.path("keys")
    }

    pub fn relay_doc(&self) -> RelayDocument {
        RelayDocument {
            version: 1,
            private_key: self.relay_key.clone(),
            listen_port: RELAY_PORT,
            address: "10.200.0.1/24".parse().unwrap(),
            mtu: 1420,
            peers: self
                .uplink_keys
                .iter()
                .enumerate()
                .map(|(i, k)| RelayPeer {
                    name: Some(format!("edge-uplink-{i}")),
                    public_key: k.public_key(),
                    allowed_ips: vec![format!("10.200.0.{}/32", i + 2).parse().unwrap()],
                })
                .collect(),
        }
    }

    pub fn uplink_doc(&self, forwards: Vec<Forward>) -> UplinkDocument {
        UplinkDocument {
            version: 1,
            network: "10.200.0.0/24".parse().unwrap(),
            mtu: 1420,
            relay: UplinkRelay {
                public_key: self.relay_key.public_key(),
                endpoint: format!("198.51.100.1:{RELAY_PORT}"),
                allowed_ips: vec!["10.200.0.1/32".parse().unwrap()],
                persistent_keepalive: 25,
            },
            forwards,
            admin_bridge: Some("10.200.0.1:40600".parse().unwrap()),
        }
    }

    /// Starts `tunnelctl run` in the vps namespace with `doc`.
    pub fn start_relay(&self, doc: &RelayDocument) -> Process {
        self.start_relay_with(doc, "LOG_LEVEL=debug")
    }

    /// Starts `tunnelctl run` with `doc` and one more environment variable (`NAME=value`,
    /// e.g. `TUNNEL_OFFLOADS=off`).
    pub fn start_relay_with(&self, doc: &RelayDocument, env: &str) -> Process {
        std::fs::write(self.path("relay.json"), doc.to_json()).unwrap();
        let config = self.path("relay.json");
        let control = self.path("relay.sock");
        let p = self
            .vps
            .spawn(
                "tunnelctl",
                &[
                    "env",
                    "LOG_LEVEL=debug",
                    env,
                    tunnelctl(),
                    "--config",
                    config.to_str().unwrap(),
                    "--control",
                    control.to_str().unwrap(),
                    "run",
                ],
                Some(&self.path("relay.log")),
            )
            .unwrap();
        wait_until(
            "the relay's control socket",
            Duration::from_secs(20),
            || control.exists(),
        );
        p
    }

    /// `tunnelctl status` as JSON.
    pub fn relay_status(&self) -> serde_json::Value {
        let out = self
            .vps
            .command(tunnelctl())
            .args([
                "--control",
                self.path("relay.sock").to_str().unwrap(),
                "status",
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Publishes the uplink document the way the kubelet updates a ConfigMap volume.
    pub fn publish_uplink(&self, doc: &UplinkDocument) {
        publish(&self.path("config"), "uplink.json", &doc.to_json());
    }

    /// Starts replica `i` in its pod namespace.
    pub fn start_uplink(&self, i: usize) -> Process {
        self.start_uplink_with(i, "LOG_LEVEL=debug")
    }

    /// Starts replica `i` with one more environment variable (`NAME=value`).
    pub fn start_uplink_with(&self, i: usize, env: &str) -> Process {
        let config = self.path("config").join("uplink.json");
        self.pods[i]
            .spawn(
                "uplink",
                &[
                    "env",
                    &format!("POD_NAME=edge-uplink-{i}"),
                    "LOG_LEVEL=debug",
                    env,
                    uplink_bin(),
                    "--config",
                    config.to_str().unwrap(),
                    "--keys-dir",
                    self.keys_dir().to_str().unwrap(),
                    "--drain-seconds",
                    "2",
                ],
                Some(&self.path(&format!("uplink-{i}.log"))),
            )
            .unwrap()
    }

    /// `/ready` of replica `i`, asked from the vps namespace over the tunnel.
    pub fn ready(&self, i: usize) -> (u16, String) {
        http_get(&self.vps, &format!("10.200.0.{}:40500", i + 2), "/ready")
    }

    /// Waits until uplinks `0..count` all answer 200 on `/ready`.
    pub fn wait_uplinks_ready(&self, count: usize) {
        for i in 0..count {
            wait_until(
                &format!("uplink {i} ready"),
                Duration::from_secs(30),
                || self.ready(i).0 == 200,
            );
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// Writes `file` into `dir` like a ConfigMap volume: a fresh `..<serial>` directory, then an
/// atomic rename of the `..data` symlink, with `file` a symlink through `..data`.
pub fn publish(dir: &Path, file: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let serial = format!("..2026_{}", SERIAL.fetch_add(1, Ordering::Relaxed));
    std::fs::create_dir(dir.join(&serial)).unwrap();
    std::fs::write(dir.join(&serial).join(file), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&serial, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join(file);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
    }
}

/// A minimal HTTP GET from inside `ns`: (status, body); (0, error) when it fails.
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> (u16, String) {
    let addr: SocketAddr = addr.parse().unwrap();
    let path = path.to_string();
    ns.enter(move || -> (u16, String) {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(e) => return (0, e.to_string()),
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        if let Err(e) = s.read_to_string(&mut text) {
            return (0, e.to_string());
        }
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    })
    .unwrap()
}

/// A TCP server in `ns` on `addr`: greets each connection with `from <peer ip>\n`, then
/// echoes. Runs until the process ends (its namespace's deletion closes it).
pub fn tcp_echo(ns: &Netns, addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = ns.enter(move || TcpListener::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let _ = writeln!(stream, "from {peer}");
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
}

/// A UDP server in `ns`: answers each datagram with `from <peer ip> <payload>`.
pub fn udp_echo(ns: &Netns, addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let socket = ns.enter(move || UdpSocket::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let mut reply = format!("from {} ", from.ip()).into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from);
        }
    });
}

/// A TCP connection made from inside `ns`, with its greeting line read.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub greeting: String,
}

impl Conn {
    pub fn open(ns: &Netns, addr: &str) -> Result<Self, String> {
        let addr: SocketAddr = addr.parse().unwrap();
        let stream = ns
            .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
            .unwrap()
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        match reader.read_line(&mut greeting) {
            Ok(0) => return Err("closed before the greeting".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        Ok(Self {
            stream,
            reader,
            greeting: greeting.trim().to_string(),
        })
    }

    /// Sends a line and reads the echo.
    pub fn echo(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stream, "{line}").map_err(|e| e.to_string())?;
        let mut back = String::new();
        match self.reader.read_line(&mut back) {
            Ok(0) => Err("closed".into()),
            Ok(_) => Ok(back.trim().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// One UDP request from inside `ns`; the answer or an error.
pub fn udp_request(ns: &Netns, addr: &str, payload: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let payload = payload.to_string();
    ns.enter(move || -> Result<String, String> {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(payload.as_bytes(), addr)
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    })
    .unwrap()
}

/// A fixed Envoy config, so these tests do not depend on the planner (the enrollment tests
/// run the planner's own files): public TCP/UDP listeners
/// proxied to every replica's tunnel address, health-checked on `/ready`, no panic routing.
pub fn envoy_config(replicas: usize, tcp_ports: &[u16], udp_ports: &[u16]) -> String {
    let endpoints = |port: u16| -> String {
        (0..replicas)
            .map(|i| {
                format!(
                    "        - endpoint: {{address: {{socket_address: {{address: 10.200.0.{}, port_value: {port}}}}}, health_check_config: {{port_value: 40500}}}}\n",
                    i + 2
                )
            })
            .collect()
    };
    let cluster = |name: &str, port: u16| -> String {
        format!(
            "  - name: {name}
    connect_timeout: 2s
    type: STATIC
    common_lb_config: {{healthy_panic_threshold: {{value: 0}}}}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
{eps}    health_checks:
    - timeout: 1s
      interval: 1s
      no_traffic_interval: 1s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check: {{path: /ready}}
",
            eps = endpoints(port)
        )
    };
    let mut listeners = String::new();
    let mut clusters = String::new();
    for &port in tcp_ports {
        listeners.push_str(&format!(
            "  - name: tcp_{port}
    address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp_{port}
          cluster: tcp_{port}
"
        ));
        clusters.push_str(&cluster(&format!("tcp_{port}"), port));
    }
    for &port in udp_ports {
        listeners.push_str(&format!(
            "  - name: udp_{port}
    address: {{socket_address: {{protocol: UDP, address: 0.0.0.0, port_value: {port}}}}}
    listener_filters:
    - name: envoy.filters.udp_listener.udp_proxy
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig
        stat_prefix: udp_{port}
        matcher:
          on_no_match:
            action:
              name: route
              typed_config:
                \"@type\": type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route
                cluster: udp_{port}
"
        ));
        clusters.push_str(&cluster(&format!("udp_{port}"), port));
    }
    format!(
        "admin:
  address: {{socket_address: {{address: 10.200.0.1, port_value: 40600}}}}
static_resources:
  listeners:
{listeners}  clusters:
{clusters}"
    )
}

/// How many hosts of `cluster` Envoy currently counts as healthy (from `/clusters`).
pub fn healthy_hosts(vps: &Netns, cluster: &str) -> usize {
    let (_, body) = http_get(vps, "10.200.0.1:40600", "/clusters");
    body.lines()
        .filter(|l| l.starts_with(&format!("{cluster}::")) && l.contains("::health_flags::"))
        .filter(|l| l.ends_with("::healthy"))
        .count()
}
