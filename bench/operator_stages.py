#!/usr/bin/env python3
"""Where a change's time goes, per stage, from the logs `operator_latency` keeps.

Run the bench with `BENCH_OPERATOR_LOG=DIR BENCH_LOG_LEVEL=debug`, then
`python3 bench/operator_stages.py DIR [DIR ...]`: for every kept round (an operator log
`operator-<build>-<ms>.log` and its `.stamps`, one line "applied connected" per binding,
microseconds since the epoch) it lines each binding's apply and first connection up with the
operator's log and prints the p50 and p99 of each stage, per directory and build (`ours`,
`base` in an A/B run):

  to SSH      applied -> the pass's first SSH command (the watch event, the pass's reads,
              the decision, the API writes before SSH)
  observe     that command -> "enrollment pass planned" (the read-only look at the VPS)
  to served   planned -> the first connection answered through the VPS (the writes, Envoy
              taking the files, the uplink taking its forward)
  total       applied -> first connection

The log lines it reads are the same in older builds (the SSH session's debug line
"remote command" and the info line "enrollment pass planned"), so two builds compare.
"""
import datetime
import glob
import os
import re
import sys

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z")


def micros(line):
    m = STAMP.match(line)
    if not m:
        return None
    t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1e6)


def percentile(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    rank = round(p / 100 * (len(s) - 1))
    return s[min(rank, len(s) - 1)]


def stages(log, stamps):
    events = []
    for line in open(log, errors="replace"):
        t = micros(line)
        if t is None:
            continue
        if "remote command" in line:
            events.append((t, "ssh"))
        elif "enrollment pass planned" in line:
            events.append((t, "planned"))
    out = []
    for row in open(stamps):
        applied, connected = (int(x) for x in row.split())
        ssh = next((t for t, k in events if k == "ssh" and t >= applied), None)
        planned = next((t for t, k in events if k == "planned" and ssh is not None and t >= ssh), None)
        if ssh is None or planned is None or planned > connected:
            continue
        out.append({
            "to SSH": (ssh - applied) / 1e3,
            "observe": (planned - ssh) / 1e3,
            "to served": (connected - planned) / 1e3,
            "total": (connected - applied) / 1e3,
        })
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    names = ["to SSH", "observe", "to served", "total"]
    print("| build (directory) | samples | " + " | ".join(f"{n} p50 / p99 (ms)" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for d in sys.argv[1:]:
        builds = {}
        for log in sorted(glob.glob(os.path.join(d, "*.log"))):
            if os.path.exists(log + ".stamps"):
                parts = os.path.basename(log).split("-")
                build = parts[1] if len(parts) == 3 else "ours"
                builds.setdefault(build, []).extend(stages(log, log + ".stamps"))
        for build, rows in sorted(builds.items()):
            cells = [f"{percentile([r[n] for r in rows], 50):.0f} / {percentile([r[n] for r in rows], 99):.0f}" for n in names]
            print(f"| {build} ({d}) | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
