#!/bin/sh
# The Kubernetes runtime on a host: kube.sh ACTION, run as root in the rootfs with the
# runtime env (docs/runtimes.md) and the files airlock staged in $stage:
#   init         first master: base, /etc/hosts -> own IP, PKI, kubeadm init
#   join-master  other masters: base, /etc/hosts -> first master, PKI, kubeadm join
#                --control-plane, then /etc/hosts -> own IP
#   join-node    workers: base, /etc/hosts -> 127.0.0.1, airlock-lb unit, kubeadm join
#   token        first master: the bootstrap token on stdin as a kube-system Secret
#   ready        first master: labels and taints, then wait for Ready nodes and pods
#   check        first master: report nodes and kube-system pods that are not ready
#   renew        a master: the re-issued PKI into /etc/kubernetes, static pods and the
#                kubelet restarted (airlock cert renew, and running masters before a new
#                master joins)
#   upgrade-apply  first master: kubeadm upgrade apply $AIRLOCK_KUBE_VERSION, base, kubelet
#   upgrade-node   other hosts: kubeadm upgrade node, base, kubelet restarted
#   drain NODE / uncordon NODE   first master, around a worker's upgrade
#   delete-node NODE             first master, after a worker left
#   uninstall    any host: drain (masters), kubeadm reset, remove what this made
# The image's binaries come first on PATH (rootfs bin/).
set -eu
action=${1:-}
root=${AIRLOCK_DATA_ROOT:-/var/lib/airlock}
stage="$root/cluster/kubernetes"
rootfs="$root/rootfs"
PATH="$rootfs/bin:$PATH"
export PATH
admin=/etc/kubernetes/admin.conf
log="$root/log/kubeadm.log"
node=${AIRLOCK_HOST_IP:-}

hosts_entry() {
    tmp=/etc/hosts.airlock-tmp
    grep -v " apiserver.cluster.local # airlock\$" /etc/hosts > "$tmp" || true
    printf '%s apiserver.cluster.local # airlock\n' "$1" >> "$tmp"
    cat "$tmp" > /etc/hosts
    rm -f "$tmp"
}

# containerd's configuration (kept aside once, put back by uninstall), then the image's
# base script (container runtime, kubelet, sysctls).
base() {
    mkdir -p /etc/containerd
    if [ -f /etc/containerd/config.toml ] && [ ! -f "$stage/containerd.toml.orig" ] &&
        ! head -n 1 /etc/containerd/config.toml | grep -q 'written by airlock'; then
        cp -p /etc/containerd/config.toml "$stage/containerd.toml.orig"
    fi
    cp "$stage/containerd.toml" /etc/containerd/config.toml
    if [ -n "${AIRLOCK_KUBE_BASE:-}" ]; then
        echo "base: sh $AIRLOCK_KUBE_BASE"
        (cd "$rootfs" && sh "$AIRLOCK_KUBE_BASE")
    fi
}

install_pki() {
    mkdir -p /etc/kubernetes
    cp -Rp "$stage/etc/." /etc/kubernetes/
}

# Once the control plane runs on the staged PKI: record which one (the SHA-256 of its
# API server certificate, which every re-issue changes) in $stage/pki-applied, which
# airlock reads (installer/kubernetes/pki-state.sh) to find masters to renew.
pki_applied() {
    sha256sum "$stage/etc/pki/apiserver.crt" | cut -d ' ' -f 1 > "$stage/pki-applied.tmp"
    mv "$stage/pki-applied.tmp" "$stage/pki-applied"
}

