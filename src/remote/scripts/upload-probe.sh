# Upload step 1 of 3: say how much of the destination already arrived.
# $1 final path, $2 part path, $3 region length, $4 expected sha256 hex (may be empty).
# Prints `present` when the final file already holds the content, else `offset N`.
set -eu
final=$1
part=$2
len=$3
want=$4
mkdir -p -- "$(dirname -- "$final")"
if [ -n "$want" ] && [ -f "$final" ] && [ "$(($(wc -c < "$final")))" -eq "$len" ]; then
	got=$(sha256sum < "$final")
	if [ "${got%% *}" = "$want" ]; then
		echo present
		exit 0
	fi
fi
have=0
if [ -f "$part" ]; then
	have=$(($(wc -c < "$part")))
fi
if [ "$have" -gt "$len" ]; then
	: > "$part"
	have=0
fi
echo "offset $have"
