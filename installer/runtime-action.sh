#!/bin/sh
# Run the runtime script recorded for ACTION (check or uninstall) in the rootfs, with the
# env recorded at init/join (the caller's AIRLOCK_* env wins):
# runtime-action.sh DATA_ROOT ACTION
# Exit 0 and say so when there is no such script.
set -eu
root=$1
action=$2
script=""
if [ -f "$root/cluster/$action" ]; then script=$(cat "$root/cluster/$action"); fi
if [ -z "$script" ] || [ ! -f "$root/rootfs/$script" ]; then
    echo "no $action script"
    exit 0
fi
if [ -f "$root/cluster/runtime.env" ]; then
    # The env recorded at init/join, then the caller's AIRLOCK_* over it.
    given=$(export -p | grep ' AIRLOCK_' || true)
    # shellcheck disable=SC1091
    . "$root/cluster/runtime.env"
    eval "$given"
fi
cd "$root/rootfs"
exec sh "$script"
