#!/usr/bin/env bash
# Benchmark of the operator on the rig (see BENCHMARKS.md). `make bench` brings the rig up
# first; arguments (or BENCH_ARGS) go to the driver, e.g.
#   BENCH_ARGS="--objects 20 --latency-runs 10 --steady-seconds 30" make bench
#   scripts/bench.sh --help
# The driver (benches/operator.rs) starts a private EC2 emulator on a free 127.0.0.1 port and the
# RELEASE build of the operator; it prints a table and writes it to target/bench/report.md.
# BPL_BENCH_OPERATOR=path (or --operator-bin path) runs that operator binary instead, and
# BENCH_PROFILE=dev builds the driver (and its own operator) without the release profile's fat
# LTO, e.g. a release operator from `cargo build --release` with a debug driver:
#   cargo build --release --bin bedrock-privatelink-operator
#   BENCH_PROFILE=dev BPL_BENCH_OPERATOR=target/release/bedrock-privatelink-operator scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -f .rig/env ]]; then
  echo "bench: .rig/env missing; run 'scripts/rig up' (or 'make bench')" >&2
  exit 1
fi
set -a
# shellcheck disable=SC1091
source .rig/env
set +a
# shellcheck disable=SC2086
exec cargo bench ${BENCH_PROFILE:+--profile "$BENCH_PROFILE"} --bench operator -- ${BENCH_ARGS:-} "$@"
