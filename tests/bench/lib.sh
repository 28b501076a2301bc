# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run).

# put FILE: move FILE into the OCI layout at $STORE as a blob, print "DIGEST SIZE".
put() {
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$STORE/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}
