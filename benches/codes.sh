#!/usr/bin/env bash
# What the code checks cost a load: paired runs (benches/ab.sh) of the same
# release binary with `--no-code-checks` and with the default checks.
# Usage: benches/codes.sh RUNS SIZE   e.g. benches/codes.sh 3 1GB
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,4p "$0"; exit 2; }
RUNS=$1 SIZE=$2
cd "$(dirname "$0")/.."
bin=$(realpath "${FHIRLAKE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirlake}")
wrappers=$(mktemp -d)
trap 'rm -rf "$wrappers"' EXIT
printf '#!/bin/sh\nexec %q "$@" --no-code-checks\n' "$bin" >"$wrappers/no-checks"
printf '#!/bin/sh\nexec %q "$@"\n' "$bin" >"$wrappers/checks"
chmod +x "$wrappers/no-checks" "$wrappers/checks"
"$bin" bench --size "$SIZE" --generate-only >/dev/null
benches/ab.sh "$RUNS" "$SIZE" "$wrappers/no-checks" "$wrappers/checks"
