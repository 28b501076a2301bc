#!/bin/bash
# Ship one file to N testbed hosts over 200 Mbit/s links: airlock's fan-out
# (node-to-node chain) side by side with parallel `scp` and `ansible -m copy`.
# Usage: tests/bench/fanout.sh [path/to/airlock]
# Knobs (env): FANOUT_NS="4 8 16" (host counts), FANOUT_MIB=256 (payload),
#   FANOUT_RATE=200mbit, FANOUT_ANSIBLE_MAX=8 and FANOUT_SCP_MAX=16 (largest N
#   those tools run at: ansible takes minutes at 16), FANOUT_LIMIT=900 (seconds
#   allowed per command), FANOUT_ANSIBLE_FORKS (default N: every host at once;
#   ansible's own default is 5). Needs root (the testbed) and `pip install ansible-core`.
# Every time is wall-clock for the whole command (SSH connects included). The
# airlock binary is placed on the hosts first (the install's prepare step) and
# not timed; its fan-out time is for the blob step alone.
set -eu
AIRLOCK=$(realpath "${1:-target/release/airlock}")
NS=${FANOUT_NS:-"4 8 16"}
MIB=${FANOUT_MIB:-256}
RATE=${FANOUT_RATE:-200mbit}
ANSIBLE_MAX=${FANOUT_ANSIBLE_MAX:-8}
SCP_MAX=${FANOUT_SCP_MAX:-16}
LIMIT=${FANOUT_LIMIT:-900}
HERE=$(cd "$(dirname "$0")" && pwd)
TESTBED="$HERE/../testbed/testbed.sh"
WORK=$(mktemp -d)
NAME=
cleanup() {
    if [ -n "$NAME" ]; then bash "$TESTBED" down --name "$NAME" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

head -c $((MIB * 1048576)) /dev/urandom >"$WORK/payload"
HEX=$(sha256sum "$WORK/payload" | cut -d' ' -f1)
printf 'tiny' >"$WORK/tiny"

# t CMD...: run CMD (each command in it bounded by LIMIT), print its wall time (or "fail").
t() {
    start=$(date +%s.%N)
    if "$@" >"$WORK/last.log" 2>&1; then
        end=$(date +%s.%N)
        printf '%.1f' "$(echo "$end - $start" | bc)"
    else
        echo fail
        sed 's/^/    /' "$WORK/last.log" | tail -5 >&2
    fi
}

# check DEST: every host holds the payload at DEST, else print "bad".
check() {
    for i in $(seq 1 "$N"); do
        got=$(bash "$TESTBED" exec --name "$NAME" "$i" -- sha256sum "$1" 2>/dev/null | cut -d' ' -f1)
        if [ "$got" != "$HEX" ]; then echo " (bad on host $i)"; return; fi
    done
}

# wipe DEST: remove DEST on every host (the hosts' changes live on the machine's disk).
wipe() {
    for i in $(seq 1 "$N"); do bash "$TESTBED" exec --name "$NAME" "$i" -- rm -f "$1"; done
}

scp_all() {
    pids=""
    for ip in $HOSTS; do
        timeout "$LIMIT" scp -q "${SSH_OPTS[@]}" "$WORK/payload" "root@$ip:/root/payload" &
        pids="$pids $!"
    done
    rc=0
    for p in $pids; do wait "$p" || rc=1; done
    return $rc
}

ansible_all() {
    printf '[all]\n' >"$WORK/inventory"
    for ip in $HOSTS; do echo "$ip" >>"$WORK/inventory"; done
    # Ansible's own SSH defaults (ControlPersist, -C) stay; the hosts' python is
    # named because discovery would pick the machine's pyenv shims.
    ANSIBLE_HOST_KEY_CHECKING=False timeout "$LIMIT" ansible all -i "$WORK/inventory" \
        -u root --private-key "$KEY" -f "${FANOUT_ANSIBLE_FORKS:-$N}" --ssh-common-args="-o UserKnownHostsFile=$KNOWN" \
        -e ansible_python_interpreter=/usr/bin/python3 \
        -m copy -a "src=$WORK/payload dest=/root/payload-ansible"
}

rows=""
for N in $NS; do
    NAME="fanout$N-$$"
    env=$(bash "$TESTBED" up --name "$NAME" --hosts "$N" --rate "$RATE")
    HOSTS=$(echo "$env" | sed -n 's/^TESTBED_HOSTS="\(.*\)"$/\1/p')
    KEY=$(echo "$env" | sed -n 's/^TESTBED_KEY=//p')
    KNOWN=$(echo "$env" | sed -n 's/^TESTBED_KNOWN_HOSTS=//p')
    SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$KNOWN" -i "$KEY")
    CSV=$(echo "$HOSTS" | tr ' ' ',')
    FIRST=${HOSTS%% *}
    echo "N=$N: hosts $HOSTS" >&2

    one=$(t timeout "$LIMIT" scp -q "${SSH_OPTS[@]}" "$WORK/payload" "root@$FIRST:/root/payload-one")
    bash "$TESTBED" exec --name "$NAME" 1 -- rm -f /root/payload-one

    # Put the agent on every host (not timed), then time the fan-out of the payload.
    "$AIRLOCK" agent fan-out --hosts "$CSV" --key "$KEY" --known-hosts "$WORK/kh-$N" "$WORK/tiny" >/dev/null
    air=$(t timeout "$LIMIT" "$AIRLOCK" agent fan-out --hosts "$CSV" --key "$KEY" --known-hosts "$WORK/kh-$N" "$WORK/payload")
    inner=$(sed -n 's/^fan-out: .* in \([0-9.]*\)s$/\1/p' "$WORK/last.log")
    air="$air (${inner:-?})$(check "/var/lib/airlock/store/blobs/sha256/$HEX")"
    wipe "/var/lib/airlock/store/blobs/sha256/$HEX"

    scp_time=-
    if [ "$N" -le "$SCP_MAX" ]; then
        scp_time="$(t scp_all)$(check /root/payload)"
        wipe /root/payload
    fi
    ans=-
    if [ "$N" -le "$ANSIBLE_MAX" ]; then
        ans="$(t ansible_all)$(check /root/payload-ansible)"
        wipe /root/payload-ansible
    fi
    bash "$TESTBED" down --name "$NAME" >/dev/null
    NAME=
    rows="$rows$(printf '| %2s | %8s | %12s | %12s | %12s |' "$N" "$one" "$air" "$scp_time" "$ans")\n"
    echo "N=$N: one link $one s, airlock $air s, scp $scp_time s, ansible $ans s" >&2
done

echo "payload $MIB MiB, links $RATE, times in seconds; airlock: whole command (blob step alone)"
echo "|  N | one link | airlock      | parallel scp | ansible copy |"
echo "|----|----------|--------------|--------------|--------------|"
printf "%b" "$rows"
