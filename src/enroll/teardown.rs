//! Teardown: stop Envoy first (no new public connections), then the relay, then remove the
//! units, every managed file, the state, the binaries and any leftover interface, put back an
//! Envoy binary that was there before enrollment (kept at `envoy.pre-tunnel`), delete Envoy's
//! system user when enrollment made it (and only then), and check that nothing is left.
//! Every step tolerates a half-enrolled VPS (missing units or files).
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
    let kept = format!("{}{}", layout::ENVOY, layout::PRESERVED_SUFFIX);
    // The Envoy binary goes only when something else of ours is here: a VPS never enrolled,
    // or one already torn down (its own binary put back), keeps its Envoy.
    let mut remove_files = traces(Script::write(""))?;
    remove_files = remove_files.code("; rm -rf --");
    for path in [layout::ENVOY_DIR, layout::TUNNEL_DIR] {
        remove_files = remove_files.code(" ").path(path)?;
    }
    remove_files = remove_files.code("; rm -f --");
    for path in [
        layout::TUNNELCTL,
        layout::SYSCTL,
        layout::RELAY_UNIT_FILE,
        layout::ENVOY_UNIT_FILE,
    ] {
        remove_files = remove_files.code(" ").path(path)?;
    }
    remove_files = remove_files
        .code("; if [ -n \"$ours\" ]; then rm -f -- ")
        .path(layout::ENVOY)?
        .code("; fi; if [ -e ")
        .path(&kept)?
        .code(" ]; then mv -f -- ")
        .path(&kept)?
        .code(" ")
        .path(layout::ENVOY)?
        .code("; fi; find");
    for dir in layout::TEMP_DIRS {
        remove_files = remove_files.code(" ").path(dir)?;
    }
    remove_files = remove_files.code(" -maxdepth 1 -name '.tunnel.*' -delete 2>/dev/null; true");
    let user = Script::write("u=")
        .quoted(layout::ENVOY_USER)?
        .code("; c=")
        .quoted(layout::ENVOY_USER_COMMENT)?
        .code(
            "; if [ \"$(getent passwd \"$u\" | cut -d: -f5)\" = \"$c\" ]; then userdel \"$u\"; \
             if getent group \"$u\" >/dev/null && [ -z \"$(getent group \"$u\" | cut -d: -f4)\" ]; then groupdel \"$u\"; fi; fi; true",
        );
    Ok(vec![
        stop(layout::ENVOY_UNIT)?,
        stop(layout::RELAY_UNIT)?,
        Script::write("if ip link show dev ")
            .quoted(layout::RELAY_INTERFACE)?
            .code(" >/dev/null 2>&1; then ip link del dev ")
            .quoted(layout::RELAY_INTERFACE)?
            .code("; fi"),
        remove_files,
        user,
        Script::write("systemctl daemon-reload; systemctl reset-failed ")
            .quoted(layout::ENVOY_UNIT)?
            .code(" ")
            .quoted(layout::RELAY_UNIT)?
            .code(" 2>/dev/null; true"),
    ])
}

/// Appends shell code that sets `ours=1` when anything enrollment installs is on the VPS
/// (a kept pre-existing binary counts).
fn traces(script: Script) -> Result<Script, SshError> {
    let mut s = script.code("ours=; for t in");
    for path in [
        &format!("{}{}", layout::ENVOY, layout::PRESERVED_SUFFIX) as &str,
        layout::TUNNELCTL,
        layout::TUNNEL_DIR,
        layout::ENVOY_DIR,
        layout::RELAY_UNIT_FILE,
        layout::ENVOY_UNIT_FILE,
        layout::SYSCTL,
    ] {
        s = s.code(" ").path(path)?;
    }
    Ok(s.code("; do if [ -e \"$t\" ]; then ours=1; fi; done"))
}

/// The check that nothing is left (read-only): prints one line per leftover. Pass
/// `envoy_ours: false` when the Envoy binary is not ours to remove (put back, or never ours).
pub fn leftovers_script(envoy_ours: bool) -> Result<Script, SshError> {
    let mut s = Script::read("for p in");
    let paths = [
        layout::ENVOY_DIR,
        layout::TUNNEL_DIR,
        layout::TUNNELCTL,
        layout::ENVOY,
        layout::SYSCTL,
        layout::RELAY_UNIT_FILE,
        layout::ENVOY_UNIT_FILE,
        "/etc/systemd/system/multi-user.target.wants/tunnel-relay.service",
        "/etc/systemd/system/multi-user.target.wants/tunnel-envoy.service",
    ];
    for path in paths
        .into_iter()
        .filter(|p| envoy_ours || *p != layout::ENVOY)
    {
        s = s.code(" ").path(path)?;
    }
    s = s.code("; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"$p\"; fi; done; for u in tunnel-relay.service tunnel-envoy.service; do if systemctl is-active --quiet \"$u\"; then echo \"$u running\"; fi; done; if ip link show dev ");
    s = s
        .quoted(layout::RELAY_INTERFACE)?
        .code(" >/dev/null 2>&1; then echo 'interface wg-relay'; fi; if [ \"$(getent passwd ")
        .quoted(layout::ENVOY_USER)?
        .code(" | cut -d: -f5)\" = ")
        .quoted(layout::ENVOY_USER_COMMENT)?
        .code(" ]; then echo 'user ")
        .code(layout::ENVOY_USER)
        .code("'; fi; true");
    Ok(s)
}

/// Tears the VPS down. Safe to run on a VPS that was never (or only partly) enrolled, and
/// safe to run twice.
pub async fn teardown(session: &mut Session) -> Result<(), EnrollError> {
    let kept = format!("{}{}", layout::ENVOY, layout::PRESERVED_SUFFIX);
    let found = session
        .run_ok(
            &traces(Script::read(""))?
                .code("; if [ -n \"$ours\" ]; then echo ours; fi; if [ -e ")
                .path(&kept)?
                .code(" ]; then echo kept; fi"),
        )
        .await?
        .stdout_text();
    let envoy_ours = found.contains("ours") && !found.contains("kept");
    for script in scripts()? {
        info!(host = %session.options().target(), command = %script, "teardown step");
        session.run_ok(&script).await?;
    }
    let left = session
        .run_ok(&leftovers_script(envoy_ours)?)
        .await?
        .stdout_text();
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
        assert!(
            all.contains("envoy.pre-tunnel"),
            "a kept binary is put back"
        );
        assert!(all.contains("userdel"), "our user goes");
        assert_eq!(leftovers_script(true).unwrap().access(), Access::Read);
        assert!(
            !leftovers_script(false)
                .unwrap()
                .as_str()
                .contains("'/usr/local/bin/envoy'")
        );
    }
}
