#!/bin/sh
# Install what airlock's build, tests and demo need on a fresh Debian/Ubuntu machine.
# Idempotent: installs only what is missing. Needs root for apt.
set -eu
packages="openssh-server openssh-client containerd runc docker-registry skopeo etcd-server
etcd-client busybox-static makeself xorriso iptables iproute2 musl-tools sshpass zstd sudo
tmux procps psmisc ca-certificates golang-docker-credential-helpers pass gnupg curl shellcheck"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps: missing packages:$missing; run as root (or install them) and try again" >&2
        exit 1
    fi
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
# The Debian packages would start their services on a machine with systemd; airlock's
# tests start their own on free ports, so stop the package's defaults if they run.
for svc in docker-registry containerd etcd; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
        echo "deps: adding the musl target for static builds"
        rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 \
            || echo "deps: musl target unavailable; bundles will use a static glibc build" >&2
    fi
fi
