//! Finding the container images a cluster image needs, in its rootfs.
//!
//! 1. `imageList` files (anywhere, sealer puts one in `manifests/`): one reference a
//!    line, `#` comments.
//! 2. Kubernetes YAML under `manifests/` and `application/apps/`: every `image:`
//!    string (pod specs of any workload kind), plus image-like strings under keys
//!    ending in `image`/`Image` and `{registry, repository, tag|digest}` maps in
//!    unknown kinds.
//! 3. Helm charts (a directory with `Chart.yaml`, or a `.tgz` of one) under
//!    `charts/` and `application/apps/`: rendered with `helm template` when a helm
//!    binary is given (the caller passes the rendered YAML back through
//!    [`scan_yaml`]); otherwise `values.yaml` is read the same way as YAML, a map
//!    without a tag takes `appVersion` from `Chart.yaml`, `global.imageRegistry`
//!    replaces the registry of `{registry, repository, tag}` maps (as Bitnami's
//!    templates do), and sub-charts (directories or packaged `.tgz` under
//!    `charts/`) are read with the parent's values for them (`values.<name>`,
//!    by the sub-chart's `Chart.yaml` name) and `global` merged over their own.
//!
//! References are normalised ([`Reference`]); strings still holding a template
//! (`{{ ... }}`, `${...}`) are reported as unresolved, with where they were found.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::image::tree::{NodeKind, Tree};
use crate::spec::reference::Reference;

/// What discovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Each image once, with every place it was found (rootfs path, line or key).
    pub found: BTreeMap<Reference, Vec<String>>,
    /// Strings that look like images but could not be resolved: text and origin.
    pub unresolved: Vec<(String, String)>,
}

impl Discovered {
    fn add(&mut self, text: &str, origin: String) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if text.contains("{{") || text.contains("${") || text.contains("$(") {
            self.unresolved.push((text.to_string(), origin));
            return;
        }
        match text.parse::<Reference>() {
            Ok(r) => self.found.entry(r).or_default().push(origin),
            Err(e) => self.unresolved.push((format!("{text} ({e})"), origin)),
        }
    }

    /// Add everything `other` found.
    pub fn merge(&mut self, other: Discovered) {
        for (r, origins) in other.found {
            self.found.entry(r).or_default().extend(origins);
        }
        self.unresolved.extend(other.unresolved);
    }
}

/// Parse an image list (`imageList`, `--image-list`): one reference a line.
pub fn scan_image_list(text: &str, origin: &str) -> Discovered {
    let mut d = Discovered::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if !line.is_empty() {
            d.add(line, format!("{origin}:{}", i + 1));
        }
    }
    d
}

/// Scan multi-document Kubernetes YAML (or JSON) text.
pub fn scan_yaml(text: &str, origin: &str) -> Result<Discovered, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: {e}"))?;
    let mut d = Discovered::default();
    for (i, doc) in docs.iter().enumerate() {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("document");
        walk(
            doc,
            &format!("{origin} ({kind} #{})", i + 1),
            "",
            &mut d,
            Defaults::default(),
        );
    }
    Ok(d)
}

fn looks_like_image(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(char::is_whitespace)
        && (s.contains(':') || s.contains('/') || s.contains('@'))
        && !s.starts_with("http://")
        && !s.starts_with("https://")
        && !s.starts_with('/')
}

/// Walk a document: `key` is the key this value sits under.
fn walk(v: &Value, origin: &str, key: &str, d: &mut Discovered, defaults: Defaults<'_>) {
    match v {
        Value::Object(map) => {
            if let Some(image) = image_from_map(map, defaults) {
                d.add(&image, format!("{origin} {key}"));
                return;
            }
            for (k, child) in map {
                match child {
                    Value::String(s) if k == "image" => d.add(s, format!("{origin} {k}")),
                    Value::String(s)
                        if (k.ends_with("Image") || k.ends_with("image"))
                            && looks_like_image(s) =>
                    {
                        d.add(s, format!("{origin} {k}"));
                    }
                    _ => walk(child, origin, k, d, defaults),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, origin, key, d, defaults);
            }
        }
        _ => {}
    }
}

