//! The tree's actors tested in-process, without root or a cluster ([`super::testing`]): real
//! actors, a real `kube::Client` over an in-memory API, mock peers registered under the tree's
//! names, and a child that panics on demand (crash isolation without a production flag).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::object_key::ObjectKey;
use crate::plan::SourceKey;

use super::Context;
use super::edge_node::EdgeNodeActor;
use super::edge_node::core::Seen;
use super::port_binding::PortBindingActor;
use super::protocol::{self, BindingMsg, NodeMsg};
use super::restarts::RestartPolicy;
use super::status::SourceReport;
use super::supervisor::{Child, Supervisor, SupervisorMsg};
use super::testing::{bed, edge_node, port_binding, recorder, until};

const EDGE: &str = "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: EdgeNode\nmetadata: {name: edge, namespace: team, generation: 1}\nspec:\n  address: 203.0.113.10\n  ssh: {secretRef: {name: vps-ssh}}\n";

fn web(generation: i64) -> String {
    format!(
        "apiVersion: tunnel.achetronic.com/v1alpha1\nkind: PortBinding\nmetadata: {{name: web, namespace: team, generation: {generation}}}\nspec:\n  edgeNodeRef: {{name: edge}}\n  bindings:\n  - name: http\n    protocol: TCP\n    listenPort: 80\n    target: {{service: {{name: web, namespace: team, port: 8080}}}}\n"
    )
}

const PB_STATUS: &str =
    "/apis/tunnel.achetronic.com/v1alpha1/namespaces/team/portbindings/web/status";

fn passes(ctx: &Context, result: &str) -> u64 {
    let text = ctx.metrics.encode();
    let series = format!("tunnel_reconcile_passes_total{{kind=\"EdgeNode\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_port_binding_whose_edge_node_is_missing_says_so_on_its_own() {
    let mut b = bed("t-missing", RestartPolicy::default());
    b.caches.port_binding(port_binding(&web(1)));
    let key = ObjectKey::new("team", "web");
    let (actor, _) = Actor::spawn(
        Some(b.ctx.name(protocol::PORT_BINDING, &key)),
        PortBindingActor,
        (b.ctx.clone(), key),
    )
    .await
    .unwrap();
    until("the PortBinding status is written", || {
        !b.api.calls_to(&Method::PATCH, PB_STATUS).is_empty()
    })
    .await;
    let status = &b.api.calls_to(&Method::PATCH, PB_STATUS)[0].body["status"];
    assert_eq!(
        status["conditions"][0]["reason"], "EdgeNodeNotFound",
        "{status}"
    );
    assert_eq!(status["observedGeneration"], 1);
    until("an Event says it", || {
        b.api
            .calls()
            .iter()
            .any(|c| c.method == Method::POST && c.body["reason"] == "EdgeNodeNotFound")
    })
    .await;
    actor.stop(None);
}

#[tokio::test]
async fn a_started_port_binding_actor_asks_for_the_last_report_and_writes_it() {
    let mut b = bed("t-report", RestartPolicy::default());
    b.caches.edge_node(edge_node(EDGE));
    b.caches.port_binding(port_binding(&web(4)));
    let node = ObjectKey::new("team", "edge");
    let key = ObjectKey::new("team", "web");
    let (mock, seen) = recorder::<NodeMsg>(b.ctx.name(protocol::EDGE_NODE, &node)).await;
    let (actor, _) = Actor::spawn(
        Some(b.ctx.name(protocol::PORT_BINDING, &key)),
        PortBindingActor,
        (b.ctx.clone(), key.clone()),
    )
    .await
    .unwrap();
    until("the EdgeNode is asked", || !seen.lock().unwrap().is_empty()).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [format!(
            "ReportWanted({:?})",
            SourceKey::port_binding(key.clone())
        )],
        "a report is asked for, never a pass"
    );
    actor
        .send_message(BindingMsg::Report(SourceReport {
            node: ObjectKey::new("team", "edge"),
            generation: Some(4),
            node_problem: None,
            outcomes: Vec::new(),
            ports: "80/TCP".into(),
        }))
        .unwrap();
    until("the report is written", || {
        !b.api.calls_to(&Method::PATCH, PB_STATUS).is_empty()
    })
    .await;
    let status = &b.api.calls_to(&Method::PATCH, PB_STATUS)[0].body["status"];
    assert_eq!(status["ports"], "80/TCP", "{status}");
    assert_eq!(status["observedGeneration"], 4);
    actor.stop(None);
    mock.stop(None);
}

