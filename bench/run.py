#!/usr/bin/env python3
"""Data-plane benchmark (issue 6): the same traffic over six paths, side by side.

Topology, built fresh for every (round, path) in network namespaces this script makes:

    bench-client ──veth── bench-vps ──veth ("internet")── bench-cluster ──veth── bench-server
    192.0.2.2/28          192.0.2.1/28 | 192.0.2.17/28      192.0.2.18/28 | 10.201.0.1/24  10.201.0.2/24
                          Envoy, relay                      uplink: tunnel end + DNAT      iperf3 -s, bench-httpd
    tunnel network 10.200.0.0/24: VPS end .1, cluster end .2

Paths (names used in the tables):
    direct        client → server, routed by the kernel through vps and cluster (no proxy)
    envoy         client → Envoy (vps) → server, no tunnel
    boringtun     client → Envoy → boringtun-cli ═ boringtun-cli → DNAT → server
    wireguard-go  client → Envoy → wireguard-go ═ wireguard-go → DNAT → server
    rathole       client → Envoy → rathole server ═(Noise over TCP)═ rathole client → server
    ours          client → Envoy → tunnelctl run ═ uplink (its own DNAT) → server

Metrics per (round, path): iperf3 TCP 1 stream, TCP 4 streams, TCP 1 stream reversed
(server → client), UDP at 500 Mbit/s offered (loss %), wrk keep-alive requests/s and p99
latency, wrk with "Connection: close" (new TCP connections per second), and the CPU time of the
tunnel processes (utime+stime from /proc/<pid>/stat, before/after). Medians over the rounds;
ratios relative to boringtun-cli.

Run as root: `bash bench/setup.sh && bash bench/run.sh` (see docs/benchmarks.md).
Traffic goes only to addresses inside the namespaces made here. Everything is removed at the
end, also on failure or Ctrl-C; processes are ended by PID.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("BENCH_ROOT", "/var/cache/tunnel/bench"))
BIN = BENCH / "bin"
# Our agents (tunnelctl, uplink, BUILD); BENCH_OURS=DIR measures another build (A/B).
OURS = Path(os.environ.get("BENCH_OURS", BENCH / "bin" / "ours"))
# The path "ours-base" (not in the default list): another build of our agents, e.g. the
# commit before a change, measured in the same run as "ours" (A/B on the same machine state).
OURS_BASE = Path(os.environ.get("BENCH_OURS_BASE", BENCH / "bin" / "ours-base"))
ENVOY = Path(os.environ.get("ENVOY", "/var/cache/tunnel/bin/envoy"))

NS_CLIENT, NS_VPS, NS_CLUSTER, NS_SERVER = (
    "bench-client", "bench-vps", "bench-cluster", "bench-server")
NAMESPACES = (NS_CLIENT, NS_VPS, NS_CLUSTER, NS_SERVER)
CLIENT_IP, VPS_PUBLIC = "192.0.2.2", "192.0.2.1"
VPS_WAN, CLUSTER_WAN = "192.0.2.17", "192.0.2.18"
CLUSTER_LAN, SERVER_IP = "10.201.0.1", "10.201.0.2"
RELAY_TUN, UPLINK_TUN = "10.200.0.1", "10.200.0.2"
WG_PORT = 51820
MTU = 1420
IPERF_PORT, HTTP_PORT = 5201, 8080
RATHOLE_PORT = 2333
UDP_RATE = "500M"
UDP_LEN = 1200          # below every tunnel's MTU: no IP fragmentation on any path
UDP_BUFFER = 4 * 1024 * 1024
TAG = f"{os.getpid() % 100000}"   # unique WireGuard interface names (shared /var/run/wireguard)

PATHS = ["direct", "envoy", "boringtun", "wireguard-go", "rathole", "ours"]
# "envoy-allow" and "envoy-limits": Envoy alone with a binding's L4 policy (issue 18) in the
# shape the planner renders (src/plan/envoy/lds.rs), to measure its cost against "envoy".
OPTIONAL_PATHS = ["ours-base", "envoy-allow", "envoy-limits"]
LABELS = {
    "direct": "direct (kernel routing, no proxy)",
    "envoy": "Envoy alone (no tunnel)",
    "boringtun": "Envoy + boringtun-cli (reference)",
    "wireguard-go": "Envoy + wireguard-go",
    "rathole": "Envoy + rathole (Noise)",
    "ours": "Envoy + our agents (tunnelctl/uplink)",
    "ours-base": "Envoy + our agents, base build",
    "envoy-allow": "Envoy alone, allow-list of 64 CIDRs",
    "envoy-limits": "Envoy alone, allow-list + connection and rate limits",
}
# The policy of the "envoy-*" paths: 64 source ranges, the client's last (the planner sorts
# them); limits high enough that the measurement is never refused, so what is measured is
# their cost, not their effect.
POLICY_RANGES = [(f"10.{i}.0.0", 16) for i in range(63)] + [("192.0.2.0", 28)]
POLICY_MAX_CONNECTIONS = 100_000
POLICY_RATE = 1_000_000
METRICS = [
    # key, header, unit, higher is better
    ("tcp1", "TCP 1 stream", "Gbit/s", True),
    ("tcp4", "TCP 4 streams", "Gbit/s", True),
    ("tcp1r", "TCP 1 stream, reverse", "Gbit/s", True),
    ("udp_loss", "UDP loss @500 Mbit/s", "%", False),
    ("rps", "wrk req/s", "req/s", True),
    ("p99", "wrk p99", "ms", False),
    ("lat1_p99", "p99, 1 connection", "ms", False),
    ("cps", "new conn/s", "conn/s", True),
    ("cpu_tcp1", "tunnel CPU, TCP 1 stream", "s per GB", False),
]

_children: list[subprocess.Popen] = []
_workdir: Path | None = None
_verbose = False
_ours_offloads: str | None = None
_perf_dir: Path | None = None
_with_base = False


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*args: str, ns: str | None = None, check: bool = True, capture: bool = False,
       env: dict | None = None, timeout: float | None = 120, inp: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    if _verbose:
        log("$ " + " ".join(cmd))
    res = subprocess.run(cmd, check=False, text=True, capture_output=True, env=env,
                         timeout=timeout, input=inp)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} → {res.returncode}: {res.stderr.strip()}")
    return res.stdout if capture else ""


def spawn(name: str, args: list[str], ns: str, env: dict | None = None) -> subprocess.Popen:
    """Starts a long-running process inside `ns`. `ip netns exec` execs, so the PID is the tool."""
    assert _workdir is not None
    logf = open(_workdir / f"{name}.log", "ab")
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.Popen(["ip", "netns", "exec", ns] + args, stdout=logf, stderr=logf,
                            stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
    proc.bench_name = name  # type: ignore[attr-defined]
    _children.append(proc)
    _write_pidfile()
    return proc


def _write_pidfile() -> None:
    """For bench/run.sh's backstop, should this script be killed before its own cleanup."""
    pidfile = os.environ.get("BENCH_PIDFILE")
    if pidfile:
        Path(pidfile).write_text("".join(f"{p.pid} {p.bench_name}\n"  # type: ignore
                                         for p in _children))


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    if proc in _children:
        _children.remove(proc)
        _write_pidfile()


