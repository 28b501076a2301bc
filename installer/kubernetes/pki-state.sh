#!/bin/sh
# Which PKI a master runs on: pki-state.sh DATA_ROOT prints
#   control-plane yes|no   whether it has a kube-apiserver static pod (in
#                          /etc/kubernetes/manifests, or moved aside by a renew that
#                          did not finish)
#   applied HEX            the SHA-256 of the API server certificate its control plane
#                          was last (re)started on (written by kube.sh), when there is one
#   installed HEX          the SHA-256 of /etc/kubernetes/pki/apiserver.crt, when there
#                          is one (for masters installed before kube.sh recorded it)
# It changes nothing.
set -eu
stage="$1/cluster/kubernetes"
if [ -f /etc/kubernetes/manifests/kube-apiserver.yaml ] ||
    [ -f "$stage/manifests-aside/kube-apiserver.yaml" ]; then
    echo "control-plane yes"
else
    echo "control-plane no"
fi
if [ -f "$stage/pki-applied" ]; then
    echo "applied $(cat "$stage/pki-applied")"
fi
if [ -f /etc/kubernetes/pki/apiserver.crt ]; then
    echo "installed $(sha256sum /etc/kubernetes/pki/apiserver.crt | cut -d ' ' -f 1)"
fi
