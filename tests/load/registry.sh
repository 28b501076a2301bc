#!/bin/sh
# Load on airlock's registry: 64 concurrent pullers for DURATION seconds, each
# looping manifest GET + blob GET (a 16 MiB layer) against `airlock registry serve`
# on loopback, while the server's RSS is sampled every second.
# Passes when no request failed and the RSS at the end is under RSS_LIMIT_MIB
# (default 256). Prints: requests, errors, bytes, RSS first/max/last (KiB).
# Usage: tests/load/registry.sh [path/to/airlock]   env: DURATION (s, default 300),
#        PULLERS (default 64), RSS_LIMIT_MIB. Needs: curl, python3.
# shellcheck disable=SC2046 # `set -- $(cmd)` splits its fields on purpose
set -eu
AIRLOCK=${1:-}
if [ -z "$AIRLOCK" ]; then
    if [ -x target/release/airlock ]; then AIRLOCK=target/release/airlock; else AIRLOCK=target/debug/airlock; fi
fi
DURATION=${DURATION:-300}
PULLERS=${PULLERS:-64}
RSS_LIMIT_MIB=${RSS_LIMIT_MIB:-256}
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install it)"; exit 1; }
done
[ -x "$AIRLOCK" ] || { echo "no airlock binary at $AIRLOCK (cargo build first)"; exit 1; }
WORK=$(mktemp -d)
SERVER_PID=
PULLER_PIDS=
cleanup() {
    for pid in $PULLER_PIDS $SERVER_PID; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

STORE=$WORK/store
# shellcheck source=tests/bench/lib.sh
. "$(dirname "$0")/../bench/lib.sh"
one_blob_image 16777216 registry.local/load/blob:v1

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
ADDR=127.0.0.1:$PORT
"$AIRLOCK" --root "$STORE" registry serve --read-only --addr "$ADDR" >/dev/null 2>"$WORK/server.log" &
SERVER_PID=$!
i=0
until curl -fs "http://$ADDR/v2/" >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 2000 ] || { echo "registry did not answer"; cat "$WORK/server.log"; exit 1; }
    sleep 0.01
done

rss() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
END=$(($(date +%s) + DURATION))
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
# One puller: loop until END; per request one line "ok BYTES" or "err WHAT".
puller() {
    while [ "$(date +%s)" -lt "$END" ]; do
        if curl -fs -o /dev/null -H "$ACCEPT" "http://$ADDR/v2/load/blob/manifests/v1"; then
            echo "ok 0"
        else
            echo "err manifest"
        fi
        got=$(curl -fs --max-time 120 -o /dev/null -w '%{size_download}' "http://$ADDR/v2/load/blob/blobs/$LAYER" || echo fail)
        if [ "$got" = "$LAYER_SIZE" ]; then echo "ok $got"; else echo "err blob $got"; fi
    done
}
n=0
while [ "$n" -lt "$PULLERS" ]; do
    puller >"$WORK/puller.$n" &
    PULLER_PIDS="$PULLER_PIDS $!"
    n=$((n + 1))
done
FIRST=$(rss)
MAX=$FIRST
while [ "$(date +%s)" -lt "$END" ]; do
    sleep 1
    r=$(rss)
    [ "$r" -gt "$MAX" ] && MAX=$r
done
for pid in $PULLER_PIDS; do wait "$pid" || true; done
PULLER_PIDS=
LAST=$(rss)
cat "$WORK"/puller.* >"$WORK/all"
REQUESTS=$(wc -l <"$WORK/all")
ERRORS=$(grep -c '^err' "$WORK/all" || true)
BYTES=$(awk '$1 == "ok" {s += $2} END {printf "%.0f", s}' "$WORK/all")
echo "registry load: $PULLERS pullers, ${DURATION}s: $REQUESTS requests, $ERRORS errors, $BYTES bytes; RSS KiB first $FIRST max $MAX last $LAST"
grep '^err' "$WORK/all" | sort | uniq -c | head -5
[ "$ERRORS" = 0 ] || { echo "FAIL: requests failed"; exit 1; }
[ "$MAX" -lt $((RSS_LIMIT_MIB * 1024)) ] || { echo "FAIL: RSS above $RSS_LIMIT_MIB MiB"; exit 1; }
echo "PASS"
