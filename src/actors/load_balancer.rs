//! The LoadBalancer actor: the single writer of one Service's load-balancer status, for a
//! Service of `type: LoadBalancer` that an EdgeNode serves ([`crate::plan::load_balancer`]).
//! Its EdgeNode actor owns the port table and answers each pass with this Service's outcome
//! (the Manager tells the EdgeNode of every change of the Service); this actor keeps the last
//! answer of each of its EdgeNodes and turns them into `status.loadBalancer.ingress[]` (one
//! entry per public address of each published edge, `ipMode: Proxy`, `ports[].error` for a
//! refused port) and the condition [`READY`], with Events on its transitions.
//!
//! The Service carries our finalizer while it is ours: a Service that stops being ours (its
//! class or type changed) or is deleted has the status we wrote cleared and the finalizer
//! removed, also when that happened while the operator was down. The VPS's ports follow from
//! the caches on every pass, so they close with the EdgeNode's next pass either way.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};
use tracing::warn;

use crate::object_key::ObjectKey;
use crate::plan::load_balancer::{self, FINALIZER};
use crate::plan::{SourceKey, SourceKind};

use super::conditions::{self, Verdict};
use super::edge_set::{self, Composed, EdgeInput, EdgeView};
use super::protocol::{self, BindingMsg};
use super::source_edges;
use super::status::SourceReport;
use super::supervisor::Child;
use super::{Context, LOAD_BALANCER_MANAGER};

/// The condition this actor writes on a Service (prefixed: a Service's conditions are shared
/// with other controllers).
pub const READY: &str = "tunnel.achetronic.com/Ready";

/// The actor.
#[derive(Debug, Default)]
pub struct LoadBalancerActor;

/// Its state.
#[derive(Debug)]
pub struct LoadBalancerState {
    ctx: Arc<Context>,
    key: ObjectKey,
    /// The last report of each of its EdgeNodes.
    reports: BTreeMap<ObjectKey, SourceReport>,
}

impl Child for LoadBalancerActor {
    const KIND: &'static str = protocol::LOAD_BALANCER;

    fn changed() -> BindingMsg {
        BindingMsg::Changed
    }

    async fn parked(ctx: Arc<Context>, key: ObjectKey, message: String) {
        let Some(svc) = get(&ctx, &key) else { return };
        let verdict = Verdict::failed(READY, "RestartLoop", message);
        settle(&ctx, &svc, Vec::new(), verdict).await;
    }
}

fn get(ctx: &Context, key: &ObjectKey) -> Option<Arc<Service>> {
    ctx.stores
        .services
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
}

