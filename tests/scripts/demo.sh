#!/usr/bin/env bash
# The demo behind `make demo`: build the hello example cluster image, bundle it, bring
# up 3 local test hosts (network namespaces with real sshd and containerd), install the
# bundle onto them, show what happened on each host, then tear everything down.
#
#   tests/scripts/demo.sh PATH/TO/airlock
#
# Needs root (network namespaces). Everything it starts is stopped on exit or Ctrl-C.
set -euo pipefail

airlock=$(realpath "${1:?usage: demo.sh PATH/TO/airlock}")
repo=$(cd "$(dirname "$0")/../.." && pwd)
testbed="$repo/tests/testbed/testbed.sh"
work=$(mktemp -d /tmp/airlock-demo.XXXXXX)
name="demo$$"
registry_pid=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ -n "${NO_COLOR:-}" ] && say() { printf '\n== %s\n' "$*"; }

cleanup() {
    set +e
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
    "$testbed" down --name "$name" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
    echo "demo: needs root to create test hosts (network namespaces); run: sudo make demo" >&2
    exit 1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: nothing answers on 127.0.0.1:$1" >&2
    return 1
}

say "1. A source registry on loopback (Debian's docker-registry) holding the app image"
port=$(free_port)
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
wait_port "$port"
sh "$repo/assets/examples/hello/app/make-image.sh" "$work/app" 1.0 >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/app:1.0" "docker://127.0.0.1:$port/airlockdemo/hello:1.0"
echo "docker.io/airlockdemo/hello:1.0 is served by 127.0.0.1:$port"

say "2. airlock build: the example Kubefile into a cluster image"
export AIRLOCK_ROOT="$work/store"
"$airlock" build -t hello-cluster:v1 --registry-mirror "docker.io=http://127.0.0.1:$port" \
    "$repo/assets/examples/hello"
"$airlock" images

say "3. airlock bundle: one self-extracting file"
"$airlock" bundle hello-cluster:v1 -o "$work/hello-cluster.run"
ls -l "$work/hello-cluster.run"
"$work/hello-cluster.run" info

say "4. Three test hosts (real sshd and containerd in network namespaces)"
eval "$("$testbed" up --name "$name" --hosts 3 --containerd)"
read -r -a hosts <<< "$TESTBED_HOSTS"
echo "hosts: ${hosts[*]}"
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
    - ips: [ ${hosts[1]}, ${hosts[2]} ]
      roles: [ node ]
YML

say "5. The bundle installs the cluster (no internet: images come from the bundle)"
export AIRLOCK_ROOT="$work/operator"
if [ -t 0 ] && [ -t 1 ] && "$work/hello-cluster.run" --help 2>/dev/null | grep -q wizard; then
    "$work/hello-cluster.run" wizard -f "$work/Clusterfile"
else
    "$work/hello-cluster.run" install -f "$work/Clusterfile" --yes
fi

say "6. What is on each host"
for i in 1 2 3; do
    ip=${hosts[$((i - 1))]}
    echo "--- host $i ($ip)"
    "$testbed" exec --name "$name" "$i" -- sh -c '
        grep " # airlock" /etc/hosts
        echo "containerd mirrors: $(ls /etc/containerd/certs.d | tr "\n" " ")"
        ctr --namespace airlock image pull --hosts-dir /etc/containerd/certs.d docker.io/airlockdemo/hello:1.0 >/dev/null
        echo "pulled through the mirror: $(ctr --namespace airlock images ls -q)"
        [ -f /var/lib/airlock/hello.out ] && echo "launch output: $(cat /var/lib/airlock/hello.out)"
        true'
done

say "7. Re-running the install changes nothing"
"$work/hello-cluster.run" install -f "$work/Clusterfile" --yes 2>&1 | tail -n 4

say "Done: tearing the test hosts down"
