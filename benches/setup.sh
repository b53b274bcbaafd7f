# Shared by the DuckDB comparison scripts (sourced after `set -euo pipefail`
# with SIZE set): builds fhirlake in release and generates (or reuses) the
# synthetic dataset. Sets BIN, PY and DATA; leaves the shell in the repo root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fhirlake-target}"
PY="${FHIRLAKE_PYTHON:-$HOME/.cache/fhirlake-venv/bin/python}"
cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/fhirlake"
DATA=$("$BIN" bench --size "$SIZE" --generate-only)
