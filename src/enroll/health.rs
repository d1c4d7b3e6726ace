//! Health of an enrolled VPS as a structured result: both units (active, enabled) and the
//! relay's own report (`tunnelctl status`, JSON: readiness and per-peer handshakes). One
//! read-only command, whose answer is bounded ([`MAX_OUTPUT`]) and read into typed values
//! only: the VPS is not trusted with the size or shape of what it says.

use base64::Engine as _;
use serde::Deserialize;

use super::EnrollError;
use super::error::quote_vps;
use super::layout;
use super::observe::{UNITS_SCRIPT, UnitBlocks, UnitFound};
use crate::ssh::{Script, Session};

/// One WireGuard peer as the relay reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The peer's public key.
    #[serde(default)]
    pub public_key: String,
    /// Seconds since the last completed handshake, if any.
    #[serde(default)]
    pub last_handshake_seconds_ago: Option<u64>,
    /// Whether that handshake is recent enough for the relay to count the peer as up.
    #[serde(default)]
    pub handshake_fresh: bool,
}

/// The most the health command may print: the relay's report, base64, with a few thousand
/// peers (each about 300 bytes of JSON), and the unit lines. More is refused unread
/// ([`crate::ssh::SshError::OutputTooLarge`]).
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// What `tunnelctl status` said, read into these fields only (the relay owns the format;
/// other fields are skipped without being kept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RelayStatus {
    /// The relay's interface (`wg-relay`), as the VPS said it (cut to 200 characters).
    #[serde(default)]
    pub interface: String,
    /// Whether the relay considers itself ready (interface up, a fresh handshake).
    #[serde(default)]
    pub ready: bool,
    /// Its peers.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

/// Health of the VPS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// `tunnel-envoy.service`.
    pub envoy: Option<UnitFound>,
    /// `tunnel-relay.service`.
    pub relay: Option<UnitFound>,
    /// The relay's report; `None` when it gave none (not installed, not running).
    pub relay_status: Option<RelayStatus>,
    /// Why there is no relay report, when there is none.
    pub relay_status_error: Option<String>,
    /// Connections (TCP) and sessions (UDP) Envoy holds on the public ports now, from its
    /// loopback admin; `None` when it could not be read.
    pub active_connections: Option<u64>,
}

impl Health {
    /// Envoy runs.
    pub fn envoy_active(&self) -> bool {
        self.envoy.as_ref().is_some_and(UnitFound::is_active)
    }

    /// The relay runs.
    pub fn relay_active(&self) -> bool {
        self.relay.as_ref().is_some_and(UnitFound::is_active)
    }

    /// Both run and the relay reports ready (at least one fresh uplink handshake).
    pub fn is_healthy(&self) -> bool {
        self.envoy_active()
            && self.relay_active()
            && self.relay_status.as_ref().is_some_and(|s| s.ready)
    }
}

/// The health command (read-only).
pub fn script() -> Result<Script, crate::ssh::SshError> {
    Script::read(UNITS_SCRIPT)
        .code("; echo; t=")
        .path(layout::TUNNELCTL)
    .map(|s| {
        s.code(
            "; if [ -x \"$t\" ]; then o=$(\"$t\" status 2>/dev/null); printf 'relay-exit %s\\n' \"$?\"; printf 'relay %s\\n' \"$(printf '%s' \"$o\" | base64 -w0)\"; else printf 'relay-exit 127\\n'; fi; ",
        )
        .code(ACTIVE_CONNECTIONS)
        .code(
            "; true",
        )
        .with_max_output(MAX_OUTPUT)
    })
}

