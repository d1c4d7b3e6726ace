#!/usr/bin/env bash
# Tears the test bed's single-node cluster down (tests/testbed/src/node.rs), whatever state a
# run left: the processes recorded in /run/tbnode/pids (each checked to still be ours before it
# is killed), containerd's shims for our socket and the pods' processes (kubepods cgroups),
# mounts under the kubelet and containerd directories, the pods' network namespaces, the links
# nsk0 and nsk-cni0, the KUBE-*/CNI-* iptables chains, and ip_forward restored. Idempotent;
# run before each bring-up, by the handle's drop, and by `tests/leak-check.sh --clean-stale`.
# `--check` only lists what is left (the leak check) and exits 1 if anything is.
set -uo pipefail

CACHE=${TUNNEL_CACHE:-/var/cache/tunnel}
RUN=/run/tbnode
KUBELET_DIR=/var/lib/tb-kubelet
STATE=$CACHE/node/run
SOCK=$RUN/containerd.sock

ours() { # PID: a process started by the node (its command line names one of our paths)
  local cmd
  cmd=$({ tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null) || return 1
  [[ $cmd == *"$CACHE/node/"* || $cmd == *"$RUN/"* || $cmd == *"$KUBELET_DIR"* ]]
}
shims() {
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "containerd-shim.*-address $SOCK" && echo "${p#/proc/}"
  done
}
pod_pids() { cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
  /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null | sort -u; }
recorded() { for f in "$RUN"/pids/*; do [[ -f $f ]] && cat "$f"; done 2>/dev/null; }
chains() { { iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | grep -cE '^:(KUBE-|CNI-)'; }

if [[ ${1:-} == --check ]]; then
  left=()
  for pid in $(recorded); do ours "$pid" && left+=("process $pid $(tr '\0' ' ' </proc/$pid/cmdline | cut -c1-80)"); done
  for pid in $(shims); do left+=("shim $pid"); done
  [[ -n $(pod_pids) ]] && left+=("pod processes in kubepods cgroups")
  for l in nsk0 nsk-cni0; do ip link show "$l" >/dev/null 2>&1 && left+=("link $l"); done
  grep -qE " ($KUBELET_DIR|$RUN)[/ ]" /proc/self/mountinfo && left+=("mounts under $KUBELET_DIR or $RUN")
  (($(chains))) && left+=("iptables KUBE-/CNI- chains")
  [[ -f $STATE/../ip_forward.saved ]] && left+=("ip_forward not restored")
  ((${#left[@]})) && printf 'node %s\n' "${left[@]}" && exit 1
  exit 0
fi

# 1. Processes: our components by recorded PID (TERM, then KILL), then shims and pods.
kill_wait() { # PIDs...
  local pids=("$@") i
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null
  for i in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do
      [[ -e /proc/$p && $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] && alive=1
    done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null
  sleep 0.2
}
mine=()
for pid in $(recorded); do ours "$pid" && mine+=("$pid"); done
kill_wait "${mine[@]}"
for round in 1 2 3; do
  victims=($(shims) $(pod_pids))
  ((${#victims[@]})) || break
  kill -KILL "${victims[@]}" 2>/dev/null
  sleep 0.3
done

# 2. Mounts (deepest first) and the pods' network namespaces.
grep -E " ($KUBELET_DIR|$RUN|$CACHE/node/containerd)[/ ]" /proc/self/mountinfo | awk '{print $5}' | sort -r |
  while read -r m; do umount -l "$m" 2>/dev/null; done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-'); do ip netns del "$ns" 2>/dev/null; done

# 3. cgroups the kubelet made, innermost first.
for h in /sys/fs/cgroup/*/kubepods; do
  [[ -d $h ]] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 4. Links, iptables chains (other rules are kept: whole tables are restored without ours).
for l in nsk-cni0 nsk0 $(ip -o link show 2>/dev/null | awk -F": " '{print $2}' | cut -d@ -f1 | grep "^nsk-up"); do ip link del "$l" 2>/dev/null; done
if (($(chains))); then
  for t in iptables ip6tables; do
    "$t-save" 2>/dev/null | grep -vE '(KUBE-|CNI-)' | "$t-restore" 2>/dev/null
  done
fi
nft delete table ip kube-proxy 2>/dev/null
nft delete table ip6 kube-proxy 2>/dev/null

# 5. ip_forward back to what it was before the first bring-up.
if [[ -f $STATE/../ip_forward.saved ]]; then
  sysctl -qw net.ipv4.ip_forward="$(cat "$STATE/../ip_forward.saved")"
  rm -f "$STATE/../ip_forward.saved"
fi
rm -rf "$RUN" "$KUBELET_DIR" "$CACHE/node/pod-logs"
find /var/log/containers -maxdepth 1 -lname "$CACHE/node/pod-logs/*" -delete 2>/dev/null
exit 0
