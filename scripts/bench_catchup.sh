#!/usr/bin/env bash
# Catch-up of `run` after it was away (benches/catchup.rs): N finished and M running workflows of
# 50 nodes in the fake apiserver (in the benchmark's process, loopback), each bridge of BRIDGES
# run against it with a file sink (and NATS JetStream: SINKS) and a file and a ConfigMap checkpoint, 3 rounds interleaved,
# medians: time until every expected fact is out and the bridge idle, ConfigMap writes and MB
# written, API requests, checkpoint size, peak RSS, and the duplicates after a kill -9 at half
# way. One JSON line per (bridge, checkpoint, sink), then a table.
#   BRIDGES='before=/path/a after=/path/b'   (default: after=target/release/kfp-event-bridge)
#   COST='--latency-ms 2 --write-mb-per-s 20' (the default: an apiserver round trip and etcd's
#                                             write bandwidth on a small cluster; COST= for none)
#   STEADY='--steady-rate 100 --steady-seconds 30' (the default; STEADY= to skip)
#   SINKS=file,nats                          (default file; nats starts its own nats-server with
#                                             JetStream on a loopback port and stops only that)
# Extra arguments go to the benchmark, e.g. --rounds 1, --checkpoints configmap,
# --check-writes-per-fact 0.01 (exit 1 above it; the gate's quick check:
# COST= STEADY= scripts/bench_catchup.sh 1000 100 --rounds 1 --kill-rounds 0 --checkpoints configmap --check-writes-per-fact MAX).
# Usage: scripts/bench_catchup.sh [N [M]] [benchmark arguments]   (default 10000 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
finished=10000 running=1000
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then finished=$1; shift; fi
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then running=$1; shift; fi
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench catchup --no-run 2>/dev/null
helper=$(ls -t target/release/deps/catchup-* | grep -v '\.d$' | head -1)
state=.state/bench-catchup
mkdir -p "$state"
export BRIDGES=${BRIDGES:-after=target/release/kfp-event-bridge}
sinks=${SINKS:-file}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if [[ ",$sinks," == *,nats,* ]]; then
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  port=$(free_port)
  rm -rf "$state/nats-store"
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$state/nats-store" -n bench-catchup -P "$state/nats.pid" >"$state/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  export NATS_URL="nats://127.0.0.1:$port"
fi
# shellcheck disable=SC2086 # COST and STEADY are lists of arguments
"$helper" --finished "$finished" --running "$running" --dir "$state/runs" --sinks "$sinks" \
  ${COST---latency-ms 2 --write-mb-per-s 20} ${STEADY---steady-rate 100 --steady-seconds 30} "$@" \
  2> >(tee "$state/runs.log" >&2) | tee "$state/results.txt"
