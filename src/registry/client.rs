//! The registry client: pulls images into the store, pushes cluster images out.
//!
//! 1. [`RegistryClient::new`] takes a [`ClientConfig`]: mirrors (`DOMAIN=URL`),
//!    insecure hosts, extra CA certificates and the path of Docker's `config.json`
//!    (credentials). Loopback hosts may speak plain HTTP without being listed, as in
//!    Docker; TLS is verified (system roots plus the extra CAs) for every host not
//!    listed as insecure, loopback included.
//! 2. Each reference resolves to a [`Target`]: a base URL (the mirror, which then gets
//!    `?ns=DOMAIN` like containerd sends, or the registry itself, probing HTTPS then
//!    HTTP for insecure hosts), the host whose credentials apply, and the repository.
//! 3. Every request goes through [`RegistryClient::send`]: it adds the cached
//!    `Authorization` for the host and repository, retries transport failures and 5xx,
//!    and on `401` answers the `WWW-Authenticate` challenge (Basic with the stored
//!    credentials, or Bearer: a token from the realm, as Harbor and Docker Hub want),
//!    then retries once.
//! 4. Pull ([`RegistryClient::pull`], also the [`ImageFetcher`]): fetch the manifest
//!    bytes, verify their digest, for an index only the wanted platforms, stream each
//!    blob into the store verified (skipping blobs already there), and store
//!    manifests after their children, byte for byte.
//! 5. Push ([`RegistryClient::push`]): every blob of the tree that the far side lacks
//!    (checked with `HEAD`; mounted from another repository when this client pushed
//!    it there before), then child manifests by digest, then the top one by tag;
//!    manifests the far side already has under that name are skipped too.
//! 6. Progress goes to a [`TransferReporter`]; the client never prints.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderValue};
use tokio::sync::mpsc;

use super::auth::{Challenge, ConfigError, Credentials, DockerConfig, HelperError};
use super::server::manifest_media_type;
use crate::digest::Digest;
use crate::image::oci::{self, Descriptor, Platform};
use crate::image::store::{Store, StoreError};
use crate::image::{BlobSource, ImageFetcher};
use crate::spec::reference::{DEFAULT_DOMAIN, Reference};

/// Largest manifest the client reads.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// What the client accepts for manifests.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A registry mirror: references of `domain` are fetched from `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Registry domain it stands in for (`docker.io`).
    pub domain: String,
    /// Base URL (`http://127.0.0.1:5000`).
    pub url: String,
}

impl Mirror {
    /// Parse `DOMAIN=URL`.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadMirror(s.to_string());
        let (domain, url) = s.split_once('=').ok_or_else(bad)?;
        let url = url.trim().trim_end_matches('/');
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(bad)?;
        if domain.trim().is_empty() || host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            domain: domain.trim().to_string(),
            url: url.to_string(),
        })
    }
}

