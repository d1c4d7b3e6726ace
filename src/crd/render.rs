//! Turns the Rust types into the CustomResourceDefinition objects the API server installs, and
//! into the YAML that `tunnel crds` prints and the Helm chart carries.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

/// The CRDs: EdgeNode, PortBinding, ReferenceGrant.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![EdgeNode::crd(), PortBinding::crd(), ReferenceGrant::crd()]
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
    fn every_category_is_upper_camel_case() {
        let e = RenderError::Yaml {
            name: String::new(),
            source: serde_yaml::from_str::<u8>("x").unwrap_err(),
        };
        assert_eq!(e.category(), "CRDRenderFailed");
    }
}