/// What a chart supplies to its values' image maps.
#[derive(Clone, Copy, Debug, Default)]
struct Defaults<'a> {
    /// `appVersion` of `Chart.yaml`: the tag of maps without one.
    app_version: Option<&'a str>,
    /// `global.imageRegistry`: the registry of every map.
    registry: Option<&'a str>,
}

/// `{registry, repository, tag|digest}` (the Helm convention) as one reference.
fn image_from_map(map: &serde_json::Map<String, Value>, defaults: Defaults<'_>) -> Option<String> {
    let app_version = defaults.app_version;
    let repository = map.get("repository")?.as_str()?;
    if repository.is_empty() {
        return None;
    }
    let registry = defaults.registry.unwrap_or_else(|| {
        map.get("registry")
            .and_then(Value::as_str)
            .unwrap_or_default()
    });
    let name = if registry.is_empty() {
        repository.to_string()
    } else {
        format!("{registry}/{repository}")
    };
    let tag = map
        .get("tag")
        .and_then(|t| match t {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|t| !t.is_empty())
        .or_else(|| app_version.map(str::to_string));
    let digest = map
        .get("digest")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    Some(match (tag, digest) {
        (_, Some(dg)) => format!("{name}@{dg}"),
        (Some(t), None) => format!("{name}:{t}"),
        (None, None) => name,
    })
}

/// Scan a Helm chart without rendering it. `files` maps paths inside the chart
/// (`Chart.yaml`, `values.yaml`, `charts/sub/values.yaml`, `charts/sub-1.0.tgz`) to
/// their bytes.
pub fn scan_chart(files: &BTreeMap<String, Vec<u8>>, origin: &str) -> Discovered {
    scan_chart_with(files, origin, &Value::Null, &Value::Null)
}

/// Merge `over` into `base`: maps key by key, anything else replaced.
fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (_, Value::Null) => {}
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge_values(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn chart_field(files: &BTreeMap<String, Vec<u8>>, field: &str) -> Option<String> {
    files
        .get("Chart.yaml")
        .and_then(|b| serde_saphyr::from_slice::<Value>(b).ok())
        .and_then(|c| match c.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

/// [`scan_chart`] with the values a parent chart sets for this one (`overrides`)
/// and the parent's `global`, both merged over this chart's own values.
fn scan_chart_with(
    files: &BTreeMap<String, Vec<u8>>,
    origin: &str,
    overrides: &Value,
    global: &Value,
) -> Discovered {
    let mut d = Discovered::default();
    let app_version = chart_field(files, "appVersion");
    let mut values = match files.get("values.yaml") {
        Some(bytes) => match serde_saphyr::from_slice::<Value>(bytes) {
            Ok(v) => v,
            Err(e) => {
                d.unresolved.push((
                    format!("values.yaml does not parse: {e}"),
                    origin.to_string(),
                ));
                Value::Null
            }
        },
        None => Value::Null,
    };
    if !values.is_object() {
        values = Value::Object(serde_json::Map::new());
    }
    merge_values(&mut values, overrides);
    if !global.is_null()
        && let Some(map) = values.as_object_mut()
    {
        merge_values(map.entry("global").or_insert(Value::Null), global);
    }
    let registry = values
        .pointer("/global/imageRegistry")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let defaults = Defaults {
        app_version: app_version.as_deref(),
        registry,
    };
    walk(
        &values,
        &format!("{origin}/values.yaml"),
        "",
        &mut d,
        defaults,
    );
    let global = values.get("global").cloned().unwrap_or(Value::Null);
    let mut sub_chart = |inner: &BTreeMap<String, Vec<u8>>, name: &str, at: String| {
        let name = chart_field(inner, "name").unwrap_or_else(|| name.to_string());
        let overrides = values.get(&name).cloned().unwrap_or(Value::Null);
        d.merge(scan_chart_with(inner, &at, &overrides, &global));
    };
    // Sub-charts: directories under charts/ and packaged .tgz files.
    let mut subdirs: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (path, bytes) in files {
        let Some(rest) = path.strip_prefix("charts/") else {
            continue;
        };
        if let Some((sub, inner)) = rest.split_once('/') {
            subdirs
                .entry(sub.to_string())
                .or_default()
                .insert(inner.to_string(), bytes.clone());
        } else if rest.ends_with(".tgz") || rest.ends_with(".tar.gz") {
            match read_chart_archive(bytes) {
                Ok(inner) => sub_chart(&inner, rest, format!("{origin}/charts/{rest}")),
                Err(e) => unreadable.push((format!("cannot read {rest}: {e}"), origin.to_string())),
            }
        }
    }
    for (sub, inner) in subdirs {
        if inner.contains_key("Chart.yaml") {
            sub_chart(&inner, &sub, format!("{origin}/charts/{sub}"));
        }
    }
    d.unresolved.extend(unreadable);
    d
}

/// The files of a packaged chart (`name-1.0.tgz`), relative to its top directory.
pub fn read_chart_archive(bytes: &[u8]) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some((_, inner)) = path.split_once('/') else {
            continue;
        };
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf)?;
        out.insert(inner.to_string(), buf);
    }
    Ok(out)
}

/// Where charts are in a tree: chart directory paths and packaged chart files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChartLocations {
    /// Directories holding `Chart.yaml` (not nested in another chart).
    pub dirs: Vec<String>,
    /// `.tgz` files outside chart directories.
    pub archives: Vec<String>,
}

