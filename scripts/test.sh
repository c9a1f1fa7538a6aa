#!/usr/bin/env bash
# The whole gate, as CI runs it: installs what the suite needs (Rust components, a Python venv with
# the official CloudEvents SDK), then formatting, clippy with -D warnings, every Rust test, and the
# independent CloudEvents validation of every bundled recording's output.
# Servers: none yet; broker sinks will start theirs here (loopback only, pid files, stopped on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state="$root/.state"
mkdir -p "$state"

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
command -v cargo-clippy >/dev/null || { echo "clippy missing and could not be installed" >&2; exit 1; }

step "python venv with the CloudEvents SDK"
venv="$root/.venv"
if ! "$venv/bin/python" -c 'import cloudevents, jsonschema' 2>/dev/null; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q -r scripts/requirements.txt
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test"
cargo test --workspace --all-features --locked

step "replay every bundled recording; validate with the CloudEvents Python SDK"
cargo build --release --locked --quiet
out="$state/replay"
rm -rf "$out" && mkdir -p "$out"
for recording in examples/recordings/*.jsonl; do
  name=$(basename "$recording")
  ./target/release/kfp-event-bridge --log warn replay "$recording" >"$out/$name"
  ./target/release/kfp-event-bridge --log warn replay "$recording" >"$out/$name.again"
  cmp -s "$out/$name" "$out/$name.again" || { echo "$name: two replays differ" >&2; exit 1; }
  rm "$out/$name.again"
done
"$venv/bin/python" scripts/validate_events.py schemas/event-data.v1.json "$out"/*.jsonl
