//! The embedded OCI registry, serving any [`BlobSource`] over the distribution API.
//!
//! 1. [`RegistryServer::new`] takes the source (the store, an unpacked install, a
//!    bundle) and a [`ServerConfig`]; [`RegistryServer::serve`] runs it on a listener
//!    until a shutdown future resolves; [`RegistryServer::spawn`] does the same on a
//!    background task and returns a [`RunningRegistry`] handle (tests, installs).
//!    With [`ServerConfig::tls`] set, connections go through [`TlsListener`] first.
//!    Connections sending large blobs run on a runtime of their own
//!    ([`super::lanes`]), so small requests are not queued behind blob writes, and
//!    take turns there ([`super::fair`]). Plain-HTTP connections send blob bytes with
//!    `sendfile` ([`super::zerocopy`]).
//! 2. Every request goes through [`handle`]: it takes a permit (bounding how many
//!    requests run at once), checks basic auth when an htpasswd file is set, parses the path into a [`Route`] (names may hold
//!    slashes), checks names, tags and digests, and dispatches.
//! 3. Manifests by tag are looked up in the [`Catalog`] (own names and the original
//!    names of container images, `?ns=` selecting the domain); by digest, any
//!    manifest the source holds is served. Bytes are served exactly as stored.
//! 4. Blobs stream from their file region (offset + size), honouring `Range`: the
//!    file is opened with the lookup (one blocking hop), then a blocking task maps
//!    it in windows handed to the connection as they are, at most [`CHUNKS_AHEAD`]
//!    windows ahead of the client: [`SENDFILE_WINDOW`]s sent with `sendfile` on plain
//!    HTTP (the server copies nothing), [`CHUNK_SIZE`] ones copied once into the TLS
//!    records. Nothing is loaded whole; manifest GETs never wait on blob reads.
//! 5. Uploads (when a push store is configured) are handled in [`super::upload`].
//! 6. Errors become the OCI error JSON in one place ([`ApiError`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use super::catalog::{CatalogCache, read_region};
use super::error::ApiError;
use super::fair::FairListener;
use super::htpasswd::Htpasswd;
use super::lanes::{BulkGuard, Lane};
use super::tls::TlsListener;
use super::upload::Uploads;
use super::zerocopy::ZerocopyListener;
use crate::digest::Digest;
use crate::image::oci;
use crate::image::store::Store;
use crate::image::{BlobSource, ImagesVersion};
use crate::spec::reference::is_valid_repository;

/// Header carrying a manifest's or blob's digest.
pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// Header every distribution response carries.
const API_VERSION: &str = "docker-distribution-api-version";
/// Size of the windows blobs are streamed in over TLS (one populated memory map each).
const CHUNK_SIZE: usize = 2 * 1024 * 1024;
/// Size of the windows sent with `sendfile` (mapped but not populated, so their size
/// costs no memory): larger windows are larger `sendfile` calls; 8 MiB took 0.49–0.50
/// CPU seconds per 3.2 GB where 2 MiB took 0.57 (`docs/benchmarks.md`, registry).
const SENDFILE_WINDOW: usize = 8 * 1024 * 1024;
/// Chunks a blob's reader may be ahead of its connection.
const CHUNKS_AHEAD: usize = 2;
/// Blob bodies from this size on are sent on the bulk lane ([`super::lanes`]).
const BULK_BODY: u64 = 1024 * 1024;

/// How the registry behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where pushed blobs and manifests go; `None` makes the registry read-only.
    pub push_store: Option<Store>,
    /// Whether `DELETE` of manifests and blobs is allowed (needs a push store).
    pub delete_enabled: bool,
    /// Largest manifest accepted or served.
    pub max_manifest_bytes: u64,
    /// Requests handled at once; more wait for a permit.
    pub max_concurrent_requests: usize,
    /// Basic auth: every request needs a user of this file; `None` lets anyone in.
    pub htpasswd: Option<Arc<Htpasswd>>,
    /// Serve HTTPS with this configuration (see [`super::tls::server_config`]);
    /// `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long shutdown waits for requests in flight before it closes their
    /// connections.
    pub shutdown_grace: std::time::Duration,
}