/// How the client reaches registries.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// Mirrors by domain.
    pub mirrors: Vec<Mirror>,
    /// `HOST[:PORT]`s reached over plain HTTP or unverified TLS.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_certs: Vec<PathBuf>,
    /// Docker's `config.json`, for credentials.
    pub docker_config: Option<PathBuf>,
    /// Attempts after the first for failed requests.
    pub retries: u32,
}

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A `--registry-mirror` value is malformed.
    #[error("--registry-mirror {0:?}: expected DOMAIN=URL, e.g. docker.io=http://127.0.0.1:5000")]
    BadMirror(String),
    /// A CA file cannot be used.
    #[error("{path}: not a PEM certificate: {reason}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The request could not be sent or its answer read.
    #[error("{url}: {}", describe_http_error(source))]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The registry answered with an error.
    #[error("{url}: the registry answered {status}: {message}")]
    Status {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's error message.
        message: String,
    },
    /// A Docker credential helper named in `config.json` failed.
    #[error(transparent)]
    CredentialHelper(#[from] HelperError),
    /// Credentials are missing or refused.
    #[error("{host}: authentication failed ({reason}); run `airlock login {host}`")]
    Unauthorized {
        /// The registry host.
        host: String,
        /// What happened.
        reason: String,
    },
    /// The image or blob is not there.
    #[error("{what} not found on {host}")]
    NotFound {
        /// The reference or digest.
        what: String,
        /// The registry host.
        host: String,
    },
    /// Content did not match its digest.
    #[error("{what}: content hashed to {actual}, expected {expected}")]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// Announced digest.
        expected: String,
        /// Digest of the bytes.
        actual: String,
    },
    /// A manifest is not usable.
    #[error("{what}: {reason}")]
    BadManifest {
        /// What was fetched.
        what: String,
        /// Why.
        reason: String,
    },
    /// No manifest of an index matches the wanted platforms.
    #[error("{reference} has no image for {wanted} (it has: {available})")]
    NoPlatform {
        /// The reference.
        reference: String,
        /// Wanted platforms.
        wanted: String,
        /// What the index offers.
        available: String,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Docker's config file cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Receives transfer progress; every method has a no-op default.
pub trait TransferReporter: Send + Sync {
    /// A blob transfer starts.
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes of the blob moved.
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    /// The blob is done; `skipped` when the other side already had it.
    fn blob_finished(&self, _digest: &Digest, _skipped: bool) {}
}

/// A reporter that ignores everything.
pub struct NoReporter;

impl TransferReporter for NoReporter {}

/// Where one repository lives.
#[derive(Clone, Debug)]
pub struct Target {
    /// `scheme://host[:port]` (or the mirror URL).
    pub base: String,
    /// The host whose credentials and TLS settings apply.
    pub host: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// `?ns=` to send, when going through a mirror.
    pub ns: Option<String>,
}

impl Target {
    fn url(&self, path: &str) -> String {
        let mut url = format!("{}/v2/{}/{path}", self.base, self.repository);
        if let Some(ns) = &self.ns {
            url.push_str(if url.contains('?') { "&ns=" } else { "?ns=" });
            url.push_str(ns);
        }
        url
    }
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Digest of the top manifest or index.
    pub digest: Option<Digest>,
    /// Blobs and manifests uploaded.
    pub uploaded: usize,
    /// Blobs the far side already had.
    pub skipped: usize,
    /// Bytes uploaded.
    pub bytes: u64,
}

type RequestMaker<'a> = dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'a;

/// A client for OCI registries.
pub struct RegistryClient {
    config: ClientConfig,
    secure: reqwest::Client,
    insecure: reqwest::Client,
    credentials: Option<DockerConfig>,
    overrides: HashMap<String, Credentials>,
    authorization: Mutex<HashMap<String, HeaderValue>>,
    schemes: Mutex<HashMap<String, &'static str>>,
    mounted: Mutex<HashMap<(String, Digest), String>>,
    reporter: Arc<dyn TransferReporter>,
}

/// A transport error with its causes (reqwest's own message omits them), and what to
/// do when the registry's certificate is not trusted.
fn describe_http_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        text.push_str(
            " (trust the registry's CA with --ca-cert FILE, or skip checks with --insecure-registry HOST)",
        );
    }
    text
}

fn http_error(url: &str) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
    move |source| ClientError::Http {
        url: url.to_string(),
        source,
    }
}

/// The registry's error message from an error response body.
async fn error_message(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                "{} {}",
                e.get("code")?.as_str().unwrap_or_default(),
                e.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
            ))
        })
        .unwrap_or_else(|| text.chars().take(200).collect())
}

/// Whether Docker would treat `host` as insecure without being told.
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Whether `platform` is one of `wanted` (all when `wanted` is empty).
fn platform_matches(platform: Option<&Platform>, wanted: &[Platform]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    platform.is_some_and(|p| {
        wanted.iter().any(|w| {
            w.os == p.os
                && w.architecture == p.architecture
                && (w.variant.is_none() || w.variant == p.variant)
        })
    })
}

