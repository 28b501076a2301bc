#!/bin/sh
# Print "STEP FINGERPRINT" for every step marker under DATA_ROOT/state: markers.sh DATA_ROOT
set -eu
dir="$1/state"
[ -d "$dir" ] || exit 0
for f in "$dir"/*; do
    [ -f "$f" ] || continue
    printf '%s %s\n' "${f##*/}" "$(cat "$f")"
done
