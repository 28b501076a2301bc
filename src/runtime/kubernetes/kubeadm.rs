//! The kubeadm configuration of a cluster, merged in sealer's order of precedence.
//!
//! 1. [`api_version`] picks `kubeadm.k8s.io/v1beta4` from Kubernetes 1.31 on and
//!    `v1beta3` for 1.22 to 1.30 (older versions are refused).
//! 2. [`KubeadmConfig::merge`] starts from airlock's defaults ([`defaults`]), then
//!    deep-merges the image's `etc/kubeadm.yml`, then the Clusterfile's kubeadm
//!    documents, then the cluster env (`PodCIDR`, `SvcCIDR`, `CertSANs`, `DNSDomain`):
//!    a later layer wins field by field, lists are replaced whole, and documents are
//!    matched by `kind`. sealer does the same: its defaults, then the rootfs's kubeadm
//!    file, then the Clusterfile's documents, with the env rendered into the result.
//! 3. What the cluster's design depends on is then forced: `controlPlaneEndpoint`
//!    (`apiserver.cluster.local:6443`, which the workers' load balancer serves), the
//!    image's `kubernetesVersion`, kubelet `cgroupDriver: systemd` (containerd is
//!    configured with `SystemdCgroup = true` by [`containerd_config`]), and per node the
//!    node name, advertise address and bootstrap token.
//! 4. [`KubeadmConfig::init_config`] and [`KubeadmConfig::join_config`] render the file a
//!    host's `kubeadm init`/`kubeadm join` reads, in the version's schema (maps of
//!    `extraArgs` become v1beta4's lists of `name`/`value`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::pki::APISERVER_HOST;

/// The kinds that belong to kubeadm's API group.
const KUBEADM_KINDS: [&str; 4] = [
    "InitConfiguration",
    "ClusterConfiguration",
    "JoinConfiguration",
    "ResetConfiguration",
];
/// The API server port on every master.
pub const API_PORT: u16 = 6443;
/// The pod CIDR when nothing sets one (sealer's default).
pub const DEFAULT_POD_CIDR: &str = "100.64.0.0/10";
/// The service CIDR when nothing sets one (kubeadm's default).
pub const DEFAULT_SVC_CIDR: &str = "10.96.0.0/12";

/// Why no kubeadm configuration can be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeadmError {
    /// The Kubernetes version does not parse or is too old.
    #[error(
        "Kubernetes version {0:?}: expected v1.MINOR.PATCH with MINOR >= 22 (set KUBEVERSION or LABEL io.airlock.runtime-version in the Kubefile)"
    )]
    Version(String),
    /// A kubeadm document is not usable.
    #[error("{source_name}: {message}")]
    Document {
        /// Where it came from: `image etc/kubeadm.yml`, `Clusterfile kubeadm document 2`.
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// The kubeadm API version for Kubernetes `version` (`v1.30.2`, `1.31`).
pub fn api_version(version: &str) -> Result<&'static str, KubeadmError> {
    let (major, minor) = parse_version(version)?;
    match (major, minor) {
        (1, m) if m >= 31 => Ok("kubeadm.k8s.io/v1beta4"),
        (1, m) if m >= 22 => Ok("kubeadm.k8s.io/v1beta3"),
        _ => Err(KubeadmError::Version(version.to_string())),
    }
}

/// Where a kubeadm document of the layer `source_name` is fixed.
fn fix_where(source_name: &str) -> &'static str {
    if source_name.starts_with("image") {
        ": fix etc/kubeadm.yml in the image's build context and build the image again"
    } else if source_name.starts_with("Clusterfile") {
        ": fix it in the Clusterfile"
    } else {
        ""
    }
}

/// `(major, minor)` of a Kubernetes version.
pub fn parse_version(version: &str) -> Result<(u32, u32), KubeadmError> {
    let bad = || KubeadmError::Version(version.to_string());
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok((major, minor))
}

/// What the defaults and the forced fields are made of.
#[derive(Clone, Debug)]
pub struct ClusterInputs {
    /// The Kubernetes version, `v1.30.2`.
    pub version: String,
    /// `domain:port` of the cluster registry: `imageRepository` by default.
    pub registry: String,
    /// Every master's address, in Clusterfile order.
    pub masters: Vec<IpAddr>,
    /// The cluster env (`PodCIDR`, `SvcCIDR`, `CertSANs`, `DNSDomain`).
    pub env: BTreeMap<String, String>,
}

