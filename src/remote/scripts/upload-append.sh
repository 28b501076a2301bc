# Upload step 2 of 3: append stdin to the part file (created private).
# $1 part path.
set -eu
umask 077
exec cat >> "$1"