fn in_scope(path: &str) -> bool {
    path.starts_with("manifests/")
        || path.starts_with("charts/")
        || path.starts_with("application/")
}

/// Find the charts of `tree`.
pub fn chart_locations(tree: &Tree) -> ChartLocations {
    let mut loc = ChartLocations::default();
    for path in tree.nodes.keys() {
        if !in_scope(path) {
            continue;
        }
        let inside = |p: &str| loc.dirs.iter().any(|d| p.starts_with(&format!("{d}/")));
        if let Some(dir) = path.strip_suffix("/Chart.yaml") {
            if !inside(dir) {
                loc.dirs.push(dir.to_string());
            }
        } else if (path.ends_with(".tgz") || path.ends_with(".tar.gz")) && !inside(path) {
            loc.archives.push(path.clone());
        }
    }
    loc
}

fn read_node(tree: &Tree, path: &str) -> Option<Vec<u8>> {
    match &tree.nodes.get(path)?.kind {
        NodeKind::File { source, .. } => fs_err::read(source).ok(),
        _ => None,
    }
}

/// The files of the chart directory `dir` of `tree`, relative to it.
pub fn chart_files(tree: &Tree, dir: &str) -> BTreeMap<String, Vec<u8>> {
    let prefix = format!("{dir}/");
    tree.nodes
        .keys()
        .filter_map(|p| p.strip_prefix(&prefix).map(|rel| (p, rel)))
        .filter_map(|(p, rel)| read_node(tree, p).map(|b| (rel.to_string(), b)))
        .collect()
}

