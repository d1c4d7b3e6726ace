//! The operator's test bed: a real API server with the CRDs, the internet/VPS/cluster/pods
//! network of the enrollment tests, the operator binary running in the internet namespace
//! (it reaches the API server through a loopback relay into that namespace), and a harness
//! that runs the uplink pods from the StatefulSet, ConfigMap and keys Secret the operator
//! wrote, as a kubelet would (the ConfigMap is re-read and its file replaced on change, like a
//! ConfigMap volume).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use testbed::apiserver::ApiServer;
use testbed::netns::Netns;
use testbed::process::Process;
use testbed::vps::Vps;
use tunnel::crd::{EdgeNode, PortBinding};

use testbed::tools::agent_binary;

/// Relays TCP from `127.0.0.1:port` inside `ns` to `127.0.0.1:port` of the host, so a
/// process in `ns` reaches the API server at the kubeconfig's address.
pub fn relay_loopback_into(ns: &Netns, port: u16) {
    let listener = ns
        .enter(move || TcpListener::bind(("127.0.0.1", port)).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for inside in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let (mut a, mut b) = (inside.try_clone().unwrap(), outside.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut d) = (outside, inside);
                let _ = std::io::copy(&mut c, &mut d);
                let _ = d.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

/// The start of every operator test: a real API server with the CRDs, a client, and the
/// internet/VPS/cluster/pods network with the API server reachable from the internet
/// namespace (where the operator runs).
pub async fn start_bed(pods: usize) -> (ApiServer, Client, crate::enroll_support::Network) {
    let server = ApiServer::start().await.unwrap();
    server.install_crds(&tunnel::crd::crds()).await.unwrap();
    let client = server.client().await.unwrap();
    let net = crate::enroll_support::Network::new(pods);
    relay_loopback_into(&net.internet, api_port(&server));
    (server, client, net)
}

/// The port of the API server's URL.
pub fn api_port(server: &ApiServer) -> u16 {
    server.url().rsplit(':').next().unwrap().parse().unwrap()
}

/// A directory laid out as `--tunnelctl-dir` and `--envoy-dir` expect.
pub fn artefact_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tunnelctl = dir.path().join("tunnelctl");
    let envoy = dir.path().join("envoy");
    std::fs::create_dir_all(&tunnelctl).unwrap();
    std::fs::create_dir_all(&envoy).unwrap();
    std::os::unix::fs::symlink(
        agent_binary("tunnelctl").unwrap(),
        tunnelctl.join("tunnelctl-linux-amd64"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        testbed::tools::envoy().unwrap(),
        envoy.join("envoy-linux-amd64"),
    )
    .unwrap();
    (dir, tunnelctl, envoy)
}

/// One running operator process.
pub struct Operator {
    pub process: Process,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `tunnel run` in `ns` with `extra` flags.
    pub fn start(
        ns: &Netns,
        server: &ApiServer,
        dirs: &(tempfile::TempDir, PathBuf, PathBuf),
        log: &Path,
        extra: &[&str],
    ) -> Self {
        Self::start_as(ns, &server.kubeconfig_path(), dirs, log, extra)
    }

    /// Starts `tunnel run` in `ns` with the credentials of `kubeconfig` (e.g. a
    /// ServiceAccount token instead of the admin certificate).
    pub fn start_as(
        ns: &Netns,
        kubeconfig: &Path,
        dirs: &(tempfile::TempDir, PathBuf, PathBuf),
        log: &Path,
        extra: &[&str],
    ) -> Self {
        let kubeconfig = format!("KUBECONFIG={}", kubeconfig.display());
        let tunnel = env!("CARGO_BIN_EXE_tunnel");
        let tunnelctl_dir = dirs.1.display().to_string();
        let envoy_dir = dirs.2.display().to_string();
        let mut args = vec![
            "env",
            &kubeconfig,
            "LOG_FORMAT=text",
            "LOG_LEVEL=info",
            tunnel,
            "run",
            "--health-probe-bind-address",
            "127.0.0.1:0",
            "--tunnelctl-dir",
            &tunnelctl_dir,
            "--envoy-dir",
            &envoy_dir,
        ];
        args.extend_from_slice(extra);
        let process = ns.spawn("tunnel", &args, Some(log)).unwrap();
        Self {
            process,
            log: log.to_owned(),
        }
    }

    /// The log, without terminal colours.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Waits (polling every 500 ms) until `f` gives `Some`, or panics after `timeout` with
/// `what` and the last value `describe` returns.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies a YAML document with server-side apply as `kubectl apply --server-side` would.
pub async fn apply_yaml<K>(client: &Client, yaml: &str) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let object: K = serde_yaml::from_str(yaml).unwrap();
    let ns = object
        .meta()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = object.meta().name.clone().unwrap();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap()
}

/// Creates a namespace if it does not exist.
pub async fn namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    let _ = api.create(&PostParams::default(), &ns).await;
}

/// The SSH Secret for `vps`, as a user would create it.
pub async fn ssh_secret(client: &Client, namespace: &str, name: &str, vps: &Vps) {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {
            "privateKey": vps.client_private_key().unwrap(),
            "knownHosts": vps.known_hosts_line().unwrap(),
        }
    }))
    .unwrap();
    api.patch(
        name,
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(&secret),
    )
    .await
    .unwrap();
}

