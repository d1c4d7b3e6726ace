//! What happened to each binding: planned, or left out with a reason and a message. The
//! reason is a stable CamelCase word (a condition reason and an Event reason); the message
//! says what to change.

use crate::crd::Protocol;
use crate::object_key::ObjectKey;

/// The kind of object a binding comes from (DESIGN.md §3, sources of bindings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// A PortBinding: each of its `bindings[]`.
    #[default]
    PortBinding,
    /// A Service of `type: LoadBalancer` of our class: each of its ports.
    Service,
    /// A Gateway API `Gateway` of our class: each listener's served routes.
    Gateway,
}

impl SourceKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PortBinding => "PortBinding",
            Self::Service => "Service",
            Self::Gateway => "Gateway",
        }
    }

    /// What one binding of this kind is called in messages.
    pub fn binding_word(self) -> &'static str {
        match self {
            Self::PortBinding => "binding",
            Self::Service => "port",
            Self::Gateway => "listener",
        }
    }
}

/// One source of bindings: its kind and its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey {
    /// PortBinding or Service.
    pub kind: SourceKind,
    /// Its namespace and name.
    pub key: ObjectKey,
}

impl SourceKey {
    /// A PortBinding.
    pub fn port_binding(key: ObjectKey) -> Self {
        Self {
            kind: SourceKind::PortBinding,
            key,
        }
    }

    /// A LoadBalancer Service.
    pub fn service(key: ObjectKey) -> Self {
        Self {
            kind: SourceKind::Service,
            key,
        }
    }

    /// A Gateway.
    pub fn gateway(key: ObjectKey) -> Self {
        Self {
            kind: SourceKind::Gateway,
            key,
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.key)
    }
}

/// One binding, named by the object (a PortBinding or a Service) that holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BindingId {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub source: String,
    /// Name of the binding inside it (a Service's port: its name, or `<protocol>-<port>`).
    pub binding: String,
    /// The kind of that object (last: the conflict rule orders by namespace/name first).
    pub kind: SourceKind,
}

impl std::fmt::Display for BindingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} of {} {}/{}",
            self.kind.binding_word(),
            self.binding,
            self.kind.as_str(),
            self.namespace,
            self.source
        )
    }
}

/// Why a binding is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Another (older) binding holds the same protocol and port.
    PortConflict,
    /// Another (older) passthrough binding on the port already routes one of its server names.
    ServerNameConflict,
    /// Another (older) passthrough binding on the port is already the catch-all.
    CatchAllConflict,
    /// The port is the relay's WireGuard UDP port.
    TunnelPortConflict,
    /// The port is reserved (40500 `/ready`, 40600 admin).
    ReservedPort,
    /// The target Service does not exist.
    ServiceNotFound,
    /// The target Service has no ClusterIP.
    ServiceHeadless,
    /// The target Service does not expose the port.
    ServicePortNotFound,
    /// The target is not something the uplinks can forward to.
    UnsupportedTarget,
    /// The TLS Secret does not exist.
    TlsSecretNotFound,
    /// The TLS Secret lacks `tls.crt`, `tls.key` or (mutual) `ca.crt`.
    TlsSecretIncomplete,
    /// A value admission could not catch (e.g. a duration too long for Envoy).
    InvalidSpec,
    /// A reference into another namespace (a TLS Secret, the EdgeNode, a target Service under
    /// `--cross-namespace-targets=require-grant`) that no `ReferenceGrant` there allows.
    ReferenceNotGranted,
    /// A target (a raw `target.address`, or the ClusterIP a Service resolves to) that is
    /// loopback, link-local, cloud metadata, the EdgeNode's tunnel network or the API
    /// server's, without the operator flag that allows it.
    RestrictedTarget,
}

/// The broad class of a reason, for `tunnel render`'s summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Served.
    Planned,
    /// Lost its port to an older binding or a reserved port.
    Conflict,
    /// Points at something that does not exist (yet).
    MissingTarget,
    /// Something in the spec or the Secret must be fixed.
    Invalid,
}

impl OutcomeKind {
    /// Lower-case words for humans.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Conflict => "conflict",
            Self::MissingTarget => "missing target",
            Self::Invalid => "invalid",
        }
    }
}

impl Reason {
    /// The stable reason word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PortConflict => "PortConflict",
            Self::ServerNameConflict => "ServerNameConflict",
            Self::CatchAllConflict => "CatchAllConflict",
            Self::TunnelPortConflict => "TunnelPortConflict",
            Self::ReservedPort => "ReservedPort",
            Self::ServiceNotFound => "ServiceNotFound",
            Self::ServiceHeadless => "ServiceHeadless",
            Self::ServicePortNotFound => "ServicePortNotFound",
            Self::UnsupportedTarget => "UnsupportedTarget",
            Self::TlsSecretNotFound => "TLSSecretNotFound",
            Self::TlsSecretIncomplete => "TLSSecretIncomplete",
            Self::InvalidSpec => "InvalidSpec",
            Self::ReferenceNotGranted => "ReferenceNotGranted",
            Self::RestrictedTarget => "RestrictedTarget",
        }
    }

    /// Its broad class.
    pub fn kind(self) -> OutcomeKind {
        match self {
            Self::PortConflict
            | Self::ServerNameConflict
            | Self::CatchAllConflict
            | Self::TunnelPortConflict
            | Self::ReservedPort => OutcomeKind::Conflict,
            Self::ServiceNotFound
            | Self::ServiceHeadless
            | Self::ServicePortNotFound
            | Self::TlsSecretNotFound => OutcomeKind::MissingTarget,
            Self::UnsupportedTarget
            | Self::TlsSecretIncomplete
            | Self::InvalidSpec
            | Self::ReferenceNotGranted
            | Self::RestrictedTarget => OutcomeKind::Invalid,
        }
    }
}

/// A binding left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable reason.
    pub reason: Reason,
    /// What is wrong and what to do, naming the other binding when there is one.
    pub message: String,
}

/// The outcome for one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingOutcome {
    /// Which binding.
    pub id: BindingId,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its public port.
    pub listen_port: u16,
    /// `None` when planned.
    pub refusal: Option<Refusal>,
}

impl BindingOutcome {
    /// Planned, conflict, missing target or invalid.
    pub fn kind(&self) -> OutcomeKind {
        self.refusal
            .as_ref()
            .map_or(OutcomeKind::Planned, |r| r.reason.kind())
    }
}
