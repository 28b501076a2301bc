#!/bin/sh
# Serve the same image from airlock's registry and Debian's docker-registry on
# loopback, then measure each: 16 concurrent pullers of a 64 MiB blob (throughput),
# and manifest GET latency (p50/p99, ms) on an idle server and while the 16 pull;
# the CPU seconds the server and the pullers used in each round.
# Usage: tests/bench/registry.sh [path/to/airlock] [pulls per round, default 144]
# (144 pulls give a loaded round of about 4 s: several hundred latency samples.)
# Needs: docker-registry, curl, python3. Builds target/release/airlock if missing.
# shellcheck disable=SC2046 # `set -- $(cmd)` splits its fields into $1 $2 ... on purpose
set -eu
AIRLOCK=${1:-target/release/airlock}
PULLS=${2:-144}
PARALLEL=16
if [ ! -x "$AIRLOCK" ]; then
    cargo build --release --quiet
    AIRLOCK=target/release/airlock
fi
for tool in docker-registry curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install it)"; exit 1; }
done
WORK=$(mktemp -d)
AIRLOCK_PID=
DISTRIBUTION_PID=
cleanup() {
    for pid in $AIRLOCK_PID $DISTRIBUTION_PID; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_for() {
    i=0
    until curl -fs "http://$1/v2/" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 2000 ]; then echo "$1 did not answer"; exit 1; fi
        sleep 0.01
    done
}

# The image: one 64 MiB random layer (like a compressed container layer), in an
# OCI layout that is also an airlock store.
STORE=$WORK/store
# shellcheck source=tests/bench/lib.sh
. "$(dirname "$0")/lib.sh"
one_blob_image 67108864 registry.local/bench/blob:v1

# airlock's registry, straight over the store.
AIRLOCK_ADDR=127.0.0.1:$(free_port)
"$AIRLOCK" --root "$STORE" registry serve --read-only --addr "$AIRLOCK_ADDR" >/dev/null 2>"$WORK/airlock.log" &
AIRLOCK_PID=$!
wait_for "$AIRLOCK_ADDR"

# docker-registry, filled by pushing the same image with airlock's client.
DISTRIBUTION_ADDR=127.0.0.1:$(free_port)
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/distribution
http:
  addr: $DISTRIBUTION_ADDR
EOF
docker-registry serve "$WORK/registry.yml" >/dev/null 2>"$WORK/distribution.log" &
DISTRIBUTION_PID=$!
wait_for "$DISTRIBUTION_ADDR"
"$AIRLOCK" --root "$STORE" push registry.local/bench/blob:v1 "$DISTRIBUTION_ADDR/bench/blob:v1" \
    --docker-config "$WORK/docker" >/dev/null 2>"$WORK/push.log" || { cat "$WORK/push.log"; exit 1; }

ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'
for addr in "$AIRLOCK_ADDR" "$DISTRIBUTION_ADDR"; do
    got=$(curl -fsI -H "$ACCEPT" "http://$addr/v2/bench/blob/manifests/v1" | tr -d '\r' |
        sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
    [ "$got" = "$MANIFEST" ] || { echo "$addr serves manifest $got, expected $MANIFEST"; exit 1; }
done

cat >"$WORK/latency.py" <<'EOF'
# latency.py ADDR COUNT [STOPFILE]: manifest GETs on one keep-alive connection;
# prints "p50 p99 count" in milliseconds.
# Idle (no STOPFILE): COUNT GETs back to back.
# Loaded (STOPFILE): GETs at most one per 5 ms until STOPFILE exists, so the probe
# takes about the same CPU from the pullers whichever server it measures (a
# back-to-back loop burns more of the shared CPU against a faster server).
# Each GET is timed from its send.
import http.client, os, sys, time
addr, count = sys.argv[1], int(sys.argv[2])
stop = sys.argv[3] if len(sys.argv) > 3 else None
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=30)
headers = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
samples = []
begin = time.perf_counter()
for i in range(count):
    if stop and os.path.exists(stop):
        break
    if stop:
        due = begin + i * 0.005
        if due > time.perf_counter():
            time.sleep(due - time.perf_counter())
    sent = time.perf_counter()
    conn.request("GET", "/v2/bench/blob/manifests/v1", headers=headers)
    response = conn.getresponse()
    response.read()
    samples.append((time.perf_counter() - sent) * 1000)
    if response.status != 200:
        sys.exit("manifest GET answered %d" % response.status)
samples.sort()
pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
print("%.2f %.2f %d" % (pick(0.50), pick(0.99), len(samples)))
EOF

# cpu PID: CPU seconds (user + system) the process has used so far.
cpu() {
    awk -v tck="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / tck}' "/proc/$1/stat"
}

