#!/bin/sh
# shellcheck disable=SC2046 # put prints "DIGEST SIZE", split into $1 $2 on purpose
# Bundle a 1 GiB cluster image and compare with `tar | zstd -T0 -3` and
# `makeself --zstd`: writing, verifying/unpacking, and serving from the file.
# The payload is 3/5 already-compressed layers (random bytes) and 2/5 binaries
# (ELF files of this machine's /usr, stored uncompressed as container layers).
# Usage: tests/bench/bundle.sh [path/to/airlock] [payload MiB, default 1000]
# Run it on a static release binary (make build -> out/airlock).
set -eu
AIRLOCK=${1:-target/release/airlock}
MIB=${2:-1000}
WORK=$(mktemp -d)
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
STORE=$WORK/store
mkdir -p "$STORE/blobs/sha256"

# shellcheck source=tests/bench/lib.sh
. "$(dirname "$0")/lib.sh"

# Layers: 10 of already-compressed data (random), like gzip'd container layers, and
# 4 of binaries (uncompressed tar layers hold them as they are).
layers=""
random_mib=$((MIB * 3 / 5 / 10))
for i in $(seq 1 10); do
    head -c $((random_mib * 1048576)) /dev/urandom >"$WORK/layer"
    set -- $(put "$WORK/layer")
    layers="$layers{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$1\",\"size\":$2},"
done
binary_mib=$((MIB * 2 / 5 / 4))
find /usr/lib /usr/bin /usr/libexec -type f -size +64k -perm -u+x 2>/dev/null | sort |
    xargs cat 2>/dev/null | head -c $((binary_mib * 4 * 1048576)) >"$WORK/binaries"
if [ "$(stat -c %s "$WORK/binaries")" -lt $((binary_mib * 4 * 1048576)) ]; then
    echo "not enough binaries under /usr for $((binary_mib * 4)) MiB"
    exit 1
fi
for i in 0 1 2 3; do
    dd if="$WORK/binaries" of="$WORK/layer" bs=1M skip=$((i * binary_mib)) count="$binary_mib" status=none
    set -- $(put "$WORK/layer")
    layers="$layers{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$1\",\"size\":$2},"
done
rm "$WORK/binaries"
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
echo "payload: $((random_mib * 10)) MiB compressed in 10 layers + $((binary_mib * 4)) MiB binaries in 4 layers"
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
mib() { echo "$(($(stat -c %s "$1") / 1048576)) MiB"; }
echo "size    tar.zst $(mib "$WORK/ref.tar.zst"), makeself $(mib "$WORK/ref.makeself.run"), bundle $(mib "$WORK/bench.run")"
