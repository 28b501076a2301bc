#!/bin/sh
# Runtime join (every other host, one at a time): add this host as a member through the
# first master, then start it with the members list etcd gave back.
set -eu
. scripts/common.sh
if etcdctl --endpoints="http://127.0.0.1:$ETCD_CLIENT_PORT" endpoint health >/dev/null 2>&1; then
    echo "etcd already runs on $AIRLOCK_HOST_IP"
    exit 0
fi
leader="http://$AIRLOCK_FIRST_MASTER:$ETCD_CLIENT_PORT"
# A join that failed after `member add` left an unstarted member: keep it.
if ! etcdctl --endpoints="$leader" member list | grep -q ", $peer_url,"; then
    etcdctl --endpoints="$leader" member add "$ETCD_NAME" --peer-urls="$peer_url" >/dev/null
fi
# "ID, STATUS, NAME, PEER ADDRS, CLIENT ADDRS, IS LEARNER": started members by name,
# this host (still unstarted, without a name) by ours.
initial=$(etcdctl --endpoints="$leader" member list | awk -F', ' -v me="$ETCD_NAME" -v url="$peer_url" '
    $4 == url { printf "%s%s=%s", sep, me, url; sep = ","; next }
    $2 == "started" { printf "%s%s=%s", sep, $3, $4; sep = "," }')
start_etcd existing "$initial"
echo "etcd member $ETCD_NAME joined"
