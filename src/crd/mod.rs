//! The user's contract: the `EdgeNode` and `PortBinding` custom resources of
//! `tunnel.achetronic.com/v1alpha1` (and `ReferenceGrant`, a namespace's consent to be
//! referenced from another one, deprecated for Gateway API's own, which is read here too, with
//! the conversion of ours to it), their defaults, and the admission rules (OpenAPI bounds and
//! CEL) that refuse a bad spec with a message naming the field.
//!
//! Everything here is plain data: the operator, the planner and `tunnel crds` all read it.

mod common;
mod edge_node;
pub mod gateway;
pub mod gateway_reference_grant;
pub mod gateway_route;
pub mod grant_migration;
mod policy;
mod port_binding;
pub mod reference_grant;
mod render;
mod rules;

pub use common::{EdgeNodeRef, SecretReference};
pub use edge_node::{
    EdgeNode, EdgeNodeSpec, EdgeNodeStatus, EdgeSpec, HealthCheckSpec, HostSpec,
    OutlierDetectionSpec, PublicAddress, SshSpec, TunnelSpec, UplinkSpec, UplinkStatus,
};
pub use gateway_reference_grant::{GatewayReferenceGrant, GatewayReferenceGrantSpec};
pub use policy::{BindingPolicy, ConnectionRate, MAX_SOURCE_RANGES};
pub use port_binding::{
    Binding, BindingStatus, BindingTarget, EdgeStatus, PortBinding, PortBindingSpec,
    PortBindingStatus, Protocol, ProxyProtocolVersion, ServicePort, ServiceTarget, TcpParams,
    TlsMode, TlsParams, UdpParams,
};
pub use reference_grant::{
    FromKind, GrantFrom, GrantInput, GrantTo, Reference, ReferenceGrant, ReferenceGrantSpec,
    ToKind, reference_allowed,
};
pub use render::{RenderError, crds, crds_yaml};

/// The API group of every Tunnel resource.
pub const GROUP: &str = "tunnel.achetronic.com";
/// The only served (and stored) version.
pub const VERSION: &str = "v1alpha1";
/// One-shot annotation: restart Envoy on the VPS on the next pass, then remove it.
pub const ANNOTATION_RESTART_ENVOY: &str = "tunnel.achetronic.com/restart-envoy";
/// On EdgeNode deletion, skip the SSH teardown of the VPS.
pub const ANNOTATION_SKIP_DEPROVISION: &str = "tunnel.achetronic.com/skip-deprovision";
/// On an EdgeNode, `"true"`: take it out of every status (so out of DNS) and let its
/// connections end before a deletion or a restart of Envoy proceeds.
pub const ANNOTATION_DRAIN: &str = "tunnel.achetronic.com/drain";
/// How long a drain waits for the connections to end (a duration, `10m` by default).
pub const ANNOTATION_DRAIN_TIMEOUT: &str = "tunnel.achetronic.com/drain-timeout";
/// Ports the uplinks keep for themselves on their tunnel address (`/ready` and the admin bridge).
pub const RESERVED_PORTS: [u16; 2] = [40500, 40600];
