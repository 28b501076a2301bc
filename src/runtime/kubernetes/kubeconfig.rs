//! Kubeconfig files with embedded credentials, as kubeadm writes them.
//!
//! 1. [`Kubeconfig`] holds one cluster (server URL + CA), one user (client
//!    certificate + key) and the context joining them.
//! 2. [`Kubeconfig::render`] writes it as YAML with the PEMs base64-encoded in the
//!    `*-data` fields, so the file stands alone.
//! 3. [`client_certificate_pem`] reads the client certificate back out of a file,
//!    for `airlock cert check`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// The cluster name kubeadm uses in every kubeconfig.
pub const CLUSTER_NAME: &str = "kubernetes";

/// One kubeconfig: a cluster, a user holding a client certificate, and their context.
#[derive(Clone)]
pub struct Kubeconfig {
    /// `https://HOST:PORT` of the API server.
    pub server: String,
    /// PEM of the CA that signed the API server's certificate.
    pub ca_pem: String,
    /// The user name (the certificate's CN), e.g. `kubernetes-admin`.
    pub user: String,
    /// PEM of the user's client certificate.
    pub client_cert_pem: String,
    /// PEM of the user's private key.
    pub client_key_pem: String,
}

impl std::fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfig")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("client_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why a kubeconfig cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Encoding failed.
    #[error("cannot encode the kubeconfig: {0}")]
    Encode(String),
    /// The text is not a kubeconfig.
    #[error("not a kubeconfig: {0}")]
    Decode(String),
    /// A `*-data` field is not base64.
    #[error("field `{field}` of user `{user}` is not base64: {reason}")]
    Base64 {
        /// The field.
        field: &'static str,
        /// The user it belongs to.
        user: String,
        /// What the decoder said.
        reason: String,
    },
}

impl Kubeconfig {
    /// The YAML text of the file.
    pub fn render(&self) -> Result<String, KubeconfigError> {
        let context = format!("{}@{CLUSTER_NAME}", self.user);
        let file = File {
            api_version: "v1".into(),
            clusters: vec![NamedCluster {
                cluster: Cluster {
                    certificate_authority_data: BASE64.encode(&self.ca_pem),
                    server: self.server.clone(),
                },
                name: CLUSTER_NAME.into(),
            }],
            contexts: vec![NamedContext {
                context: Context {
                    cluster: CLUSTER_NAME.into(),
                    user: self.user.clone(),
                },
                name: context.clone(),
            }],
            current_context: context,
            kind: "Config".into(),
            users: vec![NamedUser {
                name: self.user.clone(),
                user: User {
                    client_certificate_data: Some(BASE64.encode(&self.client_cert_pem)),
                    client_key_data: Some(BASE64.encode(&self.client_key_pem)),
                },
            }],
        };
        // One line per value, as kubeadm writes them, so `grep`-based tools still work.
        let mut options = serde_saphyr::SerializerOptions::default();
        options.prefer_block_scalars = false;
        serde_saphyr::to_string_with_options(&file, options)
            .map_err(|e| KubeconfigError::Encode(e.to_string()))
    }
}

/// The PEM client certificates embedded in a kubeconfig's users, by user name.
pub fn client_certificate_pem(text: &str) -> Result<Vec<(String, String)>, KubeconfigError> {
    let file: File =
        serde_saphyr::from_str(text).map_err(|e| KubeconfigError::Decode(e.to_string()))?;
    let mut found = Vec::new();
    for named in file.users {
        let Some(data) = named.user.client_certificate_data else {
            continue;
        };
        let pem = BASE64
            .decode(data.trim())
            .map_err(|e| KubeconfigError::Base64 {
                field: "client-certificate-data",
                user: named.name.clone(),
                reason: e.to_string(),
            })?;
        found.push((named.name, String::from_utf8_lossy(&pem).into_owned()));
    }
    Ok(found)
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    current_context: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Serialize, Deserialize)]
struct NamedCluster {
    cluster: Cluster,
    name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default)]
    certificate_authority_data: String,
    server: String,
}

#[derive(Serialize, Deserialize)]
struct NamedContext {
    context: Context,
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Serialize, Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_file_reads_back() {
        let config = Kubeconfig {
            server: "https://apiserver.cluster.local:6443".into(),
            ca_pem: "CA".into(),
            user: "system:node:node-1".into(),
            client_cert_pem: "CERT".into(),
            client_key_pem: "KEY".into(),
        };
        let text = config.render().unwrap();
        let long = Kubeconfig {
            client_cert_pem: "C".repeat(500),
            ..config.clone()
        };
        let long_text = long.render().unwrap();
        assert!(
            long_text
                .lines()
                .any(|l| l.trim_start().starts_with("client-certificate-data: Q0ND")),
            "{long_text}"
        );
        assert!(
            text.contains("current-context: system:node:node-1@kubernetes"),
            "{text}"
        );
        assert!(
            text.contains("server: https://apiserver.cluster.local:6443"),
            "{text}"
        );
        let certs = client_certificate_pem(&text).unwrap();
        assert_eq!(
            certs,
            vec![("system:node:node-1".to_string(), "CERT".to_string())]
        );
        assert!(!format!("{config:?}").contains("KEY"));
    }
}
