#!/usr/bin/env bash
# What US Core validation costs a load: paired runs (benches/ab.sh) of the
# same release binary without and with `--validate us-core` (default code
# checks in both).
# Usage: benches/validate.sh RUNS SIZE   e.g. benches/validate.sh 3 1GB
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,5p "$0"; exit 2; }
RUNS=$1 SIZE=$2
cd "$(dirname "$0")/.."
bin=$(realpath "${FHIRLAKE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirlake}")
wrappers=$(mktemp -d)
trap 'rm -rf "$wrappers"' EXIT
printf '#!/bin/sh\nexec %q "$@"\n' "$bin" >"$wrappers/unvalidated"
printf '#!/bin/sh\nexec %q "$@" --validate us-core\n' "$bin" >"$wrappers/validated"
chmod +x "$wrappers/unvalidated" "$wrappers/validated"
"$bin" bench --size "$SIZE" --generate-only >/dev/null
benches/ab.sh "$RUNS" "$SIZE" "$wrappers/unvalidated" "$wrappers/validated"