impl ServerConfig {
    /// A read-only registry.
    pub fn read_only() -> Self {
        Self {
            push_store: None,
            delete_enabled: false,
            max_manifest_bytes: 4 << 20,
            max_concurrent_requests: 512,
            htpasswd: None,
            tls: None,
            shutdown_grace: std::time::Duration::from_secs(30),
        }
    }

    /// A registry that accepts pushes into `store`.
    pub fn writable(store: Store) -> Self {
        Self {
            push_store: Some(store),
            ..Self::read_only()
        }
    }
}

/// The registry: a source of images and how to serve them.
#[derive(Clone)]
pub struct RegistryServer {
    state: Arc<ServerState>,
}

/// What every request handler sees.
pub(super) struct ServerState {
    pub(super) source: Arc<dyn BlobSource>,
    pub(super) config: ServerConfig,
    catalog: CatalogCache,
    pub(super) manifests: ManifestCache,
    pub(super) uploads: Uploads,
    permits: Arc<Semaphore>,
}

impl RegistryServer {
    /// A registry serving `source`.
    pub fn new(source: Arc<dyn BlobSource>, config: ServerConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent_requests.max(1)));
        let uploads = Uploads::new(config.push_store.clone());
        Self {
            state: Arc::new(ServerState {
                source,
                config,
                catalog: CatalogCache::default(),
                manifests: ManifestCache::default(),
                uploads,
                permits,
            }),
        }
    }

    /// The axum router answering every `/v2/` request.
    pub fn router(&self) -> Router {
        Router::new()
            .fallback(handle)
            .with_state(self.state.clone())
    }

    /// Serve on `listener` (over TLS when [`ServerConfig::tls`] is set) until
    /// `shutdown` resolves, then finish the requests in flight (for at most
    /// [`ServerConfig::shutdown_grace`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let router = self.router();
        let grace = self.state.config.shutdown_grace;
        match self.state.config.tls.clone() {
            Some(tls) => {
                let listener = FairListener::new(TlsListener::new(listener, tls)?);
                super::lanes::serve(listener, false, router, shutdown, grace).await
            }
            None => {
                let listener = FairListener::new(ZerocopyListener::new(listener));
                super::lanes::serve(listener, true, router, shutdown, grace).await
            }
        }
    }

    /// Bind `addr` (port 0 picks a free port) and serve on a background task.
    pub async fn spawn(self, addr: SocketAddr) -> io::Result<RunningRegistry> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let scheme = if self.state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(RunningRegistry {
            addr,
            scheme,
            stop: Some(stop),
            task,
        })
    }
}

/// A registry serving on a background task; [`RunningRegistry::stop`] shuts it down.
pub struct RunningRegistry {
    /// The address it listens on.
    pub addr: SocketAddr,
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl RunningRegistry {
    /// `http://ADDR`, or `https://ADDR` over TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stop accepting, finish requests in flight, and return how serving ended.
    pub async fn stop(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(io::Error::other)?
    }
}

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    /// `/v2/`.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/NAME/tags/list`.
    Tags(&'a str),
    /// `/v2/NAME/manifests/REFERENCE`.
    Manifest(&'a str, &'a str),
    /// `/v2/NAME/blobs/DIGEST`.
    Blob(&'a str, &'a str),
    /// `/v2/NAME/blobs/uploads/`.
    UploadStart(&'a str),
    /// `/v2/NAME/blobs/uploads/ID`.
    Upload(&'a str, &'a str),
}

/// Split a request path into a [`Route`], checking the repository name.
pub(super) fn parse_route(path: &str) -> Result<Route<'_>, ApiError> {
    let rest = match path {
        "/v2" | "/v2/" => return Ok(Route::Base),
        "/v2/_catalog" => return Ok(Route::Catalog),
        p => p.strip_prefix("/v2/").ok_or(ApiError::NotFound)?,
    };
    let route = if let Some(name) = rest.strip_suffix("/tags/list") {
        Route::Tags(name)
    } else if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        Route::Manifest(name, reference)
    } else if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        Route::UploadStart(name)
    } else if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        Route::Upload(name, id)
    } else if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        Route::Blob(name, digest)
    } else {
        return Err(ApiError::NotFound);
    };
    let name = match &route {
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::UploadStart(n)
        | Route::Upload(n, _) => *n,
        Route::Base | Route::Catalog => "",
    };
    if !is_valid_repository(name) {
        return Err(ApiError::NameInvalid(name.to_string()));
    }
    Ok(route)
}

