#!/usr/bin/env bash
# `resend → Kafka` side by side with a raw rdkafka producer sending the same headers, keys and
# values with the same settings (idempotent, acks=all, linger 5 ms), onto a 6-partition topic of
# a local noida-db broker. `resend` reads structured CloudEvents, so this measures the delivery
# engine and the sink, not the derivation (see bench_replay.sh). 3 rounds interleaved, medians.
# The raw producer runs twice: reading, parsing and encoding the file as it sends (the bridge's
# work; both timed from process start to exit), and with every record encoded before its clock
# starts (the send loop alone, an upper bound). It has every event in flight at once; the bridge
# gets --max-in-flight IN_FLIGHT
# (default 8192; the bridge's own default of 256 suits HTTP and per-run ordering, not bulk Kafka).
# Usage: IN_FLIGHT=N scripts/bench_kafka.sh [LINES]   (default 100000 watch lines ≈ 35,500 events)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-100000}
in_flight=${IN_FLIGHT:-8192}
state=.state/bench-kafka
rm -rf "$state/data" && mkdir -p "$state"
command -v noida-db >/dev/null || cargo install noida-db --version 0.2.3 --locked --no-default-features --features kafka
python3 scripts/gen_large_recording.py "$state/large.jsonl" --lines "$lines"
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench kafka_publish --no-run 2>/dev/null
helper=$(ls -t target/release/deps/kafka_publish-* | grep -v '\.d$' | head -1)
bridge=./target/release/kfp-event-bridge
"$bridge" --log error replay "$state/large.jsonl" --sink "file:$state/events.tmp" && mv "$state/events.tmp" "$state/events.jsonl"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bootstrap="127.0.0.1:$port"
noida-db start --only kafka --host 127.0.0.1 --kafka-port "$port" --data-dir "$state/data" >/dev/null 2>&1 &
echo $! >"$state/noida.pid"
trap 'kill "$(cat "$state/noida.pid")" 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
sleep 1
: >"$state/results.txt"
for round in 1 2 3; do
  "$helper" topic "$bootstrap" bench 6
  start=$(date +%s.%N)
  /usr/bin/time -f "rss_kib %M" "$bridge" --log info --log-format json resend "$state/events.jsonl" \
    --sink "kafka://$bootstrap/bench" --max-in-flight "$in_flight" >/dev/null 2>"$state/bridge.log"
  end=$(date +%s.%N)
  python3 - "$state/bridge.log" "$start" "$end" >>"$state/results.txt" <<'PY'
import json, re, sys
log, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
text = open(log).read()
s = next(json.loads(l)["fields"] for l in text.splitlines() if '"sink summary"' in l)
rss = int(re.search(r"rss_kib (\d+)", text).group(1))
print(json.dumps({"who": "bridge", "events": s["delivered"], "seconds": end - start,
                  "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "rss_kib": rss}))
PY
  for variant in streaming prepared; do
    "$helper" topic "$bootstrap" bench 6
    start=$(date +%s.%N)
    /usr/bin/time -f "rss_kib %M" "$helper" raw "$bootstrap" "$state/events.jsonl" bench "$variant" \
      >"$state/raw.json" 2>"$state/raw.time"
    end=$(date +%s.%N)
    python3 - "$state/raw.json" "$state/raw.time" "$variant" "$start" "$end" >>"$state/results.txt" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
rss = int(re.search(r"rss_kib (\d+)", open(sys.argv[2]).read()).group(1))
# Streaming does the bridge's work: timed like the bridge, from process start to exit.
seconds = float(sys.argv[5]) - float(sys.argv[4]) if sys.argv[3] == "streaming" else r["seconds"]
print(json.dumps({"who": "raw-" + sys.argv[3], "events": r["events"], "seconds": seconds,
                  "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "rss_kib": rss}))
PY
  done
done
python3 - "$state/results.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate = {}
labels = {"bridge": "bridge `resend`", "raw-streaming": "raw, reading the file as it sends",
          "raw-prepared": "raw, send loop only"}
for who, label in labels.items():
    rs = [r for r in rows if r["who"] == who]
    med = lambda k: statistics.median(r[k] for r in rs)
    rate[who] = med("events") / med("seconds")
    print(f"{label:34}: {med('events'):.0f} events, {rate[who]:,.0f} events/s, "
          f"p50 {med('p50_ms'):.2f} ms, p99 {med('p99_ms'):.2f} ms, "
          f"peak RSS {max(r['rss_kib'] for r in rs)/1024:.1f} MiB")
print(f"ratio bridge / raw doing the same work (streaming): {rate['bridge']/rate['raw-streaming']:.2f}")
print(f"ratio bridge / raw send loop alone: {rate['bridge']/rate['raw-prepared']:.2f}")
PY
