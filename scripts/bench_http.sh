#!/usr/bin/env bash
# `replay → HTTP` (binary mode) against a local receiver, side by side with a minimal reqwest client
# posting the very same requests (recorded from the bridge's run) with the same number in flight.
# Reports events/s, p50/p99 publish-to-2xx latency and peak RSS; 3 rounds interleaved, medians.
# Usage: scripts/bench_http.sh [LINES]   (default 30000 watch lines ≈ 10,600 events)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-30000}
state=.state/bench-http
mkdir -p "$state"
python3 scripts/gen_large_recording.py "$state/large.jsonl" --lines "$lines"
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench http_publish --no-run 2>/dev/null
helper=$(ls -t target/release/deps/http_publish-* | grep -v '\.d$' | head -1)
in_flight=256
receiver() { # receiver PORT_FILE [RECORD]
  rm -f "$1"; "$helper" receive "$@" & receiver_pid=$!
  for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.05; done
}
stop() { curl -s -X POST "http://127.0.0.1:$(cat "$1")/stop" >/dev/null 2>&1 || \
  python3 -c "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], b'', method='POST'))" "http://127.0.0.1:$(cat "$1")/stop"; wait "$receiver_pid"; }
: >"$state/results.txt"
for round in 1 2 3; do
  receiver "$state/port" "$state/requests.jsonl"
  start=$(date +%s.%N)
  /usr/bin/time -f "bridge_rss_kib %M" ./target/release/kfp-event-bridge --log info --log-format json \
    replay "$state/large.jsonl" --sink "http://127.0.0.1:$(cat "$state/port")/events" \
    --max-in-flight "$in_flight" >/dev/null 2>"$state/bridge.log"
  end=$(date +%s.%N)
  stop "$state/port"
  python3 - "$state/bridge.log" "$start" "$end" >>"$state/results.txt" <<'PY'
import json, re, sys
log, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
text = open(log).read()
summary = next(json.loads(l)["fields"] for l in text.splitlines() if '"sink summary"' in l)
rss = int(re.search(r"bridge_rss_kib (\d+)", text).group(1))
print(json.dumps({"who": "bridge", "events": summary["delivered"], "seconds": end - start,
                  "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"], "rss_kib": rss}))
PY
  rm -f "$state/out.jsonl"
  start=$(date +%s.%N)
  ./target/release/kfp-event-bridge --log warn replay "$state/large.jsonl" --sink "file:$state/out.jsonl"
  end=$(date +%s.%N)
  echo "{\"who\": \"file\", \"events\": $(wc -l <"$state/out.jsonl"), \"seconds\": $(python3 -c "print($end - $start)"), \"p50_ms\": 0, \"p99_ms\": 0, \"rss_kib\": 0}" >>"$state/results.txt"
  receiver "$state/port"
  /usr/bin/time -f "raw_rss_kib %M" "$helper" raw "$state/requests.jsonl" \
    "http://127.0.0.1:$(cat "$state/port")/events" "$in_flight" >"$state/raw.json" 2>"$state/raw.time"
  stop "$state/port"
  python3 - "$state/raw.json" "$state/raw.time" >>"$state/results.txt" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
rss = int(re.search(r"raw_rss_kib (\d+)", open(sys.argv[2]).read()).group(1))
print(json.dumps({"who": "raw", "events": r["requests"], "seconds": r["seconds"],
                  "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "rss_kib": rss}))
PY
done
python3 - "$state/results.txt" "$(wc -l <"$state/large.jsonl")" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda who, key: statistics.median(r[key] for r in rows if r["who"] == who)
print(f"recording: {sys.argv[2]} watch lines")
for who, what in (("bridge", "bridge replay -> HTTP (derive, encode, lanes, binary mode)"),
                  ("raw", "raw reqwest, same requests, same in-flight")):
    ev = med(who, "events"); s = med(who, "seconds")
    print(f"{what}: {ev:.0f} events in {s:.2f} s = {ev/s:,.0f} events/s, "
          f"p50 {med(who, 'p50_ms'):.2f} ms, p99 {med(who, 'p99_ms'):.2f} ms, "
          f"peak RSS {max(r['rss_kib'] for r in rows if r['who'] == who)/1024:.1f} MiB")
b = med("bridge", "events") / med("bridge", "seconds"); r = med("raw", "events") / med("raw", "seconds")
f = med("file", "events") / med("file", "seconds")
print(f"for reference, bridge replay -> file (the input side alone): {f:,.0f} events/s")
print(f"throughput ratio bridge/raw: {b/r:.2f}; bridge HTTP vs bridge file: {b/f:.2f}")
PY