/// A merged kubeadm configuration: one document per kind.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeadmConfig {
    /// `kubeadm.k8s.io/v1beta3` or `v1beta4`.
    pub api_version: &'static str,
    /// The documents by kind, merged but not yet specific to a node.
    pub docs: BTreeMap<String, Value>,
}

/// airlock's defaults for `inputs`: the first layer of the merge.
pub fn defaults(inputs: &ClusterInputs, api: &str) -> Vec<Value> {
    let mut sans: Vec<String> = vec![
        "127.0.0.1".into(),
        "localhost".into(),
        APISERVER_HOST.into(),
    ];
    sans.extend(inputs.masters.iter().map(ToString::to_string));
    vec![
        json!({
            "apiVersion": api,
            "kind": "InitConfiguration",
            "localAPIEndpoint": { "bindPort": API_PORT },
            "nodeRegistration": { "criSocket": "unix:///run/containerd/containerd.sock" },
        }),
        json!({
            "apiVersion": api,
            "kind": "ClusterConfiguration",
            "kubernetesVersion": inputs.version,
            "controlPlaneEndpoint": format!("{APISERVER_HOST}:{API_PORT}"),
            "imageRepository": inputs.registry,
            "networking": {
                "podSubnet": DEFAULT_POD_CIDR,
                "serviceSubnet": DEFAULT_SVC_CIDR,
                "dnsDomain": "cluster.local",
            },
            "apiServer": { "certSANs": sans },
            "etcd": { "local": { "dataDir": "/var/lib/etcd" } },
        }),
        json!({
            "apiVersion": api,
            "kind": "JoinConfiguration",
            "nodeRegistration": { "criSocket": "unix:///run/containerd/containerd.sock" },
        }),
        json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "systemd",
        }),
    ]
}

impl KubeadmConfig {
    /// Merge the layers: defaults, then `image_doc` (the image's `etc/kubeadm.yml`),
    /// then `clusterfile_docs`, then the env; then force what the design needs.
    pub fn merge(
        inputs: &ClusterInputs,
        image_doc: Option<&str>,
        clusterfile_docs: &[Value],
    ) -> Result<Self, KubeadmError> {
        let api = api_version(&inputs.version)?;
        let mut docs: BTreeMap<String, Value> = BTreeMap::new();
        let mut layer = |source_name: &str, list: Vec<Value>| -> Result<(), KubeadmError> {
            for (i, doc) in list.into_iter().enumerate() {
                let kind = doc
                    .get("kind")
                    .and_then(Value::as_str)
                    .ok_or_else(|| KubeadmError::Document {
                        source_name: format!("{source_name} document {}", i + 1),
                        message: format!(
                            "has no `kind`; give it one ({}, KubeletConfiguration or KubeProxyConfiguration){}",
                            KUBEADM_KINDS.join(", "),
                            fix_where(source_name)
                        ),
                    })?
                    .to_string();
                let entry = docs.entry(kind).or_insert_with(|| json!({}));
                deep_merge(entry, doc);
            }
            Ok(())
        };
        layer("airlock defaults", defaults(inputs, api))?;
        if let Some(text) = image_doc {
            let parsed: Vec<Value> =
                serde_saphyr::from_multiple(text).map_err(|e| KubeadmError::Document {
                    source_name: "image etc/kubeadm.yml".into(),
                    message: format!("not valid YAML ({e}){}", fix_where("image etc/kubeadm.yml")),
                })?;
            layer(
                "image etc/kubeadm.yml",
                parsed.into_iter().filter(|v| !v.is_null()).collect(),
            )?;
        }
        layer("Clusterfile kubeadm", clusterfile_docs.to_vec())?;
        let mut config = Self {
            api_version: api,
            docs,
        };
        config.apply_env(&inputs.env);
        config.force(inputs);
        Ok(config)
    }

    fn doc_mut(&mut self, kind: &str) -> &mut Map<String, Value> {
        let doc = self
            .docs
            .entry(kind.to_string())
            .or_insert_with(|| json!({ "kind": kind }));
        if !doc.is_object() {
            *doc = json!({ "kind": kind });
        }
        doc.as_object_mut().expect("made an object above")
    }

