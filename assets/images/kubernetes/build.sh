#!/bin/sh
# Build the Kubernetes base cluster image on an online machine:
#   build.sh --version v1.30.2 [--arch amd64|arm64] [--tag kubernetes:v1.30.2]
#            [--work DIR] [--cni-images "ref ref ..."]
# 1. download: upstream release binaries and their published checksums
#    (kubeadm, kubelet, kubectl from dl.k8s.io; containerd, runc, CNI plugins, crictl
#    from their GitHub releases) into WORK/downloads, and one SUMS file of
#    "HEX  FILE" lines (SHA-256, or SHA-512 where that is what is published);
# 2. layout DOWNLOADS SUMS CONTEXT ARCH: verify every file against SUMS (a missing or
#    wrong sum stops the build), then lay out the rootfs: bin/, cni/bin/, etc/,
#    scripts/, the Kubefile (offline: tests/integration/kube_image.rs runs it);
# 3. images: `kubeadm config images list` for the version (control plane, pause,
#    coredns, etcd) plus the CNI images, into manifests/imageList;
# 4. `airlock build -t TAG CONTEXT` (airlock pulls every image in the list).
set -eu

here=$(cd "$(dirname "$0")" && pwd)

# Versions of the components that go with Kubernetes (override in the environment).
CONTAINERD_VERSION=${CONTAINERD_VERSION:-1.7.22}
RUNC_VERSION=${RUNC_VERSION:-1.1.14}
CNI_VERSION=${CNI_VERSION:-1.5.1}

die() {
    echo "build.sh: $*" >&2
    exit 1
}

# The files of a version and arch, one "NAME KIND" a line, KIND saying how it is laid
# out: bin (an executable), tgz-bin (a tarball whose bin/ goes to bin/), tgz-cni,
# tgz-flat (a tarball of executables).
files() {
    kube=$1
    arch=$2
    crictl=${CRICTL_VERSION:-$(echo "$kube" | sed 's/^v\([0-9]*\.[0-9]*\).*/v\1.0/')}
    cat <<EOT
kubeadm bin
kubelet bin
kubectl bin
runc.$arch bin
containerd-$CONTAINERD_VERSION-linux-$arch.tar.gz tgz-bin
cni-plugins-linux-$arch-v$CNI_VERSION.tgz tgz-cni
crictl-$crictl-linux-$arch.tar.gz tgz-flat
EOT
}

# "HEX  NAME" from a published checksum file: either the bare hash or "HEX  NAME" lines.
sum_line() {
    published=$1
    name=$2
    hex=$(grep -E "[ *]$name\$" "$published" | head -n 1 | cut -d' ' -f1 || true)
    [ -n "$hex" ] || hex=$(head -n 1 "$published" | cut -d' ' -f1)
    printf '%s  %s\n' "$hex" "$name"
}

download() {
    kube=$1
    arch=$2
    dir=$3
    mkdir -p "$dir"
    : > "$dir/SUMS"
    crictl=${CRICTL_VERSION:-$(echo "$kube" | sed 's/^v\([0-9]*\.[0-9]*\).*/v\1.0/')}
    get() { curl -fsSL --retry 3 -o "$dir/$2" "$1"; }
    for b in kubeadm kubelet kubectl; do
        url="https://dl.k8s.io/release/$kube/bin/linux/$arch/$b"
        get "$url" "$b"
        get "$url.sha256" "$b.sha256"
        sum_line "$dir/$b.sha256" "$b" >> "$dir/SUMS"
    done
    gh=https://github.com
    name="containerd-$CONTAINERD_VERSION-linux-$arch.tar.gz"
    get "$gh/containerd/containerd/releases/download/v$CONTAINERD_VERSION/$name" "$name"
    get "$gh/containerd/containerd/releases/download/v$CONTAINERD_VERSION/$name.sha256sum" "$name.sha256sum"
    sum_line "$dir/$name.sha256sum" "$name" >> "$dir/SUMS"
    get "$gh/opencontainers/runc/releases/download/v$RUNC_VERSION/runc.$arch" "runc.$arch"
    get "$gh/opencontainers/runc/releases/download/v$RUNC_VERSION/runc.sha256sum" runc.sha256sum
    sum_line "$dir/runc.sha256sum" "runc.$arch" >> "$dir/SUMS"
    name="cni-plugins-linux-$arch-v$CNI_VERSION.tgz"
    get "$gh/containernetworking/plugins/releases/download/v$CNI_VERSION/$name" "$name"
    get "$gh/containernetworking/plugins/releases/download/v$CNI_VERSION/$name.sha512" "$name.sha512"
    sum_line "$dir/$name.sha512" "$name" >> "$dir/SUMS"
    name="crictl-$crictl-linux-$arch.tar.gz"
    get "$gh/kubernetes-sigs/cri-tools/releases/download/$crictl/$name" "$name"
    get "$gh/kubernetes-sigs/cri-tools/releases/download/$crictl/$name.sha256" "$name.sha256"
    sum_line "$dir/$name.sha256" "$name" >> "$dir/SUMS"
}