#[tokio::test]
async fn start_up_is_one_pass_and_one_port_binding_change_exactly_one_more() {
    let mut b = bed("t-passes", RestartPolicy::default());
    b.edge_node(edge_node(EDGE));
    b.caches.port_binding(port_binding(&web(1)));
    let node = ObjectKey::new("team", "edge");
    let key = ObjectKey::new("team", "web");
    // The PortBinding's actor, mocked: it gets the reports.
    let (pb_mock, reports) = recorder::<BindingMsg>(b.ctx.name(protocol::PORT_BINDING, &key)).await;
    let (actor, _) = Actor::spawn(
        Some(b.ctx.name(protocol::EDGE_NODE, &node)),
        EdgeNodeActor,
        (b.ctx.clone(), node.clone()),
    )
    .await
    .unwrap();
    // The Manager's first sight of the PortBinding, as at start-up.
    let tell = |seen: Seen| {
        actor
            .send_message(NodeMsg::Source {
                source: SourceKey::port_binding(key.clone()),
                seen,
            })
            .unwrap();
    };
    tell(Seen::Present(Some(1)));
    until("the first pass reports", || {
        !reports.lock().unwrap().is_empty()
    })
    .await;
    // Its SSH Secret does not exist: the pass ends before SSH, with that reason.
    assert!(
        reports.lock().unwrap()[0].contains("SSHSecretNotFound"),
        "{:?}",
        reports.lock().unwrap()
    );
    // The same generation again (a relist), then a PortBinding that was never served going
    // away: nothing to do.
    tell(Seen::Present(Some(1)));
    actor
        .send_message(NodeMsg::Source {
            source: SourceKey::port_binding(ObjectKey::new("team", "never-here")),
            seen: Seen::Gone,
        })
        .unwrap();
    // A real change.
    b.caches.port_binding(port_binding(&web(2)));
    tell(Seen::Present(Some(2)));
    // Messages are handled in order and a pass that fails before SSH ends within its
    // message: once the report asked for last arrives, every pass has run.
    actor
        .send_message(NodeMsg::ReportWanted(SourceKey::port_binding(key.clone())))
        .unwrap();
    until("every message is handled", || {
        reports.lock().unwrap().len() >= 3
    })
    .await;
    assert_eq!(
        passes(&b.ctx, "error"),
        2,
        "one pass at start-up, one for generation 2"
    );
    assert_eq!(passes(&b.ctx, "success"), 0);
    let last = reports.lock().unwrap().last().cloned().unwrap();
    assert!(last.contains("generation: Some(2)"), "{last}");
    actor.stop(None);
    pb_mock.stop(None);
}

/// A child that panics when told to.
#[derive(Debug, Default)]
struct Panicky;

#[derive(Debug)]
enum PanickyMsg {
    Changed,
    Panic,
}

static PARKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Actor for Panicky {
    type Msg = PanickyMsg;
    type State = ();
    type Arguments = (Arc<Context>, ObjectKey);

    async fn pre_start(
        &self,
        _: ActorRef<PanickyMsg>,
        _: Self::Arguments,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<PanickyMsg>,
        message: PanickyMsg,
        (): &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if matches!(message, PanickyMsg::Panic) {
            panic!("told to");
        }
        Ok(())
    }
}

impl Child for Panicky {
    const KIND: &'static str = "Panicky";

    fn changed() -> PanickyMsg {
        PanickyMsg::Changed
    }

    async fn parked(_: Arc<Context>, key: ObjectKey, message: String) {
        PARKED.lock().unwrap().push(format!("{key}: {message}"));
    }
}

