#!/usr/bin/env bash
# Paired A/B of fhirlake builds: alternates `bench` runs of each binary (so
# drift in the host's speed hits all of them alike) and prints, per binary,
# its sorted MB/s, CPU seconds (`perf stat`, when installed) and peak RSS.
# Usage: benches/ab.sh RUNS SIZE BINARY...   e.g. benches/ab.sh 5 1GB /tmp/old ./new
# BENCH_ARGS adds flags to every run (e.g. BENCH_ARGS=--no-views).
# Copy a build out of the target directory before rebuilding to keep it.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,6p "$0"; exit 2; }
RUNS=$1 SIZE=$2
shift 2
cd "$(dirname "$0")/.."
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for _ in $(seq "$RUNS"); do
  for bin in "$@"; do
    if command -v perf >/dev/null; then
      # shellcheck disable=SC2086
      out=$(perf stat -e task-clock "$bin" bench --size "$SIZE" ${BENCH_ARGS:-} 2>&1)
    else
      # shellcheck disable=SC2086
      out=$("$bin" bench --size "$SIZE" ${BENCH_ARGS:-} 2>&1)
    fi
    mbs=$(grep -o '[0-9.]* MB/s' <<<"$out" | head -1 | cut -d' ' -f1)
    cpu=$(awk '/task-clock/ {gsub(",", "", $1); printf "%.2f", $1 / 1000}' <<<"$out")
    rss=$(grep -o 'peak RSS [0-9]*' <<<"$out" | head -1 | cut -d' ' -f3)
    echo "$bin ${mbs:-?} ${cpu:--} ${rss:-?}" >>"$results"
  done
done
for bin in "$@"; do
  echo "$bin"
  echo "  MB/s:  $(awk -v b="$bin" '$1 == b {print $2}' "$results" | sort -n | tr '\n' ' ')"
  echo "  CPU s: $(awk -v b="$bin" '$1 == b {print $3}' "$results" | sort -n | tr '\n' ' ')"
  echo "  peak RSS MB: $(awk -v b="$bin" '$1 == b {print $4}' "$results" | sort -n | tr '\n' ' ')"
done
