#!/bin/sh
# Make a running Docker daemon read daemon.json again (registry-mirrors is reloadable):
# docker-reload.sh
set -u
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q docker 2>/dev/null; then
    systemctl reload docker 2>/dev/null || systemctl restart docker
elif pid=$(pidof dockerd 2>/dev/null); then
    # shellcheck disable=SC2086
    kill -HUP $pid
fi
exit 0
