#!/usr/bin/env bash
# airlock multi-host testbed: N "hosts" on this one machine, each with its own
# network namespace (a veth into a per-testbed bridge, one 198.18.0.0/15
# address), its own mount/pid/uts/ipc/cgroup namespaces over an overlay of the
# machine's own /, and a real sshd; optionally containerd and systemd as PID 1.
# Usage and design: README.md beside this file, or `testbed.sh help`.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022

SELF=$(readlink -f "${BASH_SOURCE[0]}")
BASE=${AIRLOCK_TESTBED_DIR:-/tmp/airlock-testbed}
# Machine-wide (not per base dir): the subnet claims and their lock, so that
# testbeds with different AIRLOCK_TESTBED_DIR still never share a subnet.
RUNDIR=${AIRLOCK_TESTBED_RUNDIR:-/run/airlock-testbed}
TIMEOUT=${AIRLOCK_TESTBED_TIMEOUT:-90}
MAX_K=511                # 198.18.0.0/15 holds 512 /24s: 198.18.0.0 .. 198.19.255.0
CG_LEAF=airlock-testbed  # our cgroups: <caller's cgroup>/airlock-testbed/<K>-h<I>
HOST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
TARGET=airlock-testbed.target
# set from $DIR/meta by load_meta / host_init / down_dir
NAME="" K="" N=0 PREFIX="" CONTAINERD=0 SYSTEMD=0 RATE="" DIR=""

log() { printf 'testbed: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  cat <<'EOF'
usage: testbed.sh COMMAND ...
  up --name NAME --hosts N [--rate RATE] [--containerd] [--systemd]
        create N hosts; prints KEY=VALUE lines (also in $TESTBED_DIR/env)
  down --name NAME | down --all      remove a testbed / every testbed (idempotent)
  exec --name NAME I -- CMD...       run CMD inside host I (1-based)
  ip --name NAME I                   print host I's address
  list                               list testbeds under the base dir
  kill-sshd --name NAME I [--listener-only]
  start-sshd --name NAME I
  link --name NAME I down|up         cut / restore host I's link
env: AIRLOCK_TESTBED_DIR (default /tmp/airlock-testbed), AIRLOCK_TESTBED_TIMEOUT (s, default 90)
EOF
}

# ---------------------------------------------------------------- helpers

prefix_of() { echo "198.$((18 + $1 / 256)).$(($1 % 256))"; }

validate_name() {
  [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] ||
    die "bad testbed name '$1' (lowercase letters, digits and '-', at most 32, used in hostnames)"
}

