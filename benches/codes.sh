#!/usr/bin/env bash
# What the code checks cost a load: paired runs (benches/ab.sh) of the same
# release binary with `--no-code-checks` and with the default checks.
# Usage: benches/codes.sh RUNS SIZE   e.g. benches/codes.sh 3 1GB
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,4p "$0"; exit 2; }
exec "$(dirname "$0")/flags_ab.sh" "$1" "$2" no-checks --no-code-checks checks ""
