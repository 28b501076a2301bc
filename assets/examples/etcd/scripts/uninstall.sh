#!/bin/sh
# Runtime uninstall. AIRLOCK_UNINSTALL_SCOPE=host: this host leaves a cluster that goes
# on, so its member is removed first through another member; =cluster: every host goes.
set -eu
. scripts/common.sh
if [ "${AIRLOCK_UNINSTALL_SCOPE:-cluster}" = host ]; then
    others=$(other_endpoints)
    id=$(etcdctl --endpoints="$others" member list 2>/dev/null | awk -F', ' -v url="$peer_url" '$4 == url { print $1 }')
    if [ -n "$id" ]; then
        etcdctl --endpoints="$others" member remove "$id"
    fi
fi
stop_etcd
rm -rf "$ETCD_DATA_DIR"
echo "etcd removed from $AIRLOCK_HOST_IP"
