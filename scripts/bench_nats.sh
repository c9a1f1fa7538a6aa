#!/usr/bin/env bash
# `resend → NATS` (JetStream with PubAcks, and core NATS) side by side with a raw async-nats client
# publishing the same bytes, subjects and headers with the same number of acks outstanding, twice:
# reading and parsing the file as it publishes (the bridge's work; both timed from process start
# to exit), and with every message prepared before its clock starts (the send loop alone).
# `resend` reads structured CloudEvents, so this measures the delivery engine and the sink, not the
# derivation (see bench_replay.sh for that). 3 rounds interleaved, medians; own nats-server on a
# loopback port with its store under .state, stopped at the end.
# Usage: scripts/bench_nats.sh [LINES]   (default 100000 watch lines ≈ 35,500 events)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-100000}
state=.state/bench-nats
rm -rf "$state/store" && mkdir -p "$state"
python3 scripts/gen_large_recording.py "$state/large.jsonl" --lines "$lines"
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench nats_publish --no-run 2>/dev/null
helper=$(ls -t target/release/deps/nats_publish-* | grep -v '\.d$' | head -1)
bridge=./target/release/kfp-event-bridge
"$bridge" --log error replay "$state/large.jsonl" --sink "file:$state/events.tmp" && mv "$state/events.tmp" "$state/events.jsonl"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="nats://127.0.0.1:$port"
nats-server -a 127.0.0.1 -p "$port" -js -sd "$state/store" -n bench -P "$state/nats.pid" >/dev/null 2>&1 &
trap 'kill "$(cat "$state/nats.pid")" 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
in_flight=256
: >"$state/results.txt"
for round in 1 2 3; do
  for mode in js core; do
    query=""; [ "$mode" = core ] && query="?jetstream=false"
    "$helper" stream "$url" BENCH 'bench.>'
    start=$(date +%s.%N)
    /usr/bin/time -f "rss_kib %M" "$bridge" --log info --log-format json resend "$state/events.jsonl" \
      --sink "$url/bench.{type}$query" --max-in-flight "$in_flight" >/dev/null 2>"$state/bridge.log"
    end=$(date +%s.%N)
    python3 - "$state/bridge.log" "$start" "$end" "$mode" >>"$state/results.txt" <<'PY'
import json, re, sys
log, start, end, mode = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
text = open(log).read()
s = next(json.loads(l)["fields"] for l in text.splitlines() if '"sink summary"' in l)
rss = int(re.search(r"rss_kib (\d+)", text).group(1))
print(json.dumps({"who": "bridge", "mode": mode, "events": s["delivered"], "seconds": end - start,
                  "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "rss_kib": rss}))
PY
    for variant in streaming prepared; do
      "$helper" stream "$url" BENCH 'bench.>'
      start=$(date +%s.%N)
      /usr/bin/time -f "rss_kib %M" "$helper" raw "$url" "$state/events.jsonl" "$mode" "$in_flight" "$variant" \
        >"$state/raw.json" 2>"$state/raw.time"
      end=$(date +%s.%N)
      python3 - "$state/raw.json" "$state/raw.time" "$mode" "$variant" "$start" "$end" >>"$state/results.txt" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
rss = int(re.search(r"rss_kib (\d+)", open(sys.argv[2]).read()).group(1))
# Streaming does the bridge's work: timed like the bridge, from process start to exit.
seconds = float(sys.argv[6]) - float(sys.argv[5]) if sys.argv[4] == "streaming" else r["seconds"]
print(json.dumps({"who": "raw-" + sys.argv[4], "mode": sys.argv[3], "events": r["events"],
                  "seconds": seconds, "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "rss_kib": rss}))
PY
    done
  done
done
python3 - "$state/results.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for mode, label in (("js", "JetStream (PubAck per event)"), ("core", "core NATS (flush)")):
    print(f"{label}:")
    rate = {}
    for who, name in (("bridge", "bridge `resend`"), ("raw-streaming", "raw, reading as it sends"),
                      ("raw-prepared", "raw, send loop only")):
        rs = [r for r in rows if r["who"] == who and r["mode"] == mode]
        med = lambda k: statistics.median(r[k] for r in rs)
        rate[who] = med("events") / med("seconds")
        print(f"  {name:26}: {med('events'):.0f} events, {rate[who]:,.0f} events/s, "
              f"p50 {med('p50_ms'):.2f} ms, p99 {med('p99_ms'):.2f} ms, "
              f"peak RSS {max(r['rss_kib'] for r in rs)/1024:.1f} MiB")
    print(f"  ratio bridge / raw doing the same work (streaming): {rate['bridge']/rate['raw-streaming']:.2f}")
    print(f"  ratio bridge / raw send loop alone: {rate['bridge']/rate['raw-prepared']:.2f}")
PY