validate_base() {
  [[ $BASE == /* && $BASE =~ ^[A-Za-z0-9_./-]+$ && $BASE != / ]] ||
    die "AIRLOCK_TESTBED_DIR must be an absolute path of [A-Za-z0-9_./-] (got '$BASE')"
}

# random password: hex, no shell or ssh quoting issues
random_password() { od -An -tx1 -N12 /dev/urandom | tr -d ' \n'; }

APT_UPDATED=0
apt_install() {
  log "installing missing packages: $*"
  local policy=/usr/sbin/policy-rc.d made=0 rc=0
  if [[ $APT_UPDATED == 0 ]]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || true
    APT_UPDATED=1
  fi
  # never start the machine's own copy of a daemon (sshd, containerd) on install
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "$@" >&2 || rc=$?
  if [[ $made == 1 ]]; then rm -f "$policy"; fi
  return "$rc"
}

# need CMD:PACKAGE ... - install the packages whose command is missing
need() {
  local pair cmd missing=()
  for pair in "$@"; do
    cmd=${pair%%:*}
    if [[ $cmd == /* ]]; then [[ -x $cmd ]] && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  # shellcheck disable=SC2046
  apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
  for pair in "$@"; do
    cmd=${pair%%:*}
    if [[ $cmd == /* ]]; then [[ -x $cmd ]] || die "missing $cmd"; else command -v "$cmd" >/dev/null 2>&1 || die "missing $cmd"; fi
  done
}

BASE_CMDS=(ip:iproute2 tc:iproute2 unshare:util-linux nsenter:util-linux pivot_root:util-linux
  flock:util-linux setsid:util-linux /usr/sbin/sshd:openssh-server ssh:openssh-client
  ssh-keygen:openssh-client iptables:iptables sudo:sudo useradd:passwd chpasswd:passwd)

# The v1 cgroup hierarchies of the caller: lines "MOUNTOPTS DIR PATH" where DIR
# is the hierarchy's directory under /sys/fs/cgroup and PATH the caller's cgroup.
cg_hierarchies() {
  local id ctrls path
  while IFS=: read -r id ctrls path; do
    [[ -n $ctrls && -n $id ]] || continue
    if [[ $ctrls == name=* ]]; then
      [[ -d /sys/fs/cgroup/${ctrls#name=} ]] && echo "none,$ctrls ${ctrls#name=} $path"
    else
      [[ -d /sys/fs/cgroup/$ctrls ]] && echo "$ctrls $ctrls $path"
    fi
  done </proc/self/cgroup
}

cg_create() {
  local d=$1 parent
  [[ -d $d ]] && return 0
  parent=${d%/*}
  cg_create "$parent"
  mkdir "$d" 2>/dev/null || [[ -d $d ]]
  # a new cpuset cgroup is unusable until it has cpus and mems
  if [[ -e $d/cpuset.cpus && -z $(<"$d/cpuset.cpus") ]]; then
    cat "$parent/cpuset.cpus" >"$d/cpuset.cpus"
    cat "$parent/cpuset.mems" >"$d/cpuset.mems"
  fi
}

cg_remove_tree() {
  local d=$1 try
  [[ $d == /sys/fs/cgroup/* ]] || return 0
  for try in 1 2 3 4 5 6 7 8 9 10; do
    [[ -d $d ]] || break
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d $d ]] || break
    sleep 0.2
  done
  # the shared parent goes when the last testbed under it goes
  rmdir "${d%/*}" 2>/dev/null || true
  [[ ! -d $d ]] || log "warning: could not remove cgroup $d"
}

# load $DIR/meta (written by us: plain KEY=VALUE assignments)
load_meta() {
  DIR=$BASE/$NAME
  [[ -f $DIR/meta ]] || die "no testbed '$NAME' (no $DIR/meta)"
  # shellcheck disable=SC1091
  source "$DIR/meta"
}

host_dir() { echo "$DIR/h$1"; }

check_host_index() {
  if [[ ! $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > N)); then
    die "host index '$1' out of range 1..$N"
  fi
}

init_pid() {
  local f pid
  f=$(host_dir "$1")/init.pid
  [[ -f $f ]] || die "host $1 of '$NAME' was never started"
  pid=$(<"$f")
  # it must still be ours: alive and inside the host's network namespace
  if [[ ! -d /proc/$pid ]] || [[ $(ip netns identify "$pid" 2>/dev/null) != "$(ns_of "$1")" ]]; then
    die "host $1 of '$NAME' is not running (init pid $pid gone)"
  fi
  echo "$pid"
}

ns_of() { echo "atb${K}h$1"; }
veth_of() { echo "atb${K}h$1"; }
bridge_of() { echo "atb${K}"; }

SSH_BASE_OPTS=(-o BatchMode=yes -o ConnectTimeout=3 -o StrictHostKeyChecking=yes
  -o LogLevel=ERROR -o IdentitiesOnly=yes)

ssh_ok() { # ip: key login works
  timeout 10 ssh "${SSH_BASE_OPTS[@]}" -o UserKnownHostsFile="$DIR/known_hosts" \
    -i "$DIR/id_ed25519" "root@$1" true </dev/null >/dev/null 2>&1
}

wait_ssh() { # index ip deadline
  local i=$1 ip=$2 deadline=$3 pid
  pid=$(<"$(host_dir "$i")/init.pid")
  until ssh_ok "$ip"; do
    [[ -d /proc/$pid ]] || die "host $i ($ip) died while booting; see $(host_dir "$i")/console.log:
$(tail -n 20 "$(host_dir "$i")/console.log" 2>/dev/null)"
    ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for sshd on host $i ($ip); see $(host_dir "$i")/console.log and $(host_dir "$i")/upper/var/log/"
    sleep 0.2
  done
}

# run inside host I: its net, mount, pid, uts, ipc and cgroup namespaces, its root
host_exec() {
  local i=$1 pid
  shift
  pid=$(init_pid "$i")
  nsenter -t "$pid" -n -m -p -u -i -C -r -w -- \
    env -i PATH="$HOST_PATH" HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM="${TERM:-dumb}" "$@"
}

# ---------------------------------------------------------------- up

UP_DONE=0
UP_DIR=
up_cleanup() {
  local rc=$?
  trap '' INT TERM
  if [[ $UP_DONE != 1 && -n $UP_DIR ]]; then
    log "up failed or was interrupted (exit $rc): tearing down '$NAME'"
    down_dir "$UP_DIR" || true
  fi
  exit "$rc"
}

cmd_up() {
  local hosts=0 rate="" containerd=0 systemd=0
  NAME=""
  while (($#)); do
    case $1 in
      --name) NAME=${2:?}; shift 2 ;;
      --hosts) hosts=${2:?}; shift 2 ;;
      --rate) rate=${2:?}; shift 2 ;;
      --containerd) containerd=1; shift ;;
      --systemd) systemd=1; shift ;;
      *) die "up: unknown argument '$1'" ;;
    esac
  done
  [[ -n $NAME ]] || die "up: --name is required"
  validate_name "$NAME"
  validate_base
  if [[ ! $hosts =~ ^[0-9]+$ ]] || ((hosts < 1 || hosts > 250)); then die "up: --hosts must be 1..250"; fi
  [[ -z $rate || $rate =~ ^[0-9]+(\.[0-9]+)?[kmgt]?(bit|bps)$ ]] || die "up: bad --rate '$rate' (e.g. 200mbit)"
  (($(id -u) == 0)) || die "up: must run as root"

  local cmds=("${BASE_CMDS[@]}")
  if ((containerd)); then cmds+=(containerd:containerd ctr:containerd runc:runc); fi
  if ((systemd)); then cmds+=(/lib/systemd/systemd:systemd dbus-daemon:dbus); fi
  need "${cmds[@]}"
  if ((containerd || systemd)); then
    [[ -n $(cg_hierarchies) ]] || die "up: --containerd/--systemd need cgroup v1 hierarchies under /sys/fs/cgroup"
  fi

  mkdir -p "$BASE" "$RUNDIR/subnets"
  DIR=$BASE/$NAME
  trap up_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir "$DIR" 2>/dev/null || die "up: testbed '$NAME' already exists at $DIR (run: $0 down --name $NAME)"
  UP_DIR=$DIR
  chmod 700 "$DIR"

  # ---- a free /24 and its claim, under a machine-wide lock
  K=""
  exec 9>"$RUNDIR/alloc.lock"
  flock -w 60 9 || die "up: could not lock $RUNDIR/alloc.lock"
  local k used
  used=$(ip -4 -o addr show 2>/dev/null | awk '{print $4}')
  for ((k = 0; k <= MAX_K; k++)); do
    if [[ -f $RUNDIR/subnets/$k ]]; then
      [[ -d $(<"$RUNDIR/subnets/$k") ]] && continue
      ip link show "atb$k" >/dev/null 2>&1 && continue
    fi
    ip link show "atb$k" >/dev/null 2>&1 && continue
    ls /run/netns/"atb${k}h"* >/dev/null 2>&1 && continue
    grep -q "^$(prefix_of "$k" | sed 's/\./\\./g')\." <<<"$used" && continue
    K=$k
    break
  done
  [[ -n $K ]] || die "up: no free /24 left in 198.18.0.0/15"
  echo "$DIR" >"$RUNDIR/subnets/$K"
  local prefix gw
  prefix=$(prefix_of "$K")
  gw=$prefix.1
  cat >"$DIR/meta" <<EOF
NAME=$NAME
K=$K
N=$hosts
PREFIX=$prefix
CONTAINERD=$containerd
SYSTEMD=$systemd
RATE=$rate
EOF
  flock -u 9
  exec 9>&-
  log "'$NAME': $hosts host(s) on $prefix.0/24"

  # ---- credentials
  ssh-keygen -q -t ed25519 -N '' -C "airlock-testbed-$NAME" -f "$DIR/id_ed25519"
  random_password >"$DIR/root_password"
  random_password >"$DIR/ops_password"
  chmod 600 "$DIR/root_password" "$DIR/ops_password"
  : >"$DIR/known_hosts"
  {
    echo "127.0.0.1 localhost"
    echo "$gw $NAME-gw"
  } >"$DIR/hosts"
  local i ip h
  for ((i = 1; i <= hosts; i++)); do
    echo "$prefix.$((i + 1)) $NAME-h$i" >>"$DIR/hosts"
  done

  # ---- the bridge, and the rules that keep every packet on it
  local br
  br=$(bridge_of)
  ip link add "$br" type bridge
  sysctl -q -w "net.ipv6.conf.$br.disable_ipv6=1" >/dev/null 2>&1 || true
  ip addr add "$gw/24" dev "$br"
  ip link set "$br" up
  iptables -w -I FORWARD -i "$br" ! -o "$br" -j DROP
  iptables -w -I INPUT -i "$br" ! -d 198.18.0.0/15 -j DROP

  if [[ ${AIRLOCK_TESTBED_INJECT_FAILURE:-} == after-bridge ]]; then die "injected failure (after-bridge)"; fi

  # ---- the hosts
  local cgs
  cgs=$(cg_hierarchies)
  for ((i = 1; i <= hosts; i++)); do
    ip=$prefix.$((i + 1))
    h=$(host_dir "$i")
    mkdir -p "$h/upper" "$h/work" "$h/root" "$h/keys"
    if ((containerd)); then mkdir -p "$h/containerd"; fi
    ssh-keygen -q -t ed25519 -N '' -C "$NAME-h$i" -f "$h/keys/ssh_host_ed25519_key"
    ssh-keygen -q -t ecdsa -N '' -C "$NAME-h$i" -f "$h/keys/ssh_host_ecdsa_key"
    local t
    for t in ed25519 ecdsa; do
      echo "$ip,$NAME-h$i $(cut -d' ' -f1-2 "$h/keys/ssh_host_${t}_key.pub")" >>"$DIR/known_hosts"
    done
    start_host "$i" "$ip" "$gw" "$rate" "$cgs"
  done

  if [[ ${AIRLOCK_TESTBED_INJECT_FAILURE:-} == after-hosts ]]; then sleep 1; die "injected failure (after-hosts)"; fi

  # ---- wait until every host answers
  local deadline=$((SECONDS + TIMEOUT)) hostlist=""
  for ((i = 1; i <= hosts; i++)); do
    ip=$prefix.$((i + 1))
    wait_ssh "$i" "$ip" "$deadline"
    hostlist+="${hostlist:+ }$ip"
  done
  if ((systemd)); then
    local state
    for ((i = 1; i <= hosts; i++)); do
      state=$(host_exec "$i" timeout "$((deadline - SECONDS > 5 ? deadline - SECONDS : 5))" \
        systemctl is-system-running --wait 2>/dev/null || true)
      case $state in
        running) ;;
        degraded) log "warning: host $i is 'degraded': $(host_exec "$i" systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}' | tr '\n' ' ')" ;;
        *) die "host $i: systemd did not finish booting (is-system-running: '${state:-?}')" ;;
      esac
    done
  fi
  if ((containerd)); then
    for ((i = 1; i <= hosts; i++)); do
      until host_exec "$i" ctr version >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for containerd on host $i; see $(host_dir "$i")/upper/var/log/containerd.log"
        sleep 0.2
      done
    done
  fi

  {
    echo "TESTBED_NAME=$NAME"
    echo "TESTBED_DIR=$DIR"
    echo "TESTBED_HOSTS=\"$hostlist\""
    echo "TESTBED_KEY=$DIR/id_ed25519"
    echo "TESTBED_ROOT_PASSWORD_FILE=$DIR/root_password"
    echo "TESTBED_OPS_PASSWORD_FILE=$DIR/ops_password"
    echo "TESTBED_GATEWAY=$gw"
    echo "TESTBED_SUBNET=$prefix.0/24"
    echo "TESTBED_KNOWN_HOSTS=$DIR/known_hosts"
  } >"$DIR/env"
  UP_DONE=1
  cat "$DIR/env"
}

# create host I's network and start its init (in the background, detached)
start_host() {
  local i=$1 ip=$2 gw=$3 rate=$4 cgs=$5
  local ns veth peer h opts dir path cgdir
  ns=$(ns_of "$i")
  veth=$(veth_of "$i")
  peer="atb${K}p$i"
  h=$(host_dir "$i")

  ip netns add "$ns"
  nsenter --net="/run/netns/$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1 >/dev/null
  ip link add "$veth" type veth peer name "$peer"
  sysctl -q -w "net.ipv6.conf.$veth.disable_ipv6=1" >/dev/null 2>&1 || true
  ip link set "$peer" netns "$ns"
  ip -n "$ns" link set "$peer" name eth0
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip link set "$veth" master "$(bridge_of)"
  ip link set "$veth" up
  # a default route like a real host has (installers look for one); anything
  # not for 198.18.0.0/15 is dropped on the machine by the bridge's rules
  ip -n "$ns" route add default via "$gw"
  if [[ -n $rate ]]; then
    tc qdisc add dev "$veth" root tbf rate "$rate" burst 256kb latency 50ms
    tc -n "$ns" qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 50ms
  fi

  # one cgroup per host in every v1 hierarchy, below the caller's own cgroup;
  # the host gets a cgroup namespace rooted there
  : >"$h/cgroups"
  while read -r opts dir path; do
    [[ -n $dir ]] || continue
    cgdir=/sys/fs/cgroup/$dir${path%/}/$CG_LEAF/$K-h$i
    echo "$cgdir" >>"$h/cgroups"
    cg_create "$cgdir"
  done <<<"$cgs"

  (
    while read -r cgdir; do
      echo "$BASHPID" >"$cgdir/cgroup.procs"
    done <"$h/cgroups"
    exec setsid nsenter --net="/run/netns/$ns" -- \
      unshare --mount --uts --ipc --pid --fork --cgroup --propagation private -- \
      env -i PATH="$HOST_PATH" LANG=C.UTF-8 HOME=/root \
      bash "$SELF" __host-init "$DIR" "$i" </dev/null >>"$h/console.log" 2>&1
  ) &
  local upid=$! child="" try
  disown "$upid"
  echo "$upid" >"$h/unshare.pid"
  for ((try = 0; try < 100; try++)); do
    child=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null || true)
    child=${child%% *}
    [[ -n $child ]] && break
    [[ -d /proc/$upid ]] || die "host $i failed to start; see $h/console.log:
$(tail -n 20 "$h/console.log" 2>/dev/null)"
    sleep 0.05
  done
  [[ -n $child ]] || die "host $i: no init process appeared"
  echo "$child" >"$h/init.pid"
}

# ---------------------------------------------------------------- inside a host

# Runs as PID 1 of the host's new namespaces, still seeing the machine's
# filesystem; builds the host's root, pivots into it, then becomes its init.
host_init() {
  DIR=$1
  local i=$2
  # shellcheck disable=SC1091
  source "$DIR/meta"
  local h=$DIR/h$i r
  r=$h/root
  local hostname=$NAME-h$i root_pw ops_pw
  root_pw=$(<"$DIR/root_password")
  ops_pw=$(<"$DIR/ops_password")

  mount --make-rprivate /
  echo "$hostname" >/proc/sys/kernel/hostname
  mount -t overlay overlay -o "lowerdir=/,upperdir=$h/upper,workdir=$h/work" "$r"

  # /dev: a small tmpfs with the usual nodes, its own pts; never the machine's disks or console
  mount -t tmpfs -o mode=755,nosuid,size=1m dev "$r/dev"
  local n
  for n in null zero full random urandom tty; do
    touch "$r/dev/$n"
    mount --bind "/dev/$n" "$r/dev/$n"
  done
  if [[ -c /dev/fuse ]]; then touch "$r/dev/fuse" && mount --bind /dev/fuse "$r/dev/fuse"; fi
  if [[ -c /dev/net/tun ]]; then mkdir -p "$r/dev/net" && touch "$r/dev/net/tun" && mount --bind /dev/net/tun "$r/dev/net/tun"; fi
  touch "$r/dev/console"
  mount --bind /dev/null "$r/dev/console"
  mkdir -p "$r/dev/pts" "$r/dev/shm" "$r/dev/mqueue"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$r/dev/pts"
  ln -s pts/ptmx "$r/dev/ptmx"
  mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
  mount -t mqueue mqueue "$r/dev/mqueue"
  ln -s /proc/self/fd "$r/dev/fd"
  ln -s /proc/self/fd/0 "$r/dev/stdin"
  ln -s /proc/self/fd/1 "$r/dev/stdout"
  ln -s /proc/self/fd/2 "$r/dev/stderr"

  # /sys: a fresh read-only sysfs (shows this host's network devices)
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
  if ((CONTAINERD || SYSTEMD)); then
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup "$r/sys/fs/cgroup"
    local opts dir path
    while read -r opts dir path; do
      [[ -n $dir ]] || continue
      mkdir -p "$r/sys/fs/cgroup/$dir"
      mount -t cgroup -o "$opts,nosuid,nodev,noexec" cgroup "$r/sys/fs/cgroup/$dir"
    done < <(cg_hierarchies)
  fi

  mount -t tmpfs -o mode=755,nosuid,nodev run "$r/run"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$r/tmp"
  if ((CONTAINERD)); then
    # containerd's state on the machine's real disk, not on overlayfs, so that
    # its overlayfs snapshotter works
    mkdir -p "$r/var/lib/containerd"
    mount --bind "$h/containerd" "$r/var/lib/containerd"
  fi

  # ---- the host's own files (written through the overlay: copy-up keeps modes)
  echo "$hostname" >"$r/etc/hostname"
  cp "$DIR/hosts" "$r/etc/hosts"
  rm -f "$r/etc/resolv.conf"
  echo "# airlock testbed host: no DNS" >"$r/etc/resolv.conf"
  od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$r/etc/machine-id"
  echo >>"$r/etc/machine-id"
  rm -f "$r"/etc/ssh/ssh_host_*
  cp "$h"/keys/ssh_host_* "$r/etc/ssh/"
  chmod 600 "$r"/etc/ssh/ssh_host_*_key
  mkdir -p "$r/etc/ssh/sshd_config.d"
  cat >"$r/etc/ssh/sshd_config.d/00-airlock-testbed.conf" <<'EOF'
# airlock testbed host
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
AddressFamily inet
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
UseDNS no
MaxStartups 200:30:400
MaxSessions 100
EOF
  # root's shell start-up files as a fresh Debian host has them: the machine's own
  # (toolchain managers such as pyenv) would run on every SSH command and make
  # installs slow in ways no customer host is.
  cp /etc/skel/.bashrc "$r/root/.bashrc" 2>/dev/null || : >"$r/root/.bashrc"
  cp /etc/skel/.profile "$r/root/.profile" 2>/dev/null || : >"$r/root/.profile"
  rm -f "$r/root/.bash_profile" "$r/root/.bash_login"
  mkdir -p "$r/root/.ssh"
  chmod 700 "$r/root/.ssh"
  cp "$DIR/id_ed25519.pub" "$r/root/.ssh/authorized_keys"
  chmod 600 "$r/root/.ssh/authorized_keys"
  if ((CONTAINERD)); then
    mkdir -p "$r/etc/containerd"
    cat >"$r/etc/containerd/config.toml" <<'EOF'
# airlock testbed host: plain containerd, no CRI
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "/run/containerd/containerd.sock"
EOF
  fi
  if ((SYSTEMD)); then
    # systemd-user-sessions removes /run/nologin, so that non-root users may log in
    local wants="ssh.service systemd-logind.service systemd-user-sessions.service"
    if ((CONTAINERD)); then wants+=" containerd.service"; fi
    cat >"$r/etc/systemd/system/$TARGET" <<EOF
[Unit]
Description=airlock testbed host
Requires=basic.target
Wants=$wants
After=basic.target
AllowIsolate=yes
EOF
    # units that would touch the machine's kernel or devices, or the network
    local u
    for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
      systemd-udev-trigger.service systemd-udev-settle.service systemd-modules-load.service \
      systemd-sysctl.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
      proc-sys-fs-binfmt_misc.mount systemd-timesyncd.service timers.target systemd-pstore.service \
      sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
      sys-fs-fuse-connections.mount dev-hugepages.mount systemd-remount-fs.service \
      systemd-fsck-root.service systemd-random-seed.service systemd-journald-audit.socket \
      systemd-hwdb-update.service getty.target console-getty.service e2scrub_reap.service \
      systemd-networkd.service systemd-resolved.service networking.service; do
      ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    echo "# airlock testbed host" >"$r/etc/fstab"
  fi

  # ---- into the new root
  mkdir -p "$r/.oldroot"
  cd "$r"
  pivot_root . .oldroot
  cd /
  mount -t proc -o nosuid,nodev,noexec proc /proc
  umount -l /.oldroot
  rmdir /.oldroot

  id ops >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo ops
  printf 'root:%s\nops:%s\n' "$root_pw" "$ops_pw" | chpasswd
  echo 'ops ALL=(ALL:ALL) ALL' >/etc/sudoers.d/airlock-testbed-ops
  chmod 440 /etc/sudoers.d/airlock-testbed-ops
  mkdir -p /var/log

  if ((SYSTEMD)); then
    exec env -i container=airlock-testbed PATH="$HOST_PATH" LANG=C.UTF-8 \
      /lib/systemd/systemd --system --unit="$TARGET" --log-target=console --show-status=no
  fi

  mkdir -p /run/sshd
  chmod 755 /run/sshd
  setsid /usr/sbin/sshd -D -e </dev/null >>/var/log/airlock-sshd.log 2>&1 &
  if ((CONTAINERD)); then
    setsid containerd --config /etc/containerd/config.toml </dev/null >>/var/log/containerd.log 2>&1 &
  fi
  echo "host $hostname up"
  # PID 1: reap orphans, never exit (the machine stops the host with SIGKILL)
  trap '' TERM INT HUP
  while :; do
    sleep 3600 &
    wait $! 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- down

# every live process of testbed DIR (K, N): in its netns or its cgroups
testbed_pids() {
  local i f
  for ((i = 1; i <= N; i++)); do
    ip netns pids "atb${K}h$i" 2>/dev/null || true
    f=$DIR/h$i/cgroups
    if [[ -f $f ]]; then
      while read -r cg; do
        [[ $cg == /sys/fs/cgroup/* && -d $cg ]] || continue
        find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true
      done <"$f"
    fi
  done | sort -un
}

down_dir() {
  local dir=$1 K="" N=0 NAME="" DIR=$1 i k f
  [[ $dir == /* && $dir != / ]] || return 0
  if [[ -f $dir/meta ]]; then
    # shellcheck disable=SC1091
    source "$dir/meta"
  else
    # up died before writing meta: find its claim, if any
    for f in "$RUNDIR"/subnets/*; do
      [[ -f $f && $(<"$f") == "$dir" ]] && K=${f##*/}
    done
    N=$(find "$dir" -maxdepth 1 -name 'h[0-9]*' 2>/dev/null | wc -l || true)
  fi
  NAME=${NAME:-${dir##*/}}
  if [[ -n $K ]]; then
    # some hosts may exist beyond N if meta is stale; count what is there
    for f in /run/netns/atb"${K}"h*; do
      [[ -e $f ]] || continue
      k=${f##*h}
      [[ $k =~ ^[0-9]+$ ]] && ((k > N)) && N=$k
    done
  fi

  # 1. processes: SIGKILL everything in the hosts' namespaces and cgroups
  local pids round killed="" p
  for ((round = 0; round < 100; round++)); do
    pids=$(testbed_pids | grep -vx "$$" || true)
    [[ -n $pids ]] || break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    killed+=" $pids"
    sleep 0.1
  done
  [[ -z $(testbed_pids) ]] || log "warning: processes of '$NAME' survived: $(testbed_pids | tr '\n' ' ')"
  # give their parents a moment to reap them (zombies are dead already)
  for ((round = 0; round < 30; round++)); do
    pids=""
    for p in $killed; do
      [[ -d /proc/$p ]] && pids+=" $p"
    done
    killed=$pids
    [[ -n $killed ]] || break
    sleep 0.1
  done

  # 2. mounts on the machine under the testbed dir (normally none: the hosts'
  #    mounts live in their own mount namespaces, gone with their processes)
  local mnts
  mnts=$(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  for f in $mnts; do umount -l "$f" 2>/dev/null || true; done

  # 3. network
  if [[ -n $K ]]; then
    for ((i = 1; i <= N; i++)); do
      ip netns del "atb${K}h$i" 2>/dev/null || true
      ip link del "atb${K}h$i" 2>/dev/null || true
      ip link del "atb${K}p$i" 2>/dev/null || true
    done
    ip link del "atb$K" 2>/dev/null || true
    while iptables -w -C FORWARD -i "atb$K" ! -o "atb$K" -j DROP 2>/dev/null; do
      iptables -w -D FORWARD -i "atb$K" ! -o "atb$K" -j DROP
    done
    while iptables -w -C INPUT -i "atb$K" ! -d 198.18.0.0/15 -j DROP 2>/dev/null; do
      iptables -w -D INPUT -i "atb$K" ! -d 198.18.0.0/15 -j DROP
    done
  fi

  # 4. cgroups
  for ((i = 1; i <= N; i++)); do
    f=$dir/h$i/cgroups
    [[ -f $f ]] || continue
    while read -r cg; do cg_remove_tree "$cg"; done <"$f"
  done

  # 5. files and the subnet claim
  if [[ -d $dir ]]; then
    local try
    for try in 1 2 3 4 5; do
      rm -rf --one-file-system "$dir" 2>/dev/null && break
      sleep 0.3
    done
    [[ ! -e $dir ]] || log "warning: could not remove $dir"
  fi
  if [[ -n $K && -f $RUNDIR/subnets/$K && $(<"$RUNDIR/subnets/$K") == "$dir" ]]; then
    rm -f "$RUNDIR/subnets/$K"
  fi
  return 0
}

cmd_down() {
  local all=0
  NAME=""
  while (($#)); do
    case $1 in
      --name) NAME=${2:?}; shift 2 ;;
      --all) all=1; shift ;;
      *) die "down: unknown argument '$1'" ;;
    esac
  done
  validate_base
  if ((all)); then
    local d f
    for d in "$BASE"/*/; do
      [[ -d $d ]] && down_dir "${d%/}"
    done
    # and those of this base dir whose directory is gone or half made, by their claims
    for f in "$RUNDIR"/subnets/*; do
      [[ -f $f ]] || continue
      d=$(<"$f")
      if [[ $d == "$BASE"/* ]]; then down_dir "$d"; fi
    done
    return 0
  fi
  [[ -n $NAME ]] || die "down: --name NAME or --all"
  validate_name "$NAME"
  down_dir "$BASE/$NAME"
}

# ---------------------------------------------------------------- the rest

parse_name_index() { # sets NAME and IDX, REST = remaining args
  NAME=""
  IDX=""
  REST=()
  while (($#)); do
    case $1 in
      --name) NAME=${2:?}; shift 2 ;;
      --) shift; REST+=("$@"); break ;;
      *)
        if [[ -z $IDX ]]; then IDX=$1; else REST+=("$1"); fi
        shift
        ;;
    esac
  done
  [[ -n $NAME ]] || die "--name is required"
  [[ -n $IDX ]] || die "host index is required"
  validate_name "$NAME"
  load_meta
  check_host_index "$IDX"
}

cmd_exec() {
  parse_name_index "$@"
  ((${#REST[@]})) || die "exec: no command (exec --name NAME I -- CMD...)"
  local pid
  pid=$(init_pid "$IDX")
  exec nsenter -t "$pid" -n -m -p -u -i -C -r -w -- \
    env -i PATH="$HOST_PATH" HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM="${TERM:-dumb}" "${REST[@]}"
}

cmd_ip() {
  parse_name_index "$@"
  echo "$PREFIX.$((IDX + 1))"
}

cmd_list() {
  local d
  for d in "$BASE"/*/; do
    [[ -f $d/meta ]] || continue
    (
      # shellcheck disable=SC1091
      source "$d/meta"
      local flags="" up=0 i pid
      ((CONTAINERD)) && flags+=" containerd"
      ((SYSTEMD)) && flags+=" systemd"
      [[ -n $RATE ]] && flags+=" rate=$RATE"
      for ((i = 1; i <= N; i++)); do
        pid=$(cat "$d/h$i/init.pid" 2>/dev/null || true)
        [[ -n $pid && -d /proc/$pid ]] && up=$((up + 1))
      done
      [[ -f $d/env ]] || flags+=" (incomplete)"
      printf '%s\t%s.0/24\t%s/%s hosts running%s\n' "$NAME" "$PREFIX" "$up" "$N" "$flags"
    )
  done
}

# pids (in the host's pid namespace) of every sshd in host I
# shellcheck disable=SC2016
SSHD_PIDS='for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = sshd ] && echo "${p#/proc/}"; done; true'

cmd_kill_sshd() {
  local listener_only=0 a args=()
  for a in "$@"; do
    if [[ $a == --listener-only ]]; then listener_only=1; else args+=("$a"); fi
  done
  parse_name_index "${args[@]}"
  if ((SYSTEMD)); then
    host_exec "$IDX" systemctl stop ssh.service ssh.socket >/dev/null 2>&1 || true
  else
    # shellcheck disable=SC2016
    host_exec "$IDX" sh -c '[ -f /run/sshd.pid ] && kill -KILL "$(cat /run/sshd.pid)"; rm -f /run/sshd.pid; true'
  fi
  if ((!listener_only)); then
    local pids
    pids=$(host_exec "$IDX" sh -c "$SSHD_PIDS")
    # shellcheck disable=SC2086
    [[ -z $pids ]] || host_exec "$IDX" kill -KILL $pids 2>/dev/null || true
  fi
  log "sshd stopped on host $IDX"
}

cmd_start_sshd() {
  parse_name_index "$@"
  if ((SYSTEMD)); then
    host_exec "$IDX" systemctl start ssh.service
  else
    host_exec "$IDX" sh -c 'mkdir -p /run/sshd && setsid -f /usr/sbin/sshd -D -e </dev/null >>/var/log/airlock-sshd.log 2>&1'
  fi
  wait_ssh "$IDX" "$PREFIX.$((IDX + 1))" "$((SECONDS + TIMEOUT))"
  log "sshd answering on host $IDX"
}

cmd_link() {
  parse_name_index "$@"
  local state=${REST[0]:-}
  [[ $state == up || $state == down ]] || die "link: say 'down' or 'up'"
  # the machine's end: the host keeps its address and routes, it just loses carrier
  ip link set "$(veth_of "$IDX")" "$state"
}

main() {
  local cmd=${1:-help}
  (($#)) && shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    exec) cmd_exec "$@" ;;
    ip) cmd_ip "$@" ;;
    list) validate_base; cmd_list ;;
    kill-sshd) cmd_kill_sshd "$@" ;;
    start-sshd) cmd_start_sshd "$@" ;;
    link) cmd_link "$@" ;;
    __host-init) host_init "$@" ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
