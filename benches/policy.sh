#!/usr/bin/env bash
# What a policy costs a load: paired runs (benches/ab.sh) of the same release
# binary without and with `--policy` (default: benches/policy-20.toml, 20 rules
# and the full CMS code list). Usage: benches/policy.sh RUNS SIZE [POLICY]
#   e.g. benches/policy.sh 5 1GB
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,5p "$0"; exit 2; }
RUNS=$1 SIZE=$2 POLICY=$(realpath "${3:-$(dirname "$0")/policy-20.toml}")
cd "$(dirname "$0")/.."
bin=$(realpath "${FHIRLAKE_BIN:-${CARGO_TARGET_DIR:-target}/release/fhirlake}")
wrappers=$(mktemp -d)
trap 'rm -rf "$wrappers"' EXIT
printf '#!/bin/sh\nexec %q "$@"\n' "$bin" >"$wrappers/no-policy"
printf '#!/bin/sh\nexec %q "$@" --policy %q\n' "$bin" "$POLICY" >"$wrappers/policy"
chmod +x "$wrappers/no-policy" "$wrappers/policy"
"$bin" bench --size "$SIZE" --generate-only >/dev/null
benches/ab.sh "$RUNS" "$SIZE" "$wrappers/no-policy" "$wrappers/policy"
