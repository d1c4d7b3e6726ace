//! `tunnel render -f FILE...` (`-f -` reads standard input): a dry run of the planner. Reads EdgeNodes, PortBindings,
//! Services and Secrets from YAML files (multi-document, as `kubectl get -o yaml` or the
//! manifests you would apply), plans every EdgeNode found, and prints each file the VPS and the
//! uplinks would get, then the outcome of every binding (planned, conflict, missing target,
//! invalid).
//!
//! Private keys are redacted unless `--show-secrets`, by the documents' structure rather than
//! their lines: the SDS files' `private_key`, the agent documents' `privateKey`, and any string
//! holding a PEM private key.
//! WireGuard keys come from the EdgeNode's key Secrets, named as the operator names them
//! ([`UplinkNames`]), when they are among the inputs (`kubectl get secret -n <uplink namespace>
//! <name> -o yaml`); otherwise fixed placeholder keys are used and the output names the
//! Secrets to give.
//! Targets are judged as the operator judges them, with the same flags
//! (`--allow-restricted-targets`, `--cross-namespace-targets`); the API server's addresses are
//! known when its Service `default/kubernetes` (and EndpointSlices) are among the inputs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use tunnel_contract::{PrivateKey, PublicKey};

use tunnel::actors::keys::RELAY_PRIVATE;
use tunnel::crd::{EdgeNode, PortBinding};
use tunnel::plan::{
    CrossNamespaceTargets, Keys, Layout, NodeInput, OutcomeKind, PlanInput, SourceInput,
    StaticResolver, TargetPolicy, TlsSecret, api_server_addresses, plan,
};
use tunnel::workload::UplinkNames;

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
    /// The operator's `--allow-restricted-targets`.
    pub allow_restricted_targets: bool,
    /// The operator's `--cross-namespace-targets`.
    pub cross_namespace_targets: CrossNamespaceTargets,
}

#[derive(Default)]
struct Inputs {
    nodes: Vec<EdgeNode>,
    port_bindings: Vec<PortBinding>,
    resolver: StaticResolver,
    /// `(namespace, name)` → data of every Secret, for the key Secrets.
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// The API server's Service (`default/kubernetes`) and EndpointSlices, when given: their
    /// addresses are never targets, as in the operator.
    api_server: (Option<Service>, Vec<EndpointSlice>),
}

