//! Types shared by both resources: references to Secrets and to other objects.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Secret, by name and optionally namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Secret. Defaults to the namespace of the object that references it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

impl SecretReference {
    /// The namespace to read the Secret from, given the referencing object's namespace.
    pub fn namespace_or<'a>(&'a self, owner_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(owner_namespace)
    }
}

/// A reference to another object of this API, by name and optionally namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNodeRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the referenced object. Defaults to the referencing object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

impl EdgeNodeRef {
    /// The namespace of the referenced object, given the referencing object's namespace.
    pub fn namespace_or<'a>(&'a self, owner_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(owner_namespace)
    }
}
