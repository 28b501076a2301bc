#!/bin/sh
# Build a 1 GiB context with airlock and compare with `tar | zstd -T0 -3` on the same
# files, then time a rebuild with nothing changed.
# Usage: tests/bench/build.sh [path/to/airlock] [runs]
#
# The context is what a cluster image holds:
# - 600 MiB already compressed: 3 x 100 MiB gzip and 3 x 100 MiB zstd files (random
#   data compressed, as container image archives and charts are);
# - 400 MiB binaries: 8 x 50 MiB of ELF files from this machine's /usr/bin and
#   /usr/lib, concatenated (compress about 3:1, as kubelet or containerd do).
set -eu
AIRLOCK=${1:-target/release/airlock}
RUNS=${2:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/ctx/images" "$WORK/ctx/bin"
MiB=1048576
for i in 1 2 3; do
	head -c $((100 * MiB)) /dev/urandom | gzip -1 >"$WORK/ctx/images/archive$i.tar.gz"
	head -c $((100 * MiB)) /dev/urandom | zstd -q -1 >"$WORK/ctx/images/archive$i.tar.zst"
done
find /usr/bin /usr/lib/x86_64-linux-gnu -type f -size +64k -exec sh -c 'head -c 4 "$1" | grep -q ELF && cat "$1"' _ {} \; 2>/dev/null |
	head -c $((400 * MiB)) >"$WORK/binaries"
for i in $(seq 0 7); do
	dd if="$WORK/binaries" of="$WORK/ctx/bin/tool$i" bs=$MiB skip=$((i * 50)) count=50 status=none
done
rm "$WORK/binaries"
printf 'FROM scratch\nCOPY bin bin/\nCOPY images images/\n' >"$WORK/ctx/Kubefile"
echo "context: $(du -sm "$WORK/ctx" | cut -f1) MiB"

# Wall seconds taken by "$@", after a sync so earlier writes do not count, and in
# brackets the CPU seconds (user + system, children included): on a shared machine the
# CPU time says more than the wall time.
t() {
	sync
	/usr/bin/time -f '%e %U %S' -o "$WORK/time" "$@" >/dev/null 2>&1
	read -r wall user sys <"$WORK/time"
	echo "$wall ($(echo "$user + $sys" | bc) cpu)"
}
for run in $(seq 1 "$RUNS"); do
	rm -rf "$WORK/store" "$WORK/ref.tar.zst"
	ref=$(t sh -c "tar -C '$WORK/ctx' -cf - bin images | zstd -T0 -3 -q -o '$WORK/ref.tar.zst'")
	build=$(t "$AIRLOCK" --root "$WORK/store" build -t bench:v1 "$WORK/ctx")
	rebuild=$(t "$AIRLOCK" --root "$WORK/store" build -t bench:v1 "$WORK/ctx")
	echo "run $run (load $(cut -d' ' -f1 /proc/loadavg)): tar|zstd -T0 -3 ${ref} s ($(du -m "$WORK/ref.tar.zst" | cut -f1) MiB)  airlock build ${build} s ($(du -sm "$WORK/store/blobs" | cut -f1) MiB)  rebuild ${rebuild} s"
done
