//! The one-command local demo (`bash demo/run.sh`, README "Try it"): a single-node cluster,
//! an nspawn VPS behind an "internet" namespace, the chart installed, a sample web app and
//! README Example 1 pointed at the VPS; then it shows `kubectl get en,pb` and a request from
//! the internet answered by the app, prints how to try things, and waits for Ctrl-C, after
//! which everything is removed (the handles' drops). A progress line per stage, with its time.
//!
//! Usage: `tb-demo <repo dir>` (the chart and README fixtures are read from there; the
//! workspace's binaries from this binary's own directory).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testbed::node::{INTERNET_IP, Node, VPS_IP};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Stages {
    start: Instant,
    last: Instant,
}

impl Stages {
    fn done(&mut self, what: &str) {
        let now = Instant::now();
        println!(
            "[demo {:>6.1}s] {what} ({:.1}s)",
            now.duration_since(self.start).as_secs_f64(),
            now.duration_since(self.last).as_secs_f64()
        );
        self.last = now;
    }
}

fn kubectl(node: &Node, args: &[&str], input: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = node
        .kubectl()?
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let repo = PathBuf::from(std::env::args().nth(1).ok_or("usage: tb-demo <repo dir>")?);
    let exe = std::env::current_exe()?;
    let bins = exe.parent().ok_or("no binary directory")?;
    let mut stages = Stages {
        start: Instant::now(),
        last: Instant::now(),
    };

    let archives = testbed::images::standard(bins)?;
    stages.done("images written (operator, uplink, echo, pause)");
    let node = Node::start(&archives).await?;
    stages.done("single-node cluster Ready");
    let (internet, vps) = node.internet_with_vps()?;
    stages.done("VPS booting behind the \"internet\" namespace");

    let chart = repo.join("charts/tunnel");
    let out = node
        .helm()?
        .arg("install")
        .arg("tunnel")
        .arg(&chart)
        .args(["--namespace", "tunnel", "--create-namespace"])
        .args(["--wait", "--timeout", "180s"])
        .output()?;
    if !out.status.success() {
        return Err(format!("helm install: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    stages.done("helm install charts/tunnel: operator Ready");

    kubectl(
        &node,
        &["apply", "-f", "-"],
        Some(&testbed::echo::manifests()),
    )?;
    kubectl(
        &node,
        &[
            "wait",
            "--for=condition=Available",
            "deploy/echo",
            "--timeout=120s",
        ],
        None,
    )?;
    stages.done("sample app my-web deployed");
    vps.wait_ready(&internet, Duration::from_secs(120))?;
    node.create_ssh_secret(&vps, "vps-ssh-secret")?;
    let example1 = std::fs::read_to_string(repo.join("tests/fixtures/readme/example1.yaml"))?
        .replace("203.0.113.10", &VPS_IP.to_string());
    kubectl(&node, &["apply", "-f", "-"], Some(&example1))?;
    until("EdgeNode edge-node Ready", Duration::from_secs(300), || {
        kubectl(
            &node,
            &[
                "get",
                "pb",
                "public-web",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        )
        .is_ok_and(|s| s == "True")
    })?;
    stages.done("README Example 1 applied: EdgeNode and PortBinding Ready");

    let mut answer = String::new();
    until("an answer through the VPS", Duration::from_secs(60), || {
        let out = internet
            .command("curl")
            .args(["-sS", "--max-time", "3", &format!("http://{VPS_IP}/")])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                answer = String::from_utf8_lossy(&o.stdout).into_owned();
                true
            }
            _ => false,
        }
    })?;
    stages.done("request from the internet answered");

    println!(
        "\n$ kubectl get en,pb\n{}",
        kubectl(&node, &["get", "en,pb"], None)?
    );
    println!(
        "$ ip netns exec {ns} curl http://{VPS_IP}/\n{answer}",
        ns = internet.name()
    );
    println!(
        "Try it (in another shell, as root):\n\
         \x20 export KUBECONFIG={kc}\n\
         \x20 {kubectl} get en,pb -o wide; {kubectl} describe edgenode edge-node\n\
         \x20 {kubectl} -n tunnel get pods; {kubectl} -n tunnel logs deploy/tunnel\n\
         \x20 ip netns exec {ns} curl http://{VPS_IP}/     # from the \"internet\" ({INTERNET_IP})\n\
         \x20 {kubectl} apply -f tests/fixtures/readme/example2.yaml   # TCP 443 + UDP 53 too\n\
         Ctrl-C removes everything.",
        kc = node.kubeconfig_path().display(),
        kubectl = testbed::node::node_bin("kubectl")?.display(),
        ns = internet.name(),
    );
    tokio::signal::ctrl_c().await?;
    println!("\nremoving everything...");
    stages.last = Instant::now();
    drop(vps);
    drop(internet);
    drop(node);
    stages.done("removed");
    Ok(())
}
