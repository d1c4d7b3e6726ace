//! Trust boundary 5 (issue 12), the pod's side: the uplink StatefulSet gives the agent
//! `NET_ADMIN` only (everything else dropped, no escalation, seccomp `RuntimeDefault`,
//! read-only root, default resources with a memory limit, a liveness probe), and the keys
//! Secret is mounted only into the short-lived privileged init container; the agent sees an
//! in-memory volume with its own key. (`tests/workload.rs` applies the same objects to a real
//! API server; `uplink/tests/trust_least_privilege.rs` runs the agent with these rights.)

use tunnel::crd::EdgeNode;
use tunnel::workload::{self, UplinkWorkload};

fn example4() -> EdgeNode {
    let text = std::fs::read_to_string("tests/fixtures/readme/example4.yaml").unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn the_agent_container_has_net_admin_only_and_no_secret_mount() {
    let mut node = example4();
    node.spec.uplink.resources = None;
    let w = UplinkWorkload {
        node: "edge-node",
        node_namespace: "default",
        spec: &node.spec.uplink,
        image: "ghcr.io/achetronic/tunnel/uplink:0.1.0",
        log_format: "json",
        log_level: "info",
        pod_options: &tunnel::workload::UplinkPodOptions::default(),
    };
    let sts = workload::statefulset(&w);
    let pod = sts.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.security_context
            .as_ref()
            .unwrap()
            .seccomp_profile
            .as_ref()
            .unwrap()
            .type_,
        "RuntimeDefault"
    );

    let agent = &pod.containers[0];
    let sc = agent.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let resources = agent.resources.as_ref().unwrap();
    assert!(resources.limits.as_ref().unwrap().contains_key("memory"));
    assert!(resources.requests.as_ref().unwrap().contains_key("cpu"));
    let live = agent.liveness_probe.as_ref().unwrap();
    assert_eq!(
        live.http_get.as_ref().unwrap().path.as_deref(),
        Some("/healthz")
    );

    // Volumes: the Secret only in the init container; the agent's key dir is memory-backed.
    let secret_volumes: Vec<&str> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .filter(|v| v.secret.is_some())
        .map(|v| v.name.as_str())
        .collect();
    let agent_mounts: Vec<&str> = agent
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for s in &secret_volumes {
        assert!(
            !agent_mounts.contains(s),
            "the agent mounts Secret volume {s}"
        );
    }
    let key = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "key")
        .unwrap();
    assert_eq!(
        key.empty_dir.as_ref().unwrap().medium.as_deref(),
        Some("Memory")
    );
    assert!(
        agent
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .all(|m| { m.name == "tun" || m.read_only == Some(true) })
    );

    let inits = pod.init_containers.as_ref().unwrap();
    assert_eq!(inits.len(), 1);
    let init = &inits[0];
    assert_eq!(init.args.as_ref().unwrap()[0], "init");
    assert_eq!(
        init.security_context.as_ref().unwrap().privileged,
        Some(true)
    );
    let init_mounts: Vec<&str> = init
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert!(secret_volumes.iter().all(|s| init_mounts.contains(s)));
    assert!(init_mounts.contains(&"key"));

    // A user's resources win over the defaults.
    let node = example4();
    let w = UplinkWorkload {
        spec: &node.spec.uplink,
        ..w
    };
    let sts = workload::statefulset(&w);
    let agent = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(agent.resources, node.spec.uplink.resources);
}
