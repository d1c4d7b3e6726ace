//! Helpers shared by the tests that enroll a real VPS and run the real agents: finding the
//! data-plane binaries, bounded waiting, and an SSH session opened from the internet namespace.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use testbed::netns::Netns;
use testbed::vps::Vps;
use tunnel::ssh::{Credentials, Session, SshOptions};

/// A data-plane binary next to this test's own target directory.
pub fn agent_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p uplink --bins` first",
        path.display()
    );
    path
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("timed out waiting for {what}");
}

pub fn with_session<R: Send>(
    internet: &Netns,
    vps: &Vps,
    f: impl AsyncFnOnce(&mut Session) -> R + Send,
) -> R {
    let data = BTreeMap::from([
        (
            "privateKey".to_owned(),
            vps.client_private_key().unwrap().into_bytes(),
        ),
        (
            "knownHosts".to_owned(),
            vps.known_hosts_line().unwrap().into_bytes(),
        ),
    ]);
    let host = vps.address().to_string();
    internet
        .enter(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut spec: tunnel::crd::SshSpec = serde_json::from_str(
                        r#"{"secretRef":{"name":"vps-ssh"},"connectTimeout":"20s"}"#,
                    )
                    .unwrap();
                    spec.port = 22;
                    let options = SshOptions::from_spec(&host, &spec).unwrap();
                    let mut s =
                        Session::connect(options, Credentials::from_secret_data(&data).unwrap())
                            .await
                            .unwrap();
                    let out = f(&mut s).await;
                    s.close().await;
                    out
                })
        })
        .unwrap()
}