def stop_all() -> None:
    for proc in list(reversed(_children)):
        stop(proc)


def delete_namespaces() -> None:
    for ns in NAMESPACES:
        if Path(f"/run/netns/{ns}").exists():
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def cleanup() -> None:
    stop_all()
    delete_namespaces()
    for sock in Path("/var/run/wireguard").glob(f"b*{TAG}*.sock") if Path(
            "/var/run/wireguard").exists() else []:
        sock.unlink(missing_ok=True)


def machine_busy(seconds: float = 3.0) -> str:
    """Share of all CPUs busy over `seconds` (from /proc/stat): is anything else running?"""
    def sample() -> tuple[int, int]:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(f), f[3] + f[4]          # total, idle + iowait
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return f"{100 * (1 - (i1 - i0) / max(1, t1 - t0)):.0f}% of the CPUs busy over {seconds:.0f} s"


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])     # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# topology

def build_topology() -> None:
    delete_namespaces()
    for ns in NAMESPACES:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    links = [  # (ns_a, if_a, addr_a, ns_b, if_b, addr_b)
        (NS_CLIENT, "c0", f"{CLIENT_IP}/28", NS_VPS, "v0", f"{VPS_PUBLIC}/28"),
        (NS_VPS, "v1", f"{VPS_WAN}/28", NS_CLUSTER, "k0", f"{CLUSTER_WAN}/28"),
        (NS_CLUSTER, "k1", f"{CLUSTER_LAN}/24", NS_SERVER, "s0", f"{SERVER_IP}/24"),
    ]
    for ns_a, if_a, addr_a, ns_b, if_b, addr_b in links:
        sh("ip", "link", "add", f"bx{TAG}", "type", "veth", "peer", "name", f"by{TAG}")
        sh("ip", "link", "set", f"bx{TAG}", "netns", ns_a)
        sh("ip", "link", "set", f"by{TAG}", "netns", ns_b)
        sh("ip", "link", "set", f"bx{TAG}", "name", if_a, ns=ns_a)
        sh("ip", "link", "set", f"by{TAG}", "name", if_b, ns=ns_b)
        sh("ip", "addr", "add", addr_a, "dev", if_a, ns=ns_a)
        sh("ip", "addr", "add", addr_b, "dev", if_b, ns=ns_b)
        sh("ip", "link", "set", if_a, "up", ns=ns_a)
        sh("ip", "link", "set", if_b, "up", ns=ns_b)
    sh("ip", "route", "add", "default", "via", VPS_PUBLIC, ns=NS_CLIENT)
    sh("ip", "route", "add", "10.201.0.0/24", "via", CLUSTER_WAN, ns=NS_VPS)
    sh("ip", "route", "add", "default", "via", VPS_WAN, ns=NS_CLUSTER)
    sh("ip", "route", "add", "default", "via", CLUSTER_LAN, ns=NS_SERVER)
    for ns in (NS_VPS, NS_CLUSTER):
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns)
    for ns in NAMESPACES:
        sh("sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000", ns=ns)
        sh("sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", ns=ns)
    spawn("iperf3-server", ["iperf3", "-s", "-B", SERVER_IP, "-p", str(IPERF_PORT)], NS_SERVER)
    spawn("httpd", [str(BIN / "bench-httpd"), "-listen", f"{SERVER_IP}:{HTTP_PORT}"], NS_SERVER,
          env={"GOMAXPROCS": "1"})


# ---------------------------------------------------------------------------------------------
# Envoy

def policy_chains(name: str, filters: list, policy: str | None) -> list:
    """The filter chains of one TCP binding: as is, or with the planner's L4 policy: the chain
    matches only the allowed sources (and, for "limits", holds connection_limit and
    local_ratelimit before tcp_proxy); a second chain closes every other source."""
    if policy is None:
        return [{"filters": filters}]
    ranges = [{"address_prefix": a, "prefix_len": n} for a, n in POLICY_RANGES]
    limits = []
    if policy == "limits":
        limits = [
            {"name": "envoy.filters.network.connection_limit", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
                "stat_prefix": name, "max_connections": POLICY_MAX_CONNECTIONS}},
            {"name": "envoy.filters.network.local_ratelimit", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": name, "token_bucket": {
                    "max_tokens": POLICY_RATE, "tokens_per_fill": POLICY_RATE,
                    "fill_interval": "1s"}}}]
    refused = f"{name}_refused"
    return [
        {"name": name, "filter_chain_match": {"direct_source_prefix_ranges": ranges},
         "filters": limits + filters},
        {"name": refused, "filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": refused, "cluster": refused}}]}]


def udp_matcher(policy: str | None) -> dict:
    """Every source to the cluster, or (with a policy) only the allowed ones."""
    route = {"action": {"name": "route", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route",
        "cluster": "udp"}}}
    if policy is None:
        return {"on_no_match": route}
    return {"matcher_list": {"matchers": [{"predicate": {"single_predicate": {
        "input": {"name": "envoy.matching.inputs.source_ip", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput"}},
        "custom_match": {"name": "envoy.matching.matchers.ip", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.matching.input_matchers.ip.v3.Ip",
            "stat_prefix": "udp",
            "cidr_ranges": [{"address_prefix": a, "prefix_len": n} for a, n in POLICY_RANGES]}}}},
        "on_match": route}]}}


