#!/usr/bin/env bash
# Paired runs (benches/ab.sh) of one release binary under two sets of flags:
# what a feature costs a load.
# Usage: benches/flags_ab.sh RUNS SIZE NAME_A "FLAGS_A" NAME_B "FLAGS_B"
#   e.g. benches/flags_ab.sh 3 1GB no-checks --no-code-checks checks ""
set -euo pipefail
[ $# -ge 6 ] || { sed -n 2,5p "$0"; exit 2; }
RUNS=$1 SIZE=$2
cd "$(dirname "$0")/.."
bin=$(realpath "${FHIRLAKE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirlake}")
wrappers=$(mktemp -d)
trap 'rm -rf "$wrappers"' EXIT
# shellcheck disable=SC2016
printf '#!/bin/sh\nexec %q "$@" %s\n' "$bin" "$4" >"$wrappers/$3"
# shellcheck disable=SC2016
printf '#!/bin/sh\nexec %q "$@" %s\n' "$bin" "$6" >"$wrappers/$5"
chmod +x "$wrappers/$3" "$wrappers/$5"
"$bin" bench --size "$SIZE" --generate-only >/dev/null
benches/ab.sh "$RUNS" "$SIZE" "$wrappers/$3" "$wrappers/$5"
