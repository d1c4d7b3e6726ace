//! Where the planner meets enrollment: the files of a [`Plan`] become the [`DesiredState`] of
//! the VPS, together with the binaries the operator carries and the EdgeNode's host tuning.
//!
//! Pure: every rendered VPS file must land on a path enrollment knows, and every file
//! enrollment needs must be in the plan; anything else is an error naming the path.

use std::collections::BTreeMap;

use crate::crd::HostSpec;
use crate::enroll::layout;
use crate::enroll::{Arch, Blob, DesiredState, EnvoyInstall, HostTuning};
use crate::plan::Plan;

/// A plan whose files do not fit the VPS layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VpsStateError {
    /// The plan has no file at a path enrollment needs.
    #[error("the plan has no {0}")]
    Missing(&'static str),
    /// The plan has a file enrollment would not know where to put.
    #[error("the plan renders {0}, which is not a VPS file enrollment manages")]
    Unexpected(String),
}

impl VpsStateError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Missing(_) => "plan_file_missing",
            Self::Unexpected(_) => "plan_file_unexpected",
        }
    }
}

/// The binaries the operator installs on every VPS.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `tunnelctl` per architecture.
    pub tunnelctl: BTreeMap<Arch, Blob>,
    /// Envoy, pushed or downloaded on the VPS.
    pub envoy: EnvoyInstall,
}

