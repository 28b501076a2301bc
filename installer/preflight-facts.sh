#!/bin/sh
# Read-only facts for airlock's preflight checks, printed as key=value lines.
# $1: data root (where airlock will keep its files), $2: registry domain.
# Nothing on the host is changed; the fsync probe writes a temporary file and removes it.
data_root=${1:-/var/lib/airlock}
domain=${2:-sea.hub}

fact() { printf '%s=%s\n' "$1" "$2"; }

fact uid "$(id -u)"
fact hostname "$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
fact machine_id "$(cat /etc/machine-id 2>/dev/null)"
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    fact os_id "${ID:-unknown}"
    fact os_version "${VERSION_ID:-unknown}"
fi
fact os "$(uname -s | tr '[:upper:]' '[:lower:]')"
fact arch "$(uname -m)"
fact kernel "$(uname -r)"
fact cpus "$(getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
fact mem_kb "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
fact swap_kb "$(awk '/^SwapTotal:/ {print $2}' /proc/meminfo)"
fact time "$(date +%s)"

# airlock installed here before (its step markers): a re-run, not a stranger's leftovers.
if [ -n "$(ls -A "$data_root/state" 2>/dev/null)" ]; then fact airlock_state yes; fi

# Free space where the data root will be: its nearest existing parent.
dir=$data_root
while [ ! -d "$dir" ] && [ "$dir" != / ]; do dir=$(dirname "$dir"); done
fact disk_dir "$dir"
fact disk_free_kb "$(df -Pk "$dir" | awk 'NR==2 {print $4}')"

# fsync latency: 20 synchronous 4 KiB writes into a temporary file next to the data root.
probe=$(mktemp "$dir/.airlock-fsync.XXXXXX" 2>/dev/null || mktemp)
start=$(date +%s%N)
dd if=/dev/zero of="$probe" bs=4k count=20 oflag=dsync 2>/dev/null
end=$(date +%s%N)
rm -f "$probe"
case "$start$end" in
*N*) ;;
*) fact fsync_us "$(((end - start) / 20000))" ;;
esac

fact cgroup_fs "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
for m in overlay br_netfilter; do
    if [ -d "/sys/module/$m" ]; then fact "module_$m" yes; else fact "module_$m" no; fi
done
fact sysctl_ip_forward "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)"
fact sysctl_bridge_nf_call_iptables "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)"

if [ -r /sys/fs/selinux/enforce ]; then
    fact selinux "$(cat /sys/fs/selinux/enforce)"
fi
fact apparmor "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)"

if command -v systemctl >/dev/null 2>&1; then
    for unit in firewalld ufw nftables containerd docker kubelet; do
        fact "active_$unit" "$(systemctl is-active "$unit" 2>/dev/null)"
    done
fi
for bin in containerd dockerd kubelet kubeadm; do
    if command -v "$bin" >/dev/null 2>&1; then fact binary "$bin"; fi
done
for path in /etc/kubernetes/manifests /var/lib/etcd /var/lib/kubelet; do
    if [ -n "$(ls -A "$path" 2>/dev/null)" ]; then fact leftover "$path"; fi
done

if command -v ip >/dev/null 2>&1; then
    ip -o -4 addr show | awk '{print "addr=" $4}'
    fact default_route "$(ip route show default | head -n1)"
else
    fact default_route "$(awk '$2 == "00000000" {print $1; exit}' /proc/net/route)"
fi

if command -v ss >/dev/null 2>&1; then
    ss -ltnH | awk '{print "listen=" $4}'
    ss -ltnpH 2>/dev/null | awk '/\(\("airlock"/ {print "airlock_listen=" $4}'
else
    awk 'NR > 1 && $4 == "0A" {print "tcp=" $2}' /proc/net/tcp /proc/net/tcp6 2>/dev/null
fi

fact registry_resolves "$(getent hosts "$domain" | awk '{print $1; exit}')"