impl RegistryClient {
    /// A client for `config`; reads the CA files and `config.json` once.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")));
        for path in &config.ca_certs {
            let pem = fs_err::read(path).map_err(|e| ClientError::BadCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::BadCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let build = |b: reqwest::ClientBuilder| {
            b.build().map_err(|source| ClientError::Http {
                url: String::new(),
                source,
            })
        };
        let insecure = build(
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(120))
                .danger_accept_invalid_certs(true),
        )?;
        let secure = build(builder)?;
        let credentials = match &config.docker_config {
            Some(path) => Some(DockerConfig::load(path)?),
            None => None,
        };
        Ok(Self {
            config,
            secure,
            insecure,
            credentials,
            overrides: HashMap::new(),
            authorization: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            mounted: Mutex::new(HashMap::new()),
            reporter: Arc::new(NoReporter),
        })
    }

    /// Report transfers to `reporter`.
    #[must_use]
    pub fn with_reporter(mut self, reporter: Arc<dyn TransferReporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// Use `credentials` for `host` instead of the stored ones (`airlock login`).
    #[must_use]
    pub fn with_credentials(mut self, host: &str, credentials: Credentials) -> Self {
        self.overrides.insert(host.to_string(), credentials);
        self
    }

    /// Whether `host` may be reached over plain HTTP.
    fn allows_plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.skips_verification(host)
    }

    /// Whether TLS certificates of `host` go unchecked (listed as insecure).
    fn skips_verification(&self, host: &str) -> bool {
        self.config.insecure.iter().any(|h| h == host)
    }

    fn http(&self, host: &str) -> &reqwest::Client {
        if self.skips_verification(host) {
            &self.insecure
        } else {
            &self.secure
        }
    }

    /// The credentials for `host`: `airlock login`'s, else `credHelpers`' helper,
    /// else an `auths` entry, else the `credsStore` helper.
    async fn credentials(&self, host: &str) -> Result<Option<Credentials>, ClientError> {
        if let Some(c) = self.overrides.get(host) {
            return Ok(Some(c.clone()));
        }
        let Some(config) = &self.credentials else {
            return Ok(None);
        };
        let helper = config.helper(host);
        if let Some(h) = helper.as_ref().filter(|h| h.field == "credHelpers") {
            return Ok(super::auth::helper_credentials(h).await?);
        }
        if let Some(c) = config.credentials(host) {
            return Ok(Some(c));
        }
        match &helper {
            Some(h) => Ok(super::auth::helper_credentials(h).await?),
            None => Ok(None),
        }
    }

