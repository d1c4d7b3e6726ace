//! `tunnel render -f FILE...`: a dry run of the planner. Reads EdgeNodes, PortBindings,
//! Services and Secrets from YAML files (multi-document, as `kubectl get -o yaml` or the
//! manifests you would apply), plans every EdgeNode found, and prints each file the VPS and the
//! uplinks would get, then the outcome of every binding (planned, conflict, missing target,
//! invalid).
//!
//! Private keys (PEM blocks in the SDS files, `privateKey` in `relay.json`) are redacted
//! unless `--show-secrets`.
//! WireGuard keys come from the `<node>-vps-key` and `<node>-uplink-keys` Secrets when they are
//! among the inputs; otherwise fixed placeholder keys are used and the output says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Secret, Service};
use serde::Deserialize;
use tunnel_contract::{PrivateKey, PublicKey};

use tunnel::crd::{EdgeNode, PortBinding};
use tunnel::plan::{
    Keys, Layout, NodeInput, OutcomeKind, PlanInput, PortBindingInput, StaticResolver, TlsSecret,
    plan,
};

/// Why the render failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderCmdError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML or not a valid object of its kind.
    #[error("{path}: document {index}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Position of the document in the file (from 1).
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// No EdgeNode among the inputs.
    #[error("no EdgeNode in the input files")]
    NoEdgeNode,
    /// The planner refused the EdgeNode as a whole.
    #[error("EdgeNode {node}: {source}")]
    Plan {
        /// `namespace/name`.
        node: String,
        /// The planner's error.
        source: tunnel::plan::PlanError,
    },
}

impl RenderCmdError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "RenderReadFailed",
            Self::Parse { .. } => "RenderParseFailed",
            Self::NoEdgeNode => "RenderNoEdgeNode",
            Self::Plan { source, .. } => source.category(),
        }
    }
}

/// Options of `tunnel render`.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Input files.
    pub files: Vec<PathBuf>,
    /// Print private keys instead of redacting them.
    pub show_secrets: bool,
}

#[derive(Default)]
struct Inputs {
    nodes: Vec<EdgeNode>,
    port_bindings: Vec<PortBinding>,
    resolver: StaticResolver,
    /// `(namespace, name)` → data of every Secret, for the key Secrets.
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

fn read_inputs(files: &[PathBuf]) -> Result<Inputs, RenderCmdError> {
    let mut inputs = Inputs::default();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| RenderCmdError::Read {
            path: path.clone(),
            source,
        })?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let parse_err = |message: String| RenderCmdError::Parse {
                path: path.clone(),
                index: i + 1,
                message,
            };
            let value =
                serde_yaml::Value::deserialize(doc).map_err(|e| parse_err(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            match kind {
                "EdgeNode" => inputs
                    .nodes
                    .push(serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?),
                "PortBinding" => inputs
                    .port_bindings
                    .push(serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?),
                "Service" => {
                    let svc: Service =
                        serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?;
                    add_service(&mut inputs.resolver, &svc);
                }
                "ReferenceGrant" => {
                    let grant: tunnel::crd::ReferenceGrant =
                        serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?;
                    if let Some(g) = tunnel::crd::GrantInput::from_object(&grant) {
                        inputs.resolver.grants.push(g);
                    }
                }
                "Secret" => {
                    let secret: Secret =
                        serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?;
                    add_secret(&mut inputs, &secret);
                }
                "List" => {
                    return Err(parse_err(
                        "a List: give the items as separate YAML documents".into(),
                    ));
                }
                _ => {}
            }
        }
    }
    // Like `kubectl apply` of the files in order: a later object of the same kind, namespace
    // and name replaces an earlier one.
    inputs.nodes = last_wins(std::mem::take(&mut inputs.nodes), |n| &n.metadata);
    inputs.port_bindings = last_wins(std::mem::take(&mut inputs.port_bindings), |p| &p.metadata);
    Ok(inputs)
}

fn last_wins<T>(
    items: Vec<T>,
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        let key = |t: &T| (meta(t).namespace.clone(), meta(t).name.clone());
        let k = key(&item);
        if let Some(pos) = out.iter().position(|o| key(o) == k) {
            out[pos] = item;
        } else {
            out.push(item);
        }
    }
    out
}

fn add_service(resolver: &mut StaticResolver, svc: &Service) {
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    resolver
        .services
        .insert((namespace, name), tunnel::plan::service_ports(svc));
}

fn add_secret(inputs: &mut Inputs, secret: &Secret) {
    let namespace = secret
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut data: BTreeMap<String, String> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    data.extend(secret.string_data.clone().unwrap_or_default());
    inputs.resolver.secrets.insert(
        (namespace.clone(), name.clone()),
        TlsSecret {
            certificate_chain: data.get("tls.crt").cloned(),
            private_key: data.get("tls.key").cloned(),
            ca: data.get("ca.crt").cloned(),
        },
    );
    inputs.secrets.insert((namespace, name), data);
}