/// Discover images in `tree` without rendering charts: image lists, YAML, and
/// charts by their values. `rendered` holds `helm template` output for chart paths
/// the caller rendered; those charts are scanned from it instead.
pub fn discover(tree: &Tree, rendered: &BTreeMap<String, String>) -> Discovered {
    let mut d = Discovered::default();
    let charts = chart_locations(tree);
    let in_chart = |p: &str| charts.dirs.iter().any(|c| p.starts_with(&format!("{c}/")));
    for (path, node) in &tree.nodes {
        if !matches!(node.kind, NodeKind::File { .. }) {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if name == "imageList" {
            if let Some(b) = read_node(tree, path) {
                d.merge(scan_image_list(&String::from_utf8_lossy(&b), path));
            }
        } else if in_scope(path)
            && !in_chart(path)
            && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
            && let Some(b) = read_node(tree, path)
        {
            match scan_yaml(&String::from_utf8_lossy(&b), path) {
                Ok(found) => d.merge(found),
                Err(e) => d.unresolved.push((format!("not YAML: {e}"), path.clone())),
            }
        }
    }
    for chart in charts.dirs.iter().chain(&charts.archives) {
        if let Some(text) = rendered.get(chart) {
            match scan_yaml(text, &format!("{chart} (helm template)")) {
                Ok(found) => d.merge(found),
                Err(e) => d.unresolved.push((e, chart.clone())),
            }
            continue;
        }
        let files = if charts.dirs.contains(chart) {
            chart_files(tree, chart)
        } else {
            match read_node(tree, chart).map(|b| read_chart_archive(&b)) {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    d.unresolved
                        .push((format!("cannot read chart archive: {e}"), chart.clone()));
                    continue;
                }
                None => continue,
            }
        };
        d.merge(scan_chart(&files, chart));
    }
    d
}