/// Reads Envoy's open downstream connections and UDP sessions from its admin on the VPS's
/// loopback (`127.0.0.1:40600`, [`crate::plan::envoy::ADMIN_PORT`]) with bash's `/dev/tcp`
/// (nothing to install), summing the public listeners' (`listener.0.0.0.0_<port>`,
/// `listener.[__]_<port>`; not their per-worker copies `…worker_<n>…`, which count the same
/// connections again) and the UDP proxies' counters; prints `active <n>`, or nothing when the
/// admin did not answer.
const ACTIVE_CONNECTIONS: &str = r#"s=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/40600 && printf "%s\r\nHost: admin\r\nConnection: close\r\n\r\n" "GET /stats?filter=downstream_%28cx%7Csess%29_active HTTP/1.1" >&3 && cat <&3' 2>/dev/null); if printf '%s\n' "$s" | grep -q '^HTTP/1.[01] 200'; then printf 'active %s\n' "$(printf '%s\n' "$s" | grep -E '^((listener\.0\.0\.0\.0|listener\.\[__\])_[0-9]+\.downstream_cx_active|udp\.[^:]*\.downstream_sess_active): [0-9]+' | awk -F': ' '{n+=$2} END {print n+0}')"; fi"#;

/// Parses the health command's output.
pub fn parse(output: &str) -> Health {
    let mut health = Health::default();
    let mut exit = String::new();
    let mut report = Vec::new();
    let mut units = UnitBlocks::default();
    for line in output.lines() {
        if units.line(line) {
            continue;
        }
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "relay-exit" => rest.trim().clone_into(&mut exit),
            "active" => health.active_connections = rest.trim().parse().ok(),
            "relay" => {
                report = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    units.end();
    health.envoy = units.units.remove(layout::ENVOY_UNIT);
    health.relay = units.units.remove(layout::RELAY_UNIT);
    match serde_json::from_slice::<RelayStatus>(&report) {
        Ok(mut status) => {
            status.interface = quote_vps(&status.interface);
            health.relay_status = Some(status);
        }
        Err(_) => {
            health.relay_status_error = Some(if exit == "127" {
                "tunnelctl is not installed".into()
            } else {
                let text = String::from_utf8_lossy(&report);
                let text: String = text.trim().chars().take(300).collect();
                format!("`tunnelctl status` exited {exit} without a status report: {text}")
            });
        }
    }
    health
}

/// Checks the VPS's health.
pub async fn check(session: &mut Session) -> Result<Health, EnrollError> {
    let out = session.run_ok(&script()?).await?;
    Ok(parse(&out.stdout_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn healthy_relay_and_envoy() {
        let out = format!(
            "Id=tunnel-relay.service\nActiveState=active\nUnitFileState=enabled\n\nId=tunnel-envoy.service\nActiveState=active\nUnitFileState=enabled\n\nrelay-exit 0\nrelay {}\n",
            b64(
                r#"{"ready":true,"peers":[{"publicKey":"k","lastHandshakeSecondsAgo":3,"handshakeFresh":true,"extra":1}]}"#
            )
        );
        let h = parse(&out);
        assert!(h.is_healthy());
        assert_eq!(h.relay_status.unwrap().peers[0].public_key, "k");
    }

    #[test]
    fn missing_tunnelctl_and_stopped_envoy() {
        let h = parse(
            "Id=tunnel-relay.service\nActiveState=inactive\nUnitFileState=\n\nId=tunnel-envoy.service\nActiveState=failed\nUnitFileState=enabled\n\nrelay-exit 127\n",
        );
        assert!(!h.envoy_active());
        assert!(!h.is_healthy());
        assert_eq!(
            h.relay_status_error.as_deref(),
            Some("tunnelctl is not installed")
        );
        assert_eq!(script().unwrap().access(), crate::ssh::Access::Read);
        assert_eq!(h.active_connections, None, "no admin answer: not counted");
    }

    #[test]
    fn open_connections_are_read_from_envoys_loopback_admin() {
        let admin = format!(
            "/dev/tcp/{}/{}",
            crate::plan::envoy::bootstrap::ADMIN_ADDRESS,
            crate::plan::envoy::ADMIN_PORT
        );
        assert!(ACTIVE_CONNECTIONS.contains(&admin), "the admin's address");
        let h = parse(
            "Id=tunnel-envoy.service\nActiveState=active\nUnitFileState=enabled\n\nactive 3\n",
        );
        assert_eq!(h.active_connections, Some(3));
    }
}
