#!/usr/bin/env bash
# Throughput and peak RSS of `replay → file` on a large recording (>= 100k watch lines), side by
# side with the floor (serde_json parsing the same lines, nothing else) and with the admin server
# and metrics on (`--admin-addr`; off is the replay default), interleaved, 5 rounds.
# Usage: scripts/bench_replay.sh [LINES]
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-100000}
state=.state/bench
mkdir -p "$state"
python3 scripts/gen_large_recording.py "$state/large.jsonl" --lines "$lines"
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench replay_floor --no-run 2>/dev/null
floor=$(ls -t target/release/deps/replay_floor-* | grep -v '\.d$' | head -1)
for round in 1 2 3 4 5; do
  rm -f "$state/out.jsonl"
  /usr/bin/time -f "bridge %e s %M KiB" ./target/release/kfp-event-bridge --log warn replay "$state/large.jsonl" --sink "file:$state/out.jsonl" 2>>"$state/bridge.txt"
  /usr/bin/time -f "floor %e s %M KiB" "$floor" "$state/large.jsonl" "$state/floor.out" 2>>"$state/floor.txt"
  rm -f "$state/out-metrics.jsonl"
  /usr/bin/time -f "metrics %e s %M KiB" ./target/release/kfp-event-bridge --log warn replay "$state/large.jsonl" --sink "file:$state/out-metrics.jsonl" --admin-addr 127.0.0.1:0 2>>"$state/metrics.txt"
done
cmp -s "$state/out.jsonl" "$state/out-metrics.jsonl" || { echo "metrics on changed the output" >&2; exit 1; }
events=$(wc -l <"$state/out.jsonl"); lines=$(wc -l <"$state/large.jsonl")
python3 - "$state" "$lines" "$events" <<'PY'
import re, statistics, sys
state, lines, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def runs(name):
    text = open(f"{state}/{name}.txt").read()
    return [(float(s), int(k)) for s, k in re.findall(rf"{name} ([\d.]+) s (\d+) KiB", text)]
b, f, m = runs("bridge"), runs("floor"), runs("metrics")
bs, fs, ms = (statistics.median(s for s, _ in r) for r in (b, f, m))
print(f"recording: {lines} watch lines -> {events} CloudEvents")
print(f"bridge: median {bs:.2f} s = {lines/bs:,.0f} lines/s, {events/bs:,.0f} events/s, peak RSS {max(k for _, k in b)/1024:.1f} MiB")
print(f"floor (serde_json parse only): median {fs:.2f} s = {lines/fs:,.0f} lines/s, peak RSS {max(k for _, k in f)/1024:.1f} MiB")
print(f"bridge with metrics on (--admin-addr): median {ms:.2f} s = {events/ms:,.0f} events/s, peak RSS {max(k for _, k in m)/1024:.1f} MiB")
print(f"bridge / floor time ratio: {bs/fs:.2f}")
print(f"metrics on / off time ratio: {ms/bs:.3f}")
PY
rm -f "$state/bridge.txt" "$state/floor.txt" "$state/metrics.txt"
