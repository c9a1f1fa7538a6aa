#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every target in fuzz/: a recording's lines
# derived with the derivation's invariants asserted (derive_lines), arbitrary node trees through
# arbitrary phase sequences (node_tree), Argo's Kubernetes Events around their Workflow
# (kube_events), compressedNodes, the --config file, --sink values, resend input, and the
# encoders with arbitrary text and settings, every binding checked against the others
# (encoders; every derivation target checks the bindings of each event too). Seeds come from the bundled recordings and golden events (made under
# .state/fuzz/corpus, never committed). Each target runs SECONDS (default 60); a crash, timeout
# or out-of-memory input is kept in fuzz/artifacts/TARGET/ and fails the script.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Prints per target its executions (libFuzzer's stat::number_of_executed_units) and exec/s.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "cargo fuzz needs a nightly toolchain (libFuzzer's instrumentation): rustup toolchain install nightly" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.1 --locked --quiet
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(derive_lines node_tree kube_events compressed_nodes config_file sink_uri resend encoders)
state=.state/fuzz
corpus=$state/corpus
mkdir -p "$corpus" "$state/logs"
for t in "${targets[@]}"; do mkdir -p "$corpus/$t"; done

# Seeds: each recording whole and line by line; each golden event line; compressedNodes values;
# a few configuration files and sink URIs as the docs write them.
python3 - "$corpus" <<'PY'
import glob, hashlib, json, os, sys
corpus = sys.argv[1]
def seed(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(corpus, target)
    if os.path.isdir(d):
        open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb").write(data)
for path in sorted(glob.glob("examples/recordings/**/*.jsonl", recursive=True)):
    data = open(path, "rb").read()
    seed("derive_lines", data[:1 << 20])
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        seed("derive_lines", line)
        try:
            nodes = json.loads(line)["object"].get("status", {}).get("compressedNodes")
        except Exception:
            nodes = None
        if nodes:
            seed("compressed_nodes", nodes)
for path in sorted(glob.glob("tests/golden/**/*.jsonl", recursive=True)):
    data = open(path, "rb").read()
    seed("resend", data)
    for line in data.split(b"\n")[:20]:
        seed("resend", line)
for uri in [
    "http://receiver.default.svc/events?mode=structured&types=run.*,task.failed",
    "https://user:pw@hooks.example.com/{namespace}/{type}?token_file=/var/run/token&header=X-Team:%20data",
    "nats://nats:4222/kfp.{namespace}.{type}?stream=KFP&creds_file=/etc/nats/user.creds",
    "kafka://kafka-0:9092,kafka-1:9092/kfp-events?key={kfprunid}&acks=all&sasl.mechanism=SCRAM-SHA-512",
    "amqps://bridge@rabbitmq/%2f?exchange=kfp&routing_key=kfp.{type}&ca_file=/etc/ca.pem",
    "file:/var/lib/kfp-event-bridge/dead.jsonl?name=dead&format=cdevents",
    "stdout:?pipelines=train-*&namespaces=team-a",
]:
    seed("sink_uri", uri)
    seed("config_file", "sinks:\n  - uri: %s\n" % json.dumps(uri))
seed("config_file", """sinks:
  - uri: nats://nats:4222/kfp
    name: nats
    types: [run.*]
    format: cdevents
    options: {stream: KFP}
  - uri: http://receiver/events
    namespaces: [team-a]
    pipelines: [train-*]
    options: {header: ["X-Team: a", "X-Env: prod"]}
dead_letter: file:/tmp/dead.jsonl
retry: {initial: 100ms, max: 30s, multiplier: 2.0, max_attempts: 5, retry_after_max: 5m}
lanes: {capacity: 10000, window: 256}
shutdown_timeout: 30s
""")
PY

failed=0
summary=$state/summary.txt
: >"$summary"
for t in "${targets[@]}"; do
  log=$state/logs/$t.log
  max_len=4096
  case $t in derive_lines|resend) max_len=1048576 ;; compressed_nodes) max_len=262144 ;; esac
  set +e
  (cd fuzz && cargo +nightly fuzz run -O "$t" "../$corpus/$t" -- \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1) >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "$t: FAILED (exit $rc) after ${execs:-?} executions; see $log and fuzz/artifacts/$t/" | tee -a "$summary"
  else
    echo "$t: ${execs:-?} executions in ${seconds}s (${rate:-?}/s), no crash" | tee -a "$summary"
  fi
done
exit "$failed"