# Run kubeadm with its output in the log. On failure, write the last lines of its output
# and of the kubelet's journal to $report, and end stderr with five lines (what the
# install error shows): the failing phase, kubeadm's last error, the kubelet's last
# error, and where the rest is.
kubeadm_run() {
    mkdir -p "$root/log"
    echo "kubeadm $*"
    code=0
    kubeadm "$@" > "$log" 2>&1 || code=$?
    [ "$code" = 0 ] && return 0
    report="$root/log/kubeadm-failure.txt"
    journal=$(journalctl -u kubelet -n 30 --no-pager 2>&1 || echo "(no journal)")
    {
        echo "--- kubeadm $* (exit $code), last 20 lines of $log:"
        tail -n 20 "$log"
        echo "--- journalctl -u kubelet -n 30:"
        printf '%s\n' "$journal"
    } > "$report"
    cat "$report" >&2
    phase=$(grep -o 'error execution phase [^:]*' "$log" | tail -n 1 || true)
    phase=${phase#error execution phase }
    kubeadm_err=$(grep -iE 'error|fail|timed out' "$log" | tail -n 1 || true)
    kubelet_err=$(printf '%s\n' "$journal" | grep -iE 'error|fail' | tail -n 1 || true)
    {
        echo "kubeadm $1 failed (exit $code)${phase:+ in phase $phase}"
        echo "kubeadm: ${kubeadm_err:-$(tail -n 1 "$log")}"
        echo "kubelet: ${kubelet_err:-no error in its last 30 journal lines}"
        echo "the last lines of both are in $report on this host"
    } >&2
    exit "$code"
}

is_up() {
    [ -f "$admin" ] && kubectl --kubeconfig "$admin" get --raw /readyz > /dev/null 2>&1
}

# Wait (at most $1 seconds) until this master's API server answers /readyz again.
wait_api() {
    [ -f "$admin" ] || return 0
    start=$(date +%s)
    until kubectl --kubeconfig "$admin" get --raw /readyz > /dev/null 2>&1; do
        if [ $(($(date +%s) - start)) -ge "$1" ]; then
            echo "the API server did not answer /readyz within ${1}s after the restart" >&2
            exit 1
        fi
        sleep 2
    done
    echo "the API server answers /readyz again"
}

not_ready() {
    kubectl --kubeconfig "$admin" get nodes --no-headers 2>&1 |
        awk '$2 != "Ready" { print "node " $1 " is " $2 }'
    kubectl --kubeconfig "$admin" get pods -n kube-system --no-headers 2>&1 |
        awk '$3 != "Running" && $3 != "Completed" { print "pod kube-system/" $1 " is " $3 }'
}

case "$action" in
init)
    base
    hosts_entry "$node"
    install_pki
    if [ -f /etc/kubernetes/manifests/kube-apiserver.yaml ] && is_up; then
        echo "the control plane is already up: kubeadm init is not run again"
    else
        kubeadm_run init --config "$stage/kubeadm.yaml" --skip-phases=certs
        pki_applied
    fi
    ;;
join-master)
    base
    if [ -f /etc/kubernetes/manifests/kube-apiserver.yaml ] && is_up; then
        echo "this master already runs a control plane: kubeadm join is not run again"
    else
        hosts_entry "$AIRLOCK_FIRST_MASTER"
        install_pki
        kubeadm_run join --config "$stage/kubeadm.yaml"
        pki_applied
    fi
    hosts_entry "$node"
    ;;
join-node)
    base
    hosts_entry 127.0.0.1
    cp "$stage/airlock-lb.service" /etc/systemd/system/airlock-lb.service
    systemctl daemon-reload
    systemctl enable airlock-lb.service
    systemctl restart airlock-lb.service
    if [ -f /etc/kubernetes/kubelet.conf ]; then
        echo "this node has joined already: kubeadm join is not run again"
    else
        kubeadm_run join --config "$stage/kubeadm.yaml"
    fi
    ;;
token)
    token=$(cat)
    id=${token%%.*}
    secret=${token#*.}
    expires=$(date -u -d '+2 hours' +%Y-%m-%dT%H:%M:%SZ)
    kubectl --kubeconfig "$admin" apply -f - > /dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-$id
  namespace: kube-system
type: bootstrap.kubernetes.io/token
stringData:
  token-id: "$id"
  token-secret: "$secret"
  expiration: "$expires"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: system:bootstrappers:kubeadm:default-node-token
EOF
    echo "join token valid until $expires"
    ;;
ready)
    # AIRLOCK_KUBE_MARKS: lines `label NODE KEY=VALUE` and `taint NODE KEY=VALUE:EFFECT`.
    printf '%s\n' "${AIRLOCK_KUBE_MARKS:-}" | while read -r kind name mark; do
        case "$kind" in
        label) kubectl --kubeconfig "$admin" label node "$name" "$mark" --overwrite ;;
        taint) kubectl --kubeconfig "$admin" taint node "$name" "$mark" --overwrite ;;
        esac
    done
    wait=${AIRLOCK_KUBE_WAIT:-600}
    start=$(date +%s)
    while :; do
        left=$(not_ready)
        [ -z "$left" ] && break
        if [ $(($(date +%s) - start)) -ge "$wait" ]; then
            echo "not ready after ${wait}s:" >&2
            printf '%s\n' "$left" >&2
            exit 1
        fi
        sleep 5
    done
    kubectl --kubeconfig "$admin" get nodes --no-headers | awk '{ print "node " $1 " " $2 }'
    ;;
