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

/// The schema of `spec.ssh.connectTimeout`: a duration of at most 60s. A longer wait only
/// lets a VPS that never answers (down, or a tarpit) keep a reconnecting session busy; the
/// operator holds older objects to 60s too (`ssh::SshOptions::MAX_CONNECT_TIMEOUT`).
pub fn ssh_connect_timeout(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{DURATION_PATTERN}') && duration(self) > duration('0s') && duration(self) <= duration('60s')"),
            "message": "ssh.connectTimeout must be a positive duration of at most 60s, such as 5s or 30s"
        }]
    })
}

/// A TCP or UDP port number.
pub fn port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int32", "minimum": 1, "maximum": 65535 })
}

/// A Service port name: an IANA service name as Kubernetes requires of `spec.ports[].name`
/// (lower-case letters, digits and `-`, starting and ending with a letter or digit, at least
/// one letter), as one regular expression: the single letter, or a letter first, last, or in
/// between.
pub const SERVICE_PORT_NAME_PATTERN: &str = "^([a-z]|[a-z][-a-z0-9]*[a-z0-9]|[a-z0-9][-a-z0-9]*[a-z]|[a-z0-9][-a-z0-9]*[a-z][-a-z0-9]*[a-z0-9])$";

/// A Service port by number (1–65535) or by name ([`SERVICE_PORT_NAME_PATTERN`], at most 15
/// characters). Checked by `minimum`/`maximum` (which apply to the number only) and
/// `pattern`/`maxLength` (the name only), not by a CEL rule: API servers before 1.34 estimate
/// a rule's cost on an int-or-string as if it could be a whole request long (they ignore
/// `maxLength`), so even `type(self) != int || ...` on it is refused as too expensive in a
/// list of bindings (tests/control_plane/oldest_api_server.rs).
pub fn service_port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{ "type": "integer" }, { "type": "string" }],
        "minimum": 1,
        "maximum": 65535,
        "maxLength": 15,
        "pattern": SERVICE_PORT_NAME_PATTERN
    })
}

/// An optional TCP or UDP port number.
pub fn optional_port(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = port(generator);
    schema.insert("nullable".into(), true.into());
    schema
}
