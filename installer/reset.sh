#!/bin/sh
# Remove everything airlock put on this host, even after a failed install and without
# the image: reset.sh DATA_ROOT SCOPE FORCE
#   SCOPE: host (this host leaves a cluster that goes on) or cluster (all hosts go)
#   FORCE: 1 to go on when the runtime's uninstall script fails
# 1. the runtime's uninstall script, if the rootfs and its record are there;
# 2. the registry (systemd unit or detached process);
# 3. airlock's lines in /etc/hosts;
# 4. the mirror files airlock wrote (hosts.toml, the registry's CA, Docker's daemon.json
#    restored) and the directories it created for them;
# 5. the data root.
set -u
root=$1
scope=$2
force=$3


if [ -d "$root/rootfs" ] && [ -f "$root/cluster/uninstall" ]; then
    script=$(cat "$root/cluster/uninstall")
    if [ -n "$script" ] && [ -f "$root/rootfs/$script" ]; then
        if [ -f "$root/cluster/runtime.env" ]; then
            # The env recorded at init/join, then the caller's AIRLOCK_* over it.
            given=$(export -p | grep ' AIRLOCK_' || true)
            # shellcheck disable=SC1091
            . "$root/cluster/runtime.env"
            eval "$given"
        fi
        export AIRLOCK_UNINSTALL_SCOPE="$scope"
        if ! (cd "$root/rootfs" && sh "$script"); then
            echo "the runtime's uninstall script $script failed" >&2
            [ "$force" = 1 ] || exit 1
        fi
    fi
fi


unit=/etc/systemd/system/airlock-registry.service
if [ -f "$unit" ]; then
    systemctl disable --now airlock-registry.service >/dev/null 2>&1 || true
    rm -f "$unit"
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
pidfile="$root/run/registry.pid"
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$pid" 2>/dev/null || true
    fi
fi

if [ -f /etc/hosts ] && grep -q ' # airlock$' /etc/hosts; then
    tmp=/etc/hosts.airlock-tmp
    grep -v ' # airlock$' /etc/hosts > "$tmp" || true
    cat "$tmp" > /etc/hosts
    rm -f "$tmp"
fi

for f in /etc/containerd/certs.d/*/hosts.toml; do
    [ -f "$f" ] || continue
    if head -n 1 "$f" | grep -q 'written by airlock'; then rm -f "$f"; fi
done
# The registry's CA, under the name only airlock uses.
rm -f /etc/containerd/certs.d/*/airlock-ca.crt /etc/docker/certs.d/*/airlock-ca.crt
# Docker's daemon.json as it was before airlock merged its mirror in.
kept="$root/cluster/docker"
if [ -f "$kept/daemon.json.orig" ]; then
    cat "$kept/daemon.json.orig" > /etc/docker/daemon.json
elif [ -f "$kept/daemon.json.absent" ]; then
    rm -f /etc/docker/daemon.json
fi
if [ -f "$root/cluster/created-dirs" ]; then
    # Deepest first.
    sort -r "$root/cluster/created-dirs" | while IFS= read -r d; do
        if [ -n "$d" ]; then rmdir "$d" 2>/dev/null || true; fi
    done
fi

case "$root" in
/ | /usr | /etc | /var | /var/lib | /home | /root) echo "refusing to remove $root" >&2; exit 1 ;;
esac
rm -rf "$root"
