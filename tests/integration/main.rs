//! airlock's integration tests: one binary, real processes.

#[cfg(test)]
mod build;
#[cfg(test)]
mod bundle;
#[cfg(test)]
mod distribute;
#[cfg(test)]
mod e2e;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod hostile;
#[cfg(test)]
mod kube_image;
#[cfg(test)]
mod kubernetes;
#[cfg(test)]
mod kubernetes_runtime;
#[cfg(test)]
mod launch_apps;
#[cfg(test)]
mod lifecycle;
#[cfg(test)]
mod preflight_gate;
#[cfg(test)]
mod registry;
#[cfg(test)]
mod registry_node;
#[cfg(test)]
mod remote;
#[cfg(test)]
mod secrets;
#[cfg(test)]
mod sshd;
#[cfg(test)]
mod support;
#[cfg(test)]
mod testbed;
#[cfg(test)]
mod wizard;

#[test]
fn binary_prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("airlock "));
}