    /// `scheme://host`: HTTPS, or for hosts allowed plain HTTP whatever answers
    /// first (HTTPS, then HTTP).
    async fn base_url(&self, host: &str) -> String {
        if !self.allows_plain_http(host) {
            return format!("https://{host}");
        }
        if let Some(scheme) = self.schemes.lock().ok().and_then(|s| s.get(host).copied()) {
            return format!("{scheme}://{host}");
        }
        let probe = self
            .insecure
            .get(format!("https://{host}/v2/"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let scheme = if probe.is_ok() { "https" } else { "http" };
        if let Ok(mut s) = self.schemes.lock() {
            s.insert(host.to_string(), scheme);
        }
        format!("{scheme}://{host}")
    }

    /// Where `reference` is fetched from (a mirror, or its own registry).
    pub async fn target(&self, reference: &Reference) -> Target {
        if let Some(m) = self
            .config
            .mirrors
            .iter()
            .find(|m| m.domain == reference.domain)
        {
            let host = m
                .url
                .split_once("://")
                .map_or(m.url.as_str(), |(_, h)| h)
                .to_string();
            return Target {
                base: m.url.clone(),
                host,
                repository: reference.repository.clone(),
                ns: Some(reference.domain.clone()),
            };
        }
        let host = if reference.domain == DEFAULT_DOMAIN {
            "registry-1.docker.io".to_string()
        } else {
            reference.domain.clone()
        };
        Target {
            base: self.base_url(&host).await,
            host: reference.domain.clone(),
            repository: reference.repository.clone(),
            ns: None,
        }
    }

    fn cache_key(target: &Target) -> String {
        format!("{}|{}", target.host, target.repository)
    }

    /// Send a request built by `make`, with auth, retries (when `retry`) and one
    /// re-authorisation on `401`.
    async fn send(
        &self,
        target: &Target,
        actions: &str,
        retry: bool,
        make: &RequestMaker<'_>,
    ) -> Result<reqwest::Response, ClientError> {
        let key = Self::cache_key(target);
        let cached = self
            .authorization
            .lock()
            .ok()
            .and_then(|a| a.get(&key).cloned());
        let response = self
            .send_retrying(target, retry, make, cached.as_ref())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            .ok_or_else(|| ClientError::Unauthorized {
                host: target.host.clone(),
                reason: "the registry sent no usable challenge".to_string(),
            })?;
        let authorization = self.authorize(target, actions, &challenge).await?;
        if let Ok(mut a) = self.authorization.lock() {
            a.insert(key, authorization.clone());
        }
        let response = self
            .send_retrying(target, retry, make, Some(&authorization))
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                host: target.host.clone(),
                reason: "credentials refused".to_string(),
            });
        }
        Ok(response)
    }

    async fn send_retrying(
        &self,
        target: &Target,
        retry: bool,
        make: &RequestMaker<'_>,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, ClientError> {
        let attempts = if retry { self.config.retries + 1 } else { 1 };
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = make(self.http(&target.host));
            if let Some(a) = authorization {
                request = request.header(header::AUTHORIZATION, a.clone());
            }
            let request = request.build().map_err(http_error(&target.base))?;
            let url = request.url().to_string();
            match self.http(&target.host).execute(request).await {
                Ok(r) if r.status().is_server_error() && attempt < attempts => {
                    tracing::debug!("{url}: {} (attempt {attempt})", r.status());
                }
                Ok(r) => return Ok(r),
                Err(e) if attempt < attempts => {
                    tracing::debug!("{url}: {e} (attempt {attempt})");
                }
                Err(source) => return Err(ClientError::Http { url, source }),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// The `Authorization` value answering `challenge`.
    async fn authorize(
        &self,
        target: &Target,
        actions: &str,
        challenge: &Challenge,
    ) -> Result<HeaderValue, ClientError> {
        let credentials = self.credentials(&target.host).await?;
        let value = match challenge {
            Challenge::Basic => credentials
                .ok_or_else(|| ClientError::Unauthorized {
                    host: target.host.clone(),
                    reason: "the registry wants a user and password, and none is stored"
                        .to_string(),
                })?
                .basic_header(),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope
                    .clone()
                    .unwrap_or_else(|| format!("repository:{}:{actions}", target.repository));
                let mut query: Vec<(&str, &str)> = vec![("scope", &scope)];
                if let Some(s) = service {
                    query.push(("service", s));
                }
                let mut request = self.http(&target.host).get(realm).query(&query);
                if let Some(c) = &credentials {
                    request = request.header(header::AUTHORIZATION, c.basic_header());
                }
                let response = request.send().await.map_err(http_error(realm))?;
                if !response.status().is_success() {
                    return Err(ClientError::Unauthorized {
                        host: target.host.clone(),
                        reason: format!("the token service answered {}", response.status()),
                    });
                }
                let body: serde_json::Value = response.json().await.map_err(http_error(realm))?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| ClientError::Unauthorized {
                        host: target.host.clone(),
                        reason: "the token service returned no token".to_string(),
                    })?;
                format!("Bearer {token}")
            }
        };
        let mut header = HeaderValue::from_str(&value).map_err(|_| ClientError::Unauthorized {
            host: target.host.clone(),
            reason: "credentials hold characters HTTP cannot carry".to_string(),
        })?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// Check that `host` accepts the client's credentials (`airlock login`).
    pub async fn check_login(&self, host: &str) -> Result<(), ClientError> {
        let target = Target {
            base: self.base_url(host).await,
            host: host.to_string(),
            repository: String::new(),
            ns: None,
        };
        let url = format!("{}/v2/", target.base);
        let first = self
            .send_retrying(&target, true, &|c| c.get(&url), None)
            .await?;
        if first.status().is_success() {
            return Ok(());
        }
        let challenge = first
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            .ok_or_else(|| ClientError::Unauthorized {
                host: host.to_string(),
                reason: format!(
                    "the registry answered {} without a challenge",
                    first.status()
                ),
            })?;
        let challenge = match challenge {
            Challenge::Bearer { realm, service, .. } => Challenge::Bearer {
                realm,
                service,
                scope: Some(String::new()),
            },
            basic => basic,
        };
        let authorization = self.authorize(&target, "pull", &challenge).await?;
        let second = self
            .send_retrying(&target, true, &|c| c.get(&url), Some(&authorization))
            .await?;
        if second.status().is_success() {
            Ok(())
        } else {
            Err(ClientError::Unauthorized {
                host: host.to_string(),
                reason: format!("the registry answered {}", second.status()),
            })
        }
    }

    /// Fetch a manifest by tag or digest: its verified bytes, media type and digest.
    async fn get_manifest(
        &self,
        target: &Target,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<(Bytes, String, Digest), ClientError> {
        let url = target.url(&format!("manifests/{reference}"));
        let response = self
            .send(target, "pull", true, &|c| {
                c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let what = format!("{}/{}:{reference}", target.host, target.repository);
        if response.status() == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound {
                what,
                host: target.host.clone(),
            });
        }
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(ClientError::Status {
                url,
                status,
                message: error_message(response).await,
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES)
        {
            return Err(ClientError::BadManifest {
                what,
                reason: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = response.bytes().await.map_err(http_error(&url))?;
        let actual = Digest::of(&bytes);
        if let Some(e) = expected.or(announced.as_ref())
            && *e != actual
        {
            return Err(ClientError::DigestMismatch {
                what,
                expected: e.to_string(),
                actual: actual.to_string(),
            });
        }
        let media_type = match content_type {
            Some(c) if oci::is_index(&c) || oci::is_manifest(&c) => c,
            _ => manifest_media_type(&bytes).ok_or_else(|| ClientError::BadManifest {
                what,
                reason: "not a schema 2 image manifest or index".to_string(),
            })?,
        };
        Ok((bytes, media_type, actual))
    }

    /// Copy `reference` into `store` byte for byte; for an index, only the manifests of
    /// `platforms` (all when empty). Returns the top descriptor; sets no name.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        platforms: &[Platform],
    ) -> Result<Descriptor, ClientError> {
        let target = self.target(reference).await;
        let (bytes, media_type, digest) = self
            .get_manifest(
                &target,
                &reference.manifest_ref(),
                reference.digest.as_ref(),
            )
            .await?;
        let parsed = parse_manifest(&bytes, &reference.to_string())?;
        if oci::is_index(&media_type) {
            let wanted: Vec<&Descriptor> = parsed
                .manifests
                .iter()
                .filter(|d| platform_matches(d.platform.as_ref(), platforms))
                .collect();
            if wanted.is_empty() {
                return Err(ClientError::NoPlatform {
                    reference: reference.to_string(),
                    wanted: platforms
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    available: parsed
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            for entry in wanted {
                self.pull_tree(store, &target, entry).await?;
            }
        } else {
            self.pull_blobs(store, &target, &parsed).await?;
        }
        store.put_bytes(&bytes)?;
        Ok(Descriptor::new(&media_type, digest, bytes.len() as u64))
    }

    /// Pull the manifest `descriptor` (and everything under it) unless it is present.
    fn pull_tree<'a>(
        &'a self,
        store: &'a Store,
        target: &'a Target,
        descriptor: &'a Descriptor,
    ) -> Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send + 'a>> {
        Box::pin(async move {
            if store.has_blob(&descriptor.digest) {
                return Ok(());
            }
            let (bytes, _, _) = self
                .get_manifest(
                    target,
                    &descriptor.digest.to_string(),
                    Some(&descriptor.digest),
                )
                .await?;
            let parsed = parse_manifest(&bytes, &descriptor.digest.to_string())?;
            if parsed.manifests.is_empty() {
                self.pull_blobs(store, target, &parsed).await?;
            } else {
                for child in &parsed.manifests {
                    self.pull_tree(store, target, child).await?;
                }
            }
            store.put_bytes(&bytes)?;
            Ok(())
        })
    }

    async fn pull_blobs(
        &self,
        store: &Store,
        target: &Target,
        manifest: &oci::AnyManifest,
    ) -> Result<(), ClientError> {
        for blob in manifest.config.iter().chain(&manifest.layers) {
            self.pull_blob(store, target, blob).await?;
        }
        Ok(())
    }

    /// Stream one blob into the store, verified; retried as a whole on failure.
    async fn pull_blob(
        &self,
        store: &Store,
        target: &Target,
        blob: &Descriptor,
    ) -> Result<(), ClientError> {
        if store.has_blob(&blob.digest) {
            self.reporter.blob_finished(&blob.digest, true);
            return Ok(());
        }
        self.reporter.blob_started(&blob.digest, blob.size);
        let url = target.url(&format!("blobs/{}", blob.digest));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.download(store, target, &url, blob).await;
            match result {
                Ok(()) => {
                    self.reporter.blob_finished(&blob.digest, false);
                    return Ok(());
                }
                Err(e @ (ClientError::Http { .. } | ClientError::Status { .. }))
                    if attempt <= self.config.retries =>
                {
                    tracing::debug!("retrying {}: {e}", blob.digest);
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn download(
        &self,
        store: &Store,
        target: &Target,
        url: &str,
        blob: &Descriptor,
    ) -> Result<(), ClientError> {
        let response = self.send(target, "pull", true, &|c| c.get(url)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(ClientError::NotFound {
                what: blob.digest.to_string(),
                host: target.host.clone(),
            });
        }
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(ClientError::Status {
                url: url.to_string(),
                status,
                message: error_message(response).await,
            });
        }
        let reporter = self.reporter.clone();
        let digest = blob.digest.clone();
        let stream = response.bytes_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                reporter.blob_progress(&digest, c.len() as u64);
            }
            chunk
        });
        let written = stream_to_store(store, stream, &blob.digest, blob.size).await;
        match written {
            Ok(()) => Ok(()),
            Err(StreamError::Body(source)) => Err(ClientError::Http {
                url: url.to_string(),
                source,
            }),
            Err(StreamError::Store(StoreError::DigestMismatch { expected, actual })) => {
                Err(ClientError::DigestMismatch {
                    what: url.to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                })
            }
            Err(StreamError::Store(e)) => Err(e.into()),
        }
    }

    /// Push the image `descriptor` of `store` (its whole tree) to `reference`.
    pub async fn push(
        &self,
        store: &Store,
        descriptor: &Descriptor,
        reference: &Reference,
    ) -> Result<PushSummary, ClientError> {
        let tree = store.walk(descriptor)?;
        self.push_tree(store, tree, descriptor, reference).await
    }

    /// Push the image `descriptor` of any blob source (a store, a bundle) to
    /// `reference`: its whole tree, but for platforms the source does not hold (an
    /// index whose other platforms were not fetched is pushed as it is).
    pub async fn push_from(
        &self,
        source: &dyn BlobSource,
        descriptor: &Descriptor,
        reference: &Reference,
    ) -> Result<PushSummary, ClientError> {
        let tree = walk_source(source, descriptor)?;
        self.push_tree(source, tree, descriptor, reference).await
    }

    async fn push_tree(
        &self,
        store: &dyn BlobSource,
        tree: Vec<Descriptor>,
        descriptor: &Descriptor,
        reference: &Reference,
    ) -> Result<PushSummary, ClientError> {
        let target = self.target(reference).await;
        let (manifests, blobs): (Vec<Descriptor>, Vec<Descriptor>) = tree
            .into_iter()
            .partition(|d| oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type));
        let mut summary = PushSummary::default();
        for blob in &blobs {
            let uploaded = self.push_blob(store, &target, blob).await?;
            if uploaded {
                summary.uploaded += 1;
                summary.bytes += blob.size;
            } else {
                summary.skipped += 1;
            }
        }
        for manifest in manifests.iter().rev() {
            let tag = if manifest.digest == descriptor.digest {
                reference.manifest_ref()
            } else {
                manifest.digest.to_string()
            };
            let url = target.url(&format!("manifests/{tag}"));
            let head = self
                .send(&target, "pull,push", true, &|c| {
                    c.head(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            let present = head
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                == Some(manifest.digest.to_string().as_str());
            if head.status().is_success() && present {
                summary.skipped += 1;
                continue;
            }
            let bytes = crate::image::read_blob(store, &manifest.digest)
                .map_err(|e| ClientError::Store(e.into()))?;
            let media_type =
                manifest_media_type(&bytes).unwrap_or_else(|| manifest.media_type.clone());
            let body = Bytes::from(bytes);
            let response = self
                .send(&target, "pull,push", true, &|c| {
                    c.put(&url)
                        .header(header::CONTENT_TYPE, &media_type)
                        .body(body.clone())
                })
                .await?;
            if !response.status().is_success() {
                let status = response.status().as_u16();
                return Err(ClientError::Status {
                    url,
                    status,
                    message: error_message(response).await,
                });
            }
            summary.uploaded += 1;
            summary.bytes += body.len() as u64;
        }
        summary.digest = Some(descriptor.digest.clone());
        Ok(summary)
    }

    /// Upload one blob unless the far side has it; returns whether bytes were sent.
    async fn push_blob(
        &self,
        store: &dyn BlobSource,
        target: &Target,
        blob: &Descriptor,
    ) -> Result<bool, ClientError> {
        let head_url = target.url(&format!("blobs/{}", blob.digest));
        let head = self
            .send(target, "pull,push", true, &|c| c.head(&head_url))
            .await?;
        if head.status().is_success() {
            self.remember(target, &blob.digest);
            self.reporter.blob_finished(&blob.digest, true);
            return Ok(false);
        }
        let mount_from = self.mounted.lock().ok().and_then(|m| {
            m.get(&(target.host.clone(), blob.digest.clone()))
                .filter(|repo| **repo != target.repository)
                .cloned()
        });
        let mut start_url = target.url("blobs/uploads/");
        if let Some(from) = &mount_from {
            start_url.push_str(if start_url.contains('?') { "&" } else { "?" });
            start_url.push_str(&format!("mount={}&from={from}", blob.digest));
        }
        let start = self
            .send(target, "pull,push", true, &|c| {
                c.post(&start_url).header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        if start.status() == StatusCode::CREATED {
            self.remember(target, &blob.digest);
            self.reporter.blob_finished(&blob.digest, true);
            return Ok(false);
        }
        if start.status() != StatusCode::ACCEPTED {
            let status = start.status().as_u16();
            return Err(ClientError::Status {
                url: start_url,
                status,
                message: error_message(start).await,
            });
        }
        let location = start
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Status {
                url: start_url.clone(),
                status: 202,
                message: "no Location for the upload".to_string(),
            })?;
        let mut put_url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", target.base)
        };
        put_url.push_str(if put_url.contains('?') { "&" } else { "?" });
        put_url.push_str(&format!("digest={}", blob.digest));
        self.reporter.blob_started(&blob.digest, blob.size);
        let location = store
            .locate(&blob.digest)
            .and_then(|l| {
                l.ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("blob {} is missing", blob.digest),
                    )
                })
            })
            .map_err(|e| ClientError::Store(e.into()))?;
        let size = location.size;
        // The body is made again for each attempt (a `401` after the token expired
        // mid-push is answered and the blob re-sent): the file is opened afresh.
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let body = || {
            if attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                self.reporter.blob_started(&blob.digest, size);
            }
            blob_body(&location, &blob.digest, &self.reporter)
        };
        let response = self
            .send(target, "pull,push", false, &|c| {
                c.put(&put_url)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, size)
                    .body(body())
            })
            .await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(ClientError::Status {
                url: put_url,
                status,
                message: error_message(response).await,
            });
        }
        self.remember(target, &blob.digest);
        self.reporter.blob_finished(&blob.digest, false);
        Ok(true)
    }

    fn remember(&self, target: &Target, digest: &Digest) {
        if let Ok(mut m) = self.mounted.lock() {
            m.insert(
                (target.host.clone(), digest.clone()),
                target.repository.clone(),
            );
        }
    }
}

