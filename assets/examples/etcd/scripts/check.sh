#!/bin/sh
# Runtime check: this host's etcd member is healthy.
set -eu
. scripts/common.sh
etcdctl --endpoints="http://127.0.0.1:$ETCD_CLIENT_PORT" endpoint health
