#!/bin/sh
# Runtime init (first master): a one-member etcd cluster.
set -eu
. scripts/common.sh
if etcdctl --endpoints="http://127.0.0.1:$ETCD_CLIENT_PORT" endpoint health >/dev/null 2>&1; then
    echo "etcd already runs on $AIRLOCK_HOST_IP"
    exit 0
fi
start_etcd new "$ETCD_NAME=$peer_url"
echo "etcd cluster started on $AIRLOCK_HOST_IP"
