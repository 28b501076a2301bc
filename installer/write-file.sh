#!/bin/sh
# Write stdin to a file atomically: write-file.sh PATH MODE
set -eu
path=$1
mode=$2
mkdir -p "$(dirname "$path")"
tmp="$path.airlock-tmp"
cat > "$tmp"
chmod "$mode" "$tmp"
mv -f "$tmp" "$path"