# pull ADDR PID: PULLS downloads of the blob, PARALLEL at a time; prints MB/s
# (10^6 bytes), the server's CPU seconds and the pullers' (all curl processes').
# Fails when any download is short.
pull() {
    before=$(cpu "$2")
    start=$(date +%s.%N)
    seq 1 "$PULLS" | /usr/bin/time -f '%U %S' -o "$WORK/pullers" timeout 600 xargs -P "$PARALLEL" -I{} \
        curl -fs --max-time 300 -o /dev/null -w '%{size_download}\n' \
        "http://$1/v2/bench/blob/blobs/$LAYER" >"$WORK/sizes"
    end=$(date +%s.%N)
    after=$(cpu "$2")
    bad=$(grep -vc "^$LAYER_SIZE\$" "$WORK/sizes" || true)
    if [ "$bad" != 0 ] || [ "$(wc -l <"$WORK/sizes")" != "$PULLS" ]; then
        echo "$1: short downloads"
        exit 1
    fi
    echo "$PULLS * $LAYER_SIZE / ($end - $start) / 1000000" | bc -l | xargs printf '%.0f '
    echo "$after - $before" | bc -l | xargs printf '%.2f '
    tail -1 "$WORK/pullers" | awk '{printf "%.2f\n", $1 + $2}'
}

# loaded ADDR PID [NICE]: manifest latency while PARALLEL pullers run, the probe at
# nice NICE (default 0); prints "MB/s server-cpu pullers-cpu p50 p99 n".
loaded() {
    rm -f "$WORK/stop"
    nice -n "${3:-0}" python3 "$WORK/latency.py" "$1" 20000 "$WORK/stop" >"$WORK/loaded" &
    probe=$!
    pulled=$(pull "$1" "$2")
    touch "$WORK/stop"
    wait "$probe"
    echo "$pulled $(cat "$WORK/loaded")"
}

# warm the page cache and the connections, then measure each twice, interleaved
curl -fs -o /dev/null "http://$AIRLOCK_ADDR/v2/bench/blob/blobs/$LAYER"
curl -fs -o /dev/null "http://$DISTRIBUTION_ADDR/v2/bench/blob/blobs/$LAYER"
set -- $(python3 "$WORK/latency.py" "$AIRLOCK_ADDR" 2000)
A_IDLE="$1 / $2"
set -- $(python3 "$WORK/latency.py" "$DISTRIBUTION_ADDR" 2000)
D_IDLE="$1 / $2"
set -- $(loaded "$AIRLOCK_ADDR" "$AIRLOCK_PID")
A1=$1; A_CPU1="$2 / $3"; A_LOAD1="$4 / $5 (n=$6)"
set -- $(loaded "$DISTRIBUTION_ADDR" "$DISTRIBUTION_PID")
D1=$1; D_CPU1="$2 / $3"; D_LOAD1="$4 / $5 (n=$6)"
set -- $(loaded "$AIRLOCK_ADDR" "$AIRLOCK_PID")
A2=$1; A_CPU2="$2 / $3"; A_LOAD2="$4 / $5 (n=$6)"
set -- $(loaded "$DISTRIBUTION_ADDR" "$DISTRIBUTION_PID")
D2=$1; D_CPU2="$2 / $3"; D_LOAD2="$4 / $5 (n=$6)"
# A third round with the probe at nice -10: what is left is the server's own delay,
# not the probe waiting for a CPU behind 16 pullers (not counted in MB/s).
set -- $(loaded "$AIRLOCK_ADDR" "$AIRLOCK_PID" -10)
A_PRIO="$4 / $5 (n=$6)"
set -- $(loaded "$DISTRIBUTION_ADDR" "$DISTRIBUTION_PID" -10)
D_PRIO="$4 / $5 (n=$6)"

echo "image: one $LAYER_SIZE-byte blob; $PULLS pulls, $PARALLEL at a time, per round; load $(cut -d' ' -f1-3 /proc/loadavg)"
row='%-16s | %-12s | %-26s | %-12s | %-21s | %-21s | %-21s\n'
# shellcheck disable=SC2059 # the format is the variable on purpose
printf "$row" registry "MB/s" "CPU s server/pullers" "idle p50/p99" "loaded p50/p99, 1" "loaded p50/p99, 2" "loaded, probe nice -10"
# shellcheck disable=SC2059
printf "$row" airlock "$A1, $A2" "$A_CPU1; $A_CPU2" "$A_IDLE" "$A_LOAD1" "$A_LOAD2" "$A_PRIO"
# shellcheck disable=SC2059
printf "$row" docker-registry "$D1, $D2" "$D_CPU1; $D_CPU2" "$D_IDLE" "$D_LOAD1" "$D_LOAD2" "$D_PRIO"
echo "throughput ratio airlock/docker-registry: $(echo "($A1 + $A2) / ($D1 + $D2)" | bc -l | xargs printf '%.2f')"
