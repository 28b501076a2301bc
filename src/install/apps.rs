//! The launch step's commands: the image's `CMDS`, then its launched apps.
//!
//! 1. `CMDS` (or the Clusterfile's `spec.cmds`) run first, in the rootfs.
//! 2. The apps to launch are the Clusterfile's (`Application` `spec.launchApps`, or
//!    `Cluster` `spec.appNames`) if it names any, else the image's `LAUNCH`, in order.
//! 3. Each app runs in its directory `<rootfs>/application/apps/<name>`: the
//!    Clusterfile's `launch.cmds` if given, else its `APPCMDS`, else by its type:
//!    `kubectl apply -f <dir>` (kube YAML), `helm install <name> <chart>` (helm),
//!    `sh <script>` for each script (shell); an untyped app needs commands.
//! 4. Its env: the cluster's env, then its `APPENV`, then the Clusterfile's `env`.

use std::collections::BTreeMap;

use super::engine::{Install, InstallError};
use crate::remote::quote;

/// One command of the launch step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LaunchCommand {
    /// The shell command line.
    pub(crate) cmd: String,
    /// Where it runs.
    pub(crate) dir: String,
    /// Its environment.
    pub(crate) env: Vec<(String, String)>,
}

impl Install {
    /// Every command of the launch step on `host`'s env `env`, in order.
    pub(crate) fn launch_commands(
        &self,
        env: &[(String, String)],
    ) -> Result<Vec<LaunchCommand>, InstallError> {
        let rootfs = format!("{}/rootfs", self.spec.data_root);
        let cmds = if self.spec.cmds.is_empty() {
            &self.plan.config.cmds
        } else {
            &self.spec.cmds
        };
        let mut out: Vec<LaunchCommand> = cmds
            .iter()
            .map(|c| LaunchCommand {
                cmd: c.clone(),
                dir: rootfs.clone(),
                env: env.to_vec(),
            })
            .collect();
        let names = self
            .spec
            .launch_apps
            .as_ref()
            .unwrap_or(&self.plan.config.launch);
        let err = |reason: String| InstallError::Image {
            image: self.plan.name.clone(),
            reason,
        };
        for name in names {
            let app = self
                .plan
                .config
                .apps
                .iter()
                .find(|a| &a.name == name)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        self.plan.config.apps.iter().map(|a| a.name.as_str()).collect();
                    err(format!(
                        "app {name:?} is to be launched but the image has no such app (it has: {}); fix LAUNCH, spec.launchApps or spec.appNames",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ))
                })?;
            let over = self.spec.apps.get(name).cloned().unwrap_or_default();
            let dir = format!("{rootfs}/application/apps/{name}");
            let file = |f: &String| format!("{rootfs}/{f}");
            let app_cmds: Vec<String> = if !over.cmds.is_empty() {
                over.cmds.clone()
            } else if !app.cmds.is_empty() {
                app.cmds.clone()
            } else {
                match app.kind.as_str() {
                    "kube" => vec![format!("kubectl apply -f {}", quote(&dir))],
                    "helm" => {
                        let chart = app.files.first().map(file).ok_or_else(|| {
                            err(format!("helm app {name:?} has no chart in the image"))
                        })?;
                        vec![format!("helm install {} {}", quote(name), quote(&chart))]
                    }
                    "shell" => app
                        .files
                        .iter()
                        .filter(|f| f.ends_with(".sh"))
                        .map(|f| format!("sh {}", quote(&file(f))))
                        .collect(),
                    other => {
                        return Err(err(format!(
                            "app {name:?} is {other}: airlock cannot tell how to launch it; give APPCMDS {name} [...] in the Kubefile or launch.cmds in an Application document"
                        )));
                    }
                }
            };
            let mut app_env: BTreeMap<String, String> = env.iter().cloned().collect();
            app_env.extend(app.env.clone());
            app_env.extend(over.env);
            let app_env: Vec<(String, String)> = app_env.into_iter().collect();
            out.extend(app_cmds.into_iter().map(|cmd| LaunchCommand {
                cmd,
                dir: dir.clone(),
                env: app_env.clone(),
            }));
        }
        Ok(out)
    }
}