    fn apply_env(&mut self, env: &BTreeMap<String, String>) {
        let cluster = self.doc_mut("ClusterConfiguration");
        let networking = object_at(cluster, "networking");
        for (var, field) in [
            ("PodCIDR", "podSubnet"),
            ("SvcCIDR", "serviceSubnet"),
            ("DNSDomain", "dnsDomain"),
        ] {
            if let Some(v) = env.get(var).filter(|v| !v.trim().is_empty()) {
                networking.insert(field.into(), Value::String(v.trim().to_string()));
            }
        }
        if let Some(extra) = env.get("CertSANs") {
            let api_server = object_at(cluster, "apiServer");
            let sans = api_server
                .entry("certSANs")
                .or_insert_with(|| Value::Array(Vec::new()));
            if !sans.is_array() {
                *sans = Value::Array(Vec::new());
            }
            let list = sans.as_array_mut().expect("made an array above");
            for san in extra.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !list.iter().any(|v| v.as_str() == Some(san)) {
                    list.push(Value::String(san.to_string()));
                }
            }
        }
    }

    fn force(&mut self, inputs: &ClusterInputs) {
        let api = self.api_version;
        for (kind, doc) in &mut self.docs {
            if let Some(o) = doc.as_object_mut() {
                o.insert("kind".into(), Value::String(kind.clone()));
                if KUBEADM_KINDS.contains(&kind.as_str()) {
                    o.insert("apiVersion".into(), Value::String(api.into()));
                }
            }
        }
        let cluster = self.doc_mut("ClusterConfiguration");
        cluster.insert(
            "controlPlaneEndpoint".into(),
            Value::String(format!("{APISERVER_HOST}:{API_PORT}")),
        );
        cluster.insert(
            "kubernetesVersion".into(),
            Value::String(inputs.version.clone()),
        );
        let kubelet = self.doc_mut("KubeletConfiguration");
        kubelet.insert("cgroupDriver".into(), Value::String("systemd".into()));
        if api.ends_with("v1beta4") {
            for doc in self.docs.values_mut() {
                args_as_lists(doc);
            }
        }
    }

    /// A field of the merged `ClusterConfiguration`, e.g. `["networking", "serviceSubnet"]`.
    pub fn cluster_field(&self, path: &[&str]) -> Option<&Value> {
        let mut v = self.docs.get("ClusterConfiguration")?;
        for p in path {
            v = v.get(*p)?;
        }
        Some(v)
    }

    /// The service CIDR, the DNS domain and the API server's extra SANs.
    pub fn pki_inputs(&self) -> (String, String, Vec<String>) {
        let text = |path: &[&str], default: &str| {
            self.cluster_field(path)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        let sans = self
            .cluster_field(&["apiServer", "certSANs"])
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        (
            text(&["networking", "serviceSubnet"], DEFAULT_SVC_CIDR),
            text(&["networking", "dnsDomain"], "cluster.local"),
            sans,
        )
    }

    fn node_registration(doc: &mut Map<String, Value>, node: &NodeInputs) {
        let reg = object_at(doc, "nodeRegistration");
        reg.insert("name".into(), Value::String(node.name.clone()));
    }

    /// The file `kubeadm init --config` reads on the first master.
    pub fn init_config(&self, node: &NodeInputs) -> String {
        let mut init = self
            .docs
            .get("InitConfiguration")
            .cloned()
            .unwrap_or_default();
        if let Some(o) = init.as_object_mut() {
            Self::node_registration(o, node);
            let endpoint = object_at(o, "localAPIEndpoint");
            endpoint.insert(
                "advertiseAddress".into(),
                Value::String(node.ip.to_string()),
            );
            o.insert(
                "bootstrapTokens".into(),
                json!([{
                    "token": node.token,
                    "ttl": "24h0m0s",
                    "groups": ["system:bootstrappers:kubeadm:default-node-token"],
                    "usages": ["signing", "authentication"],
                }]),
            );
        }
        let mut docs = vec![init];
        for (kind, doc) in &self.docs {
            if kind != "InitConfiguration" && kind != "JoinConfiguration" {
                docs.push(doc.clone());
            }
        }
        render(&docs)
    }

    /// The file `kubeadm join --config` reads on a joining host; `control_plane` for
    /// masters.
    pub fn join_config(&self, node: &NodeInputs, control_plane: bool) -> String {
        let mut join = self
            .docs
            .get("JoinConfiguration")
            .cloned()
            .unwrap_or_default();
        if let Some(o) = join.as_object_mut() {
            Self::node_registration(o, node);
            o.insert(
                "discovery".into(),
                json!({
                    "bootstrapToken": {
                        "apiServerEndpoint": format!("{APISERVER_HOST}:{API_PORT}"),
                        "token": node.token,
                        "caCertHashes": [node.ca_cert_hash],
                    }
                }),
            );
            if control_plane {
                o.insert(
                    "controlPlane".into(),
                    json!({ "localAPIEndpoint": {
                        "advertiseAddress": node.ip.to_string(),
                        "bindPort": API_PORT,
                    }}),
                );
            } else {
                o.remove("controlPlane");
            }
        }
        render(&[join])
    }
}