impl Actor for LoadBalancerActor {
    type Msg = BindingMsg;
    type State = LoadBalancerState;
    type Arguments = (Arc<Context>, ObjectKey);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (ctx, key): (Arc<Context>, ObjectKey),
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(BindingMsg::Changed)?;
        Ok(LoadBalancerState {
            ctx,
            key,
            reports: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: BindingMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.ctx.metrics.handling(Self::KIND);
        let ctx = state.ctx.clone();
        let Some(svc) = get(&ctx, &state.key) else {
            myself.stop(Some("the Service is gone".into()));
            return Ok(());
        };
        let ours = load_balancer::is_ours(&svc, ctx.load_balancers)
            && svc.metadata.deletion_timestamp.is_none();
        if !ours {
            if load_balancer::has_finalizer(&svc) {
                release(&ctx, &svc).await;
            }
            return Ok(());
        }
        if !load_balancer::has_finalizer(&svc) {
            set_finalizer(&ctx, &svc, true).await;
        }
        let nodes = match load_balancer::edge_nodes_of(&svc, &ctx.stores.edge_nodes.state()) {
            Ok(nodes) => nodes,
            Err(no) => {
                settle(
                    &ctx,
                    &svc,
                    Vec::new(),
                    Verdict::failed(READY, no.reason(), no.message()),
                )
                .await;
                return Ok(());
            }
        };
        source_edges::heard(
            &ctx,
            &mut state.reports,
            &SourceKey::service(state.key.clone()),
            &nodes,
            message,
        );
        let edges = source_edges::gather(
            &ctx,
            SourceKind::Service,
            &state.key.namespace,
            &nodes,
            &state.reports,
            |node| {
                (
                    "EdgeNodeNotFound".to_owned(),
                    format!(
                        "EdgeNode {node} does not exist; create it or fix the annotation {}",
                        load_balancer::ANNOTATION_EDGE_NODE
                    ),
                )
            },
        );
        if !Composed::complete(&edges) {
            return Ok(());
        }
        let (verdict, ingress) = service_status(&edges, &load_balancer::unserved_ports(&svc));
        settle(&ctx, &svc, ingress, verdict).await;
        Ok(())
    }
}

/// The condition and `status.loadBalancer.ingress[]` of a Service from its EdgeNodes' passes,
/// pure: one entry per public address of each published edge ([`edge_set::compose`]: serving,
/// passing the check from outside, not drained) — `ip` with `ipMode: Proxy`, or `hostname` —
/// with every port of that edge's table, a refused one with its reason as `error`; no entry
/// for an edge that serves no port. `unserved` are ports no binding could take (SCTP).
pub fn service_status(edges: &[EdgeInput], unserved: &[String]) -> (Verdict, Vec<Value>) {
    let composed = edge_set::compose(edges);
    let mut verdict = composed.verdict.clone();
    verdict.type_ = READY;
    if !unserved.is_empty() {
        verdict.message = format!(
            "{}; not served (only TCP and UDP are): {}",
            verdict.message,
            unserved.join(", ")
        );
    }
    let mut ingress = Vec::new();
    for (node, addresses) in &composed.published {
        let Some(EdgeView::Reported(report)) =
            edges.iter().find(|e| e.node == *node).map(|e| &e.view)
        else {
            continue;
        };
        let ports: Vec<Value> = report
            .outcomes
            .iter()
            .map(|o| {
                let mut port = json!({ "port": o.listen_port, "protocol": o.protocol.to_string() });
                if let Some(r) = &o.refusal {
                    port["error"] = json!(r.reason.as_str());
                }
                port
            })
            .collect();
        for address in addresses {
            let mut entry = if address.parse::<std::net::IpAddr>().is_ok() {
                json!({ "ip": address, "ipMode": "Proxy" })
            } else {
                json!({ "hostname": address })
            };
            entry["ports"] = Value::Array(ports.clone());
            if !ingress.contains(&entry) {
                ingress.push(entry);
            }
        }
    }
    (verdict, ingress)
}

/// Writes our part of the Service's status when it differs from what is there, and publishes
/// an Event when the condition changed.
async fn settle(ctx: &Context, svc: &Service, ingress: Vec<Value>, verdict: Verdict) {
    let before: Vec<Condition> = svc
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ == READY)
        .collect();
    let conditions = conditions::merge(
        &before,
        std::slice::from_ref(&verdict),
        svc.metadata.generation,
        &Time(Timestamp::now()),
    );
    let current_ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| serde_json::to_value(i).unwrap_or_default());
    let wanted_ingress = Value::Array(ingress);
    let same_ingress = match &current_ingress {
        None => wanted_ingress == Value::Array(Vec::new()),
        Some(current) => *current == wanted_ingress,
    };
    if same_ingress && before == conditions {
        ctx.metrics.pass(protocol::LOAD_BALANCER, None);
        return;
    }
    let st = json!({
        "loadBalancer": { "ingress": wanted_ingress },
        "conditions": conditions,
    });
    let result = write_status(ctx, svc, &st).await;
    ctx.metrics.pass(
        protocol::LOAD_BALANCER,
        result.as_ref().err().map(|_| "StatusWriteFailed"),
    );
    if let Err(e) = result {
        warn!(service = %ObjectKey::of(svc), error = %e, "writing the Service status");
    }
    if !conditions::transitions(&before, std::slice::from_ref(&verdict)).is_empty() {
        ctx.publish(
            &svc.object_ref(&()),
            verdict.warns(),
            &verdict.reason,
            verdict.message.clone(),
            "Reconcile",
        )
        .await;
    }
}

