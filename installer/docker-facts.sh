#!/bin/sh
# Whether this host pulls with Docker rather than containerd, and the daemon.json that
# airlock's mirror is merged into: docker-facts.sh DATA_ROOT
# Prints `none`, or `docker` then a line `orig`, `current` or `absent` and the file:
#   orig: the daemon.json as it was before airlock first changed it (kept under
#         DATA_ROOT/cluster/docker/), so a re-run merges into the same base;
#   current: /etc/docker/daemon.json, untouched by airlock so far;
#   absent: there is none.
set -eu
root=$1
kept="$root/cluster/docker"
if [ -d /etc/containerd ] || { [ ! -d /etc/docker ] && ! command -v dockerd >/dev/null 2>&1; }; then
    echo none
    exit 0
fi
echo docker
if [ -f "$kept/daemon.json.orig" ]; then
    echo orig
    cat "$kept/daemon.json.orig"
elif [ -f "$kept/daemon.json.absent" ]; then
    echo absent
elif [ -f /etc/docker/daemon.json ]; then
    echo current
    cat /etc/docker/daemon.json
else
    echo absent
fi
