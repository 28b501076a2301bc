#!/bin/sh
# Read-only: can this host open TCP connections to its peers?
# preflight-peers.sh ADDR:PORT...   (IPv6 as [addr]:port)
# Prints one line per target: peer=ADDR:PORT RESULT, where RESULT is
#   open        something listens there;
#   refused     the peer's kernel answered (nothing listens yet): the path is open;
#   timeout     no answer within 3 s: a firewall drops the packets, or the route is wrong;
#   unreachable the network said so;
# or tool=none when the host has neither bash nor nc to try with.
set -u
probe() {
    target=$1
    port=${target##*:}
    addr=${target%:*}
    addr=${addr#[}
    addr=${addr%]}
    if command -v bash >/dev/null 2>&1; then
        # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
        err=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$addr" "$port" 2>&1)
        code=$?
    else
        err=$(timeout 3 nc -z -v -w 3 "$addr" "$port" 2>&1)
        code=$?
    fi
    if [ "$code" -eq 0 ]; then
        result=open
    elif [ "$code" -eq 124 ]; then
        result=timeout
    else
        case $err in
            *refused*) result=refused ;;
            *) result=unreachable ;;
        esac
    fi
    echo "peer=$target $result"
}
if ! command -v bash >/dev/null 2>&1 && ! command -v nc >/dev/null 2>&1; then
    echo "tool=none"
    exit 0
fi
for target in "$@"; do
    probe "$target" &
done
wait