/// A request body streaming the blob file at `path`, reporting progress; a file that
/// cannot be opened gives a body that fails with why.
fn blob_body(
    location: &crate::image::BlobLocation,
    digest: &Digest,
    reporter: &Arc<dyn TransferReporter>,
) -> reqwest::Body {
    use std::io::Seek as _;
    let opened = fs_err::File::open(&location.path).and_then(|mut f| {
        f.seek(std::io::SeekFrom::Start(location.offset))?;
        Ok(f)
    });
    match opened {
        Ok(file) => {
            let reporter = reporter.clone();
            let digest = digest.clone();
            let file = tokio::fs::File::from_std(file.into_file());
            let file = tokio::io::AsyncReadExt::take(file, location.size);
            let stream =
                tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
                    if let Ok(c) = &chunk {
                        reporter.blob_progress(&digest, c.len() as u64);
                    }
                    chunk
                });
            reqwest::Body::wrap_stream(stream)
        }
        Err(e) => reqwest::Body::wrap_stream(futures_util::stream::once(async move {
            Err::<bytes::Bytes, std::io::Error>(e)
        })),
    }
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<oci::AnyManifest, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::BadManifest {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Why streaming into the store failed.
enum StreamError<E> {
    Body(E),
    Store(StoreError),
}

/// Write `stream` into the store on a blocking thread, verifying digest and size.
async fn stream_to_store<E: Send + 'static>(
    store: &Store,
    mut stream: impl Stream<Item = Result<Bytes, E>> + Unpin,
    digest: &Digest,
    size: u64,
) -> Result<(), StreamError<E>> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let store = store.clone();
    let expected = digest.clone();
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut w = store.blob_writer()?;
        while let Some(chunk) = rx.blocking_recv() {
            w.write_all(&chunk)?;
        }
        w.commit(Some(&expected), Some(size))
    });
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let committed = writer
        .await
        .map_err(|e| StreamError::Store(StoreError::Io(std::io::Error::other(e))))?;
    if let Some(e) = failure {
        return Err(StreamError::Body(e));
    }
    committed.map(|_| ()).map_err(StreamError::Store)
}

