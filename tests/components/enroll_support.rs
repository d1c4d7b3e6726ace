//! Helpers shared by the tests that talk to a real VPS and run the real agents: the SSH
//! Secret of a test VPS, a session opened from the internet namespace, an enrollment pass,
//! commands on the VPS, captured logs, uplink agents run as their StatefulSet would, and a
//! greeting server with its client (the network is [`testbed::network`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testbed::netns::Netns;
use testbed::network::{Network, serve_greeting};
use testbed::process::Process;
use testbed::tools::agent_binary;
use testbed::vps::Vps;
use tunnel::enroll::{
    self, Arch, Blob, DesiredState, EnvoyInstall, Health, HostTuning, PassOptions, PassReport,
};
use tunnel::ssh::{Credentials, Session, SshOptions};
use tunnel_contract::key::PrivateKey;

/// A desired state whose every file is `x\n`: enough for a pass to observe and plan against
/// (tests of what a pass may send, not of what it installs).
pub fn placeholder_desired() -> DesiredState {
    let blob = || Blob::new(b"x\n".to_vec());
    DesiredState {
        tunnelctl: BTreeMap::from([(Arch::X86_64, blob())]),
        envoy: EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: BTreeMap::from([(Arch::X86_64, blob())]),
        },
        relay_document: blob(),
        envoy_bootstrap: blob(),
        envoy_lds: blob(),
        envoy_cds: blob(),
        sds: BTreeMap::new(),
        host: HostTuning::default(),
    }
}

/// A valid relay document with a fresh key and no peers (the relay runs; no uplink connects).
pub fn lone_relay_document() -> Vec<u8> {
    tunnel_contract::document::RelayDocument {
        version: 1,
        private_key: PrivateKey::generate().unwrap(),
        listen_port: 51821,
        address: "10.200.0.1/24".parse().unwrap(),
        mtu: 1420,
        peers: Vec::new(),
    }
    .to_json()
    .into_bytes()
}

/// The SSH Secret's data for `vps`: the test client's private key and the VPS's host key.
pub fn secret_data(vps: &Vps) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (
            "privateKey".to_owned(),
            vps.client_private_key().unwrap().into_bytes(),
        ),
        (
            "knownHosts".to_owned(),
            vps.known_hosts_line().unwrap().into_bytes(),
        ),
    ])
}

/// Settings for `vps` as root on port 22: 20 s to connect, keepalives every 5 s, 300 s a
/// command (room for pushing Envoy), 4 reconnection attempts.
pub fn ssh_options(vps: &Vps) -> SshOptions {
    SshOptions {
        host: vps.address().to_string(),
        port: 22,
        user: "root".into(),
        connect_timeout: Duration::from_secs(20),
        keepalive_interval: Duration::from_secs(5),
        keepalive_max: 3,
        command_timeout: Duration::from_secs(300),
        insecure_skip_host_key_verification: false,
        reconnect_attempts: 4,
    }
}

/// Runs `f` with a session to the VPS opened from the internet namespace (the settings of a
/// `spec.ssh` with `connectTimeout: 20s`).
pub fn with_session<R: Send>(
    internet: &Netns,
    vps: &Vps,
    f: impl AsyncFnOnce(&mut Session) -> R + Send,
) -> R {
    let data = secret_data(vps);
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

/// One enrollment pass of `desired` with the default options.
pub fn enroll_pass(internet: &Netns, vps: &Vps, desired: &DesiredState) -> PassReport {
    with_session(internet, vps, async |s: &mut Session| {
        enroll::enroll(s, desired, &PassOptions::default()).await
    })
    .unwrap()
}

/// The VPS's health, as the operator reads it.
pub fn health(internet: &Netns, vps: &Vps) -> Health {
    with_session(internet, vps, async |s: &mut Session| {
        enroll::health::check(s).await.unwrap()
    })
}

/// The standard output of `cmd` run on the VPS (through the test bed's own ssh).
pub fn vps_text(vps: &Vps, internet: &Netns, cmd: &str) -> String {
    String::from_utf8_lossy(&vps.ssh(internet, cmd).unwrap().stdout).into_owned()
}

/// Log output captured from a `tracing` subscriber (`with_writer(move || capture.clone())`).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Uplink agents run as the StatefulSet runs them: replica `o` in `pods[o]`, `POD_NAME`
/// `<node>-uplink-<o>`, the uplink document as the ConfigMap's `uplink.json`, and the keys
/// Secret's `priv-<o>`. Stopped when dropped.
pub struct Uplinks {
    dir: tempfile::TempDir,
    _processes: Vec<Process>,
}

impl Uplinks {
    pub fn start(pods: &[&Netns], node: &str, document: &str, keys: &[PrivateKey]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("uplink.json");
        std::fs::write(&config, document).unwrap();
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir_all(&keys_dir).unwrap();
        for (ordinal, key) in keys.iter().enumerate() {
            std::fs::write(keys_dir.join(format!("priv-{ordinal}")), key.to_base64()).unwrap();
        }
        let uplink_bin = agent_binary("uplink").unwrap();
        let processes = pods
            .iter()
            .enumerate()
            .map(|(ordinal, pod)| {
                pod.spawn(
                    "uplink",
                    &[
                        "env",
                        &format!("POD_NAME={node}-uplink-{ordinal}"),
                        uplink_bin.to_str().unwrap(),
                        "--config",
                        config.to_str().unwrap(),
                        "--keys-dir",
                        keys_dir.to_str().unwrap(),
                        "--drain-seconds",
                        "1",
                    ],
                    Some(&Self::log_path(&dir, ordinal)),
                )
                .unwrap()
            })
            .collect();
        Self {
            dir,
            _processes: processes,
        }
    }

    fn log_path(dir: &tempfile::TempDir, ordinal: usize) -> PathBuf {
        dir.path().join(format!("uplink-{ordinal}.log"))
    }

    /// What replica `ordinal` logged so far.
    pub fn log(&self, ordinal: usize) -> String {
        std::fs::read_to_string(Self::log_path(&self.dir, ordinal)).unwrap_or_default()
    }
}

/// The network of [`testbed::network`] with its VPS up and the cluster serving the greeting
/// `cluster says: ` on `10.96.0.10:9000`, the target [`traffic_flows`] expects behind the
/// VPS's port 8080.
pub fn greeting_network(pods: usize) -> Network {
    let net = Network::new(pods).unwrap();
    net.vps
        .wait_ready(&net.internet, Duration::from_secs(90))
        .unwrap();
    serve_greeting(&net.cluster, "10.96.0.10:9000", b"cluster says: ").unwrap();
    net
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
