#!/usr/bin/env python3
"""Run SQL against Delta tables with DuckDB's delta extension, offline.

Usage: duckdb_query.py SQL  (prints the result rows as a JSON array of arrays)
S3: set FHIRLAKE_DUCKDB_S3="KEY_ID,SECRET,ENDPOINT" to create an S3 secret first.
The delta/httpfs extensions come from the duckdb-ext-* wheels (no download).
"""
import json
import os
import sys

import duckdb
import duckdb_ext

ext_dir = os.path.join(list(duckdb_ext.__path__)[0], "extensions")
con = duckdb.connect(config={"extension_directory": ext_dir, "autoinstall_known_extensions": "false"})
con.execute("LOAD delta")
s3 = os.environ.get("FHIRLAKE_DUCKDB_S3")
if s3:
    key, secret, endpoint = s3.split(",")
    con.execute("LOAD httpfs")
    con.execute(
        f"CREATE SECRET (TYPE s3, KEY_ID '{key}', SECRET '{secret}', ENDPOINT '{endpoint}', "
        "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
    )
rows = con.execute(sys.argv[1]).fetchall()
print(json.dumps(rows, default=str))
