#!/usr/bin/env bash
# Builds our agents with the AEAD taken out (an experiment, never shipped): boringtun's
# ChaCha20-Poly1305 seal and open replaced by the copies they make anyway (the tag zeroed,
# never checked); every other line, ours and the crates', as in the tree. Measured against the
# real build, it gives what carrying the bytes costs without the cipher on this machine:
# the floor under the tunnel's CPU per GB that no cipher makes lower (docs/benchmarks.md).
#   bash bench/null-cipher.sh     # -> /var/cache/tunnel/bench/bin/ours-null/{tunnelctl,uplink}
#   BENCH_OURS_BASE=/var/cache/tunnel/bench/bin/ours-null \
#     bash bench/run.sh --paths ours,ours-base --runs 5 --doc -
# Needs the crate sources in ~/.cargo (any earlier build of the workspace). Not part of CI.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_ROOT:-/var/cache/tunnel/bench}
VERSION=$(sed -n '/^name = "boringtun"$/{n;s/^version = "\(.*\)"$/\1/p}' "$REPO/Cargo.lock")
SOURCE=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"boringtun-$VERSION" | head -1)
WORK=$(mktemp -d /tmp/tunnel-null-cipher.XXXXXX)
trap 'git -C "$REPO" worktree remove --force "$WORK/tree" 2>/dev/null || true; rm -rf -- "$WORK"' EXIT

cp -r "$SOURCE" "$WORK/boringtun"
python3 - "$WORK/boringtun/src/noise/session.rs" <<'PY'
import sys
path = sys.argv[1]
s = open(path).read()
seal = """            self.sender
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&[]),
                    &mut data[..src.len()],
                )
                .map(|tag| {
                    data[src.len()..src.len() + AEAD_SIZE].copy_from_slice(tag.as_ref());
                    src.len() + AEAD_SIZE
                })
                .unwrap()"""
open_ = """            self.receiver
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&[]),
                    &mut dst[..ct_len],
                )
                .map_err(|_| WireGuardError::InvalidAeadTag)?"""
assert s.count(seal) == 1 and s.count(open_) == 1, "boringtun's session.rs changed: update this patch"
s = s.replace(seal, """            let _ = (&self.sender, nonce);
            data[src.len()..src.len() + AEAD_SIZE].fill(0);
            src.len() + AEAD_SIZE""")
s = s.replace(open_, """            let _ = (&self.receiver, nonce);
            let plain = ct_len.checked_sub(AEAD_SIZE).ok_or(WireGuardError::InvalidAeadTag)?;
            &mut dst[..plain]""")
open(path, "w").write(s)
PY

git -C "$REPO" worktree add --detach -q "$WORK/tree" HEAD
printf '\n[patch.crates-io]\nboringtun = { path = "%s" }\n' "$WORK/boringtun" >>"$WORK/tree/Cargo.toml"
(cd "$WORK/tree" && cargo build --release -p uplink --target-dir "$BENCH/target-null")
mkdir -p "$BENCH/bin/ours-null"
cp "$BENCH/target-null/release/tunnelctl" "$BENCH/target-null/release/uplink" "$BENCH/bin/ours-null/"
echo "built $(date -u +%Y-%m-%dT%H:%MZ) from uplink/ as of commit $(git -C "$REPO" log -1 --format=%h -- uplink Cargo.lock), boringtun $VERSION without its AEAD (bench/null-cipher.sh)" \
  >"$BENCH/bin/ours-null/BUILD"
cat "$BENCH/bin/ours-null/BUILD"