fn read_inputs(files: &[PathBuf]) -> Result<Inputs, RenderCmdError> {
    let mut inputs = Inputs::default();
    for path in files {
        let read = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        };
        let text = read.map_err(|source| RenderCmdError::Read {
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
                    if is_api_server(&svc.metadata) {
                        inputs.api_server.0 = Some(svc);
                    }
                }
                "EndpointSlice" => {
                    let slice: EndpointSlice =
                        serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?;
                    let of_api_server = slice
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .is_some_and(|n| n == API_SERVER.1)
                        && slice.metadata.namespace.as_deref().unwrap_or("default") == API_SERVER.0;
                    if of_api_server {
                        inputs.api_server.1.push(slice);
                    }
                }
                "ReferenceGrant" => {
                    let gateway = value
                        .get("apiVersion")
                        .and_then(|v| v.as_str())
                        .is_some_and(|v| v.starts_with("gateway.networking.k8s.io/"));
                    let grant = if gateway {
                        let grant: tunnel::crd::GatewayReferenceGrant =
                            serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?;
                        tunnel::crd::GrantInput::from_gateway(&grant)
                    } else {
                        let grant: tunnel::crd::ReferenceGrant =
                            serde_yaml::from_value(value).map_err(|e| parse_err(e.to_string()))?;
                        tunnel::crd::GrantInput::from_object(&grant)
                    };
                    inputs.resolver.grants.extend(grant);
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

/// The Service in front of the API server.
const API_SERVER: (&str, &str) = ("default", "kubernetes");

fn is_api_server(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.namespace.as_deref().unwrap_or("default") == API_SERVER.0
        && meta.name.as_deref() == Some(API_SERVER.1)
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

/// The keys from the key Secrets, or placeholders; the flag says which. The Secrets are looked
/// up by the names the operator gives them ([`UplinkNames::for_node`]), in the uplink namespace.
fn keys(inputs: &Inputs, node: &EdgeNode, namespace: &str, replicas: usize) -> (Keys, bool) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let names = UplinkNames::for_node(namespace, &name);
    let uplink_ns = &node.spec.uplink.namespace;
    let relay = inputs
        .secrets
        .get(&(uplink_ns.clone(), names.vps_key_secret.clone()))
        .and_then(|d| d.get(RELAY_PRIVATE))
        .and_then(|k| k.trim().parse::<PrivateKey>().ok());
    let uplinks: Option<Vec<PublicKey>> = inputs
        .secrets
        .get(&(uplink_ns.clone(), names.keys_secret.clone()))
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
    let mut inputs = read_inputs(&options.files)?;
    inputs.resolver.policy = TargetPolicy {
        allow_restricted: options.allow_restricted_targets,
        api_server: api_server_addresses(inputs.api_server.0.as_ref(), &inputs.api_server.1),
        tunnel_network: None,
        cross_namespace_targets: options.cross_namespace_targets,
    };
    if inputs.nodes.is_empty() {
        return Err(RenderCmdError::NoEdgeNode);
    }
    let port_bindings: Vec<SourceInput> = inputs
        .port_bindings
        .iter()
        .map(|pb| SourceInput::of(pb, "default"))
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
            sources: port_bindings.clone(),
            keys,
            layout: Layout::default(),
        };
        let plan = plan(&input, &inputs.resolver).map_err(|source| RenderCmdError::Plan {
            node: format!("{namespace}/{name}"),
            source,
        })?;
        let _ = writeln!(out, "# EdgeNode {namespace}/{name}");
        let _ = writeln!(out, "# plan hash {}", plan.hashes.plan);
        let names = UplinkNames::for_node(&namespace, &name);
        if real_keys {
            let _ = writeln!(
                out,
                "# WireGuard keys: from Secrets {uplink_ns}/{} and {uplink_ns}/{}; relay public key {}; uplink public keys {}",
                names.vps_key_secret,
                names.keys_secret,
                input.keys.relay_private.public_key(),
                input
                    .keys
                    .uplink_public
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                uplink_ns = node.spec.uplink.namespace,
            );
        } else {
            let _ = writeln!(
                out,
                "# WireGuard keys: placeholders (give the Secrets {uplink_ns}/{} and {uplink_ns}/{} for real ones)",
                names.vps_key_secret,
                names.keys_secret,
                uplink_ns = node.spec.uplink.namespace,
            );
        }
        for file in &plan.vps_files {
            print_file(&mut out, "VPS", file, options.show_secrets);
        }
        print_file(
            &mut out,
            &format!(
                "ConfigMap {}/{} key",
                node.spec.uplink.namespace, names.config_map
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
                o.id.source,
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
        redact(&file.path, &file.contents)
    } else {
        file.contents.clone()
    };
    out.push_str(&text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

/// What replaces a secret value.
const REDACTED: &str = "<private key redacted; --show-secrets prints it>";
/// Fields whose whole value is secret, wherever they are: Envoy's SDS `private_key`, the
/// agent documents' `privateKey`.
const SECRET_FIELDS: [&str; 2] = ["private_key", "privateKey"];

/// Hides the secrets of a file by its structure, not its lines: the document is parsed (YAML,
/// or JSON for `.json` files, key order kept), every [`SECRET_FIELDS`] value and every string
/// holding a PEM private key is replaced by [`REDACTED`], and it is printed again in its
/// format. A file that does not parse is not shown at all.
fn redact(path: &str, text: &str) -> String {
    let Ok(mut doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return format!("{REDACTED} (the whole file)\n");
    };
    hide_secrets(&mut doc);
    let json = std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let printed = if json {
        serde_json::to_string_pretty(&doc)
            .map(|t| t + "\n")
            .map_err(|_| ())
    } else {
        serde_yaml::to_string(&doc).map_err(|_| ())
    };
    printed.unwrap_or_else(|()| format!("{REDACTED} (the whole file)\n"))
}

fn hide_secrets(value: &mut serde_yaml::Value) {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                if key.as_str().is_some_and(|k| SECRET_FIELDS.contains(&k)) {
                    *child = Value::String(REDACTED.to_owned());
                } else {
                    hide_secrets(child);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(hide_secrets),
        Value::Tagged(tagged) => hide_secrets(&mut tagged.value),
        Value::String(s) if s.contains("PRIVATE KEY") => REDACTED.clone_into(s),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_by_structure_whatever_their_layout() {
        // A PEM on one line, a PEM with CRLF, a compact JSON document, an unknown field
        // holding a PEM: none is found by looking at lines.
        let sds = "resources:\n- name: x\n  tls_certificate:\n    certificate_chain:\n      inline_string: CERT-PUBLIC\n    private_key:\n      inline_string: '-----BEGIN PRIVATE KEY-----SECRET-ONE-----END PRIVATE KEY-----'\n";
        let out = redact("/etc/envoy/tls/x.sds.yaml", sds);
        assert!(!out.contains("SECRET-ONE"), "{out}");
        assert!(out.contains("CERT-PUBLIC"), "{out}");
        assert!(out.contains(REDACTED), "{out}");
        let crlf = "a:\n  note: \"-----BEGIN EC PRIVATE KEY-----\\r\\nSECRET-TWO\\r\\n-----END EC PRIVATE KEY-----\"\n";
        let out = redact("/x.yaml", crlf);
        assert!(!out.contains("SECRET-TWO"), "{out}");
        let json = r#"{"version":1,"privateKey":"SECRET-THREE","peers":[{"publicKey":"PUB"}],"listenPort":51820}"#;
        let out = redact("/etc/tunnel/relay.json", json);
        assert!(!out.contains("SECRET-THREE"), "{out}");
        assert!(out.contains("PUB") && out.contains("51820"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["privateKey"], REDACTED);
        // Key order is kept.
        assert!(out.find("version").unwrap() < out.find("privateKey").unwrap());
        assert!(out.find("privateKey").unwrap() < out.find("peers").unwrap());
        // What does not parse is not shown.
        let out = redact("/x.yaml", "a: [unclosed SECRET-FOUR");
        assert!(!out.contains("SECRET-FOUR"), "{out}");
    }

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
