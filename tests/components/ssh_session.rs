//! The russh client against a real nspawn VPS: host key verification (plain, hashed and
//! `[host]:port` known_hosts entries, an RSA host key pinned alone; refusal without knownHosts; a second machine on the same
//! address refused), every authentication method of the Secret (ed25519, ECDSA, an encrypted
//! key with its passphrase, password; RSA refused with a clear error), one connection reused
//! for many commands, atomic uploads with modes, the per-command timeout (the command killed on
//! the VPS), reconnection after
//! the connection is cut, a command that stops reading its input (the upload ends with it),
//! a local input that fails to read (the command's input ended, the VPS's file kept),
//! no secret in the logs, and never a password to a host whose key
//! was not verified.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testbed::netns::Netns;
use testbed::vps::{Vps, VpsOptions};
use tunnel::ssh::session::read_text;
use tunnel::ssh::{
    Credentials, Packing, Script, Session, SshError, SshOptions, StreamedFile, write_file,
    write_file_streamed,
};

use crate::enroll_support::Capture;

const PASSWORD: &str = "pw-Zq8r7K2m-never-logged";
const PASSPHRASE: &str = "pp-Xv3n9W4t-never-logged";
const SECRET_CONTENT: &[u8] = b"{\"privateKey\":\"RELAY-SECRET-Hk29dLq0\"}\n";

/// An SSH key pair made by `ssh-keygen` (comment `name`, file `dir/name`): (private, public).
pub fn keygen(dir: &Path, name: &str, args: &[&str]) -> (String, String) {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-C", name, "-f"])
        .arg(&path)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
    (
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub")).unwrap(),
    )
}

fn secret(pairs: &[(&str, &str)]) -> Credentials {
    let data: BTreeMap<String, Vec<u8>> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
    Credentials::from_secret_data(&data).unwrap()
}

/// Connects with the Secret `pairs`, checks the session runs commands as root, closes it.
async fn logs_in_as_root(host: &str, pairs: &[(&str, &str)]) {
    let mut s = connect(host, pairs).await.unwrap();
    assert_eq!(
        s.run_ok(&Script::read("id -u"))
            .await
            .unwrap()
            .stdout_text(),
        "0\n"
    );
    s.close().await;
}

/// A session to `host:22` with the Secret `pairs`.
async fn connect(host: &str, pairs: &[(&str, &str)]) -> Result<Session, SshError> {
    Session::connect(options(host, 22), secret(pairs)).await
}