/// Whether `tag` matches `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(super) fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// Parse a digest from a URL or query, as `DIGEST_INVALID` when malformed.
pub(super) fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e: crate::digest::InvalidDigest| ApiError::DigestInvalid(e.to_string()))
}

/// The query parameters of a request.
pub(super) fn query_params(request: &Request) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of query parameter `key`.
pub(super) fn query_param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Run blocking source I/O off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let permit = state.permits.clone().acquire_owned().await;
    let authorized = match &state.config.htpasswd {
        None => true,
        Some(users) => {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let users = users.clone();
            blocking(move || Ok(users.check(header.as_deref())))
                .await
                .unwrap_or(false)
        }
    };
    let result = if authorized {
        dispatch(&state, request).await
    } else {
        Err(ApiError::Unauthorized)
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    drop(permit);
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

async fn dispatch(state: &Arc<ServerState>, request: Request) -> Result<Response, ApiError> {
    let path = request.uri().path().to_string();
    let route = parse_route(&path)?;
    let method = request.method().clone();
    let params = query_params(&request);
    let ns = query_param(&params, "ns").map(str::to_string);
    match (route, &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => {
            Ok(axum::Json(serde_json::json!({})).into_response())
        }
        (Route::Catalog, &Method::GET) => catalog(state, &params).await,
        (Route::Tags(name), &Method::GET) => tags(state, ns, name, &params).await,
        (Route::Manifest(name, reference), &Method::GET | &Method::HEAD) => {
            get_manifest(state, ns, name, reference, method == Method::HEAD).await
        }
        (Route::Blob(_, digest), &Method::GET | &Method::HEAD) => {
            let lane = request.extensions().get::<Lane>().cloned();
            get_blob(
                state,
                digest,
                request.headers(),
                lane,
                method == Method::HEAD,
            )
            .await
        }
        // Writes and deletes forget cached manifest answers, whatever their outcome.
        (Route::Manifest(name, reference), &Method::PUT) => {
            let result = super::upload::put_manifest(state, name, reference, request).await;
            state.manifests.clear();
            result
        }
        (Route::Manifest(_, reference), &Method::DELETE) => {
            let result = super::upload::delete_manifest(state, reference).await;
            state.manifests.clear();
            result
        }
        (Route::Blob(_, digest), &Method::DELETE) => {
            let result = super::upload::delete_blob(state, digest).await;
            state.manifests.clear();
            result
        }
        (Route::UploadStart(name), &Method::POST) => {
            super::upload::start(state, name, &params, request).await
        }
        (Route::Upload(name, id), &Method::PATCH) => {
            super::upload::patch(state, name, id, request).await
        }
        (Route::Upload(name, id), &Method::PUT) => {
            super::upload::finish(state, name, id, &params, request).await
        }
        (Route::Upload(name, id), &Method::GET) => super::upload::status(state, name, id),
        (Route::Upload(_, id), &Method::DELETE) => super::upload::cancel(state, id),
        _ => Err(ApiError::Unsupported(format!(
            "{method} is not supported on {path}"
        ))),
    }
}

/// Media type of a manifest document: its `mediaType`, else inferred from its shape.
/// `None` when the bytes are not a schema 2 manifest or index.
pub fn manifest_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        schema_version: Option<u32>,
        #[serde(flatten)]
        any: oci::AnyManifest,
    }
    let head: Head = serde_json::from_slice(bytes).ok()?;
    if head.schema_version != Some(2) {
        return None;
    }
    Some(head.any.kind().to_string())
}