/// A ClusterIP Service with a fixed address.
pub async fn service(
    client: &Client,
    namespace: &str,
    name: &str,
    ip: &str,
    ports: &[(u16, &str)],
) {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let ports: Vec<serde_json::Value> = ports
        .iter()
        .map(|(p, proto)| serde_json::json!({"name": format!("p{p}-{}", proto.to_lowercase()), "port": p, "protocol": proto}))
        .collect();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": ports}
    }))
    .unwrap();
    api.create(&PostParams::default(), &svc).await.unwrap();
}

/// The uplink pods of one EdgeNode, run from the objects the operator wrote.
pub struct Uplinks {
    pub dir: tempfile::TempDir,
    pub processes: Vec<Process>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Uplinks {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Uplinks {
    /// Waits for the StatefulSet, its ConfigMap and keys Secret of the EdgeNode
    /// `default/<node>` in `namespace`, then runs one
    /// uplink agent per replica in `pods[ordinal]`.
    pub async fn start(client: &Client, namespace: &str, node: &str, pods: &[Netns]) -> Self {
        let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
        let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let secret_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let names = tunnel::workload::UplinkNames::for_node("default", node);
        let workload = names.workload.clone();
        let (sts, cm, keys) = eventually(
            "the uplink StatefulSet, ConfigMap and keys Secret",
            Duration::from_secs(120),
            async || {
                let sts = sts_api.get_opt(&workload).await.ok()??;
                let cm = cm_api.get_opt(&names.config_map).await.ok()??;
                let keys = secret_api.get_opt(&names.keys_secret).await.ok()??;
                Some((sts, cm, keys))
            },
            String::new,
        )
        .await;
        let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("uplink.json");
        write_config(&config, &cm);
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir_all(&keys_dir).unwrap();
        for (k, v) in keys.data.unwrap_or_default() {
            std::fs::write(keys_dir.join(k), v.0).unwrap();
        }
        // The pod objects, as a kubelet reports them: running (the operator counts an uplink
        // only when its pod is up).
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        for ordinal in 0..replicas {
            let name = format!("{workload}-{ordinal}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"containers": [{"name": "uplink", "image": "uplink:test"}]}
            }))
            .unwrap();
            match pod_api.create(&PostParams::default(), &pod).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("creating pod {name}: {e}"),
            }
            pod_api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": {"phase": "Running"}})),
                )
                .await
                .unwrap();
        }
        let bin = agent_binary("uplink").unwrap();
        let processes = (0..usize::try_from(replicas).unwrap())
            .map(|ordinal| {
                pods[ordinal]
                    .spawn(
                        "uplink",
                        &[
                            "env",
                            &format!("POD_NAME={workload}-{ordinal}"),
                            "LOG_FORMAT=text",
                            bin.to_str().unwrap(),
                            "--config",
                            config.to_str().unwrap(),
                            "--keys-dir",
                            keys_dir.to_str().unwrap(),
                            "--drain-seconds",
                            "1",
                        ],
                        Some(&dir.path().join(format!("uplink-{ordinal}.log"))),
                    )
                    .unwrap()
            })
            .collect();
        // The ConfigMap volume: follow the ConfigMap.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = stop.clone();
        let name = names.config_map.clone();
        let last = Arc::new(Mutex::new(cm.data.clone()));
        tokio::spawn(async move {
            while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(Some(cm)) = cm_api.get_opt(&name).await {
                    let mut last = last.lock().unwrap();
                    if *last != cm.data {
                        write_config(&config, &cm);
                        last.clone_from(&cm.data);
                    }
                }
            }
        });
        Self {
            dir,
            processes,
            stop,
        }
    }

    pub fn logs(&self) -> String {
        (0..self.processes.len())
            .map(|o| {
                std::fs::read_to_string(self.dir.path().join(format!("uplink-{o}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

fn write_config(path: &Path, cm: &ConfigMap) {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("uplink.json"))
        .cloned()
        .unwrap_or_default();
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A condition of an object's status, as `(status, reason, message)`.
pub fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The `Ready` condition of an EdgeNode.
pub async fn node_ready(api: &Api<EdgeNode>, name: &str) -> Option<(String, String, String)> {
    let node = api.get_opt(name).await.ok()??;
    condition(&node.status?.conditions, "Ready")
}

/// Waits (3 minutes at most) until EdgeNode `name` is `Ready=True`; its condition.
pub async fn until_node_ready(
    api: &Api<EdgeNode>,
    name: &str,
    describe: impl Fn() -> String,
) -> (String, String, String) {
    eventually(
        &format!("EdgeNode {name} Ready=True"),
        Duration::from_secs(180),
        async || node_ready(api, name).await.filter(|c| c.0 == "True"),
        describe,
    )
    .await
}

/// The documents of README example `name` (`tests/fixtures/readme/<name>.yaml`).
pub fn readme_example(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("tests/fixtures/readme/{name}.yaml")).unwrap();
    text.split("\n---\n").map(str::to_owned).collect()
}

/// README Example 1 applied unchanged but for the EdgeNode's address, pointed at `vps`.
pub async fn apply_example1(client: &Client, vps: &Vps) {
    let docs = readme_example("example1");
    let node = docs[0].replace("203.0.113.10", &vps.address().to_string());
    apply_yaml::<EdgeNode>(client, &node).await;
    apply_yaml::<PortBinding>(client, &docs[1]).await;
}

/// The operator's log and the uplinks' logs, for a failure message.
pub fn logs_of(operator: &Operator, uplinks: &Uplinks) -> String {
    format!(
        "operator log:\n{}\nuplinks:\n{}",
        operator.log_text(),
        uplinks.logs()
    )
}

/// The `Ready` condition of a PortBinding.
pub async fn binding_ready(api: &Api<PortBinding>, name: &str) -> Option<(String, String, String)> {
    let pb = api.get_opt(name).await.ok()??;
    condition(&pb.status?.conditions, "Ready")
}

/// Events about one object, as `reason: note` lines.
pub async fn events_of(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&kube::api::ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect()
}

/// Runs blocking network I/O inside `ns` without stalling the runtime's other tasks.
pub fn in_ns<R: Send>(ns: &Netns, f: impl FnOnce() -> R + Send) -> R {
    tokio::task::block_in_place(|| ns.enter(f).unwrap())
}
