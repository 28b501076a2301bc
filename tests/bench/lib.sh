# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run).

# put FILE: move FILE into the OCI layout at $STORE as a blob, print "DIGEST SIZE".
put() {
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$STORE/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

# one_blob_image BYTES REF: a one-layer image of BYTES random bytes, tagged REF, written
# as an OCI layout at $STORE (also an airlock store), using $WORK for the parts. Sets
# LAYER and LAYER_SIZE (the layer blob) and MANIFEST (the manifest's digest).
one_blob_image() {
    mkdir -p "$STORE/blobs/sha256"
    head -c "$1" /dev/urandom >"$WORK/layer"
    # shellcheck disable=SC2046 # split "DIGEST SIZE" into $1 $2 on purpose
    set -- $(put "$WORK/layer") "$2"
    LAYER=$1
    LAYER_SIZE=$2
    ref=$3
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$LAYER" >"$WORK/config"
    # shellcheck disable=SC2046
    set -- $(put "$WORK/config")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' "$1" "$2" "$LAYER" "$LAYER_SIZE" >"$WORK/manifest"
    # shellcheck disable=SC2046
    set -- $(put "$WORK/manifest")
    # shellcheck disable=SC2034 # read by the scripts that source this file
    MANIFEST=$1
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' "$1" "$2" "$ref" >"$STORE/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$STORE/oci-layout"
}