/// Read an image list file given on the command line.
pub fn read_image_list_file(path: &Path) -> std::io::Result<Discovered> {
    let text = fs_err::read_to_string(path)?;
    Ok(scan_image_list(&text, &path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(d: &Discovered) -> Vec<String> {
        d.found.keys().map(ToString::to_string).collect()
    }

    #[test]
    fn image_list_lines_and_comments() {
        let d = scan_image_list(
            "# pause\nregistry.k8s.io/pause:3.9\n\nnginx # web\n",
            "manifests/imageList",
        );
        assert_eq!(
            refs(&d),
            [
                "docker.io/library/nginx:latest",
                "registry.k8s.io/pause:3.9"
            ]
        );
        assert_eq!(d.found.values().next().unwrap(), &["manifests/imageList:4"]);
    }

    #[test]
    fn yaml_pod_specs_of_any_kind_and_custom_resources() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      initContainers: [{name: init, image: "busybox:1.36"}]
      containers:
        - name: web
          image: nginx:1.25
---
apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: j, image: "quay.io/org/job@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]
---
apiVersion: operator.example.io/v1
kind: Thing
spec:
  agentImage: ghcr.io/example/agent:v2
  description: "not an image"
  sidecar:
    registry: registry.example.io
    repository: tools/sidecar
    tag: "1.0"
  templated: {image: "{{ .Values.image }}"}
"#;
        let d = scan_yaml(yaml, "manifests/app.yaml").unwrap();
        assert_eq!(
            refs(&d),
            [
                "docker.io/library/busybox:1.36",
                "docker.io/library/nginx:1.25",
                "ghcr.io/example/agent:v2",
                "quay.io/org/job@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "registry.example.io/tools/sidecar:1.0",
            ]
        );
        assert_eq!(d.unresolved.len(), 1);
        assert!(d.unresolved[0].1.contains("Thing"));
    }

    #[test]
    fn chart_values_app_version_and_sub_charts() {
        let mut files = BTreeMap::new();
        files.insert(
            "Chart.yaml".to_string(),
            b"name: web\nappVersion: \"2.1\"\n".to_vec(),
        );
        files.insert(
            "values.yaml".to_string(),
            b"image:\n  repository: example/web\n  tag: \"\"\nproxy:\n  image: envoyproxy/envoy:v1.29\n".to_vec(),
        );
        files.insert(
            "charts/db/Chart.yaml".to_string(),
            b"name: db\nappVersion: 16\n".to_vec(),
        );
        files.insert(
            "charts/db/values.yaml".to_string(),
            b"image:\n  registry: docker.io\n  repository: bitnami/postgresql\n".to_vec(),
        );
        let d = scan_chart(&files, "charts/web");
        assert_eq!(
            refs(&d),
            [
                "docker.io/bitnami/postgresql:16",
                "docker.io/envoyproxy/envoy:v1.29",
                "docker.io/example/web:2.1",
            ]
        );
    }

    fn packaged(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    }

    /// A chart shaped like Bitnami's wordpress: a packaged sub-chart (with its own
    /// library sub-chart) whose tag the parent overrides, a directory sub-chart
    /// without a tag (appVersion), and `global.imageRegistry`.
    #[test]
    fn realistic_chart_with_packaged_sub_charts_overrides_and_global_registry() {
        let mariadb = packaged(&[
            (
                "mariadb/Chart.yaml",
                "apiVersion: v2\nname: mariadb\nversion: 16.0.0\nappVersion: 11.2.3\ndependencies:\n  - name: common\n    version: 2.x.x\n",
            ),
            (
                "mariadb/values.yaml",
                "global:\n  imageRegistry: \"\"\nimage:\n  registry: docker.io\n  repository: bitnami/mariadb\n  tag: 11.2.2-debian-12-r0\n  digest: \"\"\nprimary:\n  persistence:\n    size: 8Gi\n",
            ),
            (
                "mariadb/charts/common/Chart.yaml",
                "apiVersion: v2\nname: common\ntype: library\nversion: 2.16.0\n",
            ),
            (
                "mariadb/charts/common/values.yaml",
                "exampleValue: common-chart\n",
            ),
            (
                "mariadb/templates/primary/statefulset.yaml",
                "image: {{ include \"mariadb.image\" . }}\n",
            ),
        ]);
        let mut files = BTreeMap::new();
        let mut add = |p: &str, b: &[u8]| {
            files.insert(p.to_string(), b.to_vec());
        };
        add(
            "Chart.yaml",
            b"apiVersion: v2\nname: wordpress\nversion: 19.0.0\nappVersion: 6.4.3\ndependencies:\n  - name: mariadb\n    condition: mariadb.enabled\n  - name: memcached\n",
        );
        add(
            "values.yaml",
            b"global:\n  imageRegistry: \"\"\nimage:\n  registry: docker.io\n  repository: bitnami/wordpress\n  tag: 6.4.3-debian-12-r0\nmariadb:\n  enabled: true\n  image:\n    tag: 11.2.3-debian-12-r4\nmetrics:\n  enabled: false\n  image:\n    registry: docker.io\n    repository: bitnami/apache-exporter\n    tag: 1.0.6-debian-12-r0\n",
        );
        add("charts/mariadb-16.0.0.tgz", &mariadb);
        add(
            "charts/memcached/Chart.yaml",
            b"apiVersion: v2\nname: memcached\nversion: 6.14.0\nappVersion: 1.6.23\n",
        );
        add(
            "charts/memcached/values.yaml",
            b"image:\n  registry: docker.io\n  repository: bitnami/memcached\n",
        );
        let d = scan_chart(&files, "charts/wordpress");
        assert_eq!(
            refs(&d),
            [
                "docker.io/bitnami/apache-exporter:1.0.6-debian-12-r0",
                "docker.io/bitnami/mariadb:11.2.3-debian-12-r4",
                "docker.io/bitnami/memcached:1.6.23",
                "docker.io/bitnami/wordpress:6.4.3-debian-12-r0",
            ]
        );
        assert!(d.unresolved.is_empty(), "{:?}", d.unresolved);

        // global.imageRegistry set by the parent reaches every sub-chart.
        files.insert(
            "values.yaml".to_string(),
            String::from_utf8(files["values.yaml"].clone())
                .unwrap()
                .replace("imageRegistry: \"\"", "imageRegistry: registry.local:5000")
                .into_bytes(),
        );
        let d = scan_chart(&files, "charts/wordpress");
        assert_eq!(
            refs(&d),
            [
                "registry.local:5000/bitnami/apache-exporter:1.0.6-debian-12-r0",
                "registry.local:5000/bitnami/mariadb:11.2.3-debian-12-r4",
                "registry.local:5000/bitnami/memcached:1.6.23",
                "registry.local:5000/bitnami/wordpress:6.4.3-debian-12-r0",
            ]
        );
    }
}
