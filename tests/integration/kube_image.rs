//! The Kubernetes base image's `assets/images/kubernetes/build.sh`, offline: its
//! `layout` step is fed local stand-ins for the upstream downloads and a sums file,
//! verifies them (SHA-256 and SHA-512), lays out the rootfs, and `airlock build` builds
//! the result; a changed file or a missing sum stops it, naming the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn build_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/images/kubernetes/build.sh")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sh(script: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn layout(dl: &Path, ctx: &Path) -> Output {
    Command::new("sh")
        .arg(build_sh())
        .arg("layout")
        .arg(dl)
        .arg(dl.join("SUMS"))
        .arg(ctx)
        .args(["amd64", "v1.30.2"])
        .output()
        .unwrap()
}

/// Stand-ins for every upstream file of v1.30.2 on amd64, and their sums.
fn downloads(dir: &Path) {
    sh(
        r#"
for b in kubeadm kubelet kubectl runc.amd64; do printf '#!/bin/sh\necho %s\n' "$b" > "$b"; done
mkdir -p c/bin cni crictl
for b in containerd ctr containerd-shim-runc-v2; do echo "$b" > "c/bin/$b"; done
tar -czf containerd-1.7.22-linux-amd64.tar.gz -C c bin
for b in bridge loopback host-local; do echo "$b" > "cni/$b"; done
tar -czf cni-plugins-linux-amd64-v1.5.1.tgz -C cni .
echo crictl > crictl/crictl
tar -czf crictl-v1.30.0-linux-amd64.tar.gz -C crictl crictl
sha256sum kubeadm kubelet kubectl runc.amd64 containerd-1.7.22-linux-amd64.tar.gz crictl-v1.30.0-linux-amd64.tar.gz > SUMS
sha512sum cni-plugins-linux-amd64-v1.5.1.tgz >> SUMS
"#,
        dir,
    );
}

#[test]
fn kubernetes_image_build_script_verifies_and_lays_out_offline() {
    let work = tempfile::tempdir().unwrap();
    let dl = work.path().join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    downloads(&dl);
    let ctx = work.path().join("context");
    let out = layout(&dl, &ctx);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(t.matches("verified ").count(), 7, "{t}");
    for f in [
        "bin/kubeadm",
        "bin/kubelet",
        "bin/kubectl",
        "bin/runc",
        "bin/containerd",
        "bin/ctr",
        "bin/containerd-shim-runc-v2",
        "bin/crictl",
        "cni/bin/bridge",
        "cni/bin/loopback",
        "scripts/init-kube.sh",
        "etc/kubeadm.yml",
        "etc/systemd/kubelet.service",
        "etc/systemd/10-kubeadm.conf",
        "etc/systemd/containerd.service",
        "manifests/imageList",
    ] {
        assert!(ctx.join(f).is_file(), "{f} missing from the layout:\n{t}");
    }
    let kubefile = std::fs::read_to_string(ctx.join("Kubefile")).unwrap();
    assert!(
        kubefile.contains("io.airlock.runtime-version=\"v1.30.2\""),
        "{kubefile}"
    );
    // The layout builds into a Kubernetes cluster image.
    let store = work.path().join("store");
    let build = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .env("AIRLOCK_ROOT", &store)
        .env("NO_COLOR", "1")
        .args(["build", "-t", "kubernetes:v1.30.2"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));

    // A file that changed after its sum was published stops the build, naming it.
    sh("echo tampered >> kubelet", &dl);
    let out = layout(&dl, &work.path().join("context2"));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("kubelet: checksum mismatch"), "{t}");
    // So does a file without a sum, and the SHA-512 sums are checked too.
    sh(
        "sha256sum kubelet > k && grep -v ' kubelet$' SUMS > S && cat k S > SUMS",
        &dl,
    );
    sh("grep -v cni-plugins SUMS > S && mv S SUMS", &dl);
    let out = layout(&dl, &work.path().join("context3"));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("cni-plugins-linux-amd64-v1.5.1.tgz: no checksum"),
        "{t}"
    );
    sh(
        "echo \"$(printf '0%.0s' $(seq 128))  cni-plugins-linux-amd64-v1.5.1.tgz\" >> SUMS",
        &dl,
    );
    let out = layout(&dl, &work.path().join("context4"));
    assert!(
        text(&out).contains("cni-plugins-linux-amd64-v1.5.1.tgz: checksum mismatch"),
        "{}",
        text(&out)
    );
}
