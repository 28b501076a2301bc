//! The Clusterfile parts that steer the install engine rather than describe hosts.
//!
//! 1. `Cluster` `spec.stepTimeouts` (`{blobs: 2h, init: 20m}`) and `spec.maxParallel`
//!    are airlock's own: they need `apiVersion: airlock.dev/v1`. [`resolve_limits`]
//!    parses the durations ([`parse_duration`]); step names are checked by the engine.
//! 2. sealer's `Application` documents override what the launch step does:
//!    `spec.launchApps` (the apps to launch, in order) and `spec.configs[]` (per app:
//!    `env: [K=V]` and `launch.cmds`). `Cluster` `spec.appNames` also sets the list.
//!    [`resolve_apps`] reads them into [`AppOverride`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// How the Clusterfile changes one app's launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppOverride {
    /// Commands run instead of the image's `APPCMDS` or the type's default.
    pub cmds: Vec<String>,
    /// Variables added to (and winning over) the image's `APPENV`.
    pub env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationDoc {
    #[serde(default)]
    spec: ApplicationSpec,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationSpec {
    #[serde(default)]
    launch_apps: Option<Vec<String>>,
    #[serde(default)]
    configs: Vec<AppConfigDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppConfigDoc {
    name: String,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    launch: Option<AppLaunchDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppLaunchDoc {
    #[serde(default)]
    cmds: Vec<String>,
}

/// The apps to launch (if the Clusterfile says) and per-app overrides.
pub type AppsResolved = (Option<Vec<String>>, BTreeMap<String, AppOverride>);

/// The launch list and per-app overrides of `Application` documents (later documents
/// win), with `app_names` (`Cluster` `spec.appNames`) as the list when no document
/// gives one. Errors are `(field path, message)`.
pub fn resolve_apps(
    applications: &[serde_json::Value],
    app_names: &[String],
) -> Result<AppsResolved, (String, String)> {
    let mut launch = (!app_names.is_empty()).then(|| app_names.to_vec());
    let mut overrides: BTreeMap<String, AppOverride> = BTreeMap::new();
    for (i, doc) in applications.iter().enumerate() {
        let name = doc
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .map_or_else(
                || format!("Application #{}", i + 1),
                |n| format!("Application {n}"),
            );
        let app: ApplicationDoc = serde_json::from_value(doc.clone())
            .map_err(|e| (format!("{name} spec"), format!("{e}")))?;
        if let Some(list) = app.spec.launch_apps {
            launch = Some(list);
        }
        for (c, config) in app.spec.configs.into_iter().enumerate() {
            let entry = overrides.entry(config.name.clone()).or_default();
            for (e, kv) in config.env.iter().enumerate() {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    (
                        format!("{name} spec.configs[{c}].env[{e}]"),
                        format!("{kv:?} is not KEY=VALUE"),
                    )
                })?;
                entry.env.insert(k.trim().to_string(), v.to_string());
            }
            if let Some(l) = config.launch.filter(|l| !l.cmds.is_empty()) {
                entry.cmds = l.cmds;
            }
        }
    }
    Ok((launch, overrides))
}

/// `spec.stepTimeouts` parsed; errors are `(field path, message)`.
pub fn resolve_limits(
    api_version: &str,
    step_timeouts: &BTreeMap<String, String>,
    max_parallel: Option<usize>,
) -> Result<BTreeMap<String, Duration>, (String, String)> {
    let airlock_only = |field: &str| {
        (
            format!("spec.{field}"),
            "is an airlock field: set apiVersion: airlock.dev/v1 to use it".to_string(),
        )
    };
    if api_version != "airlock.dev/v1" {
        if !step_timeouts.is_empty() {
            return Err(airlock_only("stepTimeouts"));
        }
        if max_parallel.is_some() {
            return Err(airlock_only("maxParallel"));
        }
    }
    if max_parallel == Some(0) {
        return Err((
            "spec.maxParallel".to_string(),
            "must be at least 1".to_string(),
        ));
    }
    step_timeouts
        .iter()
        .map(|(step, text)| {
            parse_duration(text)
                .map(|d| (step.clone(), d))
                .map_err(|m| (format!("spec.stepTimeouts.{step}"), m))
        })
        .collect()
}

/// `90`, `90s`, `15m`, `2h`, `1h30m`: a positive duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration; write e.g. 90s, 15m, 2h or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        total = total.saturating_add(number.parse::<u64>().map_err(|_| bad())?);
    }
    if total == 0 {
        return Err(format!("{text:?} is zero; give a positive duration"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10x").unwrap_err().contains("e.g. 90s"));
        assert!(parse_duration("0s").unwrap_err().contains("positive"));
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn engine_fields_need_airlocks_api_version() {
        let t = BTreeMap::from([("blobs".to_string(), "1h".to_string())]);
        let (field, msg) = resolve_limits("sealer.io/v2", &t, None).unwrap_err();
        assert_eq!(field, "spec.stepTimeouts");
        assert!(msg.contains("airlock.dev/v1"), "{msg}");
        let ok = resolve_limits("airlock.dev/v1", &t, Some(3)).unwrap();
        assert_eq!(ok["blobs"], Duration::from_secs(3600));
    }

    #[test]
    fn application_documents_set_the_launch_list_and_per_app_cmds_and_env() {
        let doc = serde_json::json!({
            "apiVersion": "app.sealer.io/v1beta1", "kind": "Application",
            "metadata": {"name": "a"},
            "spec": {"launchApps": ["web", "db"], "configs": [
                {"name": "web", "env": ["PORT=8080"], "launch": {"cmds": ["sh run.sh"]}}]}
        });
        let (launch, overrides) = resolve_apps(&[doc], &["ignored".to_string()]).unwrap();
        assert_eq!(launch.unwrap(), ["web", "db"]);
        assert_eq!(overrides["web"].cmds, ["sh run.sh"]);
        assert_eq!(overrides["web"].env["PORT"], "8080");
        let (launch, _) = resolve_apps(&[], &["x".to_string()]).unwrap();
        assert_eq!(launch.unwrap(), ["x"]);
    }
}