async fn get_manifest(
    state: &Arc<ServerState>,
    ns: Option<String>,
    name: &str,
    reference: &str,
    is_head: bool,
) -> Result<Response, ApiError> {
    // One `stat` on this worker; a hit then answers without a blocking hop, which
    // under load costs two thread wake-ups.
    let version = state.source.images_version().ok().flatten();
    let key = (ns, name.to_string(), reference.to_string());
    let cached = version.and_then(|v| state.manifests.get(v, &key));
    let answer = match cached {
        Some(answer) => answer,
        None => {
            let shared = state.clone();
            let (ns, name, reference) = key.clone();
            let answer = blocking(move || {
                let state = shared;
                let digest = if reference.contains(':') {
                    parse_digest(&reference)?
                } else {
                    if !is_valid_tag(&reference) {
                        return Err(ApiError::TagInvalid(reference));
                    }
                    let catalog = state.catalog.get(state.source.as_ref())?;
                    catalog
                        .resolve(ns.as_deref(), &name, &reference)
                        .map(|d| d.digest.clone())
                        .ok_or_else(|| ApiError::ManifestUnknown(format!("{name}:{reference}")))?
                };
                let unknown = || ApiError::ManifestUnknown(digest.to_string());
                let location = state.source.locate(&digest)?.ok_or_else(unknown)?;
                if location.size > state.config.max_manifest_bytes {
                    return Err(unknown());
                }
                let bytes = read_region(&location)?;
                let media_type = manifest_media_type(&bytes).ok_or_else(unknown)?;
                Ok(Arc::new(ManifestAnswer {
                    digest,
                    bytes: bytes.into(),
                    media_type,
                }))
            })
            .await?;
            if let Some(v) = version {
                state.manifests.insert(v, key, answer.clone());
            }
            answer
        }
    };
    let mut headers = HeaderMap::new();
    insert(&mut headers, header::CONTENT_TYPE, &answer.media_type);
    insert(
        &mut headers,
        header::CONTENT_LENGTH,
        &answer.bytes.len().to_string(),
    );
    insert(
        &mut headers,
        DOCKER_CONTENT_DIGEST,
        &answer.digest.to_string(),
    );
    insert(
        &mut headers,
        header::ETAG,
        &format!("\"{}\"", answer.digest),
    );
    let body = if is_head {
        Body::empty()
    } else {
        Body::from(answer.bytes.clone())
    };
    Ok((StatusCode::OK, headers, body).into_response())
}

/// A manifest GET's answer.
struct ManifestAnswer {
    digest: Digest,
    bytes: bytes::Bytes,
    media_type: String,
}

/// Which manifest a request names: `(ns, name, tag or digest)`.
type ManifestKey = (Option<String>, String, String);

/// Manifest answers by what the request named, valid while the source's images are
/// those they were read under ([`BlobSource::images_version`]); at most
/// [`MANIFESTS_CACHED`] of them.
#[derive(Default)]
pub(super) struct ManifestCache {
    entries: Mutex<(ImagesVersion, HashMap<ManifestKey, Arc<ManifestAnswer>>)>,
}

/// Manifest answers kept; more clear the cache.
const MANIFESTS_CACHED: usize = 1024;

impl ManifestCache {
    fn get(&self, version: ImagesVersion, key: &ManifestKey) -> Option<Arc<ManifestAnswer>> {
        let entries = self.entries.lock().ok()?;
        (entries.0 == version)
            .then(|| entries.1.get(key).cloned())
            .flatten()
    }

    fn insert(&self, version: ImagesVersion, key: ManifestKey, answer: Arc<ManifestAnswer>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.0 != version || entries.1.len() >= MANIFESTS_CACHED {
            entries.0 = version;
            entries.1.clear();
        }
        entries.1.insert(key, answer);
    }

    /// Forget every answer (a manifest was pushed or deleted through this registry).
    pub(super) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.1.clear();
        }
    }
}

