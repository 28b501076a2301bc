#!/bin/sh
# Shared by the etcd example's runtime scripts; airlock runs them with sh in the rootfs
# with the AIRLOCK_* env of docs/runtimes.md.
set -eu
rootfs=$(pwd)
# shellcheck disable=SC1091
. "$rootfs/etc/etcd.env"
export ETCDCTL_API=3
unit=/etc/systemd/system/airlock-etcd.service
pidfile="$AIRLOCK_DATA_ROOT/run/etcd.pid"
# shellcheck disable=SC2034 # used by the scripts that source this one
peer_url="http://$AIRLOCK_HOST_IP:$ETCD_PEER_PORT"

etcdctl() { "$rootfs/bin/etcdctl" --dial-timeout=3s --command-timeout=10s "$@"; }

has_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# start_etcd STATE INITIAL_CLUSTER: a systemd unit where systemd runs, else a detached
# process with a pid file.
start_etcd() {
    flags="--initial-cluster-state $1 --initial-cluster $2"
    mkdir -p "$ETCD_DATA_DIR" "$AIRLOCK_DATA_ROOT/log" "$AIRLOCK_DATA_ROOT/run"
    chmod 700 "$ETCD_DATA_DIR"
    if has_systemd; then
        cat > "$unit" <<UNIT
[Unit]
Description=etcd (airlock etcd example)
After=network-online.target

[Service]
EnvironmentFile=$rootfs/etc/etcd.env
ExecStart=$rootfs/bin/etcd $flags
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
        systemctl daemon-reload
        systemctl enable airlock-etcd.service >/dev/null 2>&1
        systemctl restart airlock-etcd.service
    else
        stop_etcd
        set -a
        # shellcheck disable=SC1091
        . "$rootfs/etc/etcd.env"
        set +a
        # shellcheck disable=SC2086
        setsid "$rootfs/bin/etcd" $flags > "$AIRLOCK_DATA_ROOT/log/etcd.log" 2>&1 < /dev/null &
        echo $! > "$pidfile"
    fi
    wait_healthy "http://127.0.0.1:$ETCD_CLIENT_PORT"
}

stop_etcd() {
    if [ -f "$unit" ]; then
        systemctl disable --now airlock-etcd.service >/dev/null 2>&1 || true
        rm -f "$unit"
        systemctl daemon-reload || true
    fi
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            i=0
            while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    fi
}

wait_healthy() {
    i=0
    until etcdctl --endpoints="$1" endpoint health >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -ge 60 ]; then
            echo "etcd at $1 is not healthy after 60s" >&2
            tail -n 20 "$AIRLOCK_DATA_ROOT/log/etcd.log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 1
    done
}

# The client URLs of the masters other than this host, comma-separated.
other_endpoints() {
    echo "$AIRLOCK_MASTERS,$AIRLOCK_NODES" | tr ',' '\n' | while IFS= read -r ip; do
        [ -n "$ip" ] && [ "$ip" != "$AIRLOCK_HOST_IP" ] && printf 'http://%s:%s,' "$ip" "$ETCD_CLIENT_PORT"
    done | sed 's/,$//'
}
