#!/usr/bin/env bash
# Self-test of testbed.sh: brings real testbeds up and down and checks what
# they promise (ssh, passwords, sudo, isolation, containerd, systemd, rate,
# fault commands, cleanup, Ctrl-C). Ends with "N passed, M failed".
# Needs root; uses its own base dir so it never touches other testbeds.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB=$HERE/testbed.sh
export AIRLOCK_TESTBED_DIR=${AIRLOCK_TESTBED_SELFTEST_DIR:-/tmp/airlock-testbed-selftest}
RUNDIR=/run/airlock-testbed
WORK=$(mktemp -d /tmp/airlock-testbed-selftest-work.XXXXXX)
PASS=0
FAIL=0
NAMES=()      # testbeds this run made, downed on exit
HTTPD_PID=""  # the operator-side web server this run started

if (($(id -u) != 0)); then
  echo "skipped: testbed selftest needs root (network, mount and pid namespaces)"
  echo "0 passed, 0 failed"
  exit 0
fi

cleanup() {
  local n
  [[ -z $HTTPD_PID ]] || kill "$HTTPD_PID" 2>/dev/null || true
  for n in "${NAMES[@]}"; do "$TB" down --name "$n" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() {
  PASS=$((PASS + 1))
  echo "ok   - $*"
}
bad() {
  FAIL=$((FAIL + 1))
  echo "FAIL - $*"
}
# check DESCRIPTION CMD... : passes when CMD exits 0; shows its output otherwise
check() {
  local desc=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$desc"; else
    bad "$desc"
    printf '%s\n' "$out" | tail -n 15 | sed 's/^/       | /'
  fi
}

# ---- what the tests themselves use
missing=()
command -v sshpass >/dev/null || missing+=(sshpass)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
command -v ssh >/dev/null || missing+=(openssh-client)
if ((${#missing[@]})); then
  apt-get -o DPkg::Lock::Timeout=300 update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
fi

# ---- a tiny OCI image (busybox, one layer) built here, no network
make_oci_tar() {
  local out=$1 w d
  w=$(mktemp -d "$WORK/oci.XXXXXX")
  mkdir -p "$w/rootfs/bin" "$w/oci/blobs/sha256"
  cp /bin/busybox "$w/rootfs/bin/busybox"
  ln -s busybox "$w/rootfs/bin/sh"
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$w/rootfs" -cf "$w/layer.tar" .
  blob() {
    d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$w/oci/blobs/sha256/$d"
    echo "$d $(stat -c %s "$1")"
  }
  local l ls c cs m ms
  read -r l ls < <(blob "$w/layer.tar")
  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$(dpkg --print-architecture)" "$l" >"$w/config.json"
  read -r c cs < <(blob "$w/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$c" "$cs" "$l" "$ls" >"$w/manifest.json"
  read -r m ms < <(blob "$w/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"docker.io/library/airlock-busybox:test","org.opencontainers.image.ref.name":"test"}}]}' \
    "$m" "$ms" >"$w/oci/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
  tar --numeric-owner --owner=0 --group=0 -C "$w/oci" -cf "$out" oci-layout index.json blobs
}
IMAGE_TAR=$WORK/busybox-oci.tar
make_oci_tar "$IMAGE_TAR"
IMAGE=docker.io/library/airlock-busybox:test

# ---- helpers over a testbed's env (TB_<NAME>_* variables)
up() { # NAME ARGS... : brings a testbed up, records its env in $WORK/NAME.env
  local name=$1
  shift
  NAMES+=("$name")
  "$TB" up --name "$name" "$@" >"$WORK/$name.env" 2>"$WORK/$name.up.log"
}
envof() { # NAME KEY
  sed -n "s/^$2=//p" "$WORK/$1.env" | tr -d '"'
}
hostip() { "$TB" ip --name "$1" "$2"; }
sshk() { # NAME I CMD... : ssh as root with the testbed key
  local name=$1 i=$2
  shift 2
  ssh -o BatchMode=yes -o ConnectTimeout=3 -o LogLevel=ERROR -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$(envof "$name" TESTBED_KNOWN_HOSTS)" \
    -i "$(envof "$name" TESTBED_KEY)" "root@$(hostip "$name" "$i")" "$@" </dev/null
}
sshpw() { # NAME I USER PASSWORD CMD...
  local name=$1 i=$2 user=$3 pw=$4
  shift 4
  SSHPASS=$pw sshpass -e ssh -o ConnectTimeout=3 -o LogLevel=ERROR -o PubkeyAuthentication=no \
    -o PreferredAuthentications=password -o StrictHostKeyChecking=yes \
    -o UserKnownHostsFile="$(envof "$name" TESTBED_KNOWN_HOSTS)" "$user@$(hostip "$name" "$i")" "$@" </dev/null
}
sshk_in() { # like sshk, with the caller's stdin
  local name=$1 i=$2
  shift 2
  ssh -o BatchMode=yes -o ConnectTimeout=3 -o LogLevel=ERROR -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$(envof "$name" TESTBED_KNOWN_HOSTS)" \
    -i "$(envof "$name" TESTBED_KEY)" "root@$(hostip "$name" "$i")" "$@"
}
texec() { "$TB" exec --name "$@"; }

# snapshot what a testbed owns, to check after down that all of it is gone
snapshot() { # NAME
  local dir k i
  dir=$AIRLOCK_TESTBED_DIR/$1
  k=$(sed -n 's/^K=//p' "$dir/meta")
  echo "$k" >"$WORK/$1.k"
  : >"$WORK/$1.pids"
  for i in /run/netns/atb"${k}"h*; do
    [[ -e $i ]] && ip netns pids "${i##*/}" >>"$WORK/$1.pids"
  done
  true
}
leftovers() { # NAME : prints whatever of the testbed is still there
  local name=$1 k dir p st
  dir=$AIRLOCK_TESTBED_DIR/$name
  k=$(cat "$WORK/$name.k" 2>/dev/null || true)
  [[ ! -e $dir ]] || echo "dir $dir"
  grep -F "$dir/" /proc/self/mountinfo | sed 's/^/mount /' || true
  if [[ -n $k ]]; then
    for p in /run/netns/atb"${k}"h*; do [[ ! -e $p ]] || echo "netns ${p##*/}"; done
    ip -o link show | awk -F': ' '{print $2}' | grep -E "^atb${k}([hp][0-9]+)?(@|$)" | sed 's/^/link /' || true
    iptables -w -S | grep -E -- "-i atb${k} " | sed 's/^/iptables /' || true
    [[ ! -e $RUNDIR/subnets/$k ]] || [[ $(cat "$RUNDIR/subnets/$k") != "$dir" ]] || echo "claim $k"
    find /sys/fs/cgroup -maxdepth 5 -type d -path "*/airlock-testbed/${k}-h*" 2>/dev/null | sed 's/^/cgroup /' || true
  fi
  while read -r p; do
    [[ -n $p ]] || continue
    st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null || true)
    [[ -z $st || $st == Z ]] || echo "process $p ($(cat "/proc/$p/comm" 2>/dev/null))"
  done < <(cat "$WORK/$name.pids" 2>/dev/null || true)
}
assert_gone() { # NAME
  local out
  out=$(leftovers "$1")
  if [[ -z $out ]]; then ok "$1: nothing left after down (dir, mounts, netns, links, iptables, claim, cgroups, processes)"; else
    bad "$1: leftovers after down"
    printf '%s\n' "$out" | sed 's/^/       | /'
  fi
}

echo "# testbed selftest (base dir $AIRLOCK_TESTBED_DIR)"
"$TB" down --all >/dev/null 2>&1 || true

# ====================================================== A: 3 hosts, containerd
T0=$SECONDS
if up st-a --hosts 3 --containerd; then ok "up st-a: 3 hosts with containerd in $((SECONDS - T0))s"; else
  bad "up st-a"
  sed 's/^/       | /' "$WORK/st-a.up.log"
  echo "$PASS passed, $FAIL failed"
  exit 1
fi
snapshot st-a
A_DIR=$(envof st-a TESTBED_DIR)
check "env lines printed and saved in \$TESTBED_DIR/env" \
  bash -c "diff '$WORK/st-a.env' '$A_DIR/env' && for k in TESTBED_DIR TESTBED_HOSTS TESTBED_KEY TESTBED_ROOT_PASSWORD_FILE TESTBED_OPS_PASSWORD_FILE TESTBED_GATEWAY; do grep -q \"^\$k=.\" '$WORK/st-a.env'; done"
check "env output can be eval'd by a shell" \
  bash -c "eval \"\$(cat '$WORK/st-a.env')\" && set -- \$TESTBED_HOSTS && [ \$# = 3 ]"
A_GW=$(envof st-a TESTBED_GATEWAY)
check "hosts are gateway+1.. inside 198.18.0.0/15" \
  bash -c "[[ '$(envof st-a TESTBED_HOSTS)' == '${A_GW%.1}.2 ${A_GW%.1}.3 ${A_GW%.1}.4' && '$A_GW' =~ ^198\.1[89]\. ]]"
ROOT_PW=$(cat "$(envof st-a TESTBED_ROOT_PASSWORD_FILE)")
OPS_PW=$(cat "$(envof st-a TESTBED_OPS_PASSWORD_FILE)")
names=""
for i in 1 2 3; do
  hn=$(sshk st-a "$i" hostname 2>&1 || true)
  if [[ $hn == "st-a-h$i" ]]; then ok "host $i: ssh with the testbed key (strict host key check), hostname $hn"; else bad "host $i: ssh with key gave '$hn'"; fi
  names+=" $hn"
  check "host $i: ssh as root with the root password" bash -c "[ \"\$(SSHPASS='$ROOT_PW' sshpass -e ssh -o ConnectTimeout=3 -o LogLevel=ERROR -o PubkeyAuthentication=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile='$(envof st-a TESTBED_KNOWN_HOSTS)' root@$(hostip st-a "$i") id -u </dev/null)\" = 0 ]"
done
check "hostnames differ" bash -c "[ \$(printf '%s\n' $names | sort -u | wc -l) = 3 ]"
check "root password is refused when wrong" bash -c "! SSHPASS=wrong sshpass -e ssh -o ConnectTimeout=3 -o LogLevel=ERROR -o PubkeyAuthentication=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile='$(envof st-a TESTBED_KNOWN_HOSTS)' root@$(hostip st-a 1) true </dev/null"
for i in 1 3; do
  out=$(sshpw st-a "$i" ops "$OPS_PW" "id -un; sudo -n true 2>/dev/null && echo nopw-sudo-allowed; echo '$OPS_PW' | sudo -S -p '' id -u" 2>&1 || true)
  if [[ $out == $'ops\n0' ]]; then ok "host $i: ops logs in with its password, sudo needs and accepts it"; else bad "host $i: ops sudo: '$out'"; fi
done

# isolation of filesystems
MARK=/root/airlock-selftest-marker-$$
check "a file written on host 1 is there on host 1" sshk st-a 1 "echo hello >$MARK && cat $MARK"
check "... and not on host 2" sshk st-a 2 "test ! -e $MARK"
check "... and not on the machine" test ! -e "$MARK"
check "the host's changes land in its upper dir only" test -f "$A_DIR/h1/upper$MARK"
check "upper dirs stay small (< 20 MiB)" bash -c "[ \$(du -sm '$A_DIR/h1/upper' | cut -f1) -lt 20 ]"
check "exec runs in the host's own filesystem, pid and uts namespaces" \
  bash -c "[ \"\$('$TB' exec --name st-a 1 -- sh -c 'cat $MARK; hostname; cat /proc/1/cmdline | tr \"\\0\" \" \"')\" != '' ] && '$TB' exec --name st-a 1 -- cat $MARK | grep -qx hello && '$TB' exec --name st-a 2 -- hostname | grep -qx st-a-h2 && '$TB' exec --name st-a 1 -- sh -c 'cat /proc/1/cmdline' | grep -q __host-init"
check "exec passes the command's exit code" bash -c "'$TB' exec --name st-a 1 -- sh -c 'exit 7'; [ \$? = 7 ]"

# network
check "hosts reach each other by IP (ssh banner of h2 and h3 from h1, of h1 from h3)" \
  bash -c "'$TB' exec --name st-a 1 -- timeout 3 bash -c 'exec 3<>/dev/tcp/$(hostip st-a 2)/22; head -c 8 <&3' | grep -q SSH-2.0 &&
           '$TB' exec --name st-a 1 -- timeout 3 bash -c 'exec 3<>/dev/tcp/$(hostip st-a 3)/22; head -c 8 <&3' | grep -q SSH-2.0 &&
           '$TB' exec --name st-a 3 -- timeout 3 bash -c 'exec 3<>/dev/tcp/$(hostip st-a 1)/22; head -c 8 <&3' | grep -q SSH-2.0"
check "hosts reach each other by name (/etc/hosts)" \
  bash -c "'$TB' exec --name st-a 2 -- timeout 3 bash -c 'exec 3<>/dev/tcp/st-a-h3/22; head -c 8 <&3' | grep -q SSH-2.0"
mkdir -p "$WORK/www"
echo operator-here >"$WORK/www/probe"
busybox httpd -f -p "$A_GW:18080" -h "$WORK/www" &
HTTPD_PID=$!
sleep 0.3
check "hosts reach a server the operator runs on TESTBED_GATEWAY" \
  bash -c "'$TB' exec --name st-a 2 -- timeout 5 busybox wget -qO- http://$A_GW:18080/probe | grep -qx operator-here"
kill "$HTTPD_PID" 2>/dev/null || true
wait "$HTTPD_PID" 2>/dev/null || true
HTTPD_PID=""
A_K=$(cat "$WORK/st-a.k")
check "forwarding out of the bridge is dropped (iptables)" \
  bash -c "iptables -w -C FORWARD -i atb$A_K ! -o atb$A_K -j DROP && iptables -w -C INPUT -i atb$A_K ! -d 198.18.0.0/15 -j DROP"
check "host routes: only its /24 and a default via the gateway; no IPv6" \
  bash -c "[ \"\$('$TB' exec --name st-a 1 -- ip -4 route | sort | tr -s ' ' | cut -d' ' -f1-3 | tr '\n' ';')\" = '${A_GW%.1}.0/24 dev eth0;default via $A_GW;' ] && [ -z \"\$('$TB' exec --name st-a 1 -- ip -6 addr)\" ]"

# containerd
check "containerd answers in every host" bash -c "for i in 1 2 3; do '$TB' exec --name st-a \$i -- ctr version >/dev/null || exit 1; done"
scp -q -o BatchMode=yes -o LogLevel=ERROR -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$(envof st-a TESTBED_KNOWN_HOSTS)" \
  -i "$(envof st-a TESTBED_KEY)" "$IMAGE_TAR" "root@$(hostip st-a 1):/root/busybox-oci.tar" || true
check "ctr image import of a busybox OCI tar (copied with scp)" sshk st-a 1 "ctr image import /root/busybox-oci.tar && ctr image ls -q | grep -qx $IMAGE"
out=$(sshk st-a 1 "ctr run --rm $IMAGE selftest /bin/busybox sh -c 'echo container-ok; hostname'" 2>&1 || true)
if [[ $out == $'container-ok\nst-a-h1' ]]; then ok "ctr run of the image works inside host 1"; else bad "ctr run: '$out'"; fi
check "... on the overlayfs snapshotter" bash -c "'$TB' exec --name st-a 1 -- ctr snapshots --snapshotter overlayfs ls | grep -q Committed"
check "containerd's image store is per host (host 2 has no image)" bash -c "[ -z \"\$('$TB' exec --name st-a 2 -- ctr image ls -q)\" ]"

# fault commands
check "kill-sshd host 2" "$TB" kill-sshd --name st-a 2
check "... then ssh to host 2 fails" bash -c "! ssh -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i '$(envof st-a TESTBED_KEY)' root@$(hostip st-a 2) true </dev/null"
check "... start-sshd host 2 brings it back" bash -c "'$TB' start-sshd --name st-a 2 && [ \"\$(ssh -o BatchMode=yes -o ConnectTimeout=3 -o LogLevel=ERROR -o StrictHostKeyChecking=yes -o UserKnownHostsFile='$(envof st-a TESTBED_KNOWN_HOSTS)' -i '$(envof st-a TESTBED_KEY)' root@$(hostip st-a 2) hostname </dev/null)\" = st-a-h2 ]"
check "link host 3 down: ssh times out" bash -c "'$TB' link --name st-a 3 down && ! timeout 8 ssh -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i '$(envof st-a TESTBED_KEY)' root@$(hostip st-a 3) true </dev/null"
check "link host 3 up: ssh works again" bash -c "'$TB' link --name st-a 3 up && for t in 1 2 3 4 5 6 7 8 9 10; do ssh -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i '$(envof st-a TESTBED_KEY)' root@$(hostip st-a 3) true </dev/null && exit 0; sleep 0.5; done; exit 1"
check "list shows st-a with 3/3 hosts running" bash -c "'$TB' list | grep -E '^st-a\s' | grep -q '3/3 hosts running'"
check "up refuses a name that is already up" bash -c "! '$TB' up --name st-a --hosts 1 2>/dev/null"

# ====================================================== B: a second testbed at once, with --rate
if up st-b --hosts 2 --rate 100mbit; then ok "up st-b (2 hosts, --rate 100mbit) while st-a is up"; else
  bad "up st-b"
  sed 's/^/       | /' "$WORK/st-b.up.log"
fi
snapshot st-b
check "st-a and st-b got different subnets ($(envof st-a TESTBED_SUBNET), $(envof st-b TESTBED_SUBNET))" \
  bash -c "[ '$(envof st-a TESTBED_SUBNET)' != '$(envof st-b TESTBED_SUBNET)' ] && [ -n '$(envof st-b TESTBED_SUBNET)' ]"
check "st-b hosts answer ssh" sshk st-b 2 true
check "tbf qdisc on both ends of st-b's links" \
  bash -c "tc qdisc show dev atb$(cat "$WORK/st-b.k")h1 | grep -q 'tbf.*rate 100Mbit' && '$TB' exec --name st-b 1 -- tc qdisc show dev eth0 | grep -q 'tbf.*rate 100Mbit'"
t0=$(date +%s.%N)
head -c 12500000 /dev/zero | sshk_in st-b 1 'cat >/dev/null' || true
t1=$(date +%s.%N)
elapsed=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}')
check "12.5 MB to a 100mbit host takes about 1 s (took ${elapsed}s)" awk -v e="$elapsed" 'BEGIN { exit !(e >= 0.85 && e < 6) }'
check "a host of st-b cannot reach a host of st-a" \
  bash -c "! '$TB' exec --name st-b 1 -- timeout 3 bash -c 'exec 3<>/dev/tcp/$(hostip st-a 1)/22; head -c 8 <&3' 2>/dev/null | grep -q SSH"

# ====================================================== down, and nothing left
check "down st-a" "$TB" down --name st-a
assert_gone st-a
check "down st-b" "$TB" down --name st-b
assert_gone st-b
check "down is idempotent (again on a gone testbed)" "$TB" down --name st-a

# ====================================================== S: systemd as PID 1 (+ containerd as a unit)
T0=$SECONDS
if up st-s --hosts 1 --systemd --containerd; then ok "up st-s: 1 host, --systemd --containerd in $((SECONDS - T0))s"; else
  bad "up st-s"
  sed 's/^/       | /' "$WORK/st-s.up.log"
fi
snapshot st-s
state=$(texec st-s 1 -- systemctl is-system-running 2>&1 || true)
if [[ $state == running || $state == degraded ]]; then ok "systemctl is-system-running: $state"; else bad "is-system-running: '$state'"; fi
check "PID 1 of the host is systemd" bash -c "[ \"\$('$TB' exec --name st-s 1 -- cat /proc/1/comm)\" = systemd ]"
check "ssh as root (key) to the systemd host" sshk st-s 1 true
check "ssh as ops (password) to the systemd host, sudo works" \
  bash -c "[ \"\$(SSHPASS='$(cat "$(envof st-s TESTBED_OPS_PASSWORD_FILE)")' sshpass -e ssh -o ConnectTimeout=3 -o LogLevel=ERROR -o PubkeyAuthentication=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile='$(envof st-s TESTBED_KNOWN_HOSTS)' ops@$(hostip st-s 1) \"echo '$(cat "$(envof st-s TESTBED_OPS_PASSWORD_FILE)")' | sudo -S -p '' id -u\" </dev/null)\" = 0 ]"
sshk_in st-s 1 "cat >/etc/systemd/system/airlock-selftest.service" <<'EOF' || true
[Unit]
Description=airlock testbed selftest unit
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo started-by-systemd >/run/airlock-selftest'
[Install]
WantedBy=multi-user.target
EOF
check "systemctl start of a unit written by the test" \
  sshk st-s 1 "systemctl daemon-reload && systemctl start airlock-selftest.service && systemctl is-active airlock-selftest.service && grep -qx started-by-systemd /run/airlock-selftest"
check "systemctl enable works" sshk st-s 1 "systemctl enable airlock-selftest.service && systemctl is-enabled airlock-selftest.service"
check "containerd runs as a systemd unit" sshk st-s 1 "systemctl is-active containerd.service"
scp -q -o BatchMode=yes -o LogLevel=ERROR -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$(envof st-s TESTBED_KNOWN_HOSTS)" \
  -i "$(envof st-s TESTBED_KEY)" "$IMAGE_TAR" "root@$(hostip st-s 1):/root/busybox-oci.tar" || true
out=$(sshk st-s 1 "ctr image import /root/busybox-oci.tar >/dev/null && ctr run --rm $IMAGE selftest /bin/busybox echo container-ok" 2>&1 || true)
if [[ $out == container-ok ]]; then ok "ctr run works on the systemd host"; else bad "ctr run on systemd host: '$out'"; fi
check "kill-sshd / start-sshd on the systemd host" \
  bash -c "'$TB' kill-sshd --name st-s 1 && ! ssh -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i '$(envof st-s TESTBED_KEY)' root@$(hostip st-s 1) true </dev/null && '$TB' start-sshd --name st-s 1"
check "down st-s" "$TB" down --name st-s
assert_gone st-s

# ====================================================== C: Ctrl-C during up
set -m  # so that the background up gets its own process group and SIGINT is not ignored
AIRLOCK_TESTBED_DIR=$AIRLOCK_TESTBED_DIR "$TB" up --name st-c --hosts 3 --containerd >"$WORK/st-c.env" 2>"$WORK/st-c.up.log" &
UP_PID=$!
set +m
NAMES+=(st-c)
for _ in $(seq 1 100); do
  [[ -f $AIRLOCK_TESTBED_DIR/st-c/h2/init.pid ]] && break
  sleep 0.05
done
[[ -f $AIRLOCK_TESTBED_DIR/st-c/meta ]] && snapshot st-c
kill -INT -- "-$UP_PID" 2>/dev/null || true
rc=0
wait "$UP_PID" || rc=$?
if [[ $rc == 130 ]]; then ok "Ctrl-C (SIGINT to the process group) stops up with exit 130"; else
  bad "Ctrl-C during up: exit $rc"
  sed 's/^/       | /' "$WORK/st-c.up.log"
fi
assert_gone st-c

# ====================================================== T: SIGTERM to up itself
"$TB" up --name st-t --hosts 2 --containerd >"$WORK/st-t.env" 2>"$WORK/st-t.up.log" &
UP_PID=$!
NAMES+=(st-t)
for _ in $(seq 1 100); do
  [[ -f $AIRLOCK_TESTBED_DIR/st-t/h1/init.pid ]] && break
  sleep 0.05
done
[[ -f $AIRLOCK_TESTBED_DIR/st-t/meta ]] && snapshot st-t
kill -TERM "$UP_PID" 2>/dev/null || true
rc=0
wait "$UP_PID" || rc=$?
if [[ $rc == 143 ]]; then ok "SIGTERM stops up with exit 143"; else
  bad "SIGTERM during up: exit $rc"
  sed 's/^/       | /' "$WORK/st-t.up.log"
fi
assert_gone st-t

# ====================================================== P: two ups racing for a subnet
"$TB" up --name st-p1 --hosts 1 >"$WORK/st-p1.env" 2>"$WORK/st-p1.up.log" &
P1=$!
"$TB" up --name st-p2 --hosts 1 >"$WORK/st-p2.env" 2>"$WORK/st-p2.up.log" &
P2=$!
NAMES+=(st-p1 st-p2)
rc1=0 rc2=0
wait "$P1" || rc1=$?
wait "$P2" || rc2=$?
check "two ups started at once both succeed" test "$rc1-$rc2" = 0-0
check "... with different subnets ($(envof st-p1 TESTBED_SUBNET), $(envof st-p2 TESTBED_SUBNET))" \
  bash -c "[ -n '$(envof st-p1 TESTBED_SUBNET)' ] && [ '$(envof st-p1 TESTBED_SUBNET)' != '$(envof st-p2 TESTBED_SUBNET)' ]"
check "... and both answer ssh" bash -c "$(declare -f envof hostip sshk); TB='$TB' WORK='$WORK'; sshk st-p1 1 true && sshk st-p2 1 true"
snapshot st-p1
snapshot st-p2
check "down st-p1 st-p2" bash -c "'$TB' down --name st-p1 && '$TB' down --name st-p2"
assert_gone st-p1
assert_gone st-p2

# ====================================================== F: a failing up cleans up after itself
rc=0
AIRLOCK_TESTBED_INJECT_FAILURE=after-hosts "$TB" up --name st-f --hosts 2 >"$WORK/st-f.env" 2>"$WORK/st-f.up.log" || rc=$?
NAMES+=(st-f)
echo 0 >"$WORK/st-f.k"
k=$(grep -o "on 198\.1[89]\.[0-9]*\.0/24" "$WORK/st-f.up.log" | head -1 | sed -E 's/on 198\.(1[89])\.([0-9]+)\.0\/24/\1 \2/' || true)
if [[ -n $k ]]; then read -r a b <<<"$k" && echo $(((a - 18) * 256 + b)) >"$WORK/st-f.k"; fi
if ((rc != 0)); then ok "up with an injected failure after starting hosts exits non-zero"; else bad "injected failure: up exited 0"; fi
assert_gone st-f

# ====================================================== D: down --all
if up st-d --hosts 1; then ok "up st-d"; else bad "up st-d"; fi
snapshot st-d
check "down --all" "$TB" down --all
assert_gone st-d
check "list is empty afterwards" bash -c "[ -z \"\$('$TB' list)\" ]"

# ====================================================== the Rust wrapper compiles
if command -v rustc >/dev/null && [[ -f $HERE/../integration/testbed.rs ]]; then
  check "tests/integration/testbed.rs compiles without warnings (rustc --edition 2024)" \
    bash -c "out=\$(rustc --edition 2024 --crate-type lib '$HERE/../integration/testbed.rs' -o '$WORK/tb.rlib' 2>&1); echo \"\$out\"; [ -z \"\$out\" ]"
fi

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
