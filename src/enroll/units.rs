//! The files enrollment renders itself: the two systemd units and the sysctl drop-in. Pure
//! functions of the host tuning, so their hashes only change when the tuning does.
//!
//! Both units run under systemd's sandbox with only what they need (docs/security.md):
//! - the relay as root with `CAP_NET_ADMIN` alone (TUN device, addresses, routes; it reads
//!   its 0600 root document), its control socket in a `RuntimeDirectory`;
//! - Envoy as its own system user `tunnel-envoy` with `CAP_NET_BIND_SERVICE` alone (public
//!   ports below 1024), owning its files in `/etc/envoy` (re-owned on every start, so an
//!   upgrade from root-owned files or a hand edit cannot lock it out), mounted read-only.
//!
//! Both: `NoNewPrivileges`, `ProtectSystem=strict`, `ProtectHome`, `PrivateTmp`, kernel
//! tunables/modules/logs/cgroups protected, address families limited to IP, Unix and
//! netlink, no SUID/SGID, no realtime, personality locked.

use super::desired::HostTuning;
use super::layout;

/// The sandbox both units share.
const SANDBOX: &str = "NoNewPrivileges=yes\n\
     ProtectSystem=strict\n\
     ProtectHome=yes\n\
     PrivateTmp=yes\n\
     ProtectKernelTunables=yes\n\
     ProtectKernelModules=yes\n\
     ProtectKernelLogs=yes\n\
     ProtectControlGroups=yes\n\
     RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n\
     RestrictSUIDSGID=yes\n\
     RestrictRealtime=yes\n\
     LockPersonality=yes\n";

/// `tunnel-relay.service`: the relay agent (`tunnelctl run`, following `/etc/tunnel/relay.json`)
/// owning `wg-relay`. `Type=notify`: the agent reports ready once `wg-relay` is up, so Envoy
/// (ordered after it) starts with the tunnel interface in place. The agent watches its document, so a new one needs no service action; a
/// restart is only needed for a new binary or unit.
pub fn relay_unit(host: &HostTuning) -> String {
    let offloads = if host.disable_nic_offloads {
        // Turn off GRO/GSO/TSO on the NIC of the default route, when ethtool is installed;
        // the leading `-` keeps a failure here from blocking the relay. `$$` is systemd's `$`.
        "ExecStartPre=-/bin/sh -c 'command -v ethtool >/dev/null || exit 0; set -- $$(ip -o route show default); while [ $$# -gt 1 ]; do if [ \"$$1\" = dev ]; then exec ethtool -K \"$$2\" gro off gso off tso off; fi; shift; done'\n"
    } else {
        ""
    };
    format!(
        "# Managed by Tunnel: rewritten whenever it differs from what the operator expects.\n\
         [Unit]\n\
         Description=Tunnel relay agent (userspace WireGuard, {iface})\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         TimeoutStartSec=60\n\
         {offloads}\
         ExecStart={tunnelctl} run\n\
         Restart=always\n\
         RestartSec=2\n\
         LimitNOFILE=65536\n\
         RuntimeDirectory=tunnel\n\
         RuntimeDirectoryMode=0700\n\
         CapabilityBoundingSet=CAP_NET_ADMIN\n\
         AmbientCapabilities=CAP_NET_ADMIN\n\
         {sandbox}         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        iface = layout::RELAY_INTERFACE,
        tunnelctl = layout::TUNNELCTL,
        sandbox = SANDBOX,
    )
}

/// `tunnel-envoy.service`: Envoy with the file-based bootstrap; requires and starts after the
/// relay.
pub fn envoy_unit() -> String {
    format!(
        "# Managed by Tunnel: rewritten whenever it differs from what the operator expects.\n\
         [Unit]\n\
         Description=Envoy edge proxy (Tunnel)\n\
         Requires={relay}\n\
         After=network.target {relay}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User={user}\n\
         Group={user}\n\
         ExecStart={envoy} -c {bootstrap} --disable-hot-restart\n\
         Restart=always\n\
         RestartSec=2\n\
         LimitNOFILE=1048576\n\
         CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
         AmbientCapabilities=CAP_NET_BIND_SERVICE\n\
         PrivateDevices=yes\n\
         ReadOnlyPaths={dir}\n\
         {sandbox}         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        relay = layout::RELAY_UNIT,
        envoy = layout::ENVOY,
        bootstrap = layout::ENVOY_BOOTSTRAP,
        user = layout::ENVOY_USER,
        dir = layout::ENVOY_DIR,
        sandbox = SANDBOX,
    )
}

/// `/etc/sysctl.d/99-tunnel.conf`: socket buffer ceilings for Envoy's UDP listeners and the
/// relay. IPv4 forwarding is deliberately not turned on: Envoy terminates every public
/// connection and dials the uplinks itself, so the VPS routes nothing.
pub fn sysctl_drop_in(host: &HostTuning) -> String {
    format!(
        "# Managed by Tunnel: rewritten whenever it differs from what the operator expects.\n\
         # Socket buffer ceilings so Envoy's UDP listeners and the relay ride out bursts.\n\
         net.core.rmem_max = {n}\n\
         net.core.wmem_max = {n}\n",
        n = host.max_socket_buffer_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_requires_and_follows_the_relay() {
        let unit = envoy_unit();
        assert!(unit.contains("Requires=tunnel-relay.service\n"));
        assert!(unit.contains("After=network.target tunnel-relay.service\n"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn both_units_are_sandboxed_with_only_their_capability() {
        let envoy = envoy_unit();
        assert!(envoy.contains("User=tunnel-envoy\n"));
        assert!(envoy.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));
        assert!(envoy.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE\n"));
        let relay = relay_unit(&HostTuning::default());
        assert!(relay.contains("CapabilityBoundingSet=CAP_NET_ADMIN\n"));
        assert!(!relay.contains("User="));
        for unit in [&envoy, &relay] {
            for line in [
                "NoNewPrivileges=yes",
                "ProtectSystem=strict",
                "ProtectHome=yes",
                "PrivateTmp=yes",
            ] {
                assert!(unit.contains(&format!("{line}\n")), "{line} in {unit}");
            }
        }
    }

    #[test]
    fn relay_unit_runs_tunnelctl_and_tunes_offloads_on_request() {
        let mut host = HostTuning::default();
        let plain = relay_unit(&host);
        assert!(plain.contains("ExecStart=/usr/local/bin/tunnelctl run\n"));
        assert!(plain.contains("Type=notify\n"));
        assert!(!plain.contains("ethtool"));
        host.disable_nic_offloads = true;
        assert!(relay_unit(&host).contains("ethtool -K"));
    }

    #[test]
    fn sysctl_carries_the_buffer_size() {
        let host = HostTuning {
            max_socket_buffer_bytes: 1_048_576,
            disable_nic_offloads: false,
        };
        assert!(sysctl_drop_in(&host).contains("net.core.rmem_max = 1048576\n"));
        assert!(!sysctl_drop_in(&host).contains("ip_forward"));
    }
}
