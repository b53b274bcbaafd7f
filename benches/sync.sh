#!/usr/bin/env bash
# Sync throughput from the in-process FHIR test server over loopback:
# resources/s and requests per 1,000 resources (release build).
#   benches/sync.sh [BYTES]     (default 50 MB of NDJSON, replicated from data/bulk/bds-r4-10)
set -euo pipefail
cd "$(dirname "$0")/.."
export FHIRLAKE_SYNC_BENCH_BYTES="${1:-50000000}"
cargo test --release --test it sync_throughput -- --ignored --nocapture 2>&1 | grep "sync bench"
