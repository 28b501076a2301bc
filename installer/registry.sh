#!/bin/sh
# Start (or restart) airlock's registry over the store on this host:
# registry.sh DATA_ROOT PORT SCHEME [SERVE-FLAG...]
#   SCHEME: https or http; SERVE-FLAGs (--tls-cert FILE --tls-key FILE --htpasswd FILE)
#   go to `airlock registry serve` as they are (files under DATA_ROOT, written before).
# Under systemd it is a unit (airlock-registry.service); elsewhere a detached process
# whose PID is kept in DATA_ROOT/run/registry.pid.
set -eu
root=$1
port=$2
scheme=$3
shift 3
bin="$root/bin/airlock"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    unit=/etc/systemd/system/airlock-registry.service
    cat > "$unit.airlock-tmp" <<UNIT
[Unit]
Description=airlock cluster registry
After=network-online.target

[Service]
ExecStart=$bin --root $root/store registry serve --addr 0.0.0.0:$port --read-only $*
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
    mv -f "$unit.airlock-tmp" "$unit"
    systemctl daemon-reload
    systemctl enable airlock-registry.service >/dev/null 2>&1
    systemctl restart airlock-registry.service
else
    mkdir -p "$root/run" "$root/log"
    pidfile="$root/run/registry.pid"
    if [ -f "$pidfile" ]; then
        old=$(cat "$pidfile")
        if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
            kill "$old" 2>/dev/null || true
            i=0
            while kill -0 "$old" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        fi
    fi
    setsid "$bin" --root "$root/store" registry serve --addr "0.0.0.0:$port" --read-only "$@" \
        > "$root/log/registry.log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
fi
if [ "$scheme" = https ]; then
    "$bin" agent wait-registry --addr "127.0.0.1:$port" --https --timeout 30
else
    "$bin" agent wait-registry --addr "127.0.0.1:$port" --timeout 30
fi
