#!/usr/bin/env bash
# `fhirlake view run` vs the same flattening hand-written in DuckDB SQL, on one
# Observation NDJSON file (default: the Observation file of a 2 GB synthetic
# set, ~430 MB). Both write Parquet; the script checks they produced the same rows.
# Usage: benches/view_vs_duckdb.sh [SIZE]
set -euo pipefail
SIZE="${1:-2GB}"
source "$(dirname "$0")/setup.sh"
OBS="$DATA/Observation.000.ndjson"
OUT=$(mktemp -d)
echo "input: $OBS ($(du -h "$OBS" | cut -f1)), $(nproc) cores, $(date -u +%F)"
start=$(date +%s.%N)
"$BIN" view run --view benches/views/observation.json --input "$OBS" --format parquet --out "$OUT/fhirlake.parquet"
end=$(date +%s.%N)
"$PY" - "$OBS" "$OUT" "$start" "$end" <<'PY'
import duckdb, os, sys, time
obs, out, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
mb = os.path.getsize(obs) / 1e6
print(f"fhirlake view run: {end - start:.2f} s, {mb / (end - start):.1f} MB/s")
con = duckdb.connect()
t = time.time()
con.execute(f"""
COPY (
  SELECT id::VARCHAR AS id, status,  -- DuckDB would infer UUID
         CASE WHEN subject.reference LIKE 'Patient/%' THEN substr(subject.reference, 9) END AS patient_id,
         list_filter(code.coding, c -> c.system = 'http://loinc.org')[1].code AS loinc_code,
         valueQuantity.value AS value, valueQuantity.unit AS unit,
         effectiveDateTime AS effective,
         cat.code AS category_code, cat.system AS category_system
  FROM (SELECT *, unnest(flatten(list_transform(category, c -> c.coding))) AS cat
        FROM read_ndjson_auto('{obs}'))
) TO '{out}/duckdb.parquet' (FORMAT parquet)""")
secs = time.time() - t
print(f"duckdb {duckdb.__version__} read_ndjson_auto + unnest: {secs:.2f} s, {mb / secs:.1f} MB/s")
q = ("SELECT count(*), sum(hash(id, status, patient_id, loinc_code, unit, effective, category_code, category_system)), "
     "round(sum(value), 3) FROM '{}'")
a = con.execute(q.format(f"{out}/fhirlake.parquet")).fetchone()
b = con.execute(q.format(f"{out}/duckdb.parquet")).fetchone()
print(f"rows fhirlake {a[0]} / duckdb {b[0]}; same rows: {a == b}")
PY
rm -rf "$OUT"
