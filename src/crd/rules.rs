//! Reusable pieces of the admission rules: the regular expressions, CEL fragments and small
//! schemas that more than one field uses. Kept in one place so the schema and the tests agree.
//! The patterns avoid backslashes so they read the same inside a CEL string.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A Go-style duration, as Envoy and the seed accept it: one or more `<number><unit>` parts,
/// positive, units `ns`, `us`, `ms`, `s`, `m`, `h` (e.g. `500ms`, `5s`, `1h30m`).
pub const DURATION_PATTERN: &str = "^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$";

/// The schema of every duration field: a short string that must parse as a duration.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{DURATION_PATTERN}') && duration(self) > duration('0s')"),
            "message": "must be a positive duration such as 500ms, 5s, 1m or 1h"
        }]
    })
}

/// A TCP or UDP port number.
pub fn port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int32", "minimum": 1, "maximum": 65535 })
}

/// An optional TCP or UDP port number.
pub fn optional_port(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = port(generator);
    schema.insert("nullable".into(), true.into());
    schema
}
