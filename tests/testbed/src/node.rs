//! A real single-node Kubernetes cluster on the host (docs/testing.md, "The node";
//! `/work/shared/notes/real-node.md` has the facts behind each setting): etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, a kubelet on containerd (private root, state and
//! socket) with bridge CNI, and kube-proxy (iptables mode), all v1.34.4 built and
//! version-stamped by `tests/testbed/setup.d/30-node.sh`.
//!
//! The node lives in the host's namespaces (iptables, `ip_forward`, fixed ports, cgroups), so
//! one runs at a time per machine: [`Node::start`] takes a host-wide lock, and runs the
//! teardown (`tests/testbed/node-down.sh`) before the bring-up, for the state a killed run
//! left, and again when the handle drops. Its address ranges meet none of the other tests':
//!
//! | what | range |
//! |---|---|
//! | node address (API server, kubelet), on the port-less bridge `nsk0` | [`NODE_IP`] `10.233.0.1/32` |
//! | pods, on the CNI bridge `nsk-cni0` | [`POD_CIDR`] `10.234.0.0/24` |
//! | Services (ClusterIPs, kube-proxy) | [`SERVICE_CIDR`] `10.96.0.0/16` |
//! | the test's "internet" links ([`Node::uplink_to`]) | `10.236.0.0/16` |
//!
//! Fixed ports: 10.233.0.1:6443 (API) and :10250 (kubelet); 127.0.0.1:22379/22380 (etcd),
//! 10248, 10249, 10256, 10257, 10259.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::netns::{self, Netns};
use crate::process::Process;
use crate::vps::{Vps, VpsOptions};
use crate::{TestbedError, tools};

/// The node's name (`kubectl get nodes`).
pub const NODE_NAME: &str = "tbnode";
/// The node's address: the API server and the kubelet listen here.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 1);
/// The pods' subnet (one node, one /24).
pub const POD_CIDR: &str = "10.234.0.0/24";
/// The Services' ClusterIP range (the Kubernetes default; `kubernetes` is 10.96.0.1).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The VPS's public address behind [`Node::internet_with_vps`].
pub const VPS_IP: Ipv4Addr = Ipv4Addr::new(10, 236, 100, 2);
/// The "internet" namespace's address on the VPS's link (clients connect from here).
pub const INTERNET_IP: Ipv4Addr = Ipv4Addr::new(10, 236, 100, 1);
/// The test bed's teardown, also run by `tests/leak-check.sh`.
const NODE_DOWN: &str = include_str!("../node-down.sh");
const RUN: &str = "/run/tbnode";
const KUBELET_DIR: &str = "/var/lib/tb-kubelet";
const LOCK: &str = "/run/tbnode.lock";

/// A running single-node cluster; torn down on drop.
#[derive(Debug)]
pub struct Node {
    // Field order is drop order: the node's processes stop first (kubelet before the API), then
    // the teardown script runs (in `Drop`), then the lock is released.
    processes: Vec<Process>,
    dir: PathBuf,
    _lock: std::fs::File,
}

/// Where the node keeps its files: `$TUNNEL_CACHE/node`.
pub fn node_dir() -> PathBuf {
    tools::cache_dir().join("node")
}

/// A binary built by `setup.d/30-node.sh` (`kubectl`, `kubelet`, ...).
pub fn node_bin(name: &str) -> Result<PathBuf, TestbedError> {
    let path = node_dir().join("bin").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::MissingTool {
            tool: name.into(),
            path,
        })
    }
}

/// Runs the teardown (idempotent): what a killed run left is removed.
pub fn teardown() -> Result<(), TestbedError> {
    netns::run(
        Command::new("bash")
            .arg("-c")
            .arg(NODE_DOWN)
            .arg("node-down")
            .env("TUNNEL_CACHE", tools::cache_dir()),
    )
    .map(drop)
}

