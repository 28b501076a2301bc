#!/bin/sh
# Build a 1 GiB context with airlock and compare with `tar | zstd -T0 -3`, then time a
# rebuild with nothing changed. Usage: tests/bench/build.sh [path/to/airlock]
set -eu
AIRLOCK=${1:-target/release/airlock}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/ctx/bin"
# Half incompressible, half text-like data: 1 GiB in 16 files.
for i in $(seq 1 8); do head -c 67108864 /dev/urandom >"$WORK/ctx/bin/random$i"; done
for i in $(seq 1 8); do yes "airlock benchmark line $i" | head -c 67108864 >"$WORK/ctx/bin/text$i"; done
printf 'FROM scratch\nCOPY bin bin/\n' >"$WORK/ctx/Kubefile"
t() { start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N); echo "$end - $start" | bc; }
echo "tar | zstd -T0 -3:  $(t sh -c "tar -C '$WORK/ctx' -cf - bin | zstd -T0 -3 -q -o '$WORK/ref.tar.zst'") s"
echo "airlock build:      $(t "$AIRLOCK" --root "$WORK/store" build -t bench:v1 "$WORK/ctx") s"
echo "airlock rebuild:    $(t "$AIRLOCK" --root "$WORK/store" build -t bench:v1 "$WORK/ctx") s"
