#!/usr/bin/env bash
# fhirlake load vs DuckDB read_ndjson_auto -> Parquet, same files, same machine, same run.
# Usage: benches/compare_duckdb.sh [SIZE]   (default 1GB; needs a release build and .ci's venv)
set -euo pipefail
SIZE="${1:-1GB}"
source "$(dirname "$0")/setup.sh"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "dataset: $DATA ($(du -sh "$DATA" | cut -f1))"
sync
echo "== fhirlake load (fresh local lake)"
"$BIN" bench --size "$SIZE"
echo "== DuckDB $("$PY" -c 'import duckdb; print(duckdb.__version__)'): read_ndjson_auto -> Parquet, one file per type"
"$PY" - "$DATA" <<'PY'
import duckdb, glob, os, resource, shutil, sys, tempfile, time
data = sys.argv[1]
files = sorted(glob.glob(os.path.join(data, "*.ndjson")))
total = sum(os.path.getsize(f) for f in files)
out = tempfile.mkdtemp(prefix="duckdb-bench-")
con = duckdb.connect()
start = time.time()
for f in files:
    name = os.path.basename(f).split(".")[0].lower()
    con.execute(f"COPY (SELECT * FROM read_ndjson_auto('{f}')) TO '{out}/{name}.parquet' (FORMAT parquet)")
secs = time.time() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
shutil.rmtree(out)
print(f"duckdb: {total/1e6:.1f} MB in {secs:.2f} s: {total/1e6/secs:.1f} MB/s, peak RSS {rss:.0f} MB, threads {threads}, Parquet {size/1e6:.0f} MB")
PY