impl Node {
    /// Brings a fresh node up (empty etcd, new certificates, new kubelet state; containerd's
    /// image store is kept between runs), imports the
    /// given OCI archives into containerd's `k8s.io` namespace (the sandbox image
    /// [`crate::images::PAUSE`] among them), and waits until the node is Ready and the
    /// `default` ServiceAccount exists. Blocks while another node runs on this machine.
    pub async fn start(images: &[PathBuf]) -> Result<Self, TestbedError> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .map_err(TestbedError::io(format!("opening {LOCK}")))?;
        lock.lock()
            .map_err(TestbedError::io(format!("locking {LOCK}")))?;
        teardown()?;

        let dir = node_dir().join("run");
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            dir.join("pki"),
            dir.join("cni"),
            PathBuf::from(RUN).join("pids"),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(TestbedError::io(format!("creating {}", d.display())))?;
        }
        let mut node = Self {
            processes: Vec::new(),
            dir,
            _lock: lock,
        };
        Self::host_network()?;
        write_pki(&node.pki())?;
        for (name, _, _) in KUBECONFIGS {
            node.write_kubeconfig(name)?;
        }
        node.write_configs()?;

        node.spawn_etcd()?;
        node.spawn_containerd()?;
        node.spawn_apiserver()?;
        node.wait_containerd().await?;
        for image in images {
            node.import(image)?;
        }
        node.wait_api().await?;
        node.spawn_controllers()?;
        node.spawn_kubelet()?;
        node.spawn_kube_proxy()?;
        node.wait_ready().await?;
        Ok(node)
    }

    /// A kubeconfig with cluster-admin rights (group `system:masters`), for kubectl and helm.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A client with cluster-admin rights.
    pub async fn client(&self) -> Result<kube::Client, TestbedError> {
        crate::apiserver::client_from(&self.kubeconfig_path()).await
    }

    /// `kubectl` with this node's kubeconfig.
    pub fn kubectl(&self) -> Result<Command, TestbedError> {
        let mut cmd = Command::new(node_bin("kubectl")?);
        cmd.env("KUBECONFIG", self.kubeconfig_path());
        Ok(cmd)
    }

    /// Runs `kubectl args...`; a non-zero exit is an error with its stderr.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String, TestbedError> {
        let out = netns::run(self.kubectl()?.args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `helm` with this node's kubeconfig and private helm directories.
    pub fn helm(&self) -> Result<Command, TestbedError> {
        let mut cmd = Command::new(tools::bin("helm")?);
        cmd.env("KUBECONFIG", self.kubeconfig_path())
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        Ok(cmd)
    }

    /// `kubectl create secret generic NAME` in `default` with the SSH client key of `vps`
    /// (`privateKey`) and its host key (`knownHosts`), as the README has users make it.
    pub fn create_ssh_secret(&self, vps: &Vps, name: &str) -> Result<(), TestbedError> {
        let known_hosts = self.dir.join("known_hosts");
        std::fs::write(&known_hosts, vps.known_hosts_line()?)
            .map_err(TestbedError::io("writing known_hosts"))?;
        self.kubectl_run(&[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-file=privateKey={}", vps.client_key_path().display()),
            &format!("--from-file=knownHosts={}", known_hosts.display()),
        ])
        .map(drop)
    }

    /// The node's containerd socket (what `ctr` reads from `CONTAINERD_ADDRESS`).
    pub fn containerd_address(&self) -> PathBuf {
        PathBuf::from(RUN).join("containerd.sock")
    }

    /// `ctr -n k8s.io images args...` against the node's containerd.
    fn images(&self, args: &[&OsStr]) -> Result<Output, TestbedError> {
        netns::run(
            Command::new("ctr")
                .arg("--address")
                .arg(self.containerd_address())
                .args(["-n", "k8s.io", "images"])
                .args(args),
        )
    }

    /// Imports an OCI archive into containerd's `k8s.io` namespace.
    pub fn import(&self, archive: &Path) -> Result<Output, TestbedError> {
        self.images(&[OsStr::new("import"), archive.as_os_str()])
    }

    /// Removes images from containerd's `k8s.io` namespace (those it does not have are
    /// ignored): the store is kept between runs.
    pub fn remove_images(&self, names: &[&str]) -> Result<(), TestbedError> {
        let listed = self.image_names()?;
        let mut args = vec![OsStr::new("rm")];
        args.extend(
            names
                .iter()
                .filter(|n| listed.iter().any(|l| l == **n))
                .map(OsStr::new),
        );
        if args.len() > 1 {
            self.images(&args)?;
        }
        Ok(())
    }

    /// The names of the images in containerd's `k8s.io` namespace.
    pub fn image_names(&self) -> Result<Vec<String>, TestbedError> {
        let listed = self.images(&[OsStr::new("ls"), OsStr::new("-q")])?;
        Ok(String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Links the host to a network namespace the test made (its "internet"): a veth pair
    /// `10.236.<n>.1/30` (host) – `10.236.<n>.2/30` (namespace), a host route to `routed`
    /// (e.g. the VPS's subnet) through the namespace, and forwarding on inside it. Pods reach
    /// `routed` through the host (the CNI masquerades their source to the host's address), so
    /// the namespace needs no route back to the pods. Removed with the namespace.
    pub fn uplink_to(&self, ns: &Netns, n: u8, routed: &str) -> Result<(), TestbedError> {
        let host_if = format!("nsk-up{n}");
        let (host, far) = (Ipv4Addr::new(10, 236, n, 1), Ipv4Addr::new(10, 236, n, 2));
        netns::run(Command::new("ip").args([
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            ns.name(),
        ]))?;
        netns::run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{host}/30"),
            "dev",
            &host_if,
        ]))?;
        netns::run(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
        ns.addr("up0", &format!("{far}/30"))?;
        ns.enable_forwarding()?;
        netns::run(Command::new("ip").args(["route", "replace", routed, "via", &far.to_string()]))?;
        Ok(())
    }

    /// An "internet" namespace routed from the host ([`Node::uplink_to`]) and a VPS booted
    /// behind it at [`VPS_IP`], so pods reach the VPS as they would a public server.
    pub fn internet_with_vps(&self) -> Result<(Netns, Vps), TestbedError> {
        let internet = Netns::new("inet")?;
        self.uplink_to(&internet, 0, "10.236.100.0/24")?;
        let vps = Vps::boot(
            &internet,
            &VpsOptions {
                address: Some(VPS_IP),
                peer_address: Some(INTERNET_IP),
                peer_ifname: Some("vps0".into()),
            },
        )?;
        Ok((internet, vps))
    }

    /// One more VPS on the internet of [`Node::internet_with_vps`] (`n` from 1), at
    /// `10.236.<100 + n>.2`, routed from the host the same way, so pods reach it too.
    pub fn another_vps(&self, internet: &Netns, n: u8) -> Result<Vps, TestbedError> {
        let subnet = 100u8.saturating_add(n);
        netns::run(Command::new("ip").args([
            "route",
            "replace",
            &format!("10.236.{subnet}.0/24"),
            "via",
            "10.236.0.2",
        ]))?;
        Vps::boot(
            internet,
            &VpsOptions {
                address: Some(Ipv4Addr::new(10, 236, subnet, 2)),
                peer_address: Some(Ipv4Addr::new(10, 236, subnet, 1)),
                peer_ifname: Some(format!("vps-more{n}")),
            },
        )
    }

    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// The log file of a component (`kubelet`, `kube-apiserver`, `containerd`, ...).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log(name)
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> Result<(), TestbedError> {
        let process = Process::spawn(name, command, Some(&self.log(name)))?;
        std::fs::write(
            Path::new(RUN).join("pids").join(name),
            process.pid().to_string(),
        )
        .map_err(TestbedError::io("recording a PID"))?;
        self.processes.push(process);
        Ok(())
    }

    fn host_network() -> Result<(), TestbedError> {
        let saved = node_dir().join("ip_forward.saved");
        if !saved.exists() {
            let now = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .map_err(TestbedError::io("reading ip_forward"))?;
            std::fs::write(&saved, now.trim()).map_err(TestbedError::io("saving ip_forward"))?;
        }
        netns::run(Command::new("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
        // No dummy links on this kernel: a bridge without ports holds the node's address.
        netns::run(Command::new("ip").args(["link", "add", "nsk0", "type", "bridge"]))?;
        netns::run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{NODE_IP}/32"),
            "dev",
            "nsk0",
        ]))?;
        netns::run(Command::new("ip").args(["link", "set", "nsk0", "up"]))?;
        Ok(())
    }

    fn write_kubeconfig(&self, name: &str) -> Result<(), TestbedError> {
        let pki = self.pki();
        let b64 = |file: &str| -> Result<String, TestbedError> {
            let bytes = std::fs::read(pki.join(file))
                .map_err(TestbedError::io(format!("reading {file}")))?;
            Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
        };
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tbnode", "cluster": {
                "server": format!("https://{NODE_IP}:6443"),
                "certificate-authority-data": b64("ca.crt")?}}],
            "users": [{"name": name, "user": {
                "client-certificate-data": b64(&format!("{name}.crt"))?,
                "client-key-data": b64(&format!("{name}.key"))?}}],
            "contexts": [{"name": "tbnode", "context": {"cluster": "tbnode", "user": name, "namespace": "default"}}],
            "current-context": "tbnode",
        });
        let text = serde_yaml::to_string(&config).map_err(|e| TestbedError::Kube(e.to_string()))?;
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text).map_err(TestbedError::io("writing a kubeconfig"))?;
        set_private(&path)
    }

    fn write_configs(&self) -> Result<(), TestbedError> {
        let d = &self.dir;
        let cache = node_dir();
        let write = |name: &str, text: String| {
            std::fs::write(d.join(name), text).map_err(TestbedError::io(format!("writing {name}")))
        };
        write(
            "containerd.toml",
            format!(
                r#"version = 2
root = "{root}"
state = "{RUN}/containerd"
[grpc]
  address = "{RUN}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # No CAP_SYS_RESOURCE on this host: the pause container's oom_score_adj -998 is refused.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
                root = cache.join("containerd").display(),
                pause = crate::images::PAUSE,
                cni = d.join("cni").display(),
                opt = cache.join("containerd-opt").display(),
            ),
        )?;
        write(
            "cni/10-tbnode.conflist",
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": "tbnode",
                "plugins": [
                    {"type": "bridge", "bridge": "nsk-cni0", "isGateway": true, "ipMasq": true,
                     "hairpinMode": true,
                     "ipam": {"type": "host-local", "subnet": POD_CIDR,
                              "dataDir": format!("{RUN}/cni-ipam"),
                              "routes": [{"dst": "0.0.0.0/0"}]}},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                    {"type": "loopback"}
                ]
            })
            .to_string(),
        )?;
        let pki = self.pki();
        let p = |f: &str| pki.join(f).display().to_string();
        write(
            "kubelet.yaml",
            format!(
                r"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://{RUN}/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: {logs}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
",
                logs = cache.join("pod-logs").display(),
                ca = p("ca.crt"),
            ),
        )?;
        write(
            "kube-proxy.yaml",
            format!(
                r"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kc}}}
mode: iptables
clusterCIDR: {POD_CIDR}
hostnameOverride: {NODE_NAME}
bindAddress: {NODE_IP}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {{maxPerCore: 0}}
",
                kc = d.join("kube-proxy.kubeconfig").display(),
            ),
        )
    }

    fn spawn_etcd(&mut self) -> Result<(), TestbedError> {
        let data = self.dir.join("etcd");
        self.spawn(
            "etcd",
            Command::new(tools::bin("etcd")?)
                .arg(format!("--data-dir={}", data.display()))
                .args([
                    "--listen-client-urls=http://127.0.0.1:22379",
                    "--advertise-client-urls=http://127.0.0.1:22379",
                    "--listen-peer-urls=http://127.0.0.1:22380",
                    "--initial-advertise-peer-urls=http://127.0.0.1:22380",
                    "--initial-cluster=default=http://127.0.0.1:22380",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ]),
        )
    }

    fn spawn_containerd(&mut self) -> Result<(), TestbedError> {
        let config = self.dir.join("containerd.toml");
        self.spawn(
            "containerd",
            Command::new("containerd").arg("--config").arg(config),
        )
    }

    async fn wait_containerd(&self) -> Result<(), TestbedError> {
        let sock = Path::new(RUN).join("containerd.sock");
        wait_for("containerd's socket", Duration::from_secs(30), || async {
            sock.exists()
        })
        .await
    }

    fn spawn_apiserver(&mut self) -> Result<(), TestbedError> {
        let p = |f: &str| self.pki().join(f).display().to_string();
        let mut cmd = Command::new(node_bin("kube-apiserver")?);
        cmd.args([
            "--etcd-servers=http://127.0.0.1:22379",
            &format!("--bind-address={NODE_IP}"),
            &format!("--advertise-address={NODE_IP}"),
            "--secure-port=6443",
            &format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            &format!("--tls-cert-file={}", p("apiserver.crt")),
            &format!("--tls-private-key-file={}", p("apiserver.key")),
            &format!("--client-ca-file={}", p("ca.crt")),
            &format!(
                "--kubelet-client-certificate={}",
                p("apiserver-kubelet.crt")
            ),
            &format!("--kubelet-client-key={}", p("apiserver-kubelet.key")),
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            &format!("--service-account-key-file={}", p("sa.pub")),
            &format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--v=0",
        ]);
        // Pod Security `restricted` by default, as hardened clusters configure it: what runs
        // here (the operator, the echo workload) must meet it, and the uplinks' namespace must
        // be labelled for what they need.
        let admission = self.dir.join("admission.yaml");
        std::fs::write(&admission, crate::apiserver::RESTRICTED_BY_DEFAULT)
            .map_err(TestbedError::io("writing the admission configuration"))?;
        cmd.arg(format!(
            "--admission-control-config-file={}",
            admission.display()
        ));
        self.spawn("kube-apiserver", &mut cmd)
    }

    async fn wait_api(&self) -> Result<(), TestbedError> {
        let path = self.kubeconfig_path();
        wait_for(
            "kube-apiserver /readyz",
            Duration::from_secs(90),
            || async {
                let Ok(client) = crate::apiserver::client_from(&path).await else {
                    return false;
                };
                let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
                    return false;
                };
                client
                    .request_text(req)
                    .await
                    .is_ok_and(|body| body.trim() == "ok")
            },
        )
        .await
        .map_err(|e| self.with_log(&e, "kube-apiserver"))
    }

    fn spawn_controllers(&mut self) -> Result<(), TestbedError> {
        let p = |f: &str| self.pki().join(f).display().to_string();
        let kc = |name: &str| {
            self.dir
                .join(format!("{name}.kubeconfig"))
                .display()
                .to_string()
        };
        let (cm, sched) = (kc("controller-manager"), kc("scheduler"));
        let mut cmd = Command::new(node_bin("kube-controller-manager")?);
        cmd.args([
            &format!("--kubeconfig={cm}"),
            &format!("--authentication-kubeconfig={cm}"),
            &format!("--authorization-kubeconfig={cm}"),
            &format!("--service-account-private-key-file={}", p("sa.key")),
            &format!("--root-ca-file={}", p("ca.crt")),
            "--use-service-account-credentials",
            &format!("--cluster-signing-cert-file={}", p("ca.crt")),
            &format!("--cluster-signing-key-file={}", p("ca.key")),
            &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=10257",
        ]);
        self.spawn("kube-controller-manager", &mut cmd)?;
        let mut cmd = Command::new(node_bin("kube-scheduler")?);
        cmd.args([
            &format!("--kubeconfig={sched}"),
            &format!("--authentication-kubeconfig={sched}"),
            &format!("--authorization-kubeconfig={sched}"),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=10259",
        ]);
        self.spawn("kube-scheduler", &mut cmd)
    }

    fn spawn_kubelet(&mut self) -> Result<(), TestbedError> {
        let mut cmd = Command::new(node_bin("kubelet")?);
        cmd.arg(format!(
            "--config={}",
            self.dir.join("kubelet.yaml").display()
        ))
        .arg(format!(
            "--kubeconfig={}",
            self.dir.join("kubelet.kubeconfig").display()
        ))
        .args([
            &format!("--hostname-override={NODE_NAME}"),
            &format!("--node-ip={NODE_IP}"),
            &format!("--root-dir={KUBELET_DIR}"),
            &format!("--cert-dir={}", self.dir.join("kubelet-pki").display()),
        ]);
        self.spawn("kubelet", &mut cmd)
    }

    fn spawn_kube_proxy(&mut self) -> Result<(), TestbedError> {
        let mut cmd = Command::new(node_bin("kube-proxy")?);
        cmd.arg(format!(
            "--config={}",
            self.dir.join("kube-proxy.yaml").display()
        ));
        self.spawn("kube-proxy", &mut cmd)
    }

    async fn wait_ready(&self) -> Result<(), TestbedError> {
        wait_for("the node to be Ready", Duration::from_secs(120), || async {
            self.kubectl_run(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .is_ok_and(|s| s.trim() == "True")
        })
        .await
        .map_err(|e| self.with_log(&e, "kubelet"))?;
        // Pods are refused in a namespace until its `default` ServiceAccount exists.
        wait_for(
            "the default ServiceAccount",
            Duration::from_secs(60),
            || async {
                self.kubectl_run(&["get", "serviceaccount", "default"])
                    .is_ok()
            },
        )
        .await
        .map_err(|e| self.with_log(&e, "kube-controller-manager"))
    }

    fn with_log(&self, e: &TestbedError, component: &str) -> TestbedError {
        let log = std::fs::read_to_string(self.log(component)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let mut text = String::new();
        for line in tail.into_iter().rev() {
            let _ = writeln!(text, "{line}");
        }
        TestbedError::NotReady {
            what: component.into(),
            last: e.to_string(),
            log_tail: text,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Kubelet and kube-proxy first, then the control plane, containerd last.
        while let Some(mut process) = self.processes.pop() {
            process.stop(Duration::from_secs(10));
        }
        if let Err(e) = teardown() {
            eprintln!("node teardown: {e}");
        }
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<(), TestbedError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TestbedError::Timeout { what: what.into() });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node's kubeconfigs: (file stem, certificate CN, organization).
const KUBECONFIGS: &[(&str, &str, &str)] = &[
    ("admin", "tbnode-admin", "system:masters"),
    ("kubelet", "system:node:tbnode", "system:nodes"),
    ("kube-proxy", "system:kube-proxy", ""),
    ("controller-manager", "system:kube-controller-manager", ""),
    ("scheduler", "system:kube-scheduler", ""),
];

fn set_private(path: &Path) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(TestbedError::io("chmod 600"))
}

/// The CA, the API server's serving certificate, one client certificate per kubeconfig plus
/// the API server's own for the kubelet, and the service-account key pair.
fn write_pki(dir: &Path) -> Result<(), TestbedError> {
    let err = |e: rcgen::Error| TestbedError::Kube(format!("generating certificates: {e}"));
    let write = |name: &str, text: &str| -> Result<(), TestbedError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(TestbedError::io(format!("writing {name}")))?;
        if Path::new(name).extension().is_some_and(|x| x == "key") {
            set_private(&path)?;
        }
        Ok(())
    };
    let dn = |cn: &str, org: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        if !org.is_empty() {
            dn.push(DnType::OrganizationName, org);
        }
        dn
    };

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name = dn("tbnode-ca", "");
    write("ca.crt", &ca.self_signed(&ca_key).map_err(err)?.pem())?;
    write("ca.key", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(err)?;
    let mut serving = CertificateParams::new(vec![
        "10.96.0.1".to_string(),
        NODE_IP.to_string(),
        "127.0.0.1".into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ])
    .map_err(err)?;
    serving.distinguished_name = dn("kube-apiserver", "");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write(
        "apiserver.crt",
        &serving.signed_by(&key, &issuer).map_err(err)?.pem(),
    )?;
    write("apiserver.key", &key.serialize_pem())?;

    let clients = KUBECONFIGS.iter().copied().chain([(
        "apiserver-kubelet",
        "kube-apiserver-kubelet-client",
        "system:masters",
    )]);
    for (name, cn, org) in clients {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name = dn(cn, org);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write(
            &format!("{name}.crt"),
            &params.signed_by(&key, &issuer).map_err(err)?.pem(),
        )?;
        write(&format!("{name}.key"), &key.serialize_pem())?;
    }

    let sa = KeyPair::generate().map_err(err)?;
    write("sa.key", &sa.serialize_pem())?;
    write("sa.pub", &sa.public_key_pem())?;
    Ok(())
}
