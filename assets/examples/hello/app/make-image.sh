#!/bin/sh
# Make the hello application image as an OCI layout, from the machine's busybox-static:
# make-image.sh OUT_DIR TAG
# The layer is a deterministic tar (sorted, owner 0, mtime 0), so the image digest is
# the same on every machine with the same busybox.
set -eu
out=$1
tag=${2:-1.0}
busybox=$(command -v busybox)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$out/blobs/sha256"
cp "$busybox" "$work/root/bin/busybox"
ln -s busybox "$work/root/bin/sh"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$work/root" -cf "$work/layer.tar" bin
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
put() { # put FILE -> prints "digest size", stores the blob
    d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$out/blobs/sha256/$d"
    echo "$d $(stat -c %s "$1")"
}
set -- $(put "$work/layer.tar.gz"); layer=$1; layer_size=$2
printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/busybox","echo","hello"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$diff_id" > "$work/config.json"
set -- $(put "$work/config.json"); config=$1; config_size=$2
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" > "$work/manifest.json"
set -- $(put "$work/manifest.json"); manifest=$1; manifest_size=$2
printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"},"platform":{"architecture":"%s","os":"linux"}}]}' \
    "$manifest" "$manifest_size" "$tag" "$arch" > "$out/index.json"
echo "sha256:$manifest"
