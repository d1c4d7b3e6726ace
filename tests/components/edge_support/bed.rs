//! A small edge in network namespaces: `client` (192.0.2.2 and 2001:db8:1::2) — `vps`
//! (192.0.2.1 and 2001:db8:1::1, and the relay
//! 10.200.0.1 on the tunnel side) — `uplinks` (10.200.0.2, 10.200.0.3, ...), with the real Envoy
//! in `vps` running the planner's files, and small test servers in `uplinks` standing in for
//! the uplinks: `/ready` on 40500 (switchable) and each binding's tunnel port (TCP echo, TLS
//! echo, UDP echo, each answering with its own tag, PROXY headers recorded).
//!
//! Everything stops on drop: servers by a flag, Envoy by PID, namespaces deleted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use testbed::envoy::Envoy;
use testbed::netns::{End, Netns, veth};
use tunnel::plan::Plan;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const VPS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The client's IPv6 address (the documentation range), on the same link.
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// The VPS's IPv6 address on that link.
pub const VPS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

/// The namespaces and Envoy.
pub struct Bed {
    pub dir: tempfile::TempDir,
    pub envoy_dir: PathBuf,
    pub stop: Arc<AtomicBool>,
    pub envoy: Option<Envoy>,
    pub client: Netns,
    pub vps: Netns,
    pub uplinks: Netns,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut e) = self.envoy.take() {
            e.process.stop(Duration::from_secs(5));
        }
    }
}

