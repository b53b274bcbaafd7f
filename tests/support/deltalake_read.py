"""Reads a Delta table with python deltalake the ways users do; prints JSON.

usage: deltalake_read.py TABLE_PATH SQL
  to_pandas: "ok" or the refusal message (tables with deletion vectors);
  query: the rows of SQL over the table (registered as `t`) through
  deltalake's QueryBuilder, converted to pyarrow then pandas — the way
  round the refusal that the README documents.
"""

import json
import sys

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

path, sql = sys.argv[1], sys.argv[2]
table = DeltaTable(path)
try:
    table.to_pandas()
    to_pandas = "ok"
except Exception as error:  # deltalake raises its own DeltaProtocolError
    to_pandas = str(error)
result = QueryBuilder().register("t", table).execute(sql).read_all()
frame = pa.table(result).to_pandas()
rows = [[None if v is None else (v.item() if hasattr(v, "item") else v) for v in row]
        for row in frame.itertuples(index=False, name=None)]
print(json.dumps({"to_pandas": to_pandas, "rows": rows}, default=str))
