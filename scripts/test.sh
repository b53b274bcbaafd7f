#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (DuckDB + its delta extension from PyPI, into a venv under ~/.cache), then
# runs fmt, clippy and every test. Build output goes to a cache outside the
# clone so later runs do not rebuild the dependency tree.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FHIRLAKE_CACHE:-$HOME/.cache}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/fhirlake-target}"
VENV="$CACHE/fhirlake-venv"
PY_PACKAGES=(duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205 duckdb-ext-httpfs==1.4.4.20260205)

if ! "$VENV/bin/python" -c "import duckdb, duckdb_ext" 2>/dev/null; then
  echo "== installing DuckDB and its delta extension into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
export FHIRLAKE_PYTHON="$VENV/bin/python"
export FHIRLAKE_REQUIRE_DUCKDB=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets
