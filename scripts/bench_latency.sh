#!/usr/bin/env bash
# End-to-end latency, status update at the fake apiserver → event at a consumer, of the live
# bridge (`run`) side by side with the floor (a minimal kube-rs watcher handing each raw object
# to the raw client of the same broker): stdout, NATS JetStream and Kafka, file and ConfigMap
# checkpoints, at each rate (benches/latency.rs explains what is measured). Starts its own
# nats-server (JetStream, store under .state/bench-latency) and noida-db Kafka broker on loopback
# ports and stops only those.
# Usage: [BRIDGES="before=PATH after=PATH"] [SINKS=stdout,nats,kafka] [CHECKPOINTS=file,configmap]
#        [ROUNDS=1] [WARMUP=2] scripts/bench_latency.sh [SECONDS] [RATES]
# (defaults 10 s per run and 10,100,1000 updates/s; BRIDGES defaults to
# after=target/release/kfp-event-bridge). Results: one JSON line per run, then a table, also
# saved in .state/bench-latency/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rates=${2:-10,100,1000}
state=.state/bench-latency
rm -rf "$state/store" "$state/kafka" && mkdir -p "$state"
sinks=${SINKS:-stdout,nats,kafka}
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench latency --no-run 2>/dev/null
bench=$(ls -t target/release/deps/latency-* | grep -v '\.d$' | head -1)
# Each binary copied first: a build in the shared target dir during the run cannot swap it.
mkdir -p "$state/bin"
bridges=""
for b in ${BRIDGES:-after=target/release/kfp-event-bridge}; do
  label=${b%%=*}; path=${b#*=}
  cp "$path" "$state/bin/$label"
  echo "bridge $label: $path sha256 $(sha256sum "$path" | cut -c1-12)" >&2
  bridges="$bridges $label=$state/bin/$label"
done
export BRIDGES=$bridges
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if [[ ",$sinks," == *,nats,* ]]; then
  port=$(free_port)
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$state/store" -n bench-latency -P "$state/nats.pid" >"$state/nats.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  export NATS_URL="nats://127.0.0.1:$port"
fi
if [[ ",$sinks," == *,kafka,* ]]; then
  command -v noida-db >/dev/null || cargo install noida-db --version 0.2.3 --locked --no-default-features --features kafka
  port=$(free_port)
  noida-db start --only kafka --host 127.0.0.1 --kafka-port "$port" --data-dir "$state/kafka" >"$state/kafka.log" 2>&1 &
  pids+=($!)
  echo $! >"$state/noida.pid"
  wait_port "$port"
  sleep 1
  export KAFKA_BOOTSTRAP="127.0.0.1:$port"
fi
mkdir -p "$state/logs" && rm -f "$state"/logs/*.log
LOG_DIR=$state/logs SINKS=$sinks "$bench" "$seconds" "$rates" | tee "$state/results.txt"
