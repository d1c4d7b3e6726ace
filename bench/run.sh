#!/usr/bin/env bash
# Runs the data-plane benchmark (bench/run.py) and writes docs/benchmarks.md.
#   bash bench/setup.sh && bash bench/run.sh            # the full run (3 rounds × 5 s)
#   bash bench/run.sh --duration 1 --runs 1 --doc -     # smoke test, prints only
# Needs root. Not part of CI. Whatever happens, no bench-* namespace and no process it
# started is left behind: run.py cleans up itself; this trap is the backstop if it is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE=$(mktemp /tmp/tunnel-bench-pids.XXXXXX)
export BENCH_PIDFILE=$PIDFILE
case " $* " in *" --keep-logs "*) KEEP_LOGS=1 ;; esac
export BENCH_COMMAND="bash bench/setup.sh && bash bench/run.sh${*:+ $*}"
backstop() {
  local pid
  while read -r pid _; do
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done <"$PIDFILE"
  for ns in bench-client bench-vps bench-cluster bench-server; do
    [ -e "/run/netns/$ns" ] && ip netns del "$ns" 2>/dev/null || true
  done
  if [ -z "${KEEP_LOGS:-}" ] && [ -f "$PIDFILE.workdir" ]; then
    case $(cat "$PIDFILE.workdir") in /tmp/tunnel-bench-*) rm -rf -- "$(cat "$PIDFILE.workdir")" ;; esac
  fi
  rm -f "$PIDFILE" "$PIDFILE.workdir"
}
trap backstop EXIT
python3 bench/run.py "$@"