# Check FILE against its line in SUMS: SHA-256 (64 hex) or SHA-512 (128 hex).
verify() {
    dir=$1
    sums=$2
    name=$3
    [ -f "$dir/$name" ] || die "$name: not downloaded (expected in $dir)"
    want=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1; exit }' "$sums")
    [ -n "$want" ] || die "$name: no checksum for it in $sums"
    case ${#want} in
    64) got=$(sha256sum "$dir/$name" | cut -d' ' -f1) ;;
    128) got=$(sha512sum "$dir/$name" | cut -d' ' -f1) ;;
    *) die "$name: checksum in $sums is neither SHA-256 nor SHA-512" ;;
    esac
    [ "$got" = "$want" ] || die "$name: checksum mismatch (got $got, $sums says $want): download it again"
    echo "verified $name"
}

layout() {
    dir=$1
    sums=$2
    ctx=$3
    arch=$4
    kube=$5
    mkdir -p "$ctx/bin" "$ctx/cni/bin" "$ctx/manifests"
    files "$kube" "$arch" | while read -r name kind; do
        verify "$dir" "$sums" "$name"
        case $kind in
        bin) install -m 0755 "$dir/$name" "$ctx/bin/${name%."$arch"}" ;;
        tgz-bin) tar -xzf "$dir/$name" -C "$ctx" bin ;;
        tgz-cni) tar -xzf "$dir/$name" -C "$ctx/cni/bin" ;;
        tgz-flat) tar -xzf "$dir/$name" -C "$ctx/bin" ;;
        esac
    done
    cp -R "$here/rootfs/etc" "$here/rootfs/scripts" "$ctx/"
    sed "s/@KUBE_VERSION@/$kube/" "$here/rootfs/Kubefile" > "$ctx/Kubefile"
    [ -f "$ctx/manifests/imageList" ] || : > "$ctx/manifests/imageList"
    echo "laid out $ctx"
}

images() {
    ctx=$1
    kube=$2
    cni_images=$3
    "$ctx/bin/kubeadm" config images list --kubernetes-version "$kube" > "$ctx/manifests/imageList"
    for i in $cni_images; do echo "$i" >> "$ctx/manifests/imageList"; done
    echo "images:"
    sed 's/^/  /' "$ctx/manifests/imageList"
}

main() {
    kube=""
    arch=amd64
    tag=""
    work=""
    cni_images="${CNI_IMAGES:-}"
    while [ $# -gt 0 ]; do
        case $1 in
        --version) kube=$2; shift 2 ;;
        --arch) arch=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --cni-images) cni_images=$2; shift 2 ;;
        layout) shift; layout "$@"; return ;;
        *) die "unknown argument $1 (see the top of this file)" ;;
        esac
    done
    [ -n "$kube" ] || die "--version v1.MINOR.PATCH is required"
    case $arch in amd64 | arm64) ;; *) die "--arch: amd64 or arm64" ;; esac
    tag=${tag:-kubernetes:$kube}
    work=${work:-$(mktemp -d)}
    download "$kube" "$arch" "$work/downloads"
    layout "$work/downloads" "$work/downloads/SUMS" "$work/context" "$arch" "$kube"
    images "$work/context" "$kube" "$cni_images"
    airlock build -t "$tag" --platform "linux/$arch" "$work/context"
}

main "$@"