def envoy_bootstrap(tcp_targets: dict[int, tuple[str, int]], udp_target: tuple[str, int],
                    policy: str | None = None) -> str:
    """Static bootstrap: TCP proxy per port, a UDP proxy on the iperf3 port with raised buffers;
    with `policy` ("allow" or "limits"), each binding has the planner's L4 policy."""
    def cluster(name: str, host: str, port: int) -> dict:
        return {"name": name, "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": host, "port_value": port}}}}]}]}}
    listeners, clusters = [], []
    for port, (host, tport) in tcp_targets.items():
        name = f"tcp_{port}"
        listeners.append({
            "name": name,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
            "filter_chains": policy_chains(name, [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": name, "cluster": name}}], policy)})
        clusters.append(cluster(name, host, tport))
    host, uport = udp_target
    listeners.append({
        "name": f"udp_{IPERF_PORT}",
        "address": {"socket_address": {"protocol": "UDP", "address": "0.0.0.0",
                                       "port_value": IPERF_PORT}},
        "udp_listener_config": {},
        "socket_options": [
            {"level": 1, "name": 8, "int_value": UDP_BUFFER, "state": "STATE_PREBIND"},
            {"level": 1, "name": 7, "int_value": UDP_BUFFER, "state": "STATE_PREBIND"}],
        "listener_filters": [{
            "name": "envoy.filters.udp_listener.udp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
                "stat_prefix": "udp", "idle_timeout": "30s",
                "matcher": udp_matcher(policy)}}]})
    clusters.append(cluster("udp", host, uport))
    return json.dumps({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}}, indent=1)


def start_envoy(tcp_targets: dict[int, tuple[str, int]], udp_target: tuple[str, int],
                policy: str | None = None):
    assert _workdir is not None
    cfg = _workdir / "envoy.json"
    cfg.write_text(envoy_bootstrap(tcp_targets, udp_target, policy))
    return spawn("envoy", [str(ENVOY), "-c", str(cfg), "--disable-hot-restart",
                           "--concurrency", "2", "-l", "warning"], NS_VPS)


# ---------------------------------------------------------------------------------------------
# paths: each returns (tunnel processes, envoy process or None, target address)

def wg_keys() -> tuple[str, str]:
    priv = sh("wg", "genkey", capture=True).strip()
    pub = sh("wg", "pubkey", capture=True, inp=priv + "\n").strip()
    return priv, pub


def nft_forward(iface: str) -> None:
    """The kernel forwarding an uplink does, for the reference WireGuard peers."""
    rules = f"""
table ip benchfwd {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{iface}" tcp dport {{ {IPERF_PORT}, {HTTP_PORT} }} dnat to {SERVER_IP}
    iifname "{iface}" udp dport {IPERF_PORT} dnat to {SERVER_IP}
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.200.0.0/24 oifname "k1" masquerade
  }}
}}
"""
    sh("nft", "-f", "-", ns=NS_CLUSTER, inp=rules)


def wait_iface(ns: str, iface: str, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "show", iface],
                          capture_output=True).returncode == 0 and \
                Path(f"/var/run/wireguard/{iface}.sock").exists():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{iface} did not come up in {ns}")


def setup_wireguard(kind: str) -> list[subprocess.Popen]:
    v_if, c_if = f"b{kind[0]}v{TAG}", f"b{kind[0]}c{TAG}"
    procs = []
    for ns, iface in ((NS_VPS, v_if), (NS_CLUSTER, c_if)):
        if kind == "boringtun":
            args = [str(BIN / "boringtun-cli"), "-f", "--disable-drop-privileges", iface]
            env = {"WG_LOG_LEVEL": "error"}
        else:
            args = [str(BIN / "wireguard-go"), "-f", iface]
            env = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
                   "LOG_LEVEL": os.environ.get("WGGO_LOG_LEVEL", "error")}
        procs.append(spawn(f"{kind}-{ns}", args, ns, env=env))
        wait_iface(ns, iface)
    v_priv, v_pub = wg_keys()
    c_priv, c_pub = wg_keys()
    assert _workdir is not None
    (_workdir / "v.key").write_text(v_priv + "\n")
    (_workdir / "c.key").write_text(c_priv + "\n")
    sh("wg", "set", v_if, "private-key", str(_workdir / "v.key"), "listen-port", str(WG_PORT),
       "peer", c_pub, "allowed-ips", f"{UPLINK_TUN}/32", ns=NS_VPS)
    sh("wg", "set", c_if, "private-key", str(_workdir / "c.key"),
       "peer", v_pub, "endpoint", f"{VPS_WAN}:{WG_PORT}", "allowed-ips", f"{RELAY_TUN}/32",
       "persistent-keepalive", "25", ns=NS_CLUSTER)
    for ns, iface, addr in ((NS_VPS, v_if, RELAY_TUN), (NS_CLUSTER, c_if, UPLINK_TUN)):
        sh("ip", "addr", "add", f"{addr}/24", "dev", iface, ns=ns)
        sh("ip", "link", "set", iface, "mtu", str(MTU), "up", ns=ns)
    nft_forward(c_if)
    # boringtun-cli sends its first persistent keepalive only after the interval: start the
    # handshake from the cluster end now, as a booting uplink would by sending traffic.
    poke = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto(b'handshake', ('{RELAY_TUN}', 9))")
    deadline = time.time() + 15
    while time.time() < deadline:
        sh(sys.executable, "-c", poke, ns=NS_CLUSTER, check=False)
        hs = sh("wg", "show", c_if, "latest-handshakes", ns=NS_CLUSTER, capture=True, check=False)
        if any(int(f[1]) > 0 for f in (line.split() for line in hs.splitlines()) if len(f) == 2):
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"{kind}: no handshake within 15 s")
    return procs


