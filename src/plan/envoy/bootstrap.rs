//! The bootstrap, `/etc/envoy/envoy.yaml`: the node identity, the admin interface on the
//! relay's tunnel address (never on a public address), and the LDS and CDS files. It changes
//! only when the tunnel network changes, and that needs an Envoy restart; everything else is
//! hot-reloaded from the files it points at.

use serde_json::json;

use super::{ADMIN_PORT, EdgeSettings, EnvoyError, file_source, to_yaml};

/// Most downstream connections Envoy accepts at once, over all listeners.
pub const MAX_DOWNSTREAM_CONNECTIONS: u64 = 100_000;

/// The bootstrap document.
pub fn document(edge: &EdgeSettings) -> serde_json::Value {
    let layout = &edge.layout;
    json!({
        "node": { "id": "tunnel-relay", "cluster": "tunnel-relay" },
        "admin": {
            "address": {
                "socket_address": { "address": edge.relay.to_string(), "port_value": ADMIN_PORT }
            }
        },
        "dynamic_resources": {
            "lds_config": file_source(&layout.lds(), &layout.dir),
            "cds_config": file_source(&layout.cds(), &layout.dir),
        },
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                }
            }]
        },
    })
}

/// The bootstrap as YAML.
pub fn render(edge: &EdgeSettings) -> Result<String, EnvoyError> {
    to_yaml("envoy.yaml", &document(edge))
}