#[tokio::test]
async fn a_panicking_child_is_restarted_then_parked_and_a_change_unparks_it() {
    let policy = RestartPolicy {
        budget: 2,
        window: Duration::from_secs(600),
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
        cool_down: Duration::from_secs(3600),
    };
    let b = bed("t-panic", policy);
    let (supervisor, _) = Actor::spawn(None, Supervisor::<Panicky>::default(), b.ctx.clone())
        .await
        .unwrap();
    let key = ObjectKey::new("team", "boom");
    let name = b.ctx.name(Panicky::KIND, &key);
    let running = || ActorRef::<PanickyMsg>::where_is(name.clone());
    supervisor
        .send_message(SupervisorMsg::Upsert(key.clone()))
        .unwrap();
    let mut ids = Vec::new();
    // Within the budget: each panic is followed by a fresh actor under the same name.
    for _ in 0..=2 {
        until("the child runs", || {
            running().is_some_and(|a| !ids.contains(&a.get_id()))
        })
        .await;
        let child = running().unwrap();
        ids.push(child.get_id());
        child.send_message(PanickyMsg::Panic).unwrap();
    }
    // The third failure within the window is past the budget of 2: parked, and reported.
    until("the child is parked", || {
        PARKED
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.starts_with("team/boom: "))
    })
    .await;
    assert!(running().is_none(), "a parked child does not run");
    assert!(
        PARKED.lock().unwrap()[0].contains("parked"),
        "{:?}",
        PARKED.lock().unwrap()
    );
    assert!(
        b.ctx
            .metrics
            .encode()
            .contains("tunnel_actor_restarts_total{kind=\"Panicky\"} 2")
    );
    // A change of its object gives it a fresh budget.
    supervisor
        .send_message(SupervisorMsg::Upsert(key.clone()))
        .unwrap();
    until("the child runs again", || {
        running().is_some_and(|a| !ids.contains(&a.get_id()))
    })
    .await;
    // The supervisor itself never went down.
    assert!(supervisor.get_status() == ractor::ActorStatus::Running);
    supervisor.stop(None);
}

fn tls_secret(certificate: &str, resource_version: &str) -> k8s_openapi::api::core::v1::Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-tls", "namespace": "team", "resourceVersion": resource_version},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": certificate, "tls.key": "key"}
    }))
    .unwrap()
}