#[async_trait::async_trait]
impl ImageFetcher for RegistryClient {
    async fn fetch(
        &self,
        store: &Store,
        reference: &Reference,
        platforms: &[Platform],
    ) -> anyhow::Result<Descriptor> {
        Ok(self.pull(store, reference, platforms).await?)
    }
}

/// Every blob reachable from `descriptor` in `source` (itself included), depth first;
/// children of an index that the source lacks (platforms not fetched) are left out.
fn walk_source(
    source: &dyn BlobSource,
    descriptor: &Descriptor,
) -> Result<Vec<Descriptor>, ClientError> {
    let store_error = |e: std::io::Error| ClientError::Store(e.into());
    let mut out = Vec::new();
    let mut stack = vec![(descriptor.clone(), false)];
    let mut seen = std::collections::HashSet::new();
    while let Some((d, optional)) = stack.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        if optional && source.locate(&d.digest).map_err(store_error)?.is_none() {
            continue;
        }
        if oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type) {
            let bytes = crate::image::read_blob(source, &d.digest).map_err(store_error)?;
            let parsed: oci::AnyManifest = serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Store(
                    std::io::Error::other(format!("manifest {}: {e}", d.digest)).into(),
                )
            })?;
            let is_index = oci::is_index(&d.media_type);
            stack.extend(
                parsed
                    .children()
                    .into_iter()
                    .rev()
                    .map(|c| (c.clone(), is_index)),
            );
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_domain_equals_url() {
        let m = Mirror::parse("docker.io=http://127.0.0.1:5000/").unwrap();
        assert_eq!(m.domain, "docker.io");
        assert_eq!(m.url, "http://127.0.0.1:5000");
        for bad in [
            "docker.io",
            "=http://x",
            "docker.io=ftp://x",
            "d=http://x/path",
        ] {
            assert!(Mirror::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platforms_match_os_arch_and_variant_when_asked() {
        let arm = Platform {
            variant: Some("v8".into()),
            ..Platform::linux("arm64")
        };
        assert!(platform_matches(Some(&arm), &[Platform::linux("arm64")]));
        assert!(!platform_matches(Some(&arm), &[Platform::linux("amd64")]));
        assert!(!platform_matches(None, &[Platform::linux("amd64")]));
        assert!(platform_matches(None, &[]));
    }

    #[test]
    fn loopback_hosts_are_insecure_by_default() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("registry.example:5000"));
    }
}