impl Bed {
    /// Makes the namespaces and links; `replicas` uplink addresses in `uplinks`.
    pub fn new(replicas: u8) -> Bed {
        let client = Netns::new("cli").unwrap();
        let vps = Netns::new("vps").unwrap();
        let uplinks = Netns::new("upl").unwrap();
        veth(
            End {
                ns: &client,
                ifname: "c0",
                cidr: "192.0.2.2/24",
            },
            End {
                ns: &vps,
                ifname: "v0",
                cidr: "192.0.2.1/24",
            },
        )
        .unwrap();
        // IPv6 on the public link too (no duplicate address detection: usable at once).
        client
            .run(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{CLIENT_IP6}/64"),
                "dev",
                "c0",
                "nodad",
            ])
            .unwrap();
        vps.run(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{VPS_IP6}/64"),
            "dev",
            "v0",
            "nodad",
        ])
        .unwrap();
        veth(
            End {
                ns: &vps,
                ifname: "v1",
                cidr: "10.200.0.1/24",
            },
            End {
                ns: &uplinks,
                ifname: "u0",
                cidr: "10.200.0.2/24",
            },
        )
        .unwrap();
        for o in 1..replicas {
            uplinks
                .run(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.200.0.{}/24", o + 2),
                    "dev",
                    "u0",
                ])
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let envoy_dir = dir.path().join("etc/envoy");
        std::fs::create_dir_all(envoy_dir.join("tls")).unwrap();
        Bed {
            dir,
            envoy_dir,
            stop: Arc::new(AtomicBool::new(false)),
            envoy: None,
            client,
            vps,
            uplinks,
        }
    }

    /// The layout to plan with.
    pub fn layout(&self) -> tunnel::plan::Layout {
        tunnel::plan::Layout {
            dir: self.envoy_dir.to_string_lossy().into_owned(),
        }
    }

    /// Writes the plan's Envoy files (atomically: temp file then rename, CDS before LDS) and
    /// starts Envoy if it is not running.
    pub fn apply(&mut self, plan: &Plan) {
        let mut files: Vec<&tunnel::plan::RenderedFile> = plan
            .vps_files
            .iter()
            .filter(|f| Path::new(&f.path).starts_with(&self.envoy_dir))
            .collect();
        // SDS first, then CDS, then LDS, then the bootstrap.
        files.sort_by_key(|f| {
            if f.path.ends_with(".sds.yaml") {
                0
            } else if f.path.ends_with("cds.yaml") {
                1
            } else if f.path.ends_with("lds.yaml") {
                2
            } else {
                3
            }
        });
        for f in files {
            atomic_write(Path::new(&f.path), &f.contents);
        }
        if self.envoy.is_none() {
            let log = self.dir.path().join("envoy.log");
            let envoy = Envoy::start(
                Some(&self.vps),
                &self.envoy_dir.join("envoy.yaml"),
                &log,
                "10.200.0.1:40600",
            )
            .unwrap();
            self.envoy = Some(envoy);
        }
    }

    pub fn envoy_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// GET `path` on Envoy's admin (from the uplinks' side, like the admin bridge).
    pub fn admin(&self, path: &str) -> String {
        let mut s = self
            .uplinks
            .enter(|| {
                TcpStream::connect_timeout(
                    &"10.200.0.1:40600".parse().unwrap(),
                    Duration::from_secs(2),
                )
            })
            .unwrap()
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The sum of the counters and gauges of Envoy's `/stats` whose names end with `name`
    /// (0 when there are none).
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.admin(&format!("/stats?filter={name}"));
        stats
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with(name))
            .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
            .sum()
    }

    /// A `/ready` server on `ip:40500`; the returned flag says whether it answers 200.
    pub fn ready(&self, ip: Ipv4Addr) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(true));
        let listener = self
            .uplinks
            .enter(move || TcpListener::bind((ip, 40500)))
            .unwrap()
            .unwrap();
        let f = flag.clone();
        serve(listener, self.stop.clone(), move |mut s| {
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let status = if f.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        });
        flag
    }

    /// A TCP server on `addr` that reads a PROXY header first (when `proxy`), records the
    /// source it names, then writes `<tag>\n` and echoes lines.
    pub fn tcp_echo(&self, addr: SocketAddr, tag: &str, proxy: bool) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = self
            .uplinks
            .enter(move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        let tag = tag.to_owned();
        let record = seen.clone();
        serve(listener, self.stop.clone(), move |mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
            if proxy {
                match read_proxy_header(&mut s) {
                    Some(src) => record.lock().unwrap().push(src),
                    None => return,
                }
            }
            if writeln!(s, "{tag}").is_err() {
                return;
            }
            echo_lines(s);
        });
        seen
    }

    /// A TLS server on `addr` (certificate `cert`/`key`) that writes `<tag>\n` and echoes lines.
    pub fn tls_echo(&self, addr: SocketAddr, tag: &str, cert: &str, key: &str) {
        let config = Arc::new(server_config(cert, key, None));
        let listener = self
            .uplinks
            .enter(move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        let tag = tag.to_owned();
        serve(listener, self.stop.clone(), move |s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, s);
            if writeln!(tls, "{tag}").is_err() {
                return;
            }
            let _ = tls.flush();
            let mut reader = BufReader::new(tls);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if reader.get_mut().write_all(line.as_bytes()).is_err() {
                    return;
                }
                let _ = reader.get_mut().flush();
                line.clear();
            }
        });
    }

    /// A UDP server on `addr` answering `<tag>:<datagram>`.
    pub fn udp_echo(&self, addr: SocketAddr, tag: &str) {
        let sock = self
            .uplinks
            .enter(move || UdpSocket::bind(addr))
            .unwrap()
            .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = self.stop.clone();
        let tag = tag.to_owned();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let mut reply = format!("{tag}:").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
    }

    /// A TCP connection from the client to the VPS's `port`.
    pub fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        self.connect_to(SocketAddr::from((VPS_IP, port)))
    }

    /// A TCP connection from the client to `addr` (e.g. the VPS's IPv6 address).
    pub fn connect_to(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let s = self
            .client
            .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
            .unwrap()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    }

    /// Connects to `port` and returns the tag of the backend that answered (`None`: closed
    /// without one).
    pub fn tcp_tag(&self, port: u16) -> Option<String> {
        let s = self.connect(port).ok()?;
        read_line(&mut BufReader::new(s))
    }

    /// Sends one datagram from the client to the VPS's UDP `port` and returns the reply.
    pub fn udp_roundtrip(&self, port: u16, payload: &str) -> Option<String> {
        self.udp_roundtrip_to(SocketAddr::from((VPS_IP, port)), payload)
    }

    /// Sends one datagram from the client (its address of `to`'s family) to `to` and returns
    /// the reply.
    pub fn udp_roundtrip_to(&self, to: SocketAddr, payload: &str) -> Option<String> {
        let from: IpAddr = if to.is_ipv6() {
            CLIENT_IP6.into()
        } else {
            CLIENT_IP.into()
        };
        let sock = self
            .client
            .enter(move || UdpSocket::bind((from, 0)))
            .unwrap()
            .ok()?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        sock.send_to(payload.as_bytes(), to).ok()?;
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// A TLS connection from the client to `port` with SNI `sni`, trusting `ca`, optionally
    /// presenting a client certificate.
    pub fn tls_connect(
        &self,
        port: u16,
        sni: &str,
        ca: &str,
        client_cert: Option<(&str, &str)>,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let config = Arc::new(client_config(ca, client_cert));
        let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let s = self.connect(port)?;
        let mut tls = rustls::StreamOwned::new(conn, s);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }

    /// Waits (bounded) until `f` holds.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..300 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; envoy log:\n{}",
            tail(&self.envoy_log())
        );
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let problems: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l.contains("][warning][") || l.contains("][error][") || l.contains("][critical][")
        })
        .copied()
        .collect();
    format!(
        "{}\n...\n{}",
        problems.join("\n"),
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
}

