//! The LoadBalancer actor: the single writer of one Service's load-balancer status, for a
//! Service of `type: LoadBalancer` that an EdgeNode serves ([`crate::plan::load_balancer`]).
//! Its EdgeNode actor owns the port table and answers each pass with this Service's outcome
//! (the Manager tells the EdgeNode of every change of the Service); this actor turns it into
//! `status.loadBalancer.ingress[]` (the VPS's address, `ipMode: Proxy`, `ports[].error` for a
//! refused port) and the condition [`READY`], with Events on its transitions.
//!
//! The Service carries our finalizer while it is ours: a Service that stops being ours (its
//! class or type changed) or is deleted has the status we wrote cleared and the finalizer
//! removed, also when that happened while the operator was down. The VPS's ports follow from
//! the caches on every pass, so they close with the EdgeNode's next pass either way.

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
use crate::plan::bindings::may_use_edge_node;
use crate::plan::load_balancer::{self, FINALIZER};
use crate::plan::{SourceKey, SourceKind};

use super::conditions::{self, Verdict};
use super::protocol::{self, BindingMsg, NodeMsg};
use super::status::{self, SourceReport};
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
}

impl Child for LoadBalancerActor {
    const KIND: &'static str = protocol::LOAD_BALANCER;

    fn changed() -> BindingMsg {
        BindingMsg::Changed
    }

    async fn parked(ctx: Arc<Context>, key: ObjectKey, message: String) {
        let Some(svc) = get(&ctx, &key) else { return };
        let verdict = Verdict::failed(READY, "RestartLoop", message);
        settle(&ctx, &svc, None, verdict).await;
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
        Ok(LoadBalancerState { ctx, key })
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
        let node = match load_balancer::edge_node_of(&svc, &ctx.stores.edge_nodes.state()) {
            Ok(node) => node,
            Err(no) => {
                settle(
                    &ctx,
                    &svc,
                    None,
                    Verdict::failed(READY, no.reason(), no.message()),
                )
                .await;
                return Ok(());
            }
        };
        if let Err(refusal) = may_use_edge_node(
            &ctx.resolver(),
            SourceKind::Service,
            &state.key.namespace,
            (&node.namespace, &node.name),
        ) {
            let verdict = Verdict::failed(READY, refusal.reason.as_str(), refusal.message);
            settle(&ctx, &svc, None, verdict).await;
            return Ok(());
        }
        let address = ctx
            .stores
            .edge_nodes
            .get(&ObjectRef::new(&node.name).within(&node.namespace))
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .map(|n| n.spec.address.clone());
        let Some(address) = address else {
            let mut verdict = status::edge_node_missing(&node.to_string());
            verdict.type_ = READY;
            verdict.message = format!(
                "EdgeNode {node} does not exist; create it or fix the annotation {}",
                load_balancer::ANNOTATION_EDGE_NODE
            );
            settle(&ctx, &svc, None, verdict).await;
            return Ok(());
        };
        match message {
            BindingMsg::Changed => {
                // The Manager told the EdgeNode of the change itself; this only asks for what
                // its last pass said.
                if let Some(actor) = protocol::edge_node(&ctx, &node) {
                    let _ = actor
                        .send_message(NodeMsg::ReportWanted(SourceKey::service(state.key.clone())));
                }
            }
            BindingMsg::Report(report) if report.node == node => {
                let (verdict, ingress) =
                    service_status(&report, &address, &load_balancer::unserved_ports(&svc));
                settle(&ctx, &svc, ingress, verdict).await;
            }
            BindingMsg::Report(_) => {}
        }
        Ok(())
    }
}

/// The condition and `status.loadBalancer.ingress[]` of a Service after its EdgeNode's pass,
/// pure: the VPS's address (`ip` with `ipMode: Proxy`, or `hostname`) with every port of the
/// table, a refused one with its reason as `error`; no ingress while no port is served.
/// `unserved` are ports no binding could take (SCTP).
pub fn service_status(
    report: &SourceReport,
    address: &str,
    unserved: &[String],
) -> (Verdict, Option<Value>) {
    let (mut verdict, _) = status::port_binding_status(report);
    verdict.type_ = READY;
    if !unserved.is_empty() {
        verdict.message = format!(
            "{}; not served (only TCP and UDP are): {}",
            verdict.message,
            unserved.join(", ")
        );
    }
    let served = report.outcomes.iter().any(|o| o.refusal.is_none());
    if report.node_problem.is_some() || !served {
        return (verdict, None);
    }
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
    let mut ingress = if address.parse::<std::net::IpAddr>().is_ok() {
        json!({ "ip": address, "ipMode": "Proxy" })
    } else {
        json!({ "hostname": address })
    };
    ingress["ports"] = Value::Array(ports);
    (verdict, Some(ingress))
}

/// Writes our part of the Service's status when it differs from what is there, and publishes
/// an Event when the condition changed.
async fn settle(ctx: &Context, svc: &Service, ingress: Option<Value>, verdict: Verdict) {
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
    let wanted_ingress = ingress.clone().map(|i| Value::Array(vec![i]));
    let same_ingress = match (&current_ingress, &wanted_ingress) {
        (None, None) => true,
        (Some(Value::Array(a)), None) => a.is_empty(),
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if same_ingress && before == conditions {
        ctx.metrics.pass(protocol::LOAD_BALANCER, None);
        return;
    }
    let st = json!({
        "loadBalancer": { "ingress": wanted_ingress.unwrap_or(Value::Array(Vec::new())) },
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

    #[test]
    fn a_served_service_gets_the_vps_address_in_proxy_mode_with_each_port() {
        let r = report(vec![
            outcome(7000, Protocol::Tcp, None),
            outcome(7000, Protocol::Udp, None),
        ]);
        let (verdict, ingress) = service_status(&r, "203.0.113.10", &[]);
        assert!(verdict.ok, "{verdict:?}");
        assert_eq!(verdict.type_, READY);
        assert_eq!(
            ingress.unwrap(),
            json!({"ip": "203.0.113.10", "ipMode": "Proxy", "ports": [
                {"port": 7000, "protocol": "TCP"}, {"port": 7000, "protocol": "UDP"}]})
        );
        let (_, by_name) = service_status(&r, "vps.example.com", &[]);
        assert_eq!(by_name.unwrap()["hostname"], "vps.example.com");
    }

    #[test]
    fn a_refused_port_says_why_and_nothing_served_means_no_ingress() {
        let r = report(vec![
            outcome(80, Protocol::Tcp, None),
            outcome(443, Protocol::Tcp, Some(Reason::PortConflict)),
        ]);
        let (verdict, ingress) = service_status(&r, "203.0.113.10", &["9/SCTP".into()]);
        assert!(!verdict.ok);
        assert_eq!(verdict.reason, "PortConflict");
        assert!(
            verdict.message.contains("port \"p443\""),
            "{}",
            verdict.message
        );
        assert!(verdict.message.contains("9/SCTP"), "{}", verdict.message);
        assert_eq!(ingress.unwrap()["ports"][1]["error"], "PortConflict");
        let none = report(vec![outcome(
            443,
            Protocol::Tcp,
            Some(Reason::PortConflict),
        )]);
        assert_eq!(service_status(&none, "203.0.113.10", &[]).1, None);
        let mut down = report(vec![outcome(80, Protocol::Tcp, None)]);
        down.node_problem = Some(("SSHConnectFailed".into(), "no route".into()));
        let (verdict, ingress) = service_status(&down, "203.0.113.10", &[]);
        assert_eq!(
            (verdict.reason.as_str(), ingress),
            ("EdgeNodeNotReady", None)
        );
    }
}