def setup_rathole() -> list[subprocess.Popen]:
    out = sh(str(BIN / "rathole"), "--genkey", capture=True)
    keys = re.findall(r"^([A-Za-z0-9+/=]{40,})$", out, re.M)
    if len(keys) != 2:
        raise RuntimeError(f"rathole --genkey: unexpected output {out!r}")
    priv, pub = keys
    services = {"iperf": ("tcp", IPERF_PORT), "iperfu": ("udp", IPERF_PORT),
                "http": ("tcp", HTTP_PORT)}
    server = [f'[server]\nbind_addr = "{VPS_WAN}:{RATHOLE_PORT}"\n',
              '[server.transport]\ntype = "noise"\n',
              f'[server.transport.noise]\nlocal_private_key = "{priv}"\n']
    client = [f'[client]\nremote_addr = "{VPS_WAN}:{RATHOLE_PORT}"\n',
              '[client.transport]\ntype = "noise"\n',
              f'[client.transport.noise]\nremote_public_key = "{pub}"\n']
    for name, (proto, port) in services.items():
        server.append(f'[server.services.{name}]\ntype = "{proto}"\ntoken = "bench-{name}"\n'
                      f'bind_addr = "127.0.0.1:{10000 + port}"\n')
        client.append(f'[client.services.{name}]\ntype = "{proto}"\ntoken = "bench-{name}"\n'
                      f'local_addr = "{SERVER_IP}:{port}"\n')
    assert _workdir is not None
    (_workdir / "rathole-server.toml").write_text("\n".join(server))
    (_workdir / "rathole-client.toml").write_text("\n".join(client))
    env = {"RUST_LOG": "warn"}
    return [spawn("rathole-server", [str(BIN / "rathole"), "--server",
                                     str(_workdir / "rathole-server.toml")], NS_VPS, env=env),
            spawn("rathole-client", [str(BIN / "rathole"), "--client",
                                     str(_workdir / "rathole-client.toml")], NS_CLUSTER, env=env)]


def ours_available(where: Path = OURS) -> str | None:
    """None when our agents can be run, else why not."""
    for b in ("tunnelctl", "uplink"):
        p = where / b
        if not p.exists():
            return f"{p} missing (bench/setup.sh builds it with `cargo build --release -p uplink`)"
        res = subprocess.run([str(p), "--version"], capture_output=True, text=True)
        if res.returncode != 0:
            return f"{p} --version failed: {res.stderr.strip()[:200]}"
    return None


def setup_ours(where: Path = OURS) -> list[subprocess.Popen]:
    assert _workdir is not None
    v_priv, v_pub = wg_keys()
    c_priv, c_pub = wg_keys()
    relay = {"version": 1, "privateKey": v_priv, "listenPort": WG_PORT,
             "address": f"{RELAY_TUN}/24", "mtu": MTU,
             "peers": [{"name": "bench-uplink-0", "publicKey": c_pub,
                        "allowedIPs": [f"{UPLINK_TUN}/32"]}]}
    uplink = {"version": 1, "network": "10.200.0.0/24", "mtu": MTU,
              "relay": {"publicKey": v_pub, "endpoint": f"{VPS_WAN}:{WG_PORT}",
                        "allowedIPs": [f"{RELAY_TUN}/32"], "persistentKeepalive": 25},
              "forwards": [
                  {"protocol": "TCP", "listenPort": IPERF_PORT, "targetIP": SERVER_IP,
                   "targetPort": IPERF_PORT},
                  {"protocol": "UDP", "listenPort": IPERF_PORT, "targetIP": SERVER_IP,
                   "targetPort": IPERF_PORT},
                  {"protocol": "TCP", "listenPort": HTTP_PORT, "targetIP": SERVER_IP,
                   "targetPort": HTTP_PORT}]}
    relay_doc = _workdir / "relay.json"
    relay_doc.write_text(json.dumps(relay))
    relay_doc.chmod(0o600)
    keys = _workdir / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "priv-0").write_text(c_priv + "\n")
    (keys / "priv-0").chmod(0o600)
    (_workdir / "uplink.json").write_text(json.dumps(uplink))
    env = {"LOG_LEVEL": "warn"}
    relay_proc = spawn("tunnelctl", [str(where / "tunnelctl"), "--config", str(relay_doc),
                                     "--control", str(_workdir / "relay.sock"), "run"],
                       NS_VPS, env=env)
    uplink_proc = spawn("uplink", [str(where / "uplink")], NS_CLUSTER, env=dict(
        env, POD_NAME="bench-uplink-0", UPLINK_CONFIG=str(_workdir / "uplink.json"),
        KEYS_DIR=str(keys), READY_ADDR=f"{CLUSTER_LAN}:40500", DRAIN_SECONDS="0"))
    return [relay_proc, uplink_proc]


def ours_offloads() -> str:
    """The offloads each of our agents reports (`tunnelctl status`, the uplink's /status)."""
    assert _workdir is not None

    def fmt(report: str) -> str:
        try:
            o = json.loads(report).get("offloads") or {}
        except ValueError:
            return "?"
        return ", ".join(f"{k} {'on' if v else 'off'}" for k, v in o.items()) or "?"
    relay = subprocess.run([str(OURS / "tunnelctl"), "--control",
                            str(_workdir / "relay.sock"), "status"],
                           capture_output=True, text=True).stdout
    uplink = subprocess.run(["ip", "netns", "exec", NS_CLUSTER, "curl", "-sS", "-m", "2",
                             f"http://{CLUSTER_LAN}:40500/status"],
                            capture_output=True, text=True).stdout
    return f"relay: {fmt(relay)}; uplink: {fmt(uplink)}"


def setup_path(path: str) -> tuple[list[subprocess.Popen], subprocess.Popen | None, str]:
    tcp_ports = (IPERF_PORT, HTTP_PORT)
    if path == "direct":
        return [], None, SERVER_IP
    if path in ("envoy", "envoy-allow", "envoy-limits"):
        policy = {"envoy": None, "envoy-allow": "allow", "envoy-limits": "limits"}[path]
        return [], start_envoy({p: (SERVER_IP, p) for p in tcp_ports},
                               (SERVER_IP, IPERF_PORT), policy), VPS_PUBLIC
    if path in ("boringtun", "wireguard-go"):
        procs = setup_wireguard(path)
        target = UPLINK_TUN
    elif path == "rathole":
        procs = setup_rathole()
        envoy = start_envoy({p: ("127.0.0.1", 10000 + p) for p in tcp_ports},
                            ("127.0.0.1", 10000 + IPERF_PORT))
        return procs, envoy, VPS_PUBLIC
    elif path in ("ours", "ours-base"):
        procs = setup_ours(OURS if path == "ours" else OURS_BASE)
        target = UPLINK_TUN
    else:
        raise ValueError(path)
    envoy = start_envoy({p: (target, p) for p in tcp_ports}, (target, IPERF_PORT))
    return procs, envoy, VPS_PUBLIC


