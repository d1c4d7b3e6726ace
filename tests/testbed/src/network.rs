//! The network of the tests that put a VPS between the internet and a cluster: `internet` ──
//! VPS, and `internet` ── `cluster` ── pod `i` ([`PodNetwork`]). The internet routes the pod
//! network to the cluster; the cluster holds the ClusterIP `10.96.0.10` on its loopback.
//! [`relay_loopback_into`] lets a process in a namespace reach a loopback port of the host
//! (the API server), as the operator does from the internet namespace; [`serve_greeting`] is
//! the target most tests put behind the VPS, [`tcp_exchange`] the client most tests use.

use std::net::{TcpListener, TcpStream};

use crate::TestbedError;
use crate::netns::Netns;
use crate::pods::PodNetwork;
use crate::vps::{Vps, VpsOptions};

/// The internet, one VPS on it, and a cluster's pods behind it; removed when dropped. The VPS
/// is booting when [`Network::new`] returns: call `vps.wait_ready` once the rest of the set-up
/// is done.
#[derive(Debug)]
pub struct Network {
    /// Where the clients, the operator and the VPS's public side are.
    pub internet: Netns,
    /// The VPS, booting.
    pub vps: Vps,
    /// The cluster's router, holding the Service IP on its loopback.
    pub cluster: Netns,
    /// Pod `i` at `10.244.<i>.2/24`.
    pub pods: Vec<Netns>,
}

impl Network {
    /// The internet, a VPS booting on it and `pods` pod namespaces behind a cluster.
    pub fn new(pods: usize) -> Result<Self, TestbedError> {
        let internet = Netns::new("inet")?;
        let vps = Vps::boot(&internet, &VpsOptions::default())?;
        let PodNetwork { cluster, pods } = PodNetwork::new(&internet, pods)?;
        internet.enable_forwarding()?;
        Ok(Self {
            internet,
            vps,
            cluster,
            pods,
        })
    }
}

/// Relays TCP from `127.0.0.1:port` inside `ns` to `127.0.0.1:port` of the host, so a
/// process in `ns` reaches, e.g., the API server at its kubeconfig's address. The relay lives
/// as long as the namespace (its listener is in it).
pub fn relay_loopback_into(ns: &Netns, port: u16) -> Result<(), TestbedError> {
    let listener = ns
        .enter(move || TcpListener::bind(("127.0.0.1", port)))?
        .map_err(TestbedError::io(format!(
            "binding 127.0.0.1:{port} in {}",
            ns.name()
        )))?;
    std::thread::spawn(move || {
        for inside in listener.incoming().flatten() {
            std::thread::spawn(move || relay(inside, port));
        }
    });
    Ok(())
}

/// Copies both ways between `inside` and a new connection to the host's `127.0.0.1:port`.
fn relay(inside: TcpStream, port: u16) {
    let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let (Ok(mut a), Ok(mut b)) = (inside.try_clone(), outside.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let (mut c, mut d) = (outside, inside);
    let _ = std::io::copy(&mut c, &mut d);
    let _ = d.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

/// A TCP server in `ns` at `addr` that answers each connection's first read with `greeting`
/// followed by what it read, then closes.
pub fn serve_greeting(ns: &Netns, addr: &str, greeting: &'static [u8]) -> Result<(), TestbedError> {
    use std::io::{Read, Write};
    let owned = addr.to_owned();
    let listener = ns
        .enter(move || TcpListener::bind(owned))?
        .map_err(TestbedError::io(format!("binding {addr} in {}", ns.name())))?;
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
    Ok(())
}

/// Sends `send` to `addr` over TCP and returns everything the server answered before it
/// closed (2 s to connect, 5 s for each read); `None` on any failure.
pub fn tcp_exchange(addr: std::net::SocketAddr, send: &[u8]) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(send).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
