#!/usr/bin/env bash
# `resend → RabbitMQ` (binary mode, publisher confirms, persistent, mandatory) side by side with a
# raw lapin publisher sending the same headers, bodies and properties with the same number of
# confirms outstanding. Own RabbitMQ and Erlang port mapper on loopback ports, data under .state,
# stopped at the end. 3 rounds interleaved, medians.
# Usage: scripts/bench_amqp.sh [LINES]   (default 30000 watch lines ≈ 10,600 events)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-30000}
state=$PWD/.state/bench-amqp
rm -rf "$state" && mkdir -p "$state/home"
python3 scripts/gen_large_recording.py "$state/large.jsonl" --lines "$lines"
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench amqp_publish --no-run 2>/dev/null
helper=$(ls -t target/release/deps/amqp_publish-* | grep -v '\.d$' | head -1)
bridge=./target/release/kfp-event-bridge
"$bridge" --log error replay "$state/large.jsonl" --sink "file:$state/events.jsonl"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); epmd_port=$(free_port); dist_port=$(free_port)
printf 'listeners.tcp.default = 127.0.0.1:%s\n' "$port" >"$state/rabbitmq.conf"
echo '[].' >"$state/enabled_plugins"
epmd -address 127.0.0.1 -port "$epmd_port" & epmd_pid=$!
HOME=$state/home RABBITMQ_NODENAME=rabbit-bench@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dist_port ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$epmd_port \
  RABBITMQ_CONFIG_FILE=$state/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=$state/enabled_plugins \
  RABBITMQ_MNESIA_BASE=$state/mnesia RABBITMQ_LOG_BASE=$state/log RABBITMQ_PID_FILE=$state/rabbit.pid \
  setsid /usr/lib/rabbitmq/bin/rabbitmq-server >/dev/null 2>&1 & rabbit_pid=$!
trap 'kill -KILL -- -"$rabbit_pid" 2>/dev/null || true; kill "$epmd_pid" 2>/dev/null || true' EXIT
for _ in $(seq 120); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.5; done
url="amqp://guest:guest@127.0.0.1:$port/%2f"
in_flight=256
: >"$state/results.txt"
for round in 1 2 3; do
  "$helper" setup "$url"
  start=$(date +%s.%N)
  /usr/bin/time -f "rss_kib %M" "$bridge" --log info --log-format json resend "$state/events.jsonl" \
    --sink "$url?exchange=bench&routing_key={type}" --max-in-flight "$in_flight" >/dev/null 2>"$state/bridge.log"
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
  "$helper" setup "$url"
  /usr/bin/time -f "rss_kib %M" "$helper" raw "$url" "$state/events.jsonl" "$in_flight" \
    >"$state/raw.json" 2>"$state/raw.time"
  python3 - "$state/raw.json" "$state/raw.time" >>"$state/results.txt" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
rss = int(re.search(r"rss_kib (\d+)", open(sys.argv[2]).read()).group(1))
print(json.dumps({"who": "raw", "events": r["events"], "seconds": r["seconds"],
                  "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "rss_kib": rss}))
PY
done
python3 - "$state/results.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate = {}
for who in ("bridge", "raw"):
    rs = [r for r in rows if r["who"] == who]
    med = lambda k: statistics.median(r[k] for r in rs)
    rate[who] = med("events") / med("seconds")
    print(f"{who:6}: {med('events'):.0f} events, {rate[who]:,.0f} events/s, p50 {med('p50_ms'):.2f} ms, "
          f"p99 {med('p99_ms'):.2f} ms, peak RSS {max(r['rss_kib'] for r in rs)/1024:.1f} MiB")
print(f"ratio bridge/raw: {rate['bridge']/rate['raw']:.2f}")
PY