async fn write_status(ctx: &Context, svc: &Service, st: &Value) -> Result<(), kube::Error> {
    let key = ObjectKey::of(svc);
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = json!({ "apiVersion": "v1", "kind": "Service", "status": st });
    api.patch_status(
        &svc.name_any(),
        &PatchParams::apply(LOAD_BALANCER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

/// Adds or removes our finalizer (server-side apply of only that entry, so other finalizers
/// are left as they are).
async fn set_finalizer(ctx: &Context, svc: &Service, present: bool) {
    let key = ObjectKey::of(svc);
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let finalizers: Vec<&str> = if present { vec![FINALIZER] } else { Vec::new() };
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": key.name, "finalizers": finalizers },
    });
    let params = PatchParams::apply(&format!("{LOAD_BALANCER_MANAGER}-finalizer")).force();
    if let Err(e) = api.patch(&key.name, &params, &Patch::Apply(&patch)).await {
        warn!(service = %key, error = %e, "setting the load-balancer finalizer");
    }
}

/// A Service that is no longer ours (or is being deleted): the status we wrote goes (unless
/// it is being deleted: nobody reads it then), then our finalizer.
async fn release(ctx: &Context, svc: &Service) {
    if svc.metadata.deletion_timestamp.is_none() {
        // Applying an empty status under our field manager removes every field it owned.
        if let Err(e) = write_status(ctx, svc, &json!({})).await {
            warn!(service = %ObjectKey::of(svc), error = %e, "clearing the Service status");
            return;
        }
        ctx.publish(
            &svc.object_ref(&()),
            false,
            "Released",
            "no longer served by an EdgeNode: its ports are closed on the VPS and the load-balancer status is cleared".to_owned(),
            "Reconcile",
        )
        .await;
    }
    set_finalizer(ctx, svc, false).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Protocol;
    use crate::plan::{BindingId, BindingOutcome, Reason, Refusal};

    fn outcome(port: u16, protocol: Protocol, refusal: Option<Reason>) -> BindingOutcome {
        BindingOutcome {
            id: BindingId {
                kind: SourceKind::Service,
                namespace: "apps".into(),
                source: "game".into(),
                binding: format!("p{port}"),
            },
            protocol,
            listen_port: port,
            refusal: refusal.map(|reason| Refusal {
                reason,
                message: "taken".into(),
            }),
        }
    }

    fn report(outcomes: Vec<BindingOutcome>) -> SourceReport {
        SourceReport {
            node: ObjectKey::new("edge", "vps"),
            generation: Some(1),
            node_problem: None,
            ports: String::new(),
            outcomes,
        }
    }

    fn on(address: &str, r: SourceReport) -> Vec<EdgeInput> {
        vec![EdgeInput {
            node: r.node.clone(),
            view: EdgeView::Reported(r),
            addresses: vec![address.to_owned()],
            outside: crate::actors::edge_set::Outside::Unknown,
            draining: false,
        }]
    }

    #[test]
    fn a_served_service_gets_the_vps_address_in_proxy_mode_with_each_port() {
        let r = report(vec![
            outcome(7000, Protocol::Tcp, None),
            outcome(7000, Protocol::Udp, None),
        ]);
        let (verdict, ingress) = service_status(&on("203.0.113.10", r.clone()), &[]);
        assert!(verdict.ok, "{verdict:?}");
        assert_eq!(verdict.type_, READY);
        assert_eq!(
            ingress,
            [json!({"ip": "203.0.113.10", "ipMode": "Proxy", "ports": [
                {"port": 7000, "protocol": "TCP"}, {"port": 7000, "protocol": "UDP"}]})]
        );
        let (_, by_name) = service_status(&on("vps.example.com", r), &[]);
        assert_eq!(by_name[0]["hostname"], "vps.example.com");
    }

    #[test]
    fn several_edges_each_get_an_entry_and_an_edge_down_drops_out() {
        let served = report(vec![outcome(7000, Protocol::Tcp, None)]);
        let mut other = served.clone();
        other.node = ObjectKey::new("edge", "vps2");
        let mut edges = on("203.0.113.10", served);
        edges.extend(on("2001:db8::10", other));
        let (verdict, ingress) = service_status(&edges, &[]);
        assert!(verdict.ok);
        let ips: Vec<&str> = ingress.iter().map(|i| i["ip"].as_str().unwrap()).collect();
        assert_eq!(ips, ["203.0.113.10", "2001:db8::10"]);
        edges[1].outside = crate::actors::edge_set::Outside::Unhealthy;
        let (_, ingress) = service_status(&edges, &[]);
        assert_eq!(ingress.len(), 1);
        assert_eq!(ingress[0]["ip"], "203.0.113.10");
    }

    #[test]
    fn a_refused_port_says_why_and_nothing_served_means_no_ingress() {
        let r = report(vec![
            outcome(80, Protocol::Tcp, None),
            outcome(443, Protocol::Tcp, Some(Reason::PortConflict)),
        ]);
        let (verdict, ingress) = service_status(&on("203.0.113.10", r), &["9/SCTP".into()]);
        assert!(!verdict.ok);
        assert_eq!(verdict.reason, "PortConflict");
        assert!(
            verdict.message.contains("port \"p443\""),
            "{}",
            verdict.message
        );
        assert!(verdict.message.contains("9/SCTP"), "{}", verdict.message);
        assert_eq!(ingress[0]["ports"][1]["error"], "PortConflict");
        let none = report(vec![outcome(
            443,
            Protocol::Tcp,
            Some(Reason::PortConflict),
        )]);
        assert!(service_status(&on("203.0.113.10", none), &[]).1.is_empty());
        let mut down = report(vec![outcome(80, Protocol::Tcp, None)]);
        down.node_problem = Some(("SSHConnectFailed".into(), "no route".into()));
        let (verdict, ingress) = service_status(&on("203.0.113.10", down), &[]);
        assert_eq!(verdict.reason.as_str(), "EdgeNodeNotReady");
        assert!(ingress.is_empty());
    }
}
