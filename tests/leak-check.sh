#!/usr/bin/env bash
# Fails when a test left something behind: a test-bed network namespace, a VPS container
# or its cgroup, a test-bed process, or any state of the single-node cluster (processes,
# shims, pods, links, mounts, iptables chains, ip_forward: tests/testbed/node-down.sh --check). With --clean-stale it first removes leftovers of an earlier,
# killed run (before any test of this run starts) and reports them.
set -uo pipefail
PROCS='systemd-nspawn|envoy|etcd|kube-apiserver|kubelet|kube-proxy|kube-controller-manager|kube-scheduler|tunnelctl|uplink|wireguard-go|boringtun-cli|knotd|external-dns'
NODE_DOWN="$(dirname "$0")/testbed/node-down.sh"

leaks() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep '^tb-' | sed 's/^/netns /'
  pgrep -a "^($PROCS)$" 2>/dev/null | sed 's/^/process /'
  # Each VPS container runs in a cgroup of its own (tests/testbed/src/cgroup.rs).
  find /sys/fs/cgroup -maxdepth 3 -type d -name 'tb-*' 2>/dev/null | sed 's/^/cgroup /'
  bash "$NODE_DOWN" --check
}

if [[ ${1:-} == --clean-stale ]]; then
  stale=$(leaks)
  if [[ -n $stale ]]; then
    echo "leak-check: removing leftovers of an earlier run:"; echo "$stale"
    for ns in $(ip netns list | awk '{print $1}' | grep '^tb-'); do
      # tb-<pid>-...: only namespaces whose test process is gone are stale.
      owner=${ns#tb-}; owner=${owner%%-*}
      [[ -d /proc/$owner ]] && continue
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
      ip netns del "$ns"
    done
    # The node's teardown, unless a node is up right now (it holds the host-wide lock).
    flock -n /run/tbnode.lock bash "$NODE_DOWN"
    # Only empty cgroups can be removed: those of a container still running stay.
    find /sys/fs/cgroup -maxdepth 3 -type d -name 'tb-*' 2>/dev/null | while read -r cg; do
      find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  fi
  exit 0
fi

found=$(leaks)
if [[ -n $found ]]; then
  echo "leak-check: FAILED, left behind:"; echo "$found"; exit 1
fi
echo "leak-check: nothing left behind"
