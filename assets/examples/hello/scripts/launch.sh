#!/bin/sh
# Launch of the hello example, run by airlock on the first master inside the unpacked
# rootfs. It pulls the application image with containerd under its original name
# (docker.io/...), which the mirror configuration airlock wrote sends to the cluster
# registry, then runs it once and keeps what it printed.
set -eu
image=docker.io/airlockdemo/hello:1.0
out="${AIRLOCK_ROOTFS%/rootfs}/hello.out"
ctr --namespace airlock image pull --hosts-dir /etc/containerd/certs.d "$image" >/dev/null
ctr --namespace airlock run --rm "$image" "hello-$$" /bin/busybox sh -c \
    'echo "$0 on $(hostname) via $1"' "$HELLO_GREETING" "$AIRLOCK_REGISTRY" > "$out"
cat "$out"
