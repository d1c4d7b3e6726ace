//! The Tunnel data plane: the agent documents shared with the operator, and (later) the
//! userspace WireGuard driver, the relay agent `tunnelctl` and the uplink agent.
