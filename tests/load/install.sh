#!/usr/bin/env bash
# Load on the installer: one install of the small hello example onto HOSTS testbed
# hosts (default 64), the operator's peak RSS (VmHWM) sampled until it exits.
# Passes when the install succeeds and the peak RSS is under RSS_LIMIT_MIB (200).
# Also printed: the peak of the heap and other private memory (RssAnon) and of the
# mapped files (RssFile: mostly the binary's own pages, large for a debug build).
# Usage: tests/load/install.sh [path/to/airlock]   env: HOSTS (default 64),
#        RSS_LIMIT_MIB (default 200), KEEP_LOG=FILE (copy the install's output there),
#        HEAPTRACK=FILE (run the operator under heaptrack, profile to FILE.zst; the
#        RSS then is heaptrack's too, so no limit is checked). Needs root (the
#        testbed), docker-registry, skopeo, python3; about 40 MB of memory per host
#        (sshd + containerd).
set -euo pipefail
airlock=$(realpath "${1:-target/debug/airlock}")
hosts_n=${HOSTS:-64}
limit=${RSS_LIMIT_MIB:-200}
repo=$(cd "$(dirname "$0")/../.." && pwd)
testbed="$repo/tests/testbed/testbed.sh"
work=$(mktemp -d /tmp/airlock-load.XXXXXX)
name="load$$"
registry_pid=""
cleanup() {
    set +e
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
    "$testbed" down --name "$name" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ "$(id -u)" = 0 ] || { echo "install.sh: needs root (the testbed)" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/registry" "$port" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
sh "$repo/assets/examples/hello/app/make-image.sh" "$work/app" 1.0 >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/app:1.0" "docker://127.0.0.1:$port/airlockdemo/hello:1.0"
export AIRLOCK_ROOT="$work/store"
"$airlock" build -t hello-cluster:v1 --registry-mirror "docker.io=http://127.0.0.1:$port" \
    "$repo/assets/examples/hello" >/dev/null
"$airlock" bundle hello-cluster:v1 -o "$work/hello-cluster.run" >/dev/null

start=$(date +%s)
eval "$("$testbed" up --name "$name" --hosts "$hosts_n" --containerd)"
read -r -a hosts <<< "$TESTBED_HOSTS"
echo "testbed: $hosts_n hosts up in $(($(date +%s) - start)) s"
nodes=$(IFS=,; echo "${hosts[*]:1}")
cat > "$work/Clusterfile" <<YML
apiVersion: sealer.io/v2
kind: Cluster
metadata:
  name: hello
spec:
  image: hello-cluster:v1
  ssh:
    user: root
    pk: $TESTBED_KEY
  hosts:
    - ips: [ ${hosts[0]} ]
      roles: [ master ]
    - ips: [ ${nodes} ]
      roles: [ node ]
YML

export AIRLOCK_ROOT="$work/operator"
wrap=()
[ -n "${HEAPTRACK:-}" ] && wrap=(heaptrack -o "$HEAPTRACK")
start=$(date +%s)
"${wrap[@]}" "$work/hello-cluster.run" install -f "$work/Clusterfile" --yes >"$work/install.log" 2>&1 &
pid=$!
peak=0 anon=0 file=0
while kill -0 "$pid" 2>/dev/null; do
    # shellcheck disable=SC2046 # three numbers, split on purpose
    set -- $(awk '/^(VmHWM|RssAnon|RssFile):/ {v[$1]=$2} END {print v["VmHWM:"]+0, v["RssAnon:"]+0, v["RssFile:"]+0}' \
        "/proc/$pid/status" 2>/dev/null || echo 0 0 0)
    [ "${1:-0}" -gt "$peak" ] && peak=$1
    [ "${2:-0}" -gt "$anon" ] && anon=$2
    [ "${3:-0}" -gt "$file" ] && file=$3
    sleep 0.2
done
status=0
wait "$pid" || status=$?
took=$(($(date +%s) - start))
[ -n "${KEEP_LOG:-}" ] && cp "$work/install.log" "$KEEP_LOG"
echo "install onto $hosts_n hosts: exit $status in $took s, operator peak RSS $((peak / 1024)) MiB" \
    "(peak anon $((anon / 1024)) MiB, peak file-backed $((file / 1024)) MiB)"
if [ "$status" != 0 ]; then tail -30 "$work/install.log"; echo FAIL; exit 1; fi
if [ -n "${HEAPTRACK:-}" ]; then echo "heaptrack profile: $HEAPTRACK.*"; exit 0; fi
[ "$peak" -lt $((limit * 1024)) ] || { echo "FAIL: peak RSS above $limit MiB"; exit 1; }
echo PASS
