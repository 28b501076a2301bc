//! What the unpack step does to the rootfs on a host after unpacking it: `.tmpl` files
//! rendered with the cluster env, then the Clusterfile's `Config` documents applied.
//!
//! 1. [`render_template`] replaces `{{ .KEY }}` (Go template style, as sealer's
//!    templates write it) with the env value; an unknown key is an error naming it.
//! 2. [`apply_config`] overwrites a file with a `Config` document's data, or merges its
//!    YAML into the file's (maps merged key by key, the document winning), after its
//!    `process` steps (`toJson`, `toBase64`, `toSecret`) changed each value.
//! 3. [`RenderInput`] is what the engine sends to `airlock agent render` on stdin.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::clusterfile::ConfigSpec;

/// What `airlock agent render` receives on stdin as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderInput {
    /// The env templates see: the image's `ENV`, the cluster's, the host's, airlock's.
    pub env: BTreeMap<String, String>,
    /// `Config` documents, applied in order after the templates.
    pub configs: Vec<ConfigSpec>,
}

/// Render `{{ .KEY }}` placeholders of `text` from `env`.
pub fn render_template(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "a `{{` is never closed with `}}`".to_string())?;
        let inner = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let key = inner.strip_prefix('.').ok_or_else(|| {
            format!("`{{{{ {inner} }}}}` is not supported; write `{{{{ .KEY }}}}`")
        })?;
        let value = env
            .get(key)
            .ok_or_else(|| format!("`{key}` is not in the cluster env; set it with spec.env"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The new content of a file after the `Config` document `config`; `current` is the
/// file's content if it exists.
pub fn apply_config(current: Option<&str>, config: &ConfigSpec) -> Result<String, String> {
    let strategy = config.strategy.as_deref().unwrap_or("overwrite");
    let data = match &config.process {
        Some(steps) => process(&config.data, steps)?,
        None => config.data.clone(),
    };
    match strategy {
        "overwrite" => Ok(data),
        "merge" => {
            let Some(current) = current else {
                return Ok(data);
            };
            let mut base: Value = serde_saphyr::from_str(current)
                .map_err(|e| format!("the file is not YAML, cannot merge into it: {e}"))?;
            let over: Value = serde_saphyr::from_str(&data)
                .map_err(|e| format!("spec.data is not YAML, cannot merge it: {e}"))?;
            merge(&mut base, over);
            serde_saphyr::to_string(&base).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "spec.strategy {other:?} is not known; use overwrite or merge"
        )),
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// sealer's `process`: `value|toJson|toBase64|toSecret` applied to every top-level value
/// of the YAML map in `data`.
fn process(data: &str, steps: &str) -> Result<String, String> {
    let steps: Vec<&str> = steps.split('|').map(str::trim).collect();
    if steps.first() != Some(&"value") {
        return Err(format!(
            "spec.process {:?} must start with `value|`",
            steps.join("|")
        ));
    }
    let map: BTreeMap<String, Value> = serde_saphyr::from_str(data)
        .map_err(|e| format!("spec.data must be a YAML map to process it: {e}"))?;
    let mut secret = false;
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in map {
        let mut v = v;
        for step in &steps[1..] {
            v = match *step {
                "toJson" => Value::String(serde_json::to_string(&v).map_err(|e| e.to_string())?),
                "toBase64" => {
                    let text = match &v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text))
                }
                "toSecret" => {
                    secret = true;
                    v
                }
                other => {
                    return Err(format!(
                        "spec.process step {other:?} is not known; use toJson, toBase64, toSecret"
                    ));
                }
            };
        }
        out.insert(k, v);
    }
    let text = serde_saphyr::to_string(&out).map_err(|e| e.to_string())?;
    if secret {
        // The values go under `data:` of a Kubernetes Secret already in the file.
        let mut doc = BTreeMap::new();
        doc.insert("data", out);
        return serde_saphyr::to_string(&doc).map_err(|e| e.to_string());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("PORT", "2379"), ("NAME", "etcd")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn templates_take_env_values() {
        assert_eq!(
            render_template("a={{ .NAME }}:{{.PORT}} b", &env()).unwrap(),
            "a=etcd:2379 b"
        );
        assert!(
            render_template("{{ .NOPE }}", &env())
                .unwrap_err()
                .contains("`NOPE` is not in the cluster env")
        );
        assert!(render_template("{{ .NAME ", &env()).is_err());
        assert!(render_template("{{ range }}", &env()).is_err());
    }

    fn config(strategy: Option<&str>, process: Option<&str>, data: &str) -> ConfigSpec {
        ConfigSpec {
            path: "etc/x.yaml".into(),
            strategy: strategy.map(str::to_string),
            process: process.map(str::to_string),
            data: data.into(),
        }
    }

    #[test]
    fn overwrite_and_merge() {
        let c = config(None, None, "a: 1\n");
        assert_eq!(apply_config(Some("b: 2\n"), &c).unwrap(), "a: 1\n");
        let m = config(Some("merge"), None, "a:\n  x: 1\nc: 3\n");
        let merged = apply_config(Some("a:\n  y: 2\nb: 2\n"), &m).unwrap();
        let v: Value = serde_saphyr::from_str(&merged).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": {"x": 1, "y": 2}, "b": 2, "c": 3})
        );
        assert!(apply_config(None, &config(Some("mix"), None, "")).is_err());
    }

    #[test]
    fn process_steps() {
        let c = config(None, Some("value|toJson|toBase64"), "k:\n  a: 1\n");
        let out: Value = serde_saphyr::from_str(&apply_config(None, &c).unwrap()).unwrap();
        assert_eq!(out["k"], "eyJhIjoxfQ==");
        let s = config(None, Some("value|toBase64|toSecret"), "pw: hi\n");
        let out: Value = serde_saphyr::from_str(&apply_config(None, &s).unwrap()).unwrap();
        assert_eq!(out["data"]["pw"], "aGk=");
    }
}
