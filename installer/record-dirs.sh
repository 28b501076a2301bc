#!/bin/sh
# Create directories, remembering those that did not exist so that `airlock reset`
# removes exactly what airlock created: record-dirs.sh DATA_ROOT DIR...
set -eu
root=$1
shift
list="$root/cluster/created-dirs"
mkdir -p "$root/cluster"
touch "$list"
for dir in "$@"; do
    missing=""
    d=$dir
    while [ ! -d "$d" ] && [ "$d" != / ]; do
        missing="$d
$missing"
        d=$(dirname "$d")
    done
    printf '%s' "$missing" | while IFS= read -r m; do
        [ -n "$m" ] || continue
        grep -qxF "$m" "$list" || printf '%s\n' "$m" >> "$list"
    done
    mkdir -p "$dir"
done
