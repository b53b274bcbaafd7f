#!/usr/bin/env bash
# What US Core validation costs a load: paired runs (benches/ab.sh) of the
# same release binary without and with `--validate us-core` (default code
# checks in both).
# Usage: benches/validate.sh RUNS SIZE   e.g. benches/validate.sh 3 1GB
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,5p "$0"; exit 2; }
exec "$(dirname "$0")/flags_ab.sh" "$1" "$2" unvalidated "" validated "--validate us-core"