/// The desired state of the VPS for `plan`.
pub fn desired_state(
    plan: &Plan,
    binaries: &Binaries,
    host: &HostSpec,
) -> Result<DesiredState, VpsStateError> {
    let mut relay = None;
    let mut bootstrap = None;
    let mut lds = None;
    let mut cds = None;
    let mut sds = BTreeMap::new();
    let tls_prefix = format!("{}/", layout::ENVOY_TLS_DIR);
    for file in &plan.vps_files {
        let blob = Blob::new(file.contents.as_bytes().to_vec());
        match file.path.as_str() {
            layout::RELAY_DOCUMENT => relay = Some(blob),
            layout::ENVOY_BOOTSTRAP => bootstrap = Some(blob),
            layout::ENVOY_LDS => lds = Some(blob),
            layout::ENVOY_CDS => cds = Some(blob),
            path => match path.strip_prefix(&tls_prefix) {
                Some(name) if layout::is_sds_file_name(name) => {
                    sds.insert(name.to_owned(), blob);
                }
                _ => return Err(VpsStateError::Unexpected(path.to_owned())),
            },
        }
    }
    Ok(DesiredState {
        tunnelctl: binaries.tunnelctl.clone(),
        envoy: binaries.envoy.clone(),
        relay_document: relay.ok_or(VpsStateError::Missing(layout::RELAY_DOCUMENT))?,
        envoy_bootstrap: bootstrap.ok_or(VpsStateError::Missing(layout::ENVOY_BOOTSTRAP))?,
        envoy_lds: lds.ok_or(VpsStateError::Missing(layout::ENVOY_LDS))?,
        envoy_cds: cds.ok_or(VpsStateError::Missing(layout::ENVOY_CDS))?,
        sds,
        host: HostTuning::from(host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EdgeNode, PortBinding};
    use crate::plan::{
        Keys, Layout, NodeInput, PlanInput, PortBindingInput, StaticResolver, TlsSecret,
    };
    use uplink::key::PrivateKey;

    fn plan_of(files: &[&str]) -> Plan {
        let mut node = None;
        let mut port_bindings = Vec::new();
        for file in files {
            let text =
                std::fs::read_to_string(format!("tests/fixtures/readme/{file}.yaml")).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc).unwrap();
                match value["kind"].as_str() {
                    Some("EdgeNode") => {
                        node = Some(serde_yaml::from_value::<EdgeNode>(value).unwrap());
                    }
                    Some("PortBinding") => {
                        let pb: PortBinding = serde_yaml::from_value(value).unwrap();
                        port_bindings.push(PortBindingInput {
                            namespace: "default".into(),
                            name: pb.metadata.name.clone().unwrap(),
                            created: None,
                            spec: pb.spec,
                        });
                    }
                    _ => {}
                }
            }
        }
        let node = node.unwrap();
        let tls = TlsSecret {
            certificate_chain: Some("CERT".into()),
            private_key: Some("KEY".into()),
            ca: Some("CA".into()),
        };
        let resolver = StaticResolver::default()
            .with_service(
                "default",
                "my-web",
                Some("10.96.0.10".parse().unwrap()),
                &[8080],
            )
            .with_service(
                "networking",
                "internal-ingress",
                Some("10.96.0.11".parse().unwrap()),
                &[443],
            )
            .with_service(
                "default",
                "grpc-api",
                Some("10.96.0.12".parse().unwrap()),
                &[50051],
            )
            .with_secret("default", "web-tls", tls.clone())
            .with_secret("default", "grpc-mtls", tls);
        let input = PlanInput {
            node: NodeInput {
                namespace: "default".into(),
                name: "edge-node".into(),
                spec: node.spec,
            },
            port_bindings,
            keys: Keys {
                relay_private: PrivateKey::from_bytes([1; 32]),
                uplink_public: vec![PrivateKey::from_bytes([2; 32]).public_key()],
            },
            layout: Layout::default(),
        };
        crate::plan::plan(&input, &resolver).unwrap()
    }

    fn binaries() -> Binaries {
        Binaries {
            tunnelctl: BTreeMap::from([(Arch::X86_64, Blob::new(b"tunnelctl".to_vec()))]),
            envoy: EnvoyInstall::Push {
                version: "1.40.0".into(),
                binaries: BTreeMap::from([(Arch::X86_64, Blob::new(b"envoy".to_vec()))]),
            },
        }
    }

    use serde::Deserialize;

    #[test]
    fn every_plan_file_lands_where_enrollment_writes_it() {
        let plan = plan_of(&["example1", "example3"]);
        let desired = desired_state(&plan, &binaries(), &HostSpec::default()).unwrap();
        desired.validate().unwrap();
        let file = |path: &str| plan.vps_file(path).unwrap().contents.as_bytes().to_vec();
        assert_eq!(
            desired.relay_document.bytes(),
            file(layout::RELAY_DOCUMENT).as_slice()
        );
        assert_eq!(
            desired.envoy_bootstrap.bytes(),
            file(layout::ENVOY_BOOTSTRAP).as_slice()
        );
        assert_eq!(
            desired.envoy_lds.bytes(),
            file(layout::ENVOY_LDS).as_slice()
        );
        assert_eq!(
            desired.envoy_cds.bytes(),
            file(layout::ENVOY_CDS).as_slice()
        );
        // Offload and mutual each bring their certificate through SDS; mutual's CA has a file
        // of its own (file-based SDS holds one secret per file).
        let names: Vec<_> = desired.sds.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "default_grpc-mtls.sds.yaml",
                "default_grpc-mtls_ca.sds.yaml",
                "default_web-tls.sds.yaml"
            ]
        );
        assert_eq!(desired.host.max_socket_buffer_bytes, 26_214_400);
    }

    #[test]
    fn a_file_outside_the_layout_is_refused_by_path() {
        let mut plan = plan_of(&["example1"]);
        plan.vps_files[0].path = "/etc/passwd".into();
        let err = desired_state(&plan, &binaries(), &HostSpec::default()).unwrap_err();
        assert_eq!(err, VpsStateError::Unexpected("/etc/passwd".into()));
        let mut plan = plan_of(&["example1"]);
        plan.vps_files.retain(|f| f.path != layout::ENVOY_LDS);
        let err = desired_state(&plan, &binaries(), &HostSpec::default()).unwrap_err();
        assert_eq!(err.to_string(), "the plan has no /etc/envoy/lds.yaml");
    }
}