/// Reads one line (without the newline); `None` on EOF or error.
pub fn read_line<R: BufRead>(r: &mut R) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
        _ => None,
    }
}

/// Writes a file by writing a temporary file in the same directory and renaming it.
pub fn atomic_write(path: &Path, contents: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handler: impl Fn(TcpStream) + Send + Sync + 'static,
) {
    listener.set_nonblocking(true).unwrap();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let h = handler.clone();
                    std::thread::spawn(move || h(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

fn echo_lines(s: TcpStream) {
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
        if w.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// Reads a PROXY v1 or v2 header and returns the source as `ip:port`.
fn read_proxy_header(s: &mut TcpStream) -> Option<String> {
    let mut first = [0u8; 12];
    s.read_exact(&mut first[..5]).ok()?;
    if &first[..5] == b"PROXY" {
        let mut line = b"PROXY".to_vec();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") && line.len() < 108 {
            s.read_exact(&mut b).ok()?;
            line.push(b[0]);
        }
        // PROXY TCP4|TCP6 <src> <dst> <sport> <dport>
        let text = String::from_utf8_lossy(&line).into_owned();
        let parts: Vec<&str> = text.split_whitespace().collect();
        let src: IpAddr = parts.get(2)?.parse().ok()?;
        let sport: u16 = parts.get(4)?.parse().ok()?;
        return Some(format!("v1 {}", SocketAddr::from((src, sport))));
    }
    s.read_exact(&mut first[5..]).ok()?;
    if first != *b"\r\n\r\n\x00\r\nQUIT\n" {
        return None;
    }
    let mut head = [0u8; 4];
    s.read_exact(&mut head).ok()?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    let (src, sport) = match head[1] >> 4 {
        // AF_INET: src, dst (4 bytes each), ports.
        1 if body.len() >= 12 => (
            IpAddr::from([body[0], body[1], body[2], body[3]]),
            u16::from_be_bytes([body[8], body[9]]),
        ),
        // AF_INET6: src, dst (16 bytes each), ports.
        2 if body.len() >= 36 => (
            IpAddr::from(<[u8; 16]>::try_from(&body[..16]).ok()?),
            u16::from_be_bytes([body[32], body[33]]),
        ),
        _ => return None,
    };
    Some(format!("v2 {}", SocketAddr::from((src, sport))))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_config(cert: &str, key: &str, client_ca: Option<&str>) -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    assert!(client_ca.is_none());
    builder
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}

pub fn client_config(ca: &str, client_cert: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    }
}

/// The DER of the certificate the server presented.
pub fn peer_cert(tls: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> Vec<u8> {
    tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// The DER of the first certificate in a PEM.
pub fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}
