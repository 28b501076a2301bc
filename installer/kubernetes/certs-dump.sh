#!/bin/sh
# Print the public half of every certificate under a Kubernetes config directory, for
# `airlock cert check`: each `*.crt` whole, and of each kubeconfig (`*.conf`) only its
# client-certificate-data line. Keys never leave the host.
# certs-dump.sh [DIR]   (default /etc/kubernetes)
set -eu
dir=${1:-/etc/kubernetes}
cd "$dir" || exit 3
find . -name '*.crt' -type f | sort | while read -r f; do
    echo "=== $f"
    cat "$f"
done
for f in ./*.conf; do
    [ -f "$f" ] || continue
    echo "=== $f"
    grep 'client-certificate-data:' "$f" | head -n 1 || true
done
