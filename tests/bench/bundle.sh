#!/bin/sh
# Bundle a 1 GiB cluster image and compare with `tar | zstd -T0 -3` and
# `makeself --zstd`: writing, verifying/unpacking, and serving from the file.
# Usage: tests/bench/bundle.sh [path/to/airlock] [payload MiB, default 1024]
# Run it on a static release binary (make build -> out/airlock).
set -eu
AIRLOCK=${1:-target/release/airlock}
MIB=${2:-1024}
WORK=$(mktemp -d)
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
STORE=$WORK/store
mkdir -p "$STORE/blobs/sha256"

# put FILE: move FILE into the store, print "DIGEST SIZE".
put() {
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$STORE/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}

# Layers: already-compressed data (random), 64 MiB each, like container image layers.
layers=""
n=$((MIB / 64))
for i in $(seq 1 "$n"); do
    head -c 67108864 /dev/urandom >"$WORK/layer"
    set -- $(put "$WORK/layer")
    layers="$layers{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$1\",\"size\":$2},"
done
layers=${layers%,}
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"airlock":{"runtime":"generic"}}' >"$WORK/config"
set -- $(put "$WORK/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' "$1" "$2" "$layers" >"$WORK/manifest"
set -- $(put "$WORK/manifest")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"registry.local/bench/cluster:v1"}}]}' "$1" "$2" >"$STORE/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$STORE/oci-layout"

# Time a command, starting with no dirty pages left by the one before.
t() { sync; start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N); echo "$end - $start" | bc; }
sync
echo "payload: $MIB MiB in $n layers"
echo "write   tar | zstd -T0 -3:        $(t sh -c "tar -C '$WORK' -cf - store | zstd -T0 -3 -q -o '$WORK/ref.tar.zst'") s"
echo "write   makeself --zstd:          $(t makeself --zstd --complevel 3 --nox11 --sha256 "$STORE" "$WORK/ref.makeself.run" bench true) s"
echo "write   airlock bundle:           $(t "$AIRLOCK" --root "$STORE" bundle registry.local/bench/cluster:v1 -o "$WORK/bench.run" --runner "$AIRLOCK") s"
mkdir -p "$WORK/unpacked"
echo "check   zstd -d | tar x:          $(t sh -c "zstd -d -q -c '$WORK/ref.tar.zst' | tar -C '$WORK/unpacked' -xf -") s"
rm -rf "$WORK/unpacked"
echo "check   makeself --check:         $(t "$WORK/ref.makeself.run" --check) s"
echo "check   FILE.run verify:          $(t "$WORK/bench.run" verify) s"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
start=$(date +%s.%N)
"$WORK/bench.run" serve --addr "127.0.0.1:$port" >/dev/null 2>&1 &
SERVER=$!
i=0
until curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 1000 ]; then echo "serve did not answer"; exit 1; fi
    sleep 0.01
done
end=$(date +%s.%N)
echo "serve   FILE.run serve ready:     $(echo "$end - $start" | bc) s"
start=$(date +%s.%N)
curl -fs "http://127.0.0.1:$port/v2/bench/cluster/manifests/v1" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' >/dev/null
end=$(date +%s.%N)
echo "serve   first manifest:           $(echo "$end - $start" | bc) s"
