# Upload step 3 of 3: verify the part file, then move it into place atomically.
# $1 final path, $2 part path, $3 expected sha256 hex, $4 octal mode.
# Exits 86 (and deletes the part) when the content does not match.
set -eu
final=$1
part=$2
want=$3
mode=$4
got=$(sha256sum < "$part")
if [ "${got%% *}" != "$want" ]; then
	rm -f -- "$part"
	echo "airlock: $final: sha256 ${got%% *} does not match $want" >&2
	exit 86
fi
chmod "$mode" "$part"
sync "$part" 2>/dev/null || true
mv -f -- "$part" "$final"
