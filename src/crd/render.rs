//! Turns the Rust types into the CustomResourceDefinition objects the API server installs, and
//! into the YAML that `tunnel crds` prints and the Helm chart carries.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use super::{EdgeNode, PortBinding, ReferenceGrant};

/// Why the CRDs could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The CRD object did not serialize to YAML.
    #[error("serializing CRD {name} to YAML: {source}")]
    Yaml {
        /// The CRD's name.
        name: String,
        /// The serializer's error.
        source: serde_yaml::Error,
    },
}

impl RenderError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Yaml { .. } => "CRDRenderFailed",
        }
    }
}

/// The CRDs: EdgeNode, PortBinding, ReferenceGrant, with descriptions that read as prose
/// in `kubectl explain` (see [`prose`]).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![EdgeNode::crd(), PortBinding::crd(), ReferenceGrant::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                describe_root(schema);
                walk(schema);
            }
        }
    }
    crds
}

/// The root's description is kube-derive's "Auto-generated derived type for ...": the kind's
/// own doc comment (on its spec) says what it is.
fn describe_root(root: &mut JSONSchemaProps) {
    let generated = root
        .description
        .as_deref()
        .is_some_and(|d| d.starts_with("Auto-generated derived type"));
    if generated {
        root.description = root
            .properties
            .as_ref()
            .and_then(|p| p.get("spec"))
            .and_then(|spec| spec.description.clone());
    }
}

/// Every description of `schema` and below, made [`prose`].
fn walk(schema: &mut JSONSchemaProps) {
    if let Some(d) = schema.description.as_mut() {
        *d = prose(d);
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        walk(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(s)) => walk(s),
        Some(JSONSchemaPropsOrArray::Schemas(list)) => list.iter_mut().for_each(walk),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = schema.additional_properties.as_mut() {
        walk(s);
    }
    for list in [
        schema.all_of.as_mut(),
        schema.any_of.as_mut(),
        schema.one_of.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        list.iter_mut().for_each(walk);
    }
    if let Some(not) = schema.not.as_mut() {
        walk(not);
    }
}

/// A doc comment as prose: the line breaks of the source (wrapped at 100 columns) become
/// spaces, so `kubectl explain` wraps the text to the terminal instead of breaking sentences
/// in the middle. Paragraph breaks (an empty line) and list items (`- `) are kept.
pub fn prose(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            let mut out = String::new();
            for line in paragraph.lines().map(str::trim) {
                if line.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.push(if line.starts_with("- ") { '\n' } else { ' ' });
                }
                out.push_str(line);
            }
            out
        })
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The CRDs as one multi-document YAML stream, deterministic byte for byte.
pub fn crds_yaml() -> Result<String, RenderError> {
    let mut out = String::new();
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let doc =
            serde_yaml::to_string(&crd).map_err(|source| RenderError::Yaml { name, source })?;
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_read_as_prose() {
        assert_eq!(
            prose("Public IP address of the VPS. The operator\nconnects to it."),
            "Public IP address of the VPS. The operator connects to it."
        );
        assert_eq!(
            prose("Rules:\n- one\n- two\n\nNext paragraph\nwrapped."),
            "Rules:\n- one\n- two\n\nNext paragraph wrapped."
        );
        let yaml = crds_yaml().unwrap();
        assert!(!yaml.contains("Auto-generated derived type"));
        // The source wraps this sentence after "the"; the CRD must not.
        assert!(yaml.contains(
            "Public IP address or hostname of the VPS. The operator connects to it over SSH and the uplinks dial its WireGuard port on it."
        ));
    }

    #[test]
    fn both_kinds_are_in_the_tunnel_category() {
        for crd in crds().into_iter().take(2) {
            assert_eq!(
                crd.spec.names.categories,
                Some(vec!["tunnel".to_owned()]),
                "{:?}",
                crd.metadata.name
            );
        }
    }

    #[test]
    fn every_category_is_upper_camel_case() {
        let e = RenderError::Yaml {
            name: String::new(),
            source: serde_yaml::from_str::<u8>("x").unwrap_err(),
        };
        assert_eq!(e.category(), "CRDRenderFailed");
    }
}
