#!/usr/bin/env bash
# Starts a real S3 server (SeaweedFS `weed mini`) on free 127.0.0.1 ports for
# the tests, and stops it. Every port is pinned and telemetry is off, so
# nothing listens beyond loopback or phones home (see shared NOTES.md).
#   scripts/s3-server.sh start STATE_DIR WEED_BIN   -> writes STATE_DIR/env, STATE_DIR/pid
#   scripts/s3-server.sh stop STATE_DIR
set -euo pipefail
cmd="$1"; state="$2"

if [ "$cmd" = stop ]; then
  if [ -f "$state/pid" ]; then
    pid=$(cat "$state/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$state/pid"
  fi
  exit 0
fi

weed="$3"
mkdir -p "$state/data"
read -r s3 s3g master masterg volume volumeg filer filerg admin adming extra < <(python3 - <<'PY'
import socket
socks = []
for _ in range(11):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
)
key="fhirlake-test-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$state/s3.json" <<JSON
{"identities":[
 {"name":"admin","credentials":[{"accessKey":"$key","secretKey":"$secret"}],"actions":["Admin","Read","Write","List","Tagging"]},
 {"name":"main-only","credentials":[{"accessKey":"main-$key","secretKey":"main-$secret"}],"actions":["Read:fhirlake-test","Write:fhirlake-test","List:fhirlake-test","Tagging:fhirlake-test"]},
 {"name":"restricted-only","credentials":[{"accessKey":"restricted-$key","secretKey":"restricted-$secret"}],"actions":["Read:fhirlake-restricted","Write:fhirlake-restricted","List:fhirlake-restricted","Tagging:fhirlake-restricted"]}
]}
JSON
"$weed" mini -dir="$state/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -s3.port="$s3" -s3.port.grpc="$s3g" -master.port="$master" -master.port.grpc="$masterg" \
  -volume.port="$volume" -volume.port.grpc="$volumeg" -filer.port="$filer" -filer.port.grpc="$filerg" \
  -admin.port="$admin" -admin.port.grpc="$adming" -admin.ui=false -webdav=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -metricsPort=0 \
  -s3.config="$state/s3.json" -bucket=fhirlake-test > "$state/weed.log" 2>&1 &
echo $! > "$state/pid"
for _ in $(seq 300); do
  if python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$s3),0.2)" 2>/dev/null \
     && curl -s -o /dev/null "http://127.0.0.1:$s3/" 2>/dev/null; then
    break
  fi
  kill -0 "$(cat "$state/pid")" 2>/dev/null || { echo "weed exited; log:"; tail -20 "$state/weed.log"; exit 1; }
  sleep 0.1
done
# A second bucket, and identities that may each use only one of the two:
# a segregated lake's own credentials (tests/it/policy/segregated_lake.rs).
for attempt in $(seq 100); do
  curl -sf -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" \
    -X PUT "http://127.0.0.1:$s3/fhirlake-restricted" && break
  [ "$attempt" = 100 ] && { echo "cannot create the second bucket; log:"; tail -20 "$state/weed.log"; exit 1; }
  sleep 0.1
done
cat > "$state/env" <<ENV
export FHIRLAKE_S3_ENDPOINT=http://127.0.0.1:$s3
export FHIRLAKE_S3_BUCKET=fhirlake-test
export FHIRLAKE_S3_KEY=$key
export FHIRLAKE_S3_SECRET=$secret
export FHIRLAKE_S3_RESTRICTED_BUCKET=fhirlake-restricted
export FHIRLAKE_S3_MAIN_ONLY_KEY=main-$key
export FHIRLAKE_S3_MAIN_ONLY_SECRET=main-$secret
export FHIRLAKE_S3_RESTRICTED_KEY=restricted-$key
export FHIRLAKE_S3_RESTRICTED_SECRET=restricted-$secret
ENV
echo "SeaweedFS S3 on 127.0.0.1:$s3 (pid $(cat "$state/pid"))"