/// Insert a header whose value was built from validated data.
pub(super) fn insert(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// A parsed `Range: bytes=...` request, resolved against the blob size.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), ApiError> {
    let invalid = || ApiError::RangeInvalid { size };
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(invalid)?;
    if spec.contains(',') {
        return Err(invalid());
    }
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|_| invalid());
    let (first, last) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n = parse(suffix)?.min(size);
            if n == 0 {
                return Err(invalid());
            }
            (size - n, size - 1)
        }
        (s, "") => (parse(s)?, size.saturating_sub(1)),
        (s, e) => (parse(s)?, parse(e)?.min(size.saturating_sub(1))),
    };
    if first >= size || first > last {
        return Err(invalid());
    }
    Ok((first, last))
}

async fn get_blob(
    state: &Arc<ServerState>,
    digest: &str,
    request_headers: &HeaderMap,
    lane: Option<Lane>,
    is_head: bool,
) -> Result<Response, ApiError> {
    let digest = parse_digest(digest)?;
    let source = state.source.clone();
    let lookup = digest.clone();
    let (location, file) = blocking(move || {
        let Some(location) = source.locate(&lookup)? else {
            return Err(ApiError::BlobUnknown(lookup.to_string()));
        };
        let file = if is_head {
            None
        } else {
            Some(std::fs::File::open(&location.path)?)
        };
        Ok((location, file))
    })
    .await?;
    let size = location.size;
    let range = match request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => Some(parse_range(value, size)?),
        None => None,
    };
    let (status, start, length) = match range {
        Some((first, last)) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut headers = HeaderMap::new();
    insert(
        &mut headers,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    insert(&mut headers, header::CONTENT_LENGTH, &length.to_string());
    insert(&mut headers, DOCKER_CONTENT_DIGEST, &digest.to_string());
    insert(&mut headers, header::ETAG, &format!("\"{digest}\""));
    insert(&mut headers, header::ACCEPT_RANGES, "bytes");
    if let Some((first, last)) = range {
        insert(
            &mut headers,
            header::CONTENT_RANGE,
            &format!("bytes {first}-{last}/{size}"),
        );
    }
    let body = match file {
        Some(file) if length > 0 => {
            // Large bodies move their connection to the bulk lane while they are sent.
            let sendfile = lane.as_ref().is_some_and(|l| l.sendfile);
            let bulk = lane.filter(|_| length >= BULK_BODY).map(|l| l.bulk());
            let region = (file, location.offset + start, length);
            stream_region(region, sendfile, bulk)
        }
        _ => Body::empty(),
    };
    Ok((status, headers, body).into_response())
}

/// A body streaming `length` bytes of `file` from `at`: a blocking task maps the
/// region a window at a time ([`super::mapped`]; [`SENDFILE_WINDOW`] when the
/// connection uses `sendfile`, else [`CHUNK_SIZE`]) and hands each window to the
/// connection; it waits while [`CHUNKS_AHEAD`] windows are queued. A client that goes
/// away closes the channel, which stops it.
fn stream_region(
    (file, at, length): (std::fs::File, u64, u64),
    sendfile: bool,
    bulk: Option<BulkGuard>,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut region = match super::mapped::Region::open(file, at, length) {
            Ok(region) if sendfile => region.for_sendfile(),
            Ok(region) => region,
            Err(e) => {
                tracing::warn!("registry: reading blob failed: {e}");
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let size = if sendfile {
            SENDFILE_WINDOW
        } else {
            CHUNK_SIZE
        };
        while let Some(window) = region.map(size) {
            if let Err(e) = &window {
                tracing::warn!("registry: reading blob failed: {e}");
            }
            let failed = window.is_err();
            if tx.blocking_send(window).is_err() || failed {
                return;
            }
        }
    });
    // Every window holds the guard until it is written (see `lanes::hold`).
    let bulk = bulk.map(Arc::new);
    Body::from_stream(futures_util::stream::unfold(
        (rx, bulk),
        |(mut rx, bulk)| async move {
            let chunk = match (rx.recv().await?, &bulk) {
                (Ok(window), Some(guard)) => Ok(super::lanes::hold(window, guard)),
                (chunk, _) => chunk,
            };
            Some((chunk, (rx, bulk)))
        },
    ))
}

/// Apply `?n=` and `?last=` to a sorted list; returns the page and whether more follow.
fn paginate(items: Vec<String>, params: &[(String, String)]) -> (Vec<String>, bool) {
    let after: Vec<String> = match query_param(params, "last") {
        Some(last) => items.into_iter().filter(|i| i.as_str() > last).collect(),
        None => items,
    };
    match query_param(params, "n").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if n < after.len() => (after.into_iter().take(n).collect(), true),
        _ => (after, false),
    }
}

