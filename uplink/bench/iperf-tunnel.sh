#!/usr/bin/env bash
# Ad-hoc throughput check (issue 4 figures in docs/data-plane.md): iperf3 TCP from a "vps"
# namespace through the tunnel and the uplink DNAT to a server in a "cluster" namespace,
# first with our agents (release build), then with Debian wireguard-go on both ends and the
# same DNAT, then a direct veth. Run as root after `cargo build -p uplink --release --bins`.
# Namespaces bn-vps, bn-pod, bn-cl are removed at the end. Not a test; issue 6 owns the real
# benchmark (docs/benchmarks.md).
set -u
B=$(realpath "${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}")/release
W=/tmp/bench; rm -rf $W; mkdir -p $W/keys $W/cfg; cd $W
RK=$(wg genkey); RP=$(echo $RK | wg pubkey); UK=$(wg genkey); UP=$(echo $UK | wg pubkey); echo $UK > keys/priv-0
for n in vps pod cl; do ip netns add bn-$n; ip -n bn-$n link set lo up; done
ip link add v0 netns bn-vps type veth peer name e0 netns bn-pod
ip -n bn-vps addr add 198.51.100.1/24 dev v0; ip -n bn-vps link set v0 up
ip -n bn-pod addr add 198.51.100.2/24 dev e0; ip -n bn-pod link set e0 up
ip link add p0 netns bn-pod type veth peer name c0 netns bn-cl
ip -n bn-pod addr add 10.244.0.2/24 dev p0; ip -n bn-pod link set p0 up
ip -n bn-cl addr add 10.244.0.1/24 dev c0; ip -n bn-cl link set c0 up
ip netns exec bn-cl iperf3 -s -D -B 10.244.0.1 --logfile $W/iperf-s.log
run() { ip netns exec bn-vps iperf3 -c 10.200.0.2 -p 5201 -t ${T:-8} -J "$@" | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d["end"]; print("%.0f Mbit/s retr=%s" % (e["sum_received"]["bits_per_second"]/1e6, e["sum_sent"].get("retransmits")))'; }
# --- ours
cat > relay.json <<J
{"version":1,"privateKey":"$RK","listenPort":51820,"address":"10.200.0.1/24","mtu":1420,"peers":[{"publicKey":"$UP","allowedIPs":["10.200.0.2/32"]}]}
J
cat > cfg/uplink.json <<J
{"version":1,"network":"10.200.0.0/24","mtu":1420,"relay":{"publicKey":"$RP","endpoint":"198.51.100.1:51820","allowedIPs":["10.200.0.1/32"],"persistentKeepalive":25},"forwards":[{"protocol":"TCP","listenPort":5201,"targetIP":"10.244.0.1","targetPort":5201}]}
J
ip netns exec bn-vps $B/tunnelctl --config relay.json --control $W/relay.sock run 2>relay.log & RPID=$!
sleep 1
ip netns exec bn-pod env POD_NAME=x-0 $B/uplink --config cfg/uplink.json --keys-dir keys --drain-seconds 0 2>uplink.log & UPID=$!
for i in $(seq 1 50); do [ "$(ip netns exec bn-vps curl -s -m 1 http://10.200.0.2:40500/ready)" = ok ] && break; sleep 0.2; done
echo "ours (release), TCP 1 stream:"; for r in 1 2 3; do run; done
echo "ours, TCP 4 streams:"; run -P 4
kill $UPID; kill $RPID; wait $UPID $RPID 2>/dev/null
# --- wireguard-go both ends, same DNAT via nft
export WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1
ip netns exec bn-vps wireguard-go -f wgbenchr 2>/dev/null & G1=$!
ip netns exec bn-pod wireguard-go -f wgbenchu 2>/dev/null & G2=$!
sleep 1
echo $RK > rk; ip netns exec bn-vps wg set wgbenchr private-key rk listen-port 51820 peer $UP allowed-ips 10.200.0.2/32
ip -n bn-vps addr add 10.200.0.1/24 dev wgbenchr; ip -n bn-vps link set wgbenchr mtu 1420 up
ip netns exec bn-pod wg set wgbenchu private-key keys/priv-0 peer $RP endpoint 198.51.100.1:51820 allowed-ips 10.200.0.1/32 persistent-keepalive 25
ip -n bn-pod addr add 10.200.0.2/24 dev wgbenchu; ip -n bn-pod link set wgbenchu mtu 1420 up
ip netns exec bn-pod sysctl -qw net.ipv4.ip_forward=1
ip netns exec bn-pod nft -f - <<N
table ip uplink {
 chain prerouting { type nat hook prerouting priority dstnat; policy accept; iifname "wgbenchu" tcp dport 5201 dnat to 10.244.0.1:5201; }
 chain postrouting { type nat hook postrouting priority srcnat; policy accept; ip saddr 10.200.0.0/24 oifname != "wgbenchu" masquerade; }
}
N
sleep 1
echo "wireguard-go (Debian), TCP 1 stream:"; for r in 1 2 3; do run; done
echo "wireguard-go, TCP 4 streams:"; run -P 4
kill $G1 $G2; wait $G1 $G2 2>/dev/null
echo "direct veth (no tunnel), TCP 1 stream:"; ip netns exec bn-pod iperf3 -c 10.244.0.1 -t 4 -J | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f Mbit/s" % (d["end"]["sum_received"]["bits_per_second"]/1e6))'
for pid in $(ip netns pids bn-cl); do kill $pid; done
for n in vps pod cl; do ip netns del bn-$n; done
