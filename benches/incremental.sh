#!/usr/bin/env bash
# A nightly-style delta (200 MB of new files: about 2.6% newer versions of
# stored resources, the rest new) loaded into lakes of growing size: wall
# time, peak RSS of the delta's own process, and rows rewritten (from the
# Delta commit metrics). Each base lake is built first, in its own process.
#   benches/incremental.sh [BIN] [BASES...]     (default: target/release/fhirlake, 0 1GB 4GB 16GB)
# Needs about 2.2x the largest base in free disk (its NDJSON and its lake).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/release/fhirlake}"
shift || true
BASES=("$@")
[ ${#BASES[@]} -gt 0 ] || BASES=(0 1GB 4GB 16GB)
WORK="${FHIRLAKE_BENCH_DIR:-target/fhirlake-bench}"
for base in "${BASES[@]}"; do
  "$BIN" bench --size 200MB --seed 7 --base "$base" --work-dir "$WORK" ${BENCH_ARGS:-}
  echo
done
