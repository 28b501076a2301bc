#!/bin/sh
# Make a build context for the etcd example in DEST (default: this directory): the
# Kubefile, etc/ and scripts/ of the example, plus Debian's etcd and etcdctl in bin/
# (apt-get install etcd-server etcd-client).
# Usage: prepare.sh [DEST]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here}
for bin in /usr/bin/etcd /usr/bin/etcdctl; do
    if [ ! -x "$bin" ]; then
        echo "prepare.sh: $bin is missing: apt-get install etcd-server etcd-client" >&2
        exit 1
    fi
done
mkdir -p "$dest/bin"
if [ "$dest" != "$here" ]; then
    cp -R "$here/Kubefile" "$here/etc" "$here/scripts" "$dest/"
fi
cp /usr/bin/etcd /usr/bin/etcdctl "$dest/bin/"
echo "build context ready: airlock build -t etcd-cluster:v1 $dest"
