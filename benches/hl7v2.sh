#!/usr/bin/env bash
# HL7 v2 throughput (release build), into a fresh local lake each:
#  1. `hl7v2 load` of one file of N distinct messages (the bundled fixtures,
#     each copy with its own MSH-10, MSH-7 and patient): messages/s, peak RSS;
#  2. `hl7v2 listen` on loopback, driven by C synchronous MLLP senders
#     (benches/hl7v2_feed.py: send one, wait for the ACK): messages/s and
#     ACK latency p50/p99, at two --commit-interval settings.
#   benches/hl7v2.sh [BIN] [MESSAGES] [CONNECTIONS]   (default: target/release/fhirlake 20000 50)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/release/fhirlake}"
MESSAGES="${2:-20000}"
CONNECTIONS="${3:-50}"
PY="${FHIRLAKE_PYTHON:-python3}"
WORK=$(mktemp -d)
trap 'kill "${LISTENER:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$PY" benches/hl7v2_feed.py make "$WORK/feed.hl7" "$MESSAGES"
echo "feed: $MESSAGES messages, $(du -m "$WORK/feed.hl7" | cut -f1) MB"

echo "== hl7v2 load (one file)"
/usr/bin/time -f "%e s wall, peak RSS %M KB" \
  "$BIN" hl7v2 load "$WORK/feed.hl7" --lake "$WORK/lake-files" --json >"$WORK/load.json" 2>"$WORK/load.err" || true
tail -1 "$WORK/load.err"
"$PY" - "$WORK/load.json" "$WORK/load.err" "$MESSAGES" <<'EOF'
import json, re, sys
reports = json.load(open(sys.argv[1]))
wall = float(re.search(r"([0-9.]+) s wall", open(sys.argv[2]).read()).group(1))
messages = {}
for report in reports:
    for key, n in report["hl7v2"]["messages"].items():
        messages[key] = messages.get(key, 0) + n
resources = sum(r["hl7v2"]["resources"] for r in reports)
print(f"hl7v2 load: {messages}, {resources} resources, {wall:.2f} s: {int(sys.argv[3]) / wall:,.0f} messages/s")
EOF

for interval in 1s 100ms; do
  echo "== hl7v2 listen, --commit-interval $interval, $CONNECTIONS senders"
  rm -rf "$WORK/lake-mllp"
  "$BIN" hl7v2 listen --mllp 127.0.0.1:0 --commit-interval "$interval" \
    --lake "$WORK/lake-mllp" 2>"$WORK/listen.err" &
  LISTENER=$!
  for _ in $(seq 100); do
    grep -q "listening for MLLP on" "$WORK/listen.err" && break
    sleep 0.1
  done
  port=$(grep -o "listening for MLLP on .*" "$WORK/listen.err" | rev | cut -d: -f1 | rev)
  "$PY" benches/hl7v2_feed.py send 127.0.0.1 "$port" "$WORK/feed.hl7" "$CONNECTIONS"
  kill -TERM "$LISTENER"
  wait "$LISTENER" || true
  LISTENER=
done
