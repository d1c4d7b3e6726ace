//! The kubelet's part for the operator tests: runs the uplink pods of one EdgeNode from the
//! objects the operator wrote, as a kubelet would. The StatefulSet is found by the uplink
//! labels (`app.kubernetes.io/name=uplink`, `app.kubernetes.io/instance=<EdgeNode>`, the
//! owner namespace), the ConfigMap and keys Secret by the template's volumes; one `uplink`
//! agent per replica runs in pod namespace `pods[ordinal]`, the pod objects are reported
//! `Running`, and the ConfigMap is re-read and its file replaced on change (a ConfigMap
//! volume). The agents stop when the handle drops.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use crate::TestbedError;
use crate::netns::Netns;
use crate::process::Process;
use crate::tools::agent_binary;
use crate::wait::eventually;

/// The key of the uplink document in the ConfigMap.
const CONFIG_KEY: &str = "uplink.json";

/// The uplink pods of one EdgeNode, run from the objects the operator wrote.
#[derive(Debug)]
pub struct Uplinks {
    /// Where the configuration, the keys and the agents' logs are.
    pub dir: tempfile::TempDir,
    /// One agent per replica.
    pub processes: Vec<Process>,
    stop: Arc<AtomicBool>,
}

impl Drop for Uplinks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The uplink objects of one EdgeNode, once all three exist.
struct Objects {
    set: StatefulSet,
    config: ConfigMap,
    keys: Secret,
}

/// The StatefulSet of EdgeNode `default/<node>` in `namespace`, its ConfigMap and its keys
/// Secret (named by the template's volumes), if all are there.
async fn objects(client: &Client, namespace: &str, node: &str) -> Option<Objects> {
    let selector = format!(
        "app.kubernetes.io/name=uplink,app.kubernetes.io/instance={node},tunnel.achetronic.com/owner-namespace=default"
    );
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let set = sets
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?
        .items
        .into_iter()
        .next()?;
    let volumes = set.spec.as_ref()?.template.spec.as_ref()?.volumes.clone()?;
    let config_name = volumes
        .iter()
        .find_map(|v| Some(v.config_map.as_ref()?.name.clone()))?;
    let keys_name = volumes
        .iter()
        .find_map(|v| v.secret.as_ref()?.secret_name.clone())?;
    let config = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&config_name)
        .await
        .ok()??;
    let keys = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&keys_name)
        .await
        .ok()??;
    Some(Objects { set, config, keys })
}

impl Uplinks {
    /// Waits (4 minutes at most: the first pass enrolls the VPS first, and a busy machine
    /// uploads Envoy slowly) for the StatefulSet, ConfigMap and keys Secret of EdgeNode
    /// `default/<node>` in `namespace`, then runs one uplink agent per replica in
    /// `pods[ordinal]`.
    pub async fn start(
        client: &Client,
        namespace: &str,
        node: &str,
        pods: &[Netns],
    ) -> Result<Self, TestbedError> {
        let Objects { set, config, keys } = eventually(
            &format!("the uplink StatefulSet, ConfigMap and keys Secret of {node}"),
            Duration::from_secs(240),
            async || objects(client, namespace, node).await,
            String::new,
        )
        .await;
        let workload = set.metadata.name.clone().unwrap_or_default();
        let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let replicas = usize::try_from(replicas).unwrap_or(0);
        if replicas > pods.len() {
            return Err(TestbedError::Command {
                command: format!("Uplinks::start {node}"),
                detail: format!("{replicas} replicas but {} pod namespaces", pods.len()),
            });
        }
        let dir = tempfile::tempdir().map_err(TestbedError::io("creating the uplinks' dir"))?;
        let config_path = dir.path().join(CONFIG_KEY);
        write_config(&config_path, &config)?;
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir_all(&keys_dir).map_err(TestbedError::io("creating keys/"))?;
        for (k, v) in keys.data.unwrap_or_default() {
            std::fs::write(keys_dir.join(&k), v.0)
                .map_err(TestbedError::io(format!("keys/{k}")))?;
        }
        report_running(client, namespace, &workload, replicas).await?;
        let bin = agent_binary("uplink")?;
        let mut processes = Vec::with_capacity(replicas);
        for (ordinal, pod) in pods.iter().enumerate().take(replicas) {
            let pod_name = format!("POD_NAME={workload}-{ordinal}");
            processes.push(pod.spawn(
                "uplink",
                &[
                    "env",
                    &pod_name,
                    "LOG_FORMAT=text",
                    &bin.display().to_string(),
                    "--config",
                    &config_path.display().to_string(),
                    "--keys-dir",
                    &keys_dir.display().to_string(),
                    "--drain-seconds",
                    "1",
                ],
                Some(&dir.path().join(format!("uplink-{ordinal}.log"))),
            )?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        follow_config(
            Api::namespaced(client.clone(), namespace),
            config,
            config_path,
            stop.clone(),
        );
        Ok(Self {
            dir,
            processes,
            stop,
        })
    }

    /// Every agent's log so far, separated by `---`.
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

/// The pod objects, as a kubelet reports them: running (the operator counts an uplink only
/// when its pod is up).
async fn report_running(
    client: &Client,
    namespace: &str,
    workload: &str,
    replicas: usize,
) -> Result<(), TestbedError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for ordinal in 0..replicas {
        let name = format!("{workload}-{ordinal}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "uplink", "image": "uplink:test"}]}
        }))
        .map_err(|e| TestbedError::Kube(e.to_string()))?;
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(TestbedError::Kube(format!("creating pod {name}: {e}"))),
        }
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Running"}})),
        )
        .await
        .map_err(|e| TestbedError::Kube(format!("pod {name} status: {e}")))?;
    }
    Ok(())
}

/// The ConfigMap volume: watches the ConfigMap and replaces the file when its data changed,
/// until `stop`. A watch, not a re-read every 100 ms: with 50 EdgeNodes the re-reads were
/// 500 GETs a second, the API server's busiest client and a quarter of the machine in the
/// scale bench. (A kubelet refreshes a pod's ConfigMap volume when the pod changes, which the
/// operator's nudge does; how long that takes is the kubelet's, not emulated here.)
fn follow_config(
    api: Api<ConfigMap>,
    first: ConfigMap,
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let name = first.metadata.name.clone().unwrap_or_default();
    let mut last = first.data;
    tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut changes = watcher(api.clone(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut idle = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_secs(1), changes.next()).await;
            let seen = match next {
                Ok(Some(Ok(cm))) => Some(cm),
                Ok(None) => break,
                // A watch error is retried by the watcher; a quiet second checks `stop`, and
                // every fifth reads the ConfigMap again.
                Ok(Some(Err(_))) | Err(_) => {
                    idle += 1;
                    if idle.is_multiple_of(5) {
                        api.get_opt(&name).await.ok().flatten()
                    } else {
                        None
                    }
                }
            };
            if let Some(cm) = seen
                && last != cm.data
                && write_config(&path, &cm).is_ok()
            {
                last = cm.data;
            }
        }
    });
}

/// Replaces `path` with the ConfigMap's uplink document, atomically (as the kubelet swaps a
/// ConfigMap volume's files).
fn write_config(path: &Path, cm: &ConfigMap) -> Result<(), TestbedError> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .cloned()
        .unwrap_or_default();
    let tmp = path.with_extension("tmp");
    let context = format!("writing {}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(TestbedError::io(&context))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(TestbedError::io(context))
}