/// One cert watcher told what a pass read (`read`), then that `secret` changed; what did its
/// parent hear, once both handled every message?
async fn watcher_hears(
    b: &super::testing::Bed,
    name: &str,
    secret: &ObjectKey,
    read: Option<String>,
) -> Vec<String> {
    let (parent, seen) = recorder::<NodeMsg>(name.to_owned()).await;
    let (watcher, _) = Actor::spawn(
        None,
        super::cert_watcher::CertWatcherActor,
        (b.ctx.clone(), parent.clone()),
    )
    .await
    .unwrap();
    watcher
        .send_message(protocol::CertMsg::PassRead(
            std::collections::BTreeMap::from([(secret.clone(), read)]),
        ))
        .unwrap();
    for _ in 0..3 {
        watcher
            .send_message(protocol::CertMsg::SecretChanged(secret.clone()))
            .unwrap();
    }
    watcher.drain_and_wait(None).await.unwrap();
    parent.drain_and_wait(None).await.unwrap();
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn the_cert_watcher_tells_its_edge_node_only_of_a_real_change_and_once() {
    let mut b = bed("t-certs", RestartPolicy::default());
    let secret = ObjectKey::new("team", "web-tls");
    b.secret(&tls_secret("v1", "1"));
    let read = super::cert_watcher::digest_now(&b.ctx, &secret)
        .await
        .unwrap();
    assert!(read.is_some());
    // A new resourceVersion with the same content: nothing.
    b.secret(&tls_secret("v1", "2"));
    assert!(
        watcher_hears(&b, "t-certs/p1", &secret, read.clone())
            .await
            .is_empty()
    );
    // New content, seen three times: one Changed.
    b.secret(&tls_secret("v2", "3"));
    assert_eq!(
        watcher_hears(&b, "t-certs/p2", &secret, read.clone()).await,
        ["Changed"]
    );
    // Gone: a change too.
    b.caches
        .secrets
        .apply_watcher_event(&kube::runtime::watcher::Event::Delete(
            kube::core::PartialObjectMetaExt::into_response_partial(tls_secret("v2", "4").metadata),
        ));
    assert_eq!(
        watcher_hears(&b, "t-certs/p3", &secret, read).await,
        ["Changed"]
    );
}

const SVC_STATUS: &str = "/api/v1/namespaces/team/services/game/status";
const SVC: &str = "/api/v1/namespaces/team/services/game";

fn game(class: &str, extra_metadata: &str) -> k8s_openapi::api::core::v1::Service {
    serde_yaml::from_str(&format!(
        "metadata:\n  name: game\n  namespace: team\n  generation: 1\n{extra_metadata}spec:\n  type: LoadBalancer\n  loadBalancerClass: {class}\n  ports:\n  - {{name: tcp, port: 7000, protocol: TCP}}\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn a_load_balancer_actor_asks_its_edge_node_writes_the_address_and_keeps_our_finalizer() {
    use super::load_balancer::LoadBalancerActor;
    use crate::plan::load_balancer::{CLASS, FINALIZER};
    let mut b = bed("t-lb", RestartPolicy::default());
    let key = ObjectKey::new("team", "game");
    let source = SourceKey::service(key.clone());
    // No EdgeNode named, none marked default: it says so, and still takes the finalizer.
    b.caches.service(game(CLASS, ""));
    let (actor, _) = Actor::spawn(
        Some(b.ctx.name(protocol::LOAD_BALANCER, &key)),
        LoadBalancerActor,
        (b.ctx.clone(), key.clone()),
    )
    .await
    .unwrap();
    until("the missing EdgeNode is written", || {
        !b.api.calls_to(&Method::PATCH, SVC_STATUS).is_empty()
    })
    .await;
    let status = &b.api.calls_to(&Method::PATCH, SVC_STATUS)[0].body["status"];
    assert_eq!(
        status["conditions"][0]["type"],
        "tunnel.achetronic.com/Ready"
    );
    assert_eq!(
        status["conditions"][0]["reason"], "EdgeNodeNotFound",
        "{status}"
    );
    assert_eq!(status["loadBalancer"]["ingress"], serde_json::json!([]));
    let finalizer = b.api.calls_to(&Method::PATCH, SVC);
    assert_eq!(
        finalizer[0].body["metadata"]["finalizers"],
        serde_json::json!([FINALIZER]),
        "server-side apply of our one finalizer"
    );

    // Named, existing: it asks the EdgeNode for its last report (never a pass) and writes it.
    b.caches.edge_node(edge_node(EDGE));
    let named = format!(
        "  annotations: {{tunnel.achetronic.com/edge-node: edge}}\n  finalizers: [{FINALIZER}]\n"
    );
    b.caches.service(game(CLASS, &named));
    let node = ObjectKey::new("team", "edge");
    let (mock, seen) = recorder::<NodeMsg>(b.ctx.name(protocol::EDGE_NODE, &node)).await;
    actor.send_message(BindingMsg::Changed).unwrap();
    until("the EdgeNode is asked", || !seen.lock().unwrap().is_empty()).await;
    assert_eq!(*seen.lock().unwrap(), [format!("ReportWanted({source:?})")]);
    let outcome = crate::plan::BindingOutcome {
        id: crate::plan::BindingId {
            kind: crate::plan::SourceKind::Service,
            namespace: "team".into(),
            source: "game".into(),
            binding: "tcp".into(),
        },
        protocol: crate::crd::Protocol::Tcp,
        listen_port: 7000,
        refusal: None,
    };
    let report = |node: ObjectKey| SourceReport {
        node,
        generation: Some(1),
        node_problem: None,
        outcomes: vec![outcome.clone()],
        ports: "7000/TCP".into(),
    };
    // A report of another EdgeNode (the one it left) is ignored.
    actor
        .send_message(BindingMsg::Report(report(ObjectKey::new("team", "old"))))
        .unwrap();
    actor
        .send_message(BindingMsg::Report(report(node.clone())))
        .unwrap();
    until("the address is written", || {
        b.api.calls_to(&Method::PATCH, SVC_STATUS).len() >= 2
    })
    .await;
    let writes = b.api.calls_to(&Method::PATCH, SVC_STATUS);
    assert_eq!(
        writes.len(),
        2,
        "one write for the one report of its EdgeNode"
    );
    let status = &writes[1].body["status"];
    assert_eq!(
        status["loadBalancer"]["ingress"],
        serde_json::json!([{"ip": "203.0.113.10", "ipMode": "Proxy", "ports": [{"port": 7000, "protocol": "TCP"}]}])
    );
    assert_eq!(status["conditions"][0]["reason"], "Served");

    // No longer ours (another class) but with our finalizer: what we wrote goes, then the
    // finalizer, and an Event says so.
    b.caches.service(game(
        "example.com/other",
        &format!("  finalizers: [{FINALIZER}]\n"),
    ));
    actor.send_message(BindingMsg::Changed).unwrap();
    until("released", || {
        b.api
            .calls()
            .iter()
            .any(|c| c.method == Method::POST && c.body["reason"] == "Released")
    })
    .await;
    let last_status = b.api.calls_to(&Method::PATCH, SVC_STATUS).pop().unwrap();
    assert_eq!(
        last_status.body["status"],
        serde_json::json!({}),
        "our fields cleared"
    );
    let last = b.api.calls_to(&Method::PATCH, SVC).pop().unwrap();
    assert_eq!(last.body["metadata"]["finalizers"], serde_json::json!([]));
    actor.stop(None);
    mock.stop(None);
}
