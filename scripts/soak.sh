#!/usr/bin/env bash
# The soak (benches/soak.rs explains it): the live bridge for DURATION at RATE status updates per
# second into a ConfigMap checkpoint, publishing to NATS JetStream and Kafka at once, with each
# broker stopped, watches cut, a 410 forced, a SIGTERM roll, a SIGKILL and the API server
# unavailable on the way; every fact checked on both brokers at the end. The soak starts its own
# nats-server and noida-db on loopback ports (installed by scripts/test.sh) and stops only those.
# Usage: scripts/soak.sh [DURATION] [RATE]   (defaults 2m and 1000; DURATION like 90s, 10m, 1h)
#        scripts/soak.sh outage [OUTAGE] [RATE]   (the long-outage run: NATS alone stopped for
#        OUTAGE, default 10m, after a minute's warm-up; memory against the lane's bound, intake
#        paused and resumed, /readyz naming the sink throughout, nothing lost)
# Environment: PLOT=0 skips the plot (PNG from the samples with matplotlib, pinned in
# scripts/requirements-plot.txt, in a venv of its own); SOAK_DIR (.state/soak), SOAK_WORKFLOWS,
# SOAK_TASKS, SOAK_GC_AFTER, SOAK_SEED, SOAK_KEEP as in benches/soak.rs.
# Results: .state/soak/summary.json (also printed), samples.jsonl, bridge.log, soak.png.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(2m 1000)
dir=${SOAK_DIR:-$PWD/.state/soak}
for tool in nats-server noida-db; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (scripts/test.sh installs it)" >&2; exit 2; }
done
cargo build --release --locked --quiet
cargo bench --locked --quiet --bench soak --no-run 2>/dev/null
bench=$(ls -t target/release/deps/soak-* | grep -v '\.d$' | head -1)
# The binary copied first: a build in the shared target dir during the run cannot swap it.
mkdir -p .state/soak-bin
cp target/release/kfp-event-bridge .state/soak-bin/kfp-event-bridge
status=0
BRIDGE=$PWD/.state/soak-bin/kfp-event-bridge SOAK_DIR=$dir "$bench" "${args[@]}" || status=$?
if [ "${PLOT:-1}" != 0 ] && [ -s "$dir/summary.json" ]; then
  venv=.venv-plot
  "$venv/bin/python" -c 'import matplotlib' 2>/dev/null || {
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --require-hashes -r scripts/requirements-plot.txt
  }
  "$venv/bin/python" scripts/plot_soak.py "$dir/samples.jsonl" "$dir/summary.json" "$dir/soak.png"
  echo "plot: $dir/soak.png" >&2
fi
exit "$status"