fn page_response(
    key: &str,
    extra: Option<(&str, &str)>,
    items: Vec<String>,
    more: bool,
    path: &str,
    params: &[(String, String)],
) -> Response {
    let mut body = serde_json::Map::new();
    if let Some((k, v)) = extra {
        body.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let last = items.last().cloned();
    body.insert(key.to_string(), serde_json::json!(items));
    let mut response = axum::Json(serde_json::Value::Object(body)).into_response();
    if more && let (Some(last), Some(n)) = (last, query_param(params, "n")) {
        let link = format!("<{path}?n={n}&last={last}>; rel=\"next\"");
        insert(response.headers_mut(), header::LINK, &link);
    }
    response
}

async fn catalog(
    state: &Arc<ServerState>,
    params: &[(String, String)],
) -> Result<Response, ApiError> {
    let state = state.clone();
    let names =
        blocking(move || Ok(state.catalog.get(state.source.as_ref())?.repositories())).await?;
    let (page, more) = paginate(names, params);
    Ok(page_response(
        "repositories",
        None,
        page,
        more,
        "/v2/_catalog",
        params,
    ))
}

async fn tags(
    state: &Arc<ServerState>,
    ns: Option<String>,
    name: &str,
    params: &[(String, String)],
) -> Result<Response, ApiError> {
    let state = state.clone();
    let repository = name.to_string();
    let tags = blocking(move || {
        let catalog = state.catalog.get(state.source.as_ref())?;
        catalog
            .tags(ns.as_deref(), &repository)
            .ok_or(ApiError::NameUnknown(repository))
    })
    .await?;
    let (page, more) = paginate(tags, params);
    let path = format!("/v2/{name}/tags/list");
    Ok(page_response(
        "tags",
        Some(("name", name)),
        page,
        more,
        &path,
        params,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_names_with_slashes() {
        assert_eq!(parse_route("/v2/").unwrap(), Route::Base);
        assert_eq!(
            parse_route("/v2/a/b/c/manifests/v1").unwrap(),
            Route::Manifest("a/b/c", "v1")
        );
        assert_eq!(
            parse_route("/v2/library/x/blobs/sha256:00").unwrap(),
            Route::Blob("library/x", "sha256:00")
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/").unwrap(),
            Route::UploadStart("a")
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/123").unwrap(),
            Route::Upload("a", "123")
        );
        assert_eq!(
            parse_route("/v2/a/b/tags/list").unwrap(),
            Route::Tags("a/b")
        );
        for bad in [
            "/v2/../etc/manifests/x",
            "/v2/a/../../b/blobs/sha256:1",
            "/v2/A/manifests/v1",
            "/v2/%2e%2e/manifests/v1",
            "/v2//manifests/v1",
        ] {
            assert!(
                matches!(parse_route(bad), Err(ApiError::NameInvalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=50-1000", 100).unwrap(), (50, 99));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
        ] {
            assert!(parse_range(bad, 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifest_media_type_reads_the_field_or_infers_it() {
        assert_eq!(
            manifest_media_type(br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#)
                .as_deref(),
            Some(oci::MEDIA_TYPE_MANIFEST)
        );
        assert_eq!(
            manifest_media_type(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#)
                .as_deref(),
            Some(oci::MEDIA_TYPE_DOCKER_LIST)
        );
        assert_eq!(manifest_media_type(br#"{"architecture":"amd64"}"#), None);
        assert_eq!(manifest_media_type(b"\x1f\x8b"), None);
    }
}
