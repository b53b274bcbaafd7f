#!/usr/bin/env bash
# What a policy costs a load: paired runs (benches/ab.sh) of the same release
# binary without and with `--policy` (default: benches/policy-20.toml, 20 rules
# and the full CMS code list). Usage: benches/policy.sh RUNS SIZE [POLICY]
#   e.g. benches/policy.sh 5 1GB
# COMPARTMENT=1 adds a third binary: the same policy with its Part 2
# segregate rules taking Encounter compartments (`compartment = "encounter"`,
# as the shipped part2 does), which surveys a job's Encounters first.
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
binaries=("$wrappers/no-policy" "$wrappers/policy")
if [ "${COMPARTMENT:-}" = 1 ]; then
  sed '/^name = "part2-\(labelled\|cms\|snomed\)"$/a compartment = "encounter"' "$POLICY" \
    >"$wrappers/compartment.toml"
  grep -q '^compartment' "$wrappers/compartment.toml" || { echo "no part2 rules in $POLICY" >&2; exit 2; }
  printf '#!/bin/sh\nexec %q "$@" --policy %q\n' "$bin" "$wrappers/compartment.toml" \
    >"$wrappers/policy-compartment"
  chmod +x "$wrappers/policy-compartment"
  binaries+=("$wrappers/policy-compartment")
fi
"$bin" bench --size "$SIZE" --generate-only >/dev/null
benches/ab.sh "$RUNS" "$SIZE" "${binaries[@]}"
