//! Teardown: stop Envoy first (no new public connections), then the relay, then remove the
//! units, every managed file, the state, the binaries and any leftover interface, and check
//! that nothing is left. Every step tolerates a half-enrolled VPS (missing units or files).
//! Live sysctl values and NIC offload settings are not restored: they revert at the next boot
//! now that the drop-in and the unit are gone.

use tracing::info;

use super::EnrollError;
use super::layout;
use crate::ssh::{Script, Session, SshError};

/// The teardown commands, in order (pure, for tests and docs).
pub fn scripts() -> Result<Vec<Script>, SshError> {
    let stop = |unit: &str| -> Result<Script, SshError> {
        Ok(Script::write("u=")
            .quoted(unit)?
            .code(
                "; systemctl disable --quiet \"$u\" 2>/dev/null || true; systemctl stop \"$u\" 2>/dev/null || true; \
                 if systemctl is-active --quiet \"$u\"; then echo \"$u is still running\" >&2; exit 1; fi",
            ))
    };
    let mut remove_files = Script::write("rm -rf --");
    for path in [layout::ENVOY_DIR, layout::TUNNEL_DIR] {
        remove_files = remove_files.code(" ").path(path)?;
    }
    remove_files = remove_files.code("; rm -f --");
    for path in [
        layout::TUNNELCTL,
        layout::ENVOY,
        layout::SYSCTL,
        layout::RELAY_UNIT_FILE,
        layout::ENVOY_UNIT_FILE,
    ] {
        remove_files = remove_files.code(" ").path(path)?;
    }
    remove_files = remove_files.code("; find");
    for dir in layout::TEMP_DIRS {
        remove_files = remove_files.code(" ").path(dir)?;
    }
    remove_files = remove_files.code(" -maxdepth 1 -name '.tunnel.*' -delete 2>/dev/null; true");
    Ok(vec![
        stop(layout::ENVOY_UNIT)?,
        stop(layout::RELAY_UNIT)?,
        Script::write("if ip link show dev ")
            .quoted(layout::RELAY_INTERFACE)?
            .code(" >/dev/null 2>&1; then ip link del dev ")
            .quoted(layout::RELAY_INTERFACE)?
            .code("; fi"),
        remove_files,
        Script::write("systemctl daemon-reload; systemctl reset-failed ")
            .quoted(layout::ENVOY_UNIT)?
            .code(" ")
            .quoted(layout::RELAY_UNIT)?
            .code(" 2>/dev/null; true"),
    ])
}

/// The check that nothing is left (read-only): prints one line per leftover.
pub fn leftovers_script() -> Result<Script, SshError> {
    let mut s = Script::read("for p in");
    for path in [
        layout::ENVOY_DIR,
        layout::TUNNEL_DIR,
        layout::TUNNELCTL,
        layout::ENVOY,
        layout::SYSCTL,
        layout::RELAY_UNIT_FILE,
        layout::ENVOY_UNIT_FILE,
        "/etc/systemd/system/multi-user.target.wants/tunnel-relay.service",
        "/etc/systemd/system/multi-user.target.wants/tunnel-envoy.service",
    ] {
        s = s.code(" ").path(path)?;
    }
    s = s.code("; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"$p\"; fi; done; for u in tunnel-relay.service tunnel-envoy.service; do if systemctl is-active --quiet \"$u\"; then echo \"$u running\"; fi; done; if ip link show dev ");
    Ok(s.quoted(layout::RELAY_INTERFACE)?
        .code(" >/dev/null 2>&1; then echo 'interface wg-relay'; fi; true"))
}

/// Tears the VPS down. Safe to run on a VPS that was never (or only partly) enrolled, and
/// safe to run twice.
pub async fn teardown(session: &mut Session) -> Result<(), EnrollError> {
    for script in scripts()? {
        info!(host = %session.options().target(), command = %script, "teardown step");
        session.run_ok(&script).await?;
    }
    let left = session.run_ok(&leftovers_script()?).await?.stdout_text();
    let left: Vec<&str> = left.lines().filter(|l| !l.trim().is_empty()).collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(EnrollError::Leftovers(left.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::Access;

    #[test]
    fn envoy_stops_before_the_relay_and_everything_goes() {
        let s = scripts().unwrap();
        let text: Vec<&str> = s.iter().map(Script::as_str).collect();
        assert!(text[0].contains("'tunnel-envoy.service'"), "{}", text[0]);
        assert!(text[1].contains("'tunnel-relay.service'"), "{}", text[1]);
        let all = text.join("\n");
        for path in [
            "/etc/envoy",
            "/etc/tunnel",
            "/usr/local/bin/envoy",
            "/usr/local/bin/tunnelctl",
            "/etc/sysctl.d/99-tunnel.conf",
        ] {
            assert!(all.contains(&format!("'{path}'")), "{path}");
        }
        assert!(s.iter().all(|s| s.access() == Access::Write));
        assert_eq!(leftovers_script().unwrap().access(), Access::Read);
    }
}