def wait_ready(target: str, procs: list[subprocess.Popen], timeout: float = 30) -> None:
    """Until an HTTP request and an iperf3 control connection pass end to end."""
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.bench_name} exited with {p.returncode}; "  # type: ignore
                                   f"see {_workdir}/{p.bench_name}.log")  # type: ignore
        res = subprocess.run(["ip", "netns", "exec", NS_CLIENT, "curl", "-sS", "-m", "2", "-o",
                              "/dev/null", "-w", "%{http_code}", f"http://{target}:{HTTP_PORT}/"],
                             capture_output=True, text=True)
        if res.stdout.strip() == "200":
            return
        last = res.stderr.strip() or res.stdout.strip()
        time.sleep(0.3)
    raise RuntimeError(f"path not ready after {timeout:.0f}s: {last}")


# ---------------------------------------------------------------------------------------------
# measurements

def iperf(target: str, duration: int, *extra: str) -> dict:
    for attempt in range(5):
        out = sh("iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(duration), "-J",
                 "--connect-timeout", "3000", *extra, ns=NS_CLIENT, capture=True, check=False,
                 timeout=duration + 30)
        try:
            data = json.loads(out)
        except json.JSONDecodeError as e:
            raise RuntimeError(f"iperf3 {' '.join(extra)}: no JSON ({out[:200]!r})") from e
        # The server may still be closing the previous test: wait and ask again.
        if "busy" in str(data.get("error", "")) and attempt < 4:
            time.sleep(1)
            continue
        if "error" in data:
            raise RuntimeError(f"iperf3 {' '.join(extra)}: {data['error']}")
        return data
    raise AssertionError("unreachable")


