#!/bin/sh
# Print the hex digests of the blobs present in a store: list-blobs.sh STORE
set -eu
dir="$1/blobs/sha256"
[ -d "$dir" ] || exit 0
ls "$dir"
