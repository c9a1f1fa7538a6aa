#!/usr/bin/env bash
# Kafka over TLS with SASL SCRAM-SHA-256/512 against a real broker (tests/brokers/kafka_security.rs).
# The broker is nisshi 0.8.1 (the renamed tansu), built from crates.io with the nightly toolchain
# (it needs rustc 1.96 or newer) and the libsql feature (TLS, SCRAM users kept in SQLite): about
# 25 minutes on 2 cores, which is why the default gate (scripts/test.sh) does not run it.
# Installs into .state/tools/nisshi-0.8.1 unless NISSHI names a binary; starts and stops only
# its own brokers (loopback, ephemeral ports).
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.8.1
bin=${NISSHI:-$PWD/.state/tools/nisshi-$version/bin/nisshi}
if ! "$bin" --version 2>/dev/null | grep -q "$version"; then
  rustup toolchain list | grep -q '^nightly' || {
    echo "nisshi $version needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
  }
  cargo +nightly install nisshi --version "$version" --locked --no-default-features \
    --features libsql --root "$PWD/.state/tools/nisshi-$version"
fi
KFP_TEST_NISSHI=$bin cargo test --locked --all-features --test brokers kafka_security -- --nocapture
