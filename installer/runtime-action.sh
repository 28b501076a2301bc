#!/bin/sh
# Run the runtime script recorded for ACTION (check or uninstall) in the rootfs, with the
# env recorded at init/join (the caller's AIRLOCK_* env wins when it sets AIRLOCK_CLUSTER):
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
if [ -z "${AIRLOCK_CLUSTER:-}" ] && [ -f "$root/cluster/runtime.env" ]; then
    # shellcheck disable=SC1091
    . "$root/cluster/runtime.env"
fi
cd "$root/rootfs"
exec sh "$script"
