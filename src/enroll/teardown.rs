//! Teardown: stop Envoy first (no new public connections), then the relay, then remove the
//! units, every managed file, the state, the binaries and any leftover interface, put back an
//! Envoy binary that was there before enrollment (kept at `envoy.pre-tunnel`), delete Envoy's
//! system user when enrollment made it (and only then), and check that nothing is left.
//! Only our own files go: the fixed paths of the layout and the TLS files the state file
//! lists; `/etc/envoy/tls`, `/etc/envoy` and `/etc/tunnel` are removed only when that leaves
//! them empty, so a file someone else put there stays (review L8).
//! Every step tolerates a half-enrolled VPS (missing units or files).
//! Live sysctl values and NIC offload settings are not restored: they revert at the next boot
//! now that the drop-in and the unit are gone.

use tracing::info;

use super::EnrollError;
use super::layout;
use super::observe;
use super::state::State;
use crate::ssh::{Script, Session, SshError};

/// Our files: the fixed paths and the TLS files in `state` (only well-named ones in the SDS
/// directory: the state file is read from the VPS). The Envoy binary is not among them.
fn own_files(state: Option<&State>) -> Vec<String> {
    let mut files: Vec<String> = observe::FIXED_PATHS
        .iter()
        .filter(|p| **p != layout::ENVOY)
        .map(|p| (*p).to_owned())
        .collect();
    let tls = format!("{}/", layout::ENVOY_TLS_DIR);
    files.extend(
        state
            .into_iter()
            .flat_map(|s| s.files.keys())
            .filter(|p| p.strip_prefix(&tls).is_some_and(layout::is_sds_file_name))
            .cloned(),
    );
    files
}

/// The teardown commands, in order (pure, for tests and docs); `state` is the VPS's state
/// file, when it has a readable one.
pub fn scripts(state: Option<&State>) -> Result<Vec<Script>, SshError> {
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
    remove_files = remove_files.code("; rm -f --");
    for path in own_files(state) {
        remove_files = remove_files.code(" ").path(&path)?;
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
    remove_files =
        remove_files.code(" -maxdepth 1 -name '.tunnel.*' -type f -delete 2>/dev/null; for d in");
    for dir in layout::OWN_DIRS {
        remove_files = remove_files.code(" ").path(dir)?;
    }
    remove_files = remove_files.code("; do if [ -d \"$d\" ] && [ ! -L \"$d\" ]; then rmdir -- \"$d\" 2>/dev/null; fi; done; true");
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
        layout::RELAY_DOCUMENT,
        layout::STATE,
        layout::ENVOY_BOOTSTRAP,
        layout::RELAY_UNIT_FILE,
        layout::ENVOY_UNIT_FILE,
        layout::SYSCTL,
    ] {
        s = s.code(" ").path(path)?;
    }
    Ok(s.code("; do if [ -e \"$t\" ]; then ours=1; fi; done"))
}

/// The check that nothing of ours is left (read-only): prints one line per leftover. Pass
/// `envoy_ours: false` when the Envoy binary is not ours to remove (put back, or never ours).
/// A directory of ours counts only when nothing else is in it.
pub fn leftovers_script(state: Option<&State>, envoy_ours: bool) -> Result<Script, SshError> {
    let mut s = Script::read("for p in");
    let mut paths = own_files(state);
    paths.extend(
        [
            "/etc/systemd/system/multi-user.target.wants/tunnel-relay.service",
            "/etc/systemd/system/multi-user.target.wants/tunnel-envoy.service",
        ]
        .map(str::to_owned),
    );
    if envoy_ours {
        paths.push(layout::ENVOY.to_owned());
    }
    for path in &paths {
        s = s.code(" ").path(path)?;
    }
    s = s.code("; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"$p\"; fi; done; for d in");
    for dir in layout::OWN_DIRS {
        s = s.code(" ").path(dir)?;
    }
    s = s
        .code("; do if [ -d \"$d\" ] && [ -z \"$(ls -A -- \"$d\")\" ]; then echo \"$d\"; fi; done");
    s = s.code("; for u in tunnel-relay.service tunnel-envoy.service; do if systemctl is-active --quiet \"$u\"; then echo \"$u running\"; fi; done; if ip link show dev ");
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
    let state = session
        .run_ok(
            &Script::read("if [ -f ")
                .path(layout::STATE)?
                .code(" ]; then cat -- ")
                .path(layout::STATE)?
                .code("; fi"),
        )
        .await?;
    let state = State::parse(&state.stdout);
    for script in scripts(state.as_ref())? {
        info!(host = %session.options().target(), command = %script, "teardown step");
        session.run_ok(&script).await?;
    }
    let left = session
        .run_ok(&leftovers_script(state.as_ref(), envoy_ours)?)
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
    fn envoy_stops_before_the_relay_and_only_our_files_go() {
        let mut state = State::default();
        for path in [
            "/etc/envoy/tls/default-web.sds.yaml",
            "/etc/envoy/tls/../../passwd",
            "/etc/shadow",
        ] {
            state.files.insert(
                path.into(),
                crate::enroll::state::FileRecord {
                    sha256: String::new(),
                    mode: "640".into(),
                },
            );
        }
        let s = scripts(Some(&state)).unwrap();
        let text: Vec<&str> = s.iter().map(Script::as_str).collect();
        assert!(text[0].contains("'tunnel-envoy.service'"), "{}", text[0]);
        assert!(text[1].contains("'tunnel-relay.service'"), "{}", text[1]);
        let all = text.join("\n");
        for path in [
            "/etc/envoy/envoy.yaml",
            "/etc/tunnel/state.json",
            "/etc/envoy/tls/default-web.sds.yaml",
            "/usr/local/bin/envoy",
            "/usr/local/bin/tunnelctl",
            "/etc/sysctl.d/99-tunnel.conf",
        ] {
            assert!(all.contains(&format!("'{path}'")), "{path}");
        }
        // No recursive removal; the state file names nothing outside the SDS directory.
        assert!(!all.contains("rm -rf") && !all.contains("rm -r "), "{all}");
        assert!(!all.contains("shadow") && !all.contains("passwd'"), "{all}");
        assert!(all.contains("rmdir -- \"$d\""), "{all}");
        assert!(s.iter().all(|s| s.access() == Access::Write));
        assert!(
            all.contains("envoy.pre-tunnel"),
            "a kept binary is put back"
        );
        assert!(all.contains("userdel"), "our user goes");
        let left = leftovers_script(Some(&state), true).unwrap();
        assert_eq!(left.access(), Access::Read);
        assert!(left.as_str().contains("default-web.sds.yaml"));
        assert!(
            !leftovers_script(None, false)
                .unwrap()
                .as_str()
                .contains("'/usr/local/bin/envoy'")
        );
    }
}
