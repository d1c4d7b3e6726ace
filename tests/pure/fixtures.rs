//! Fixed inputs and text forms for the golden files: a fake TLS Secret (the same bytes every
//! run) and the binding outcomes of a plan as lines.

use std::fmt::Write as _;

use tunnel::plan::{Plan, TlsSecret};

/// The outcomes of a plan as text lines.
pub fn outcomes_text(plan: &Plan) -> String {
    let mut out = String::new();
    for o in &plan.outcomes {
        let (reason, message) = o
            .refusal
            .as_ref()
            .map_or(("", ""), |r| (r.reason.as_str(), r.message.as_str()));
        let _ = writeln!(
            out,
            "{}/{} {} {}/{}: {} {} {}",
            o.id.namespace,
            o.id.source,
            o.id.binding,
            o.protocol,
            o.listen_port,
            o.kind().as_str(),
            reason,
            message
        );
    }
    out
}

/// A TLS Secret with fixed, fake PEM contents (for golden files; Envoy would refuse it).
pub fn fake_secret(with_ca: bool) -> TlsSecret {
    TlsSecret {
        certificate_chain: Some(
            "-----BEGIN CERTIFICATE-----\nZmFrZSBjZXJ0\n-----END CERTIFICATE-----\n".into(),
        ),
        private_key: Some(
            "-----BEGIN PRIVATE KEY-----\nZmFrZSBrZXk=\n-----END PRIVATE KEY-----\n".into(),
        ),
        ca: with_ca.then(|| {
            "-----BEGIN CERTIFICATE-----\nZmFrZSBjYQ==\n-----END CERTIFICATE-----\n".into()
        }),
    }
}
