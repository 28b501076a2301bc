#!/bin/sh
# The base script of the Kubernetes image, run by airlock on every host (in the rootfs,
# as root) before kubeadm: binaries, kernel settings, containerd and the kubelet.
# /etc/containerd/config.toml is written by airlock just before (SystemdCgroup, mirrors).
set -eu
for b in kubeadm kubelet kubectl crictl runc containerd containerd-shim-runc-v2 ctr; do
    if [ -f "bin/$b" ]; then install -m 0755 "bin/$b" "/usr/bin/$b"; fi
done
mkdir -p /opt/cni/bin
cp -p cni/bin/* /opt/cni/bin/
modprobe overlay 2>/dev/null || true
modprobe br_netfilter 2>/dev/null || true
cat > /etc/modules-load.d/airlock-kubernetes.conf <<EOT
overlay
br_netfilter
EOT
cat > /etc/sysctl.d/99-airlock-kubernetes.conf <<EOT
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
EOT
sysctl --system > /dev/null 2>&1 || true
swapoff -a || true
install -m 0644 etc/systemd/containerd.service /etc/systemd/system/containerd.service
install -m 0644 etc/systemd/kubelet.service /etc/systemd/system/kubelet.service
mkdir -p /etc/systemd/system/kubelet.service.d
install -m 0644 etc/systemd/10-kubeadm.conf /etc/systemd/system/kubelet.service.d/10-kubeadm.conf
cat > /etc/crictl.yaml <<EOT
runtime-endpoint: unix:///run/containerd/containerd.sock
EOT
systemctl daemon-reload
systemctl enable containerd
systemctl restart containerd
systemctl enable kubelet