/// The keys from the key Secrets, or placeholders; the flag says which.
fn keys(inputs: &Inputs, node: &EdgeNode, namespace: &str, replicas: usize) -> (Keys, bool) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let uplink_ns = &node.spec.uplink.namespace;
    let relay = inputs
        .secrets
        .get(&(uplink_ns.clone(), format!("{name}-vps-key")))
        .or_else(|| {
            inputs
                .secrets
                .get(&(namespace.to_owned(), format!("{name}-vps-key")))
        })
        .and_then(|d| d.get("priv"))
        .and_then(|k| k.trim().parse::<PrivateKey>().ok());
    let uplinks: Option<Vec<PublicKey>> = inputs
        .secrets
        .get(&(uplink_ns.clone(), format!("{name}-uplink-keys")))
        .and_then(|d| {
            (0..replicas)
                .map(|o| {
                    d.get(&format!("priv-{o}"))
                        .and_then(|k| k.trim().parse::<PrivateKey>().ok())
                        .map(|k| k.public_key())
                })
                .collect()
        });
    match (relay, uplinks) {
        (Some(relay_private), Some(uplink_public)) => (
            Keys {
                relay_private,
                uplink_public,
            },
            true,
        ),
        _ => (
            Keys {
                relay_private: PrivateKey::from_bytes([0x11; 32]),
                uplink_public: (0..replicas)
                    .map(|o| {
                        let byte = u8::try_from(o % 200).unwrap_or(0);
                        PrivateKey::from_bytes([0x20 + byte; 32]).public_key()
                    })
                    .collect(),
            },
            false,
        ),
    }
}

/// Plans every EdgeNode in the files and returns the report.
pub fn render(options: &RenderOptions) -> Result<String, RenderCmdError> {
    let inputs = read_inputs(&options.files)?;
    if inputs.nodes.is_empty() {
        return Err(RenderCmdError::NoEdgeNode);
    }
    let port_bindings: Vec<PortBindingInput> = inputs
        .port_bindings
        .iter()
        .map(|pb| PortBindingInput::of(pb, "default"))
        .collect();
    let mut out = String::new();
    for node in &inputs.nodes {
        let namespace = node
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = node.metadata.name.clone().unwrap_or_default();
        let replicas = usize::try_from(node.spec.uplink.replicas).unwrap_or(0);
        let (keys, real_keys) = keys(&inputs, node, &namespace, replicas);
        let input = PlanInput {
            node: NodeInput {
                namespace: namespace.clone(),
                name: name.clone(),
                spec: node.spec.clone(),
            },
            port_bindings: port_bindings.clone(),
            keys,
            layout: Layout::default(),
        };
        let plan = plan(&input, &inputs.resolver).map_err(|source| RenderCmdError::Plan {
            node: format!("{namespace}/{name}"),
            source,
        })?;
        let _ = writeln!(out, "# EdgeNode {namespace}/{name}");
        let _ = writeln!(out, "# plan hash {}", plan.hashes.plan);
        if !real_keys {
            let _ = writeln!(
                out,
                "# WireGuard keys: placeholders (give the {name}-vps-key and {name}-uplink-keys Secrets for real ones)"
            );
        }
        for file in &plan.vps_files {
            print_file(&mut out, "VPS", file, options.show_secrets);
        }
        print_file(
            &mut out,
            &format!(
                "ConfigMap {}/{name}-uplink-config key",
                node.spec.uplink.namespace
            ),
            &plan.uplink_file,
            options.show_secrets,
        );
        let _ = writeln!(out, "# Bindings");
        for o in &plan.outcomes {
            let _ = write!(
                out,
                "{}/{} {:?} {}/{}: {}",
                o.id.namespace,
                o.id.port_binding,
                o.id.binding,
                o.protocol,
                o.listen_port,
                o.kind().as_str()
            );
            if let Some(r) = &o.refusal {
                let _ = write!(out, " ({}): {}", r.reason.as_str(), r.message);
            }
            out.push('\n');
        }
        let planned = plan
            .outcomes
            .iter()
            .filter(|o| o.kind() == OutcomeKind::Planned)
            .count();
        let _ = writeln!(
            out,
            "# {planned}/{} bindings planned\n",
            plan.outcomes.len()
        );
    }
    Ok(out)
}

fn print_file(out: &mut String, place: &str, file: &tunnel::plan::RenderedFile, show: bool) {
    let _ = writeln!(out, "# --- {place} {} (sha256 {})", file.path, file.sha256);
    let text = if file.secret && !show {
        redact(&file.contents)
    } else {
        file.contents.clone()
    };
    out.push_str(&text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

/// Hides private keys: the lines of PEM `PRIVATE KEY` blocks, and JSON `"privateKey"` values.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with("-----BEGIN") && trimmed.contains("PRIVATE KEY") {
            in_key = true;
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(indent);
            out.push_str("<private key redacted; --show-secrets prints it>\n");
            continue;
        }
        if in_key {
            if trimmed.starts_with("-----END") {
                in_key = false;
            }
            continue;
        }
        if let Some(pos) = line.find("\"privateKey\": \"") {
            let start = pos + "\"privateKey\": \"".len();
            if let Some(len) = line[start..].find('"') {
                out.push_str(&line[..start]);
                out.push_str("<redacted>");
                out.push_str(&line[start + len..]);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_upper_camel_case() {
        let all = [
            RenderCmdError::Read {
                path: PathBuf::new(),
                source: std::io::Error::other("gone"),
            },
            RenderCmdError::Parse {
                path: PathBuf::new(),
                index: 1,
                message: String::new(),
            },
            RenderCmdError::NoEdgeNode,
            RenderCmdError::Plan {
                node: String::new(),
                source: tunnel::plan::PlanError::Replicas(0),
            },
        ];
        let categories: Vec<&str> = all.iter().map(RenderCmdError::category).collect();
        assert_eq!(
            categories,
            [
                "RenderReadFailed",
                "RenderParseFailed",
                "RenderNoEdgeNode",
                "ReplicasInvalid"
            ]
        );
    }
}