fn options(host: &str, port: u16) -> SshOptions {
    SshOptions {
        host: host.to_owned(),
        port,
        user: "root".into(),
        connect_timeout: Duration::from_secs(20),
        keepalive_interval: Duration::from_secs(5),
        keepalive_max: 3,
        command_timeout: Duration::from_secs(60),
        insecure_skip_host_key_verification: false,
        reconnect_attempts: 3,
    }
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A VPS on `<subnet>.2` in `internet`, reached through `ifname` from `<subnet>.1`, booted
/// and answering SSH.
fn boot_vps(internet: &Netns, subnet: &str, ifname: &str) -> Vps {
    let vps_options = VpsOptions {
        address: Some(format!("{subnet}.2").parse().unwrap()),
        peer_address: Some(format!("{subnet}.1").parse().unwrap()),
        peer_ifname: Some(ifname.into()),
    };
    let vps = Vps::boot(internet, &vps_options).unwrap();
    vps.wait_ready(internet, Duration::from_secs(90)).unwrap();
    vps
}

/// The Secret of `vps`: its client key and its host key.
fn credentials(vps: &Vps) -> Credentials {
    let key = vps.client_private_key().unwrap();
    let known = vps.known_hosts_line().unwrap();
    secret(&[("privateKey", &key), ("knownHosts", &known)])
}

#[test]
fn ssh_authenticates_verifies_host_keys_and_keeps_secrets_out_of_logs() {
    let internet = Netns::new("inet").unwrap();
    let vps = boot_vps(&internet, "10.97.0", "sshwan0");
    let host = vps.address().to_string();

    let keys = tempfile::tempdir().unwrap();
    let (ecdsa, ecdsa_pub) = keygen(
        keys.path(),
        "ecdsa",
        &["-t", "ecdsa", "-b", "256", "-N", ""],
    );
    let (ecdsa384, ecdsa384_pub) = keygen(
        keys.path(),
        "ecdsa384",
        &["-t", "ecdsa", "-b", "384", "-N", ""],
    );
    let (ecdsa521, ecdsa521_pub) = keygen(
        keys.path(),
        "ecdsa521",
        &["-t", "ecdsa", "-b", "521", "-N", ""],
    );
    let (encrypted, encrypted_pub) = keygen(
        keys.path(),
        "encrypted",
        &["-t", "ed25519", "-N", PASSPHRASE],
    );
    let (rsa, rsa_pub) = keygen(keys.path(), "rsa", &["-t", "rsa", "-b", "2048", "-N", ""]);
    let ed25519 = vps.client_private_key().unwrap();

    // Root may log in with a password too, and sshd also listens on 2222.
    let setup = format!(
        "printf '%s\\n' '{}' '{}' '{}' '{}' '{}' >> /root/.ssh/authorized_keys && echo 'root:{PASSWORD}' | chpasswd && ssh-keygen -q -t rsa -b 3072 -N '' -f /etc/ssh/test_host_rsa_key && printf 'PermitRootLogin yes\\nPort 22\\nPort 2222\\nHostKey /etc/ssh/test_host_rsa_key\\n' > /etc/ssh/sshd_config.d/01-test.conf && systemctl restart ssh",
        ecdsa_pub.trim(),
        ecdsa384_pub.trim(),
        ecdsa521_pub.trim(),
        encrypted_pub.trim(),
        rsa_pub.trim()
    );
    vps.ssh(&internet, &setup).unwrap();
    let known_line = vps.known_hosts_line().unwrap();
    let known_file = keys.path().join("known_hosts");
    std::fs::write(&known_file, format!("{known_line}\n")).unwrap();
    assert!(
        Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&known_file)
            .output()
            .unwrap()
            .status
            .success()
    );
    let hashed = std::fs::read_to_string(&known_file).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let (_, key_part) = known_line.split_once(' ').unwrap();
    let bracketed = format!("[{host}]:2222 {key_part}");
    // Only the VPS's RSA host key (sshd offers it beside ed25519) pinned: the client asks for
    // it (rsa-sha2) and verifies it.
    let rsa_host = vps
        .ssh(&internet, "cat /etc/ssh/test_host_rsa_key.pub")
        .unwrap();
    let rsa_host = String::from_utf8(rsa_host.stdout).unwrap();
    let mut rsa_fields = rsa_host.split_whitespace();
    let rsa_pin = format!(
        "{host} {} {}",
        rsa_fields.next().unwrap(),
        rsa_fields.next().unwrap()
    );
    assert!(rsa_pin.contains(" ssh-rsa "), "{rsa_pin}");

    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();

    internet
        .enter(|| {
            tracing::subscriber::with_default(subscriber, || {
                run(async {
                    // ed25519 key, plain known_hosts line; many commands on one connection.
                    let mut s = connect(
                        &host,
                        &[("privateKey", &ed25519), ("knownHosts", &known_line)],
                    )
                    .await
                    .unwrap();
                    let first = s
                        .run_ok(&Script::read("echo \"$SSH_CONNECTION\""))
                        .await
                        .unwrap()
                        .stdout_text();
                    for _ in 0..5 {
                        let again = s
                            .run_ok(&Script::read("echo \"$SSH_CONNECTION\""))
                            .await
                            .unwrap()
                            .stdout_text();
                        assert_eq!(again, first, "one connection for every command");
                    }
                    let out = s
                        .run(&Script::read("echo out; echo err >&2; exit 7"))
                        .await
                        .unwrap();
                    assert_eq!(
                        (out.status, out.stdout_text().as_str(), out.stderr_tail().as_str()),
                        (7, "out\n", "err")
                    );

                    // Atomic upload with a mode; the content travels on stdin.
                    write_file(&mut s, "/etc/tunnel-test/secret.json", SECRET_CONTENT, 0o600)
                        .await
                        .unwrap();
                    let out = s
                        .run_ok(&Script::read(
                            "stat -c %a /etc/tunnel-test/secret.json; cat /etc/tunnel-test/secret.json; ls -a /etc/tunnel-test",
                        ))
                        .await
                        .unwrap()
                        .stdout_text();
                    assert_eq!(
                        out,
                        format!(
                            "600\n{}.\n..\nsecret.json\n",
                            String::from_utf8_lossy(SECRET_CONTENT)
                        )
                    );
                    let hostile = write_file(&mut s, "/tmp/x; touch /tmp/pwned", b"x", 0o600).await;
                    assert!(matches!(hostile, Err(SshError::UnsafeArgument(_))), "{hostile:?}");
                    let name = "it's $(touch /tmp/pwned) `x`";
                    let out = s
                        .run_ok(&Script::read("printf '%s' ").quoted(name).unwrap())
                        .await
                        .unwrap();
                    assert_eq!(out.stdout_text(), name);
                    let pwned = s.run(&Script::read("test -e /tmp/pwned")).await.unwrap();
                    assert_eq!(pwned.status, 1, "nothing was injected");

                    // The connection is cut under us: the next command reconnects.
                    // (The script's parent is `timeout`; its parent is sshd's session.)
                    let _ = s
                        .run(&Script::write("kill -9 $(cut -d' ' -f4 /proc/$PPID/stat)"))
                        .await;
                    let after = s
                        .run_ok(&Script::read("echo \"$SSH_CONNECTION\""))
                        .await
                        .unwrap()
                        .stdout_text();
                    assert_ne!(after, first, "a new connection after the cut");
                    s.close().await;

                    // Per-command timeout; the session stays usable.
                    let mut short = options(&host, 22);
                    short.command_timeout = Duration::from_secs(2);
                    let mut s = Session::connect(
                        short,
                        secret(&[("privateKey", &ed25519), ("knownHosts", &hashed)]),
                    )
                    .await
                    .unwrap();
                    // The shell keeps `sleep` as its child (a command follows it).
                    let slow = s.run(&Script::read("sleep 30; true")).await;
                    assert!(matches!(slow, Err(SshError::CommandTimeout { .. })), "{slow:?}");
                    assert_eq!(
                        s.run_ok(&Script::read("echo ok")).await.unwrap().stdout_text(),
                        "ok\n"
                    );
                    let log = s.log().entries();
                    assert!(log.iter().any(|e| e.command == "sleep 30; true" && e.status.is_none()));
                    // The timed-out command and its child are killed on the VPS, not left
                    // running (bounded wait, well under the 30 s it would sleep).
                    let mut alive = String::new();
                    for _ in 0..20 {
                        let out = s.run(&Script::read("pgrep -a -x sleep")).await.unwrap();
                        alive = out.stdout_text();
                        if out.status == 1 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    assert_eq!(alive, "", "the timed-out command still runs on the VPS");
                    s.close().await;

                    let mut s = connect(&host, &[("privateKey", &ed25519), ("knownHosts", &rsa_pin)])
                        .await
                        .unwrap();
                    assert_eq!(s.run_ok(&Script::read("echo rsa")).await.unwrap().stdout_text(), "rsa\n");
                    s.close().await;

                    // [host]:port entries for a non-22 port; a plain entry does not cover it.
                    let s = Session::connect(
                        options(&host, 2222),
                        secret(&[("privateKey", &ed25519), ("knownHosts", &bracketed)]),
                    )
                    .await
                    .unwrap();
                    s.close().await;
                    let e = Session::connect(
                        options(&host, 2222),
                        secret(&[("privateKey", &ed25519), ("knownHosts", &known_line)]),
                    )
                    .await
                    .unwrap_err();
                    assert_eq!(e.category(), "SSHHostKeyRejected", "{e}");
                    assert!(e.to_string().contains(&format!("[{host}]:2222")), "{e}");

                    // ECDSA keys on each NIST curve.
                    for key in [&ecdsa, &ecdsa384, &ecdsa521] {
                        logs_in_as_root(&host, &[("privateKey", key), ("knownHosts", &known_line)]).await;
                    }

                    // Encrypted key: with its passphrase it works; without, or wrong, a clear error.
                    let s = connect(
                        &host,
                        &[
                            ("privateKey", &encrypted),
                            ("passphrase", PASSPHRASE),
                            ("knownHosts", &known_line),
                        ],
                    )
                    .await
                    .unwrap();
                    s.close().await;
                    let e = connect(
                        &host,
                        &[("privateKey", &encrypted), ("knownHosts", &known_line)],
                    )
                    .await
                    .unwrap_err();
                    assert!(e.to_string().contains("add its \"passphrase\""), "{e}");
                    let e = connect(
                        &host,
                        &[
                            ("privateKey", &encrypted),
                            ("passphrase", "wrong-passphrase"),
                            ("knownHosts", &known_line),
                        ],
                    )
                    .await
                    .unwrap_err();
                    assert!(e.to_string().contains("could not be decrypted"), "{e}");

                    // Password.
                    logs_in_as_root(&host, &[("password", PASSWORD), ("knownHosts", &known_line)]).await;
                    let e = connect(
                        &host,
                        &[("password", "wrong-password"), ("knownHosts", &known_line)],
                    )
                    .await
                    .unwrap_err();
                    assert_eq!(e.category(), "SSHAuthFailed", "{e}");

                    // RSA, the common legacy key: logs in. Debian's sshd refuses SHA-1 RSA
                    // signatures, so this also proves the client signs with rsa-sha2.
                    logs_in_as_root(&host, &[("privateKey", &rsa), ("knownHosts", &known_line)]).await;

                    // No knownHosts: refused unless verification is explicitly skipped.
                    let e = connect(&host, &[("privateKey", &ed25519)]).await
                        .unwrap_err();
                    assert!(matches!(e, SshError::NoKnownHosts { .. }), "{e}");
                    assert!(e.to_string().contains("insecureSkipHostKeyVerification"), "{e}");
                    let mut insecure = options(&host, 22);
                    insecure.insecure_skip_host_key_verification = true;
                    let s = Session::connect(insecure.clone(), secret(&[("privateKey", &ed25519)]))
                        .await
                        .unwrap();
                    s.close().await;

                    // Never a password to an unverified host (issue 24, M4): root's right
                    // password, verification skipped, with and without a key beside it.
                    for pairs in [
                        vec![("password", PASSWORD)],
                        vec![("privateKey", ed25519.as_str()), ("password", PASSWORD)],
                    ] {
                        match Session::connect(insecure.clone(), secret(&pairs)).await {
                            Err(e) => {
                                assert_eq!(e.category(), "SSHPasswordNeedsHostKey", "{e}");
                                for field in ["\"password\"", "\"knownHosts\"", "ssh.insecureSkipHostKeyVerification"] {
                                    assert!(e.to_string().contains(field), "{field}: {e}");
                                }
                                assert!(!e.to_string().contains(PASSWORD));
                            }
                            Ok(s) => {
                                s.close().await;
                                panic!("logged in with a password on an unverified host");
                            }
                        }
                    }
                });
            });
        })
        .unwrap();

    // sshd saw exactly the two password attempts on the verified host (the right password
    // and the wrong one), none from the unverified attempts above.
    let journal = String::from_utf8_lossy(
        &vps.ssh(
            &internet,
            "journalctl -q --no-pager _COMM=sshd | grep 'password for root'; true",
        )
        .unwrap()
        .stdout,
    )
    .into_owned();
    assert_eq!(journal.lines().count(), 2, "{journal}");

    // Another machine answering on the same address is refused by the pinned key.
    drop(vps);
    let imposter = boot_vps(&internet, "10.97.0", "sshwan0");
    let imposter_key = imposter.client_private_key().unwrap();
    let e = internet
        .enter(|| {
            run(async {
                connect(
                    &host,
                    &[("privateKey", &imposter_key), ("knownHosts", &known_line)],
                )
                .await
                .unwrap_err()
            })
        })
        .unwrap();
    assert!(matches!(e, SshError::HostKeyRejected { .. }), "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");

    // Nothing secret reached the logs.
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("SSH session established"),
        "logs were captured"
    );
    for key in [&ed25519, &ecdsa, &ecdsa384, &ecdsa521, &encrypted, &rsa] {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!logs.contains(line), "private key material in the logs");
        }
    }
    for secret in [PASSWORD, PASSPHRASE, "RELAY-SECRET-Hk29dLq0"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

#[test]
fn keepalives_notice_a_dead_link_and_the_next_command_reconnects() {
    let internet = Netns::new("inet").unwrap();
    let vps = boot_vps(&internet, "10.96.5", "kawan0");
    let credentials = credentials(&vps);
    let mut opts = options(&vps.address().to_string(), 22);
    opts.keepalive_interval = Duration::from_secs(1);
    opts.keepalive_max = 2;

    internet
        .enter(|| {
            run(async {
                let mut s = Session::connect(opts, credentials).await.unwrap();
                let first = s
                    .run_ok(&Script::read("echo \"$SSH_CONNECTION\""))
                    .await
                    .unwrap()
                    .stdout_text();

                // The link goes dark: no RST, no FIN, just silence. Keepalives notice, and
                // whoever waits on `lost()` is woken (the operator checks the VPS at once).
                let lost = s.lost();
                let woken = tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(30), lost.notified())
                        .await
                        .is_ok()
                });
                internet
                    .run(&["ip", "link", "set", "kawan0", "down"])
                    .unwrap();
                let mut noticed = false;
                for _ in 0..60 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if !s.is_connected() {
                        noticed = true;
                        break;
                    }
                }
                assert!(
                    woken.await.unwrap(),
                    "the session's lost() signal fired when the keepalives gave up"
                );
                internet
                    .run(&["ip", "link", "set", "kawan0", "up"])
                    .unwrap();
                internet
                    .run(&["ip", "addr", "replace", "10.96.5.1/24", "dev", "kawan0"])
                    .unwrap();
                assert!(noticed, "keepalives did not declare the connection dead");

                // The next command reconnects (with backoff while the link comes back).
                let after = s
                    .run_ok(&Script::read("echo \"$SSH_CONNECTION\""))
                    .await
                    .unwrap()
                    .stdout_text();
                assert_ne!(after, first, "a new connection");
                s.close().await;
            });
        })
        .unwrap();
}