/// What differs per node in its kubeadm file.
#[derive(Clone, Debug)]
pub struct NodeInputs {
    /// The node name (airlock names nodes after their IP).
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
    /// The bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub token: String,
    /// `sha256:<hex>` of the cluster CA's public key.
    pub ca_cert_hash: String,
}

/// The containerd configuration every host gets: the systemd cgroup driver (as the
/// kubelet's) and `/etc/containerd/certs.d` for the registry mirrors.
pub fn containerd_config(sandbox_image: &str) -> String {
    format!(
        "# written by airlock\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{sandbox_image}\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
    )
}

/// The pause image kubeadm's version uses, from the cluster registry.
pub fn pause_image(registry: &str, version: &str) -> String {
    let tag = match parse_version(version) {
        Ok((1, m)) if m >= 30 => "3.10",
        Ok((1, m)) if m >= 27 => "3.9",
        _ => "3.6",
    };
    format!("{registry}/pause:{tag}")
}

fn render(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_saphyr::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The object at `key` of `map`, made (or replaced by) an empty one if it is not one.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = map.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("made an object above")
}

/// Merge `over` into `base`: objects field by field, anything else replaced.
pub fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v);
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// v1beta4 spells `extraArgs` and `kubeletExtraArgs` as lists of `{name, value}`.
fn args_as_lists(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if (k == "extraArgs" || k == "kubeletExtraArgs")
                    && let Value::Object(args) = child
                {
                    let list: Vec<Value> = args
                        .iter()
                        .map(|(name, value)| {
                            let value = value
                                .as_str()
                                .map_or_else(|| value.to_string(), str::to_string);
                            json!({ "name": name, "value": value })
                        })
                        .collect();
                    *child = Value::Array(list);
                } else {
                    args_as_lists(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(args_as_lists),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(version: &str) -> ClusterInputs {
        ClusterInputs {
            version: version.into(),
            registry: "sea.hub:5000".into(),
            masters: vec!["198.18.0.2".parse().unwrap(), "198.18.0.3".parse().unwrap()],
            env: BTreeMap::new(),
        }
    }

    fn node() -> NodeInputs {
        NodeInputs {
            name: "198.18.0.2".into(),
            ip: "198.18.0.2".parse().unwrap(),
            token: "abcdef.0123456789abcdef".into(),
            ca_cert_hash: "sha256:00".into(),
        }
    }

    #[test]
    fn api_version_follows_the_kubernetes_version() {
        assert_eq!(api_version("v1.30.2").unwrap(), "kubeadm.k8s.io/v1beta3");
        assert_eq!(api_version("1.22").unwrap(), "kubeadm.k8s.io/v1beta3");
        assert_eq!(api_version("v1.31.0").unwrap(), "kubeadm.k8s.io/v1beta4");
        assert_eq!(api_version("v1.33.1").unwrap(), "kubeadm.k8s.io/v1beta4");
        assert!(api_version("v1.21.0").is_err());
        assert!(api_version("latest").is_err());
    }

    #[test]
    fn layers_merge_in_sealers_order_and_the_design_is_forced() {
        let image = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.1.0.0/16\n  serviceSubnet: 10.2.0.0/16\nimageRepository: image.example/k8s\ncontrolPlaneEndpoint: elsewhere:443\n";
        let cf = vec![json!({
            "apiVersion": "kubeadm.k8s.io/v1beta3",
            "kind": "ClusterConfiguration",
            "networking": { "serviceSubnet": "10.3.0.0/16" },
            "apiServer": { "extraArgs": { "audit-log-maxage": "7" } },
        })];
        let mut i = inputs("v1.30.1");
        i.env.insert("PodCIDR".into(), "10.9.0.0/16".into());
        i.env
            .insert("CertSANs".into(), "vip.example, 10.0.0.9".into());
        let c = KubeadmConfig::merge(&i, Some(image), &cf).unwrap();
        let f = |p: &[&str]| c.cluster_field(p).cloned().unwrap_or_default();
        // env over the Clusterfile over the image over the defaults.
        assert_eq!(f(&["networking", "podSubnet"]), "10.9.0.0/16");
        assert_eq!(f(&["networking", "serviceSubnet"]), "10.3.0.0/16");
        assert_eq!(f(&["imageRepository"]), "image.example/k8s");
        assert_eq!(f(&["networking", "dnsDomain"]), "cluster.local");
        // forced.
        assert_eq!(f(&["controlPlaneEndpoint"]), "apiserver.cluster.local:6443");
        assert_eq!(f(&["kubernetesVersion"]), "v1.30.1");
        let sans = f(&["apiServer", "certSANs"]);
        for want in [
            "198.18.0.3",
            "apiserver.cluster.local",
            "vip.example",
            "10.0.0.9",
        ] {
            assert!(sans.as_array().unwrap().iter().any(|v| v == want), "{sans}");
        }
        assert_eq!(f(&["apiServer", "extraArgs", "audit-log-maxage"]), "7");
        let (svc, domain, _) = c.pki_inputs();
        assert_eq!(
            (svc.as_str(), domain.as_str()),
            ("10.3.0.0/16", "cluster.local")
        );
    }

    #[test]
    fn layers_that_do_not_merge_name_the_document_and_the_fix() {
        let no_kind =
            "kind: ClusterConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta3\nnetworking: {}\n";
        let e = KubeadmConfig::merge(&inputs("v1.30.1"), Some(no_kind), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "image etc/kubeadm.yml document 2: has no `kind`; give it one (InitConfiguration"
            ),
            "{e}"
        );
        assert!(e.ends_with("build the image again"), "{e}");
        let e = KubeadmConfig::merge(&inputs("v1.30.1"), Some("kind: [unclosed\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("image etc/kubeadm.yml: not valid YAML ("),
            "{e}"
        );
        let e = KubeadmConfig::merge(&inputs("v1.30.1"), None, &[json!({ "networking": {} })])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Clusterfile kubeadm document 1: has no `kind`")
                && e.ends_with("fix it in the Clusterfile"),
            "{e}"
        );
    }

    #[test]
    fn v1beta4_gets_argument_lists_and_the_version_api() {
        let cf = vec![json!({
            "apiVersion": "kubeadm.k8s.io/v1beta3",
            "kind": "ClusterConfiguration",
            "apiServer": { "extraArgs": { "v": "2" } },
        })];
        let c = KubeadmConfig::merge(&inputs("v1.31.2"), None, &cf).unwrap();
        assert_eq!(
            c.docs["ClusterConfiguration"]["apiVersion"],
            "kubeadm.k8s.io/v1beta4"
        );
        assert_eq!(
            c.cluster_field(&["apiServer", "extraArgs"]).unwrap(),
            &json!([{ "name": "v", "value": "2" }])
        );
        assert_eq!(
            c.docs["KubeletConfiguration"]["apiVersion"],
            "kubelet.config.k8s.io/v1beta1"
        );
    }

    #[test]
    fn node_files_carry_the_node_and_the_token() {
        let c = KubeadmConfig::merge(&inputs("v1.30.1"), None, &[]).unwrap();
        let init = c.init_config(&node());
        let docs: Vec<Value> = serde_saphyr::from_multiple(&init).unwrap();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "InitConfiguration",
                "ClusterConfiguration",
                "KubeletConfiguration"
            ]
        );
        assert_eq!(docs[0]["nodeRegistration"]["name"], "198.18.0.2");
        assert_eq!(
            docs[0]["localAPIEndpoint"]["advertiseAddress"],
            "198.18.0.2"
        );
        assert_eq!(
            docs[0]["bootstrapTokens"][0]["token"],
            "abcdef.0123456789abcdef"
        );
        assert_eq!(docs[2]["cgroupDriver"], "systemd");
        let join: Vec<Value> = serde_saphyr::from_multiple(&c.join_config(&node(), true)).unwrap();
        assert_eq!(join.len(), 1);
        assert_eq!(
            join[0]["discovery"]["bootstrapToken"]["apiServerEndpoint"],
            "apiserver.cluster.local:6443"
        );
        assert_eq!(
            join[0]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
            "198.18.0.2"
        );
        let worker: Vec<Value> =
            serde_saphyr::from_multiple(&c.join_config(&node(), false)).unwrap();
        assert!(worker[0].get("controlPlane").is_none());
    }

    #[test]
    fn containerd_uses_systemd_cgroups_and_the_mirror_directory() {
        let t = containerd_config(&pause_image("sea.hub:5000", "v1.30.0"));
        assert!(t.contains("SystemdCgroup = true"));
        assert!(t.contains("config_path = \"/etc/containerd/certs.d\""));
        assert!(t.contains("sandbox_image = \"sea.hub:5000/pause:3.10\""));
    }
}