check)
    if [ ! -f "$admin" ]; then
        echo "no admin.conf on this host: the cluster is checked from the masters"
        exit 0
    fi
    left=$(not_ready)
    if [ -n "$left" ]; then
        printf '%s\n' "$left" >&2
        exit 1
    fi
    echo "every node is Ready and every kube-system pod runs"
    ;;
renew)
    install_pki
    # The kubelet stops a static pod whose manifest goes away and starts it again
    # when it comes back: the control plane reads the new certificates.
    aside="$stage/manifests-aside"
    mkdir -p "$aside"
    for f in /etc/kubernetes/manifests/*.yaml; do
        if [ -f "$f" ]; then mv "$f" "$aside/"; fi
    done
    sleep "${AIRLOCK_KUBE_RESTART_WAIT:-20}"
    for f in "$aside"/*.yaml; do
        if [ -f "$f" ]; then
            mv "$f" /etc/kubernetes/manifests/
            echo "restarted static pod $(basename "$f" .yaml)"
        fi
    done
    if systemctl cat kubelet.service > /dev/null 2>&1; then
        systemctl restart kubelet.service
    fi
    # What comes next (a join token, a new master's join) needs this API server.
    wait_api "${AIRLOCK_KUBE_WAIT:-600}"
    pki_applied
    ;;
upgrade-apply)
    kubeadm_run upgrade apply "$AIRLOCK_KUBE_VERSION" --yes
    base
    if systemctl cat kubelet.service > /dev/null 2>&1; then systemctl restart kubelet.service; fi
    ;;
upgrade-node)
    kubeadm_run upgrade node
    base
    if systemctl cat kubelet.service > /dev/null 2>&1; then systemctl restart kubelet.service; fi
    ;;
drain)
    kubectl --kubeconfig "$admin" drain "$2" --ignore-daemonsets --delete-emptydir-data \
        --timeout=300s
    ;;
uncordon)
    kubectl --kubeconfig "$admin" uncordon "$2"
    ;;
delete-node)
    kubectl --kubeconfig "$admin" delete node "$2" --ignore-not-found
    ;;
uninstall)
    scope=${AIRLOCK_UNINSTALL_SCOPE:-cluster}
    if [ "$scope" = host ] && is_up; then
        kubectl --kubeconfig "$admin" drain "$node" --ignore-daemonsets \
            --delete-emptydir-data --force --timeout=120s || true
        kubectl --kubeconfig "$admin" delete node "$node" --ignore-not-found || true
    fi
    # A control-plane node's reset also removes its etcd member.
    kubeadm reset -f || echo "kubeadm reset failed; going on" >&2
    if [ -f /etc/systemd/system/airlock-lb.service ]; then
        systemctl disable --now airlock-lb.service > /dev/null 2>&1 || true
        rm -f /etc/systemd/system/airlock-lb.service
        systemctl daemon-reload > /dev/null 2>&1 || true
    fi
    if [ -f "$stage/containerd.toml.orig" ]; then
        cp -p "$stage/containerd.toml.orig" /etc/containerd/config.toml
    elif [ -f /etc/containerd/config.toml ] &&
        head -n 1 /etc/containerd/config.toml | grep -q 'written by airlock'; then
        rm -f /etc/containerd/config.toml
    fi
    rm -rf /etc/kubernetes
    ;;
*)
    echo "usage: kube.sh init|join-master|join-node|token|ready|check|renew|upgrade-apply|upgrade-node|drain|uncordon|delete-node|uninstall" >&2
    exit 2
    ;;
esac