/// Either end stopping ends an upload at once, never a timeout after the rest of the bytes.
/// The VPS's end: a command that exits without reading all of its input (a full disk under
/// `gzip -dc`, a digest refused halfway) comes back with its status as an [`Output`] (the
/// command's business), and the session runs the next command; the input is far larger than
/// the SSH window and the socket buffers, so the upload cannot finish by itself before the
/// command has ended. The operator's end: an input it cannot read to the end (a read error,
/// plain and gzipped, or an input shorter than announced) ends the command's input: the VPS
/// refuses the short upload and keeps its file.
#[test]
fn an_upload_ends_as_soon_as_either_end_stops() {
    let internet = Netns::new("inet").unwrap();
    let vps = boot_vps(&internet, "10.96.6", "sswan0");
    let credentials = credentials(&vps);
    let input = vec![0x5a_u8; 64 << 20];

    internet
        .enter(|| {
            run(async {
                let opts = options(&vps.address().to_string(), 22);
                let mut s = Session::connect(opts, credentials).await.unwrap();
                // Fails after a few bytes: its status and message, not a timeout.
                let out = s
                    .run_with_stdin(
                        &Script::write(
                            "head -c 1000 >/dev/null; echo 'stopped reading' >&2; exit 3",
                        ),
                        &input,
                    )
                    .await
                    .unwrap();
                assert_eq!(out.status, 3, "{}", out.stderr_tail());
                assert!(
                    out.stderr_tail().contains("stopped reading"),
                    "{}",
                    out.stderr_tail()
                );
                // Succeeds without reading it all: the error that says the input was not
                // taken (not a timeout, not a transport error that would drop the session).
                let err = s
                    .run_with_stdin(&Script::write("head -c 1000 >/dev/null"), &input)
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, SshError::InputNotRead { len, .. } if len == 64 << 20),
                    "{err:?}"
                );
                // The connection is as good as before.
                let ok = s.run_ok(&Script::read("echo ok")).await.unwrap();
                assert_eq!(ok.stdout_text(), "ok\n");

                // The operator's own copy fails to read halfway (a real read error: the
                // rest of the stream is a directory), or ends halfway (a file cut short
                // after its digest was taken): the command's input is ended there, the VPS
                // refuses the short upload and keeps the file it had, and the error says
                // what failed locally, not a timeout or a digest mismatch.
                let path = "/var/lib/tunnel-test/streamed.bin";
                write_file(&mut s, path, b"the old binary", 0o755).await.unwrap();
                let half: usize = 8 << 20;
                let gzipped = gzip_of_noise(2 * half);
                assert!(gzipped.len() > half);
                for (packing, fails, why) in [
                    (Packing::Plain, true, "Is a directory"),
                    (Packing::Gzip, true, "Is a directory"),
                    (Packing::Plain, false, "ended before its announced length"),
                ] {
                    // A valid start of what it claims to be, so the VPS reads on.
                    let start = match packing {
                        Packing::Plain => &input[..half],
                        Packing::Gzip => &gzipped[..half],
                    };
                    let source: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if fails {
                        let directory = tokio::fs::File::open("/").await.unwrap();
                        Box::new(tokio::io::AsyncReadExt::chain(start, directory))
                    } else {
                        Box::new(start)
                    };
                    let file = StreamedFile {
                        path,
                        len: 2 * half as u64,
                        packing,
                        sha256: &"ab".repeat(32),
                        mode: 0o755,
                        group: None,
                    };
                    let err = write_file_streamed(&mut s, &file, source, None)
                        .await
                        .unwrap_err();
                    assert_eq!(err.category(), "SSHInputUnreadable", "{packing:?} {why}: {err}");
                    assert!(
                        matches!(&err, SshError::InputUnreadable { read, len, reason, .. }
                            if *read == half as u64 && *len == 2 * half as u64 && reason.contains(why)),
                        "{packing:?}: {err:?}"
                    );
                    let left = read_text(
                        &mut s,
                        &Script::read("cat /var/lib/tunnel-test/streamed.bin; ls -A /var/lib/tunnel-test"),
                    )
                    .await
                    .unwrap();
                    assert_eq!(left, "the old binarystreamed.bin\n", "{packing:?} {why}: kept, no temporary file left");
                }
                s.close().await;
            });
        })
        .unwrap();
}

/// `len` bytes of noise (xorshift), gzipped: a stream that does not shrink.
fn gzip_of_noise(len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = Vec::with_capacity(len);
    while noise.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.extend_from_slice(&state.to_le_bytes());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&noise).unwrap();
    gz.finish().unwrap()
}