_LAT = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_LAT50 = re.compile(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_ERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def wrk(target: str, duration: int, connections: int, close: bool, threads: int = 2) -> dict:
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
            "--timeout", "5s"]
    if close:
        args += ["-H", "Connection: close"]
    out = sh(*args, f"http://{target}:{HTTP_PORT}/", ns=NS_CLIENT, capture=True,
             timeout=duration + 30)
    m = _RPS.search(out)
    if not m:
        raise RuntimeError(f"wrk: no Requests/sec in {out[-300:]!r}")
    def pct(rx: re.Pattern) -> float | None:
        m = rx.search(out)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else None
    p99, p50 = pct(_LAT), pct(_LAT50)
    errs = _ERR.search(out)
    non2xx = _NON2XX.search(out)
    return {"rps": float(m.group(1)), "p99_ms": p99, "p50_ms": p50,
            "socket_errors": sum(map(int, errs.groups())) if errs else 0,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


SYSCALLS = ("read", "write", "readv", "writev", "sendmsg", "sendmmsg", "recvmsg", "recvmmsg",
            "sendto", "recvfrom", "epoll_wait", "epoll_pwait", "io_uring_enter")


def start_perf(path: str, pids: list[int]) -> list[subprocess.Popen]:
    """With --perf DIR: `perf record` on each tunnel process for the TCP 1 stream test
    (`DIR/<path>-<pid>.data`; `perf report -i FILE --no-children --sort sym` reads it)."""
    if _perf_dir is None or not pids:
        return []
    _perf_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        out = _perf_dir / f"{path}-{pid}.data"
        procs.append(subprocess.Popen(["perf", "record", "-q", "-F", "1999", "-g", "-p", str(pid),
                                       "-o", str(out)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        # System calls by kind, in the same seconds (`DIR/<path>-<pid>.syscalls`).
        events = ",".join(f"syscalls:sys_enter_{c}" for c in SYSCALLS)
        procs.append(subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid),
                                       "-o", str(_perf_dir / f"{path}-{pid}.syscalls")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.3)
    return procs


def stop_perf(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def measure(path: str, target: str, tunnel: list[int], envoy: list[int], duration: int) -> dict:
    r: dict = {}

    def timed(fn):
        t0, c0, e0 = time.time(), cpu_seconds(tunnel), cpu_seconds(envoy)
        out = fn()
        return out, cpu_seconds(tunnel) - c0, cpu_seconds(envoy) - e0, time.time() - t0

    # TCP, 1 stream, client → server (upload through the tunnel: VPS encrypts)
    profilers = start_perf(path, tunnel)
    try:
        d, cpu, ecpu, wall = timed(lambda: iperf(target, duration))
    finally:
        stop_perf(profilers)
    recv = d["end"]["sum_received"]
    r["tcp1"] = recv["bits_per_second"] / 1e9
    r["tcp1_retrans"] = d["end"]["sum_sent"].get("retransmits")
    gb = recv["bytes"] / 1e9
    r["cpu_tcp1_s"] = cpu
    r["cpu_tcp1"] = cpu / gb if tunnel and gb > 0 else None
    r["cpu_tcp1_cores"] = cpu / wall if tunnel else None
    r["envoy_cpu_tcp1"] = ecpu / gb if envoy and gb > 0 else None
    # TCP, 4 streams
    d, cpu, _, wall = timed(lambda: iperf(target, duration, "-P", "4"))
    r["tcp4"] = d["end"]["sum_received"]["bits_per_second"] / 1e9
    r["cpu_tcp4_cores"] = cpu / wall if tunnel else None
    # TCP, 1 stream, server → client (download: the cluster end encrypts)
    d, cpu, _, _ = timed(lambda: iperf(target, duration, "-R"))
    r["tcp1r"] = d["end"]["sum_received"]["bits_per_second"] / 1e9
    # UDP at 500 Mbit/s offered, datagrams of UDP_LEN bytes
    d, cpu, _, wall = timed(lambda: iperf(target, duration, "-u", "-b", UDP_RATE,
                                         "-l", str(UDP_LEN), "-w", str(UDP_BUFFER)))
    sent = d["end"].get("sum_sent", d["end"]["sum"])
    recv = d["end"].get("sum_received", d["end"]["sum"])
    r["udp_loss"] = recv.get("lost_percent")
    r["udp_sent_mbps"] = sent["bits_per_second"] / 1e6
    r["udp_recv_mbps"] = recv["bits_per_second"] / 1e6
    r["udp_jitter_ms"] = recv.get("jitter_ms")
    r["cpu_udp_cores"] = cpu / wall if tunnel else None
    # wrk, keep-alive: requests/s and p99 latency
    w = wrk(target, duration, 32, close=False)
    r["rps"], r["p99"], r["rps_errors"] = w["rps"], w["p99_ms"], w["socket_errors"] + w["non2xx"]
    # wrk, one keep-alive connection: latency of the path itself, without queueing
    w = wrk(target, duration, 1, close=False, threads=1)
    r["lat1_p99"], r["lat1_p50"], r["lat1_rps"] = w["p99_ms"], w["p50_ms"], w["rps"]
    r["rps_errors"] += w["socket_errors"] + w["non2xx"]
    # wrk, "Connection: close": one new TCP connection per request
    w = wrk(target, duration, 16, close=True)
    r["cps"], r["cps_p99"] = w["rps"], w["p99_ms"]
    r["cps_errors"] = w["socket_errors"] + w["non2xx"]
    return r


# ---------------------------------------------------------------------------------------------
# report

def median(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "Gbit/s":
        return f"{v:.2f}"
    if unit == "%":
        return f"{v:.2f}"
    if unit == "ms":
        return f"{v:.3f}" if v < 1 else f"{v:.2f}"
    if unit == "s per GB":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def fmt3(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def machine_facts() -> list[str]:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    osr = "?"
    if Path("/etc/os-release").exists():
        m = re.search(r'^PRETTY_NAME="(.*)"', Path("/etc/os-release").read_text(), re.M)
        osr = m.group(1) if m else "?"
    facts = [
        f"CPU: {os.cpu_count()} × {cpu}",
        f"memory: {mem} GiB; OS: {osr}; kernel {platform.release()}",
        f"TCP congestion control: {first(['sysctl', '-n', 'net.ipv4.tcp_congestion_control'])}",
        "no WireGuard kernel module: every WireGuard row is userspace",
        f"Envoy: {first([str(ENVOY), '--version']).split('version:')[-1].strip()}",
    ]
    vers = BENCH / "versions.txt"
    if vers.exists():
        facts += [line for line in vers.read_text().splitlines() if line.strip()]
    ours = OURS / "BUILD"
    if ours.exists():
        facts.append("our agents: " + ours.read_text().strip())
    base = OURS_BASE / "BUILD"
    if _with_base and base.exists():
        facts.append("our agents, base build: " + base.read_text().strip())
    if _ours_offloads:
        facts.append("our agents' offloads, as reported in the run: " + _ours_offloads)
    return facts


def targets(results: dict, med: dict) -> list[str]:
    """Issue 6's targets, checked on this run's medians."""
    ok = [p for p in ("ours", "boringtun", "wireguard-go")
          if p in results and not results[p].get("unavailable") and results[p]["runs"]]
    if "ours" not in ok or "boringtun" not in ok:
        return []
    o, b = med["ours"], med["boringtun"]
    rows = []

    def row(what: str, value: str, target: str, met: bool | None) -> None:
        rows.append(f"| {what} | {value} | {target} | "
                    f"{'—' if met is None else ('met' if met else 'not met')} |")
    for k, name in (("tcp1", "TCP 1 stream"), ("tcp4", "TCP 4 streams"),
                    ("tcp1r", "TCP 1 stream, reverse")):
        if o[k] and b[k]:
            x = o[k] / b[k]
            row(f"{name}: ours ÷ boringtun-cli", f"{x:.2f}×", "≥ 3× (below 2×: not done)",
                x >= 3)
    if "wireguard-go" in ok and o["tcp1"] and med["wireguard-go"]["tcp1"]:
        x = o["tcp1"] / med["wireguard-go"]["tcp1"]
        row("TCP 1 stream: ours ÷ wireguard-go", f"{x:.2f}×", "≥ 1×", x >= 1)
    if o["udp_loss"] is not None:
        row("UDP loss at 500 Mbit/s offered", f"{o['udp_loss']:.2f}%", "≤ 1%",
            o["udp_loss"] <= 1)
    for k, name in (("lat1_p99", "p99 latency, 1 connection"), ("p99", "p99 latency, wrk 32 connections")):
        if o[k] is not None and b[k] is not None:
            row(f"{name}: ours vs boringtun-cli", f"{fmt(o[k], 'ms')} vs {fmt(b[k], 'ms')} ms",
                "no worse", o[k] <= b[k])
    return ["### Issue 6 targets, on these medians\n", "| what | measured | target | |",
            "|---|---|---|---|"] + rows + [""]


def targets_23(results: dict, med: dict) -> list[str]:
    """Issue 23's targets (CPU per GB, TCP against rathole and wireguard-go), on the medians."""
    def have(p: str) -> bool:
        return p in results and not results[p].get("unavailable") and bool(results[p]["runs"])
    if not have("ours"):
        return []
    o = med["ours"]
    rows = []

    def row(what: str, value: str, target: str, met: bool) -> None:
        rows.append(f"| {what} | {value} | {target} | {'met' if met else 'not met'} |")
    if o["cpu_tcp1"] is not None:
        row("tunnel CPU, TCP 1 stream", f"{o['cpu_tcp1']:.2f} s/GB", "≤ 2.0 s/GB",
            o["cpu_tcp1"] <= 2.0)
    for ref, name, want in (("rathole", "rathole", 1.5), ("wireguard-go", "wireguard-go", 2.5)):
        for k, what in (("tcp1", "TCP 1 stream"), ("tcp4", "TCP 4 streams")):
            if have(ref) and o[k] and med[ref][k]:
                x = o[k] / med[ref][k]
                row(f"{what}: ours ÷ {name}", f"{x:.2f}×", f"≥ {want}×", x >= want)
    if have("envoy") and o["tcp1"] and med["envoy"]["tcp1"]:
        x = o["tcp1"] / med["envoy"]["tcp1"]
        row("TCP 1 stream: share of Envoy alone", f"{100 * x:.0f}%", "> 20%", x > 0.2)
    if have("ours-base"):
        bb = med["ours-base"]
        for k, what, unit, higher in (("cps", "new conn/s", "conn/s", True),
                                      ("p99", "wrk p99", "ms", False),
                                      ("lat1_p99", "p99, 1 connection", "ms", False)):
            if o[k] is not None and bb[k] is not None:
                row(f"{what}: ours vs base build", f"{fmt(o[k], unit)} vs {fmt(bb[k], unit)}"
                    + (" ms" if unit == "ms" else ""), "no worse",
                    o[k] >= bb[k] if higher else o[k] <= bb[k])
    if o["udp_loss"] is not None:
        row("UDP loss at 500 Mbit/s offered", f"{o['udp_loss']:.2f}%", "0%", o["udp_loss"] == 0)
    if not rows:
        return []
    return ["### Issue 23 targets, on these medians\n", "| what | measured | target | |",
            "|---|---|---|---|"] + rows + [""]


def render(results: dict, meta: dict) -> str:
    paths = [p for p in PATHS + OPTIONAL_PATHS if p in results]
    med = {p: {k: median([run.get(k) for run in results[p]["runs"]]) for k, *_ in METRICS}
           for p in paths}
    extra_keys = ["tcp1_retrans", "cpu_tcp1_cores", "cpu_tcp4_cores", "cpu_udp_cores",
                  "udp_sent_mbps", "udp_recv_mbps", "lat1_p50", "rps_errors", "cps_errors", "envoy_cpu_tcp1"]
    for p in paths:
        for k in extra_keys:
            med[p][k] = median([run.get(k) for run in results[p]["runs"]])
    out = []
    out.append(f"Measured {meta['start']} – {meta['end']} (UTC) with `{meta['command']}`: "
               f"{meta['runs']} rounds, each path set up fresh in every round (round r starts "
               f"with the r-th path of {', '.join(paths)}); iperf3 and wrk run {meta['duration']} s per measurement. "
               f"Before the run: load average {meta['load_before']}, {meta['busy_before']}; "
               f"after it: load average {meta['load_after']}, {meta['busy_after']}.\n")
    out.append("### Medians\n")
    head = "| path | " + " | ".join(f"{h} ({u})" for _, h, u, _ in METRICS) + " |"
    out.append(head)
    out.append("|" + "---|" * (len(METRICS) + 1))
    for p in paths:
        if results[p].get("unavailable"):
            out.append(f"| {LABELS[p]} | " + " | ".join(["n/a"] * len(METRICS)) + " |")
            continue
        cells = [fmt(med[p][k], u) for k, _, u, _ in METRICS]
        out.append(f"| {LABELS[p]} | " + " | ".join(cells) + " |")
    out.append("")
    if "boringtun" in med and not results["boringtun"].get("unavailable"):
        out.append("### Ratios to Envoy + boringtun-cli (same run)\n")
        out.append("Throughput, requests and connections: higher is better; UDP loss, p99 and "
                   "CPU per GB: lower is better.\n")
        out.append("| path | " + " | ".join(h for _, h, _, _ in METRICS) + " |")
        out.append("|" + "---|" * (len(METRICS) + 1))
        base = med["boringtun"]
        for p in paths:
            if results[p].get("unavailable"):
                out.append(f"| {LABELS[p]} | " + " | ".join(["n/a"] * len(METRICS)) + " |")
                continue
            cells = []
            for k, _, _, _ in METRICS:
                a, b = med[p][k], base[k]
                if a is None or b is None:
                    cells.append("—")
                elif b == 0:
                    cells.append("—" if a != 0 else "=")
                else:
                    cells.append(f"{a / b:.2f}×")
            out.append(f"| {LABELS[p]} | " + " | ".join(cells) + " |")
        out.append("")
    policy_paths = [p for p in ("envoy-allow", "envoy-limits") if p in paths]
    if policy_paths and "envoy" in med and not results["envoy"].get("unavailable"):
        out.append("### Ratios to Envoy alone (same run): the cost of L4 policy\n")
        out.append("| path | " + " | ".join(h for _, h, _, _ in METRICS) + " |")
        out.append("|" + "---|" * (len(METRICS) + 1))
        for p in policy_paths:
            cells = []
            for k, _, _, _ in METRICS:
                a, b = med[p][k], med["envoy"][k]
                cells.append("—" if a is None or not b else f"{a / b:.2f}×")
            out.append(f"| {LABELS[p]} | " + " | ".join(cells) + " |")
        out.append("")
    out += targets(results, med)
    out += targets_23(results, med)
    out.append("### Side figures (medians)\n")
    out.append("| path | TCP 1 stream retransmits | tunnel CPU, cores busy: TCP 1 / TCP 4 / UDP "
               "| UDP sent / delivered (Mbit/s) | Envoy CPU, TCP 1 stream (s per GB) "
               "| p50, 1 connection (ms) | wrk errors: keep-alive / close |")
    out.append("|---|---|---|---|---|---|---|")
    for p in paths:
        if results[p].get("unavailable"):
            continue
        m = med[p]
        cores = " / ".join("—" if m[k] is None else f"{m[k]:.2f}"
                           for k in ("cpu_tcp1_cores", "cpu_tcp4_cores", "cpu_udp_cores"))
        out.append(f"| {LABELS[p]} | {fmt(m['tcp1_retrans'], '')} | {cores} | "
                   f"{fmt(m['udp_sent_mbps'], '')} / {fmt(m['udp_recv_mbps'], '')} | {fmt(m['envoy_cpu_tcp1'], 'ms')} | "
                   f"{fmt3(m['lat1_p50'])} | "
                   f"{fmt(m['rps_errors'], '')} / {fmt(m['cps_errors'], '')} |")
    out.append("")
    na = [p for p in paths if results[p].get("unavailable")]
    for p in na:
        out.append(f"**{LABELS[p]}: not available** — {results[p]['unavailable']}\n")
    failed = {p: results[p]["errors"] for p in paths if results[p].get("errors")}
    for p, errs in failed.items():
        out.append(f"**{LABELS[p]}: {len(errs)} round(s) failed** — " + "; ".join(errs) + "\n")
    for p in paths:
        if results[p].get("retried"):
            out.append(f"{LABELS[p]}: {len(results[p]['retried'])} attempt(s) failed and were "
                       "repeated once — " + "; ".join(results[p]["retried"]) + "\n")
    out.append("<details><summary>Every round (raw values)</summary>\n")
    out.append("| path | round | " + " | ".join(h for _, h, _, _ in METRICS) + " |")
    out.append("|" + "---|" * (len(METRICS) + 2))
    for p in paths:
        for i, run in enumerate(results[p]["runs"], 1):
            out.append(f"| {p} | {i} | " + " | ".join(fmt(run.get(k), u)
                                                     for k, _, u, _ in METRICS) + " |")
    out.append("\n</details>\n")
    out.append("Machine:\n")
    out += [f"- {f}" for f in meta["facts"]]
    out.append("")
    return "\n".join(out)


BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def write_doc(doc: Path, body: str) -> None:
    block = f"{BEGIN}\n{body}\n{END}"
    if doc.exists() and BEGIN in doc.read_text() and END in doc.read_text():
        text = doc.read_text()
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = "# Data-plane benchmarks\n\n" + block + "\n"
    doc.write_text(text)


# ---------------------------------------------------------------------------------------------

def attempt_path(p: str, rnd: int, args, results: dict, last: bool) -> bool:
    """One (round, path): fresh topology, set-up, measurements, tear-down. False on failure;
    the failure is recorded when `last` (a failed first attempt is retried once)."""
    log(f"round {rnd}/{args.runs}: {p}" + ("" if not last else " (second attempt)"))
    try:
        build_topology()
        procs, envoy, target = setup_path(p)
        everyone = procs + ([envoy] if envoy else [])
        wait_ready(target, everyone)
        r = measure(p, target, [x.pid for x in procs], [envoy.pid] if envoy else [],
                    args.duration)
        if p == "ours":
            global _ours_offloads
            _ours_offloads = ours_offloads()
        for x in everyone:
            if x.poll() is not None:
                raise RuntimeError(f"{x.bench_name} died during the measurement")
        results[p]["runs"].append(r)
        log("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in r.items()))
        return True
    except Exception as e:  # noqa: BLE001 — one failed round must not end the run
        msg = f"round {rnd}: {e}"
        log(f"  FAILED {msg}")
        results[p]["errors" if last else "retried"].append(msg)
        assert _workdir is not None
        for x in _children:
            f = _workdir / f"{x.bench_name}.log"  # type: ignore[attr-defined]
            if f.exists() and f.stat().st_size:
                log(f"  --- {f.name} (tail) ---\n" + "\n".join(
                    f.read_text(errors="replace").splitlines()[-8:]))
        return False
    finally:
        stop_all()
        delete_namespaces()


def main() -> int:
    global _workdir, _verbose, _perf_dir, _with_base
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per iperf3/wrk measurement")
    ap.add_argument("--runs", type=int, default=3, help="rounds; medians are over these")
    ap.add_argument("--paths", default=",".join(PATHS),
                    help=f"comma-separated subset of {','.join(PATHS)}")
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"),
                    help="markdown file whose results block is replaced ('-': print only)")
    ap.add_argument("--json", default=str(BENCH / "last-run.json"),
                    help="also write the raw results here")
    ap.add_argument("--keep-logs", action="store_true", help="keep the work directory")
    ap.add_argument("--perf", metavar="DIR",
                    help="record a perf profile of each tunnel process during TCP 1 stream "
                         "(it costs throughput: not for the figures)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    _verbose = args.verbose
    if args.perf:
        _perf_dir = Path(args.perf)
    paths = [p for p in args.paths.split(",") if p]
    for p in paths:
        if p not in PATHS + OPTIONAL_PATHS:
            ap.error(f"unknown path {p!r}")
    if os.geteuid() != 0:
        ap.error("run as root (network namespaces)")
    needed = [ENVOY, BIN / "bench-httpd"] + [BIN / t for p, t in (
        ("boringtun", "boringtun-cli"), ("wireguard-go", "wireguard-go"), ("rathole", "rathole"))
        if p in paths]
    missing = [str(t) for t in needed if not Path(t).exists()]
    missing += [t for t in ("iperf3", "wrk", "wg", "nft", "curl") if not shutil.which(t)]
    if missing:
        ap.error(f"missing: {', '.join(missing)}; run bench/setup.sh first")

    _workdir = Path(tempfile.mkdtemp(prefix="tunnel-bench-"))
    if os.environ.get("BENCH_PIDFILE"):     # for run.sh's backstop
        Path(os.environ["BENCH_PIDFILE"] + ".workdir").write_text(str(_workdir))
    atexit.register(cleanup)
    if not args.keep_logs:
        atexit.register(shutil.rmtree, _workdir, ignore_errors=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))

    results: dict = {p: {"runs": [], "errors": [], "retried": []} for p in paths}
    if "ours" in paths:
        why = ours_available()
        if why:
            results["ours"]["unavailable"] = why
            log(f"our agents: not available — {why}")
    if "ours-base" in paths:
        _with_base = True
        why = ours_available(OURS_BASE)
        if why:
            results["ours-base"]["unavailable"] = why
            log(f"our base build: not available — {why}")
    meta = {"start": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "load_before": Path("/proc/loadavg").read_text().split()[:3],
            "busy_before": machine_busy(),
            "duration": args.duration, "runs": args.runs,
            "command": os.environ.get("BENCH_COMMAND", "bash bench/run.sh " + " ".join(
                sys.argv[1:])).strip()}
    log(f"work directory {_workdir}; paths {paths}; {args.runs} rounds × {args.duration} s")
    try:
        for rnd in range(1, args.runs + 1):
            # Each round starts one path later, so no path is always first or last.
            k = (rnd - 1) % len(paths)
            for p in paths[k:] + paths[:k]:
                if results[p].get("unavailable"):
                    continue
                for attempt in (1, 2):
                    if attempt_path(p, rnd, args, results, last=attempt == 2):
                        break
    finally:
        cleanup()
    meta["end"] = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")
    meta["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    meta["busy_after"] = machine_busy()
    meta["load_before"] = " ".join(meta["load_before"])
    meta["load_after"] = " ".join(meta["load_after"])
    meta["facts"] = machine_facts()
    body = render(results, meta)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    if args.doc == "-":
        print(body)
    else:
        write_doc(Path(args.doc), body)
        log(f"results written to {args.doc}")
        print(body)
    if args.keep_logs:
        log(f"logs kept in {_workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
