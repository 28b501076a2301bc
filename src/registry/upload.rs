//! Pushes into the embedded registry: blob uploads, manifest puts, deletes.
//!
//! 1. `POST /v2/NAME/blobs/uploads/` either mounts a blob the registry already has
//!    (`?mount=&from=`), takes a whole blob at once (`?digest=`), or opens a session.
//! 2. `PATCH` appends a chunk (or docker's one streamed body) to the session; `PUT
//!    ?digest=` appends the last bytes and commits. Bytes go to a temp file of the
//!    push [`Store`] while being hashed ([`Store::blob_writer`]), on a blocking thread
//!    fed through a bounded channel: memory stays bounded whatever the blob size.
//! 3. Commit verifies the digest: on mismatch nothing is stored and the client gets
//!    `DIGEST_INVALID`.
//!    A session idle for [`SESSION_IDLE`] is dropped (its temp file with it) when the
//!    next one opens, and at most [`MAX_SESSIONS`] are open at once (`429
//!    TOOMANYREQUESTS` beyond): clients cannot hold disk and descriptors forever.
//! 4. `PUT /v2/NAME/manifests/REF` checks size, shape and that every referenced blob
//!    is present, stores the bytes exactly, and for a tag records the image in the
//!    store under the normalised reference of `NAME:TAG`.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::server::{
    DOCKER_CONTENT_DIGEST, ServerState, blocking, insert, is_valid_tag, manifest_media_type,
    parse_digest, query_param,
};
use crate::digest::Digest;
use crate::image::oci::{self, Descriptor};
use crate::image::store::{BlobWriter, Store};
use crate::spec::reference::Reference;

/// How long an upload may sit without a request before it is dropped.
pub(super) const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// How many uploads may be open at once.
pub(super) const MAX_SESSIONS: usize = 256;

/// Open upload sessions, by id.
pub(super) struct Uploads {
    store: Option<Store>,
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
}

/// One upload in progress.
struct Session {
    name: String,
    writer: Option<BlobWriter>,
    offset: u64,
    /// The last request that used it.
    touched: std::time::Instant,
}

impl Uploads {
    pub(super) fn new(store: Option<Store>) -> Self {
        Self {
            store,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn store(&self) -> Result<&Store, ApiError> {
        self.store
            .as_ref()
            .ok_or_else(|| ApiError::Unsupported("this registry is read-only".to_string()))
    }

    fn session(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Session>>, ApiError> {
        self.sessions
            .lock()
            .map_err(|_| ApiError::Internal("upload table poisoned".to_string()))?
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::UploadUnknown(id.to_string()))
    }

    /// Drop sessions idle for longer than `idle` (not those a request holds now), then
    /// add `session` unless `max` are still open.
    fn open(
        &self,
        id: String,
        session: Session,
        idle: std::time::Duration,
        max: usize,
    ) -> Result<(), ApiError> {
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| ApiError::Internal("upload table poisoned".to_string()))?;
        sessions.retain(|_, s| match s.try_lock() {
            Ok(s) => s.touched.elapsed() < idle,
            Err(_) => true,
        });
        if sessions.len() >= max {
            return Err(ApiError::TooManyUploads(sessions.len()));
        }
        sessions.insert(id, Arc::new(tokio::sync::Mutex::new(session)));
        Ok(())
    }

    fn remove(&self, id: &str) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(id);
        }
    }
}

/// Whether the registry can serve `digest` (from its source or its push store).
fn has_blob(state: &ServerState, digest: &Digest) -> Result<bool, ApiError> {
    if state.source.locate(digest)?.is_some() {
        return Ok(true);
    }
    Ok(state
        .config
        .push_store
        .as_ref()
        .is_some_and(|s| s.has_blob(digest)))
}

/// Stream `body` into `writer` on a blocking thread; returns the writer and the bytes written.
async fn append(writer: BlobWriter, body: Body) -> Result<(BlobWriter, u64), ApiError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let sink = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        let mut written = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            writer.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        Ok::<_, std::io::Error>((writer, written))
    });
    let mut stream = body.into_data_stream();
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(ApiError::UploadInvalid(format!("reading the body: {e}")));
                break;
            }
        }
    }
    drop(tx);
    let result = sink
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from);
    match failure {
        Some(e) => Err(e),
        None => result,
    }
}

fn upload_response(name: &str, id: &str, offset: u64, status: StatusCode) -> Response {
    let mut headers = HeaderMap::new();
    insert(
        &mut headers,
        header::LOCATION,
        &format!("/v2/{name}/blobs/uploads/{id}"),
    );
    insert(
        &mut headers,
        header::RANGE,
        &format!("0-{}", offset.saturating_sub(1)),
    );
    insert(&mut headers, "docker-upload-uuid", id);
    insert(&mut headers, header::CONTENT_LENGTH, "0");
    (status, headers).into_response()
}

fn created(location: &str, digest: &Digest) -> Response {
    let mut headers = HeaderMap::new();
    insert(&mut headers, header::LOCATION, location);
    insert(&mut headers, DOCKER_CONTENT_DIGEST, &digest.to_string());
    insert(&mut headers, header::CONTENT_LENGTH, "0");
    (StatusCode::CREATED, headers).into_response()
}

/// Commit `writer` as `expected`; a mismatch stores nothing.
async fn commit(writer: BlobWriter, expected: Digest) -> Result<Digest, ApiError> {
    blocking(move || Ok(writer.commit(Some(&expected), None)?.0)).await
}

/// `POST /v2/NAME/blobs/uploads/`: mount, monolithic upload, or a new session.
pub(super) async fn start(
    state: &Arc<ServerState>,
    name: &str,
    params: &[(String, String)],
    request: Request,
) -> Result<Response, ApiError> {
    let store = state.uploads.store()?.clone();
    if let Some(mount) = query_param(params, "mount") {
        let digest = parse_digest(mount)?;
        let lookup = digest.clone();
        let st = state.clone();
        if blocking(move || has_blob(&st, &lookup)).await? {
            return Ok(created(&format!("/v2/{name}/blobs/{digest}"), &digest));
        }
    }
    if let Some(digest) = query_param(params, "digest") {
        let digest = parse_digest(digest)?;
        let writer = blocking(move || Ok(store.blob_writer()?)).await?;
        let (writer, _) = append(writer, request.into_body()).await?;
        let digest = commit(writer, digest).await?;
        return Ok(created(&format!("/v2/{name}/blobs/{digest}"), &digest));
    }
    let writer = blocking(move || Ok(store.blob_writer()?)).await?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let session = Session {
        name: name.to_string(),
        writer: Some(writer),
        offset: 0,
        touched: std::time::Instant::now(),
    };
    state
        .uploads
        .open(id.clone(), session, SESSION_IDLE, MAX_SESSIONS)?;
    Ok(upload_response(name, &id, 0, StatusCode::ACCEPTED))
}

/// Check a chunk's `Content-Range: START-END` against the session's offset.
fn check_content_range(headers: &HeaderMap, offset: u64) -> Result<(), ApiError> {
    let Some(value) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let start = value
        .trim()
        .trim_start_matches("bytes ")
        .split('-')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| ApiError::UploadInvalid(format!("bad Content-Range {value:?}")))?;
    if start != offset {
        return Err(ApiError::RangeInvalid { size: offset });
    }
    Ok(())
}

/// `PATCH /v2/NAME/blobs/uploads/ID`: append a chunk or a streamed body.
pub(super) async fn patch(
    state: &Arc<ServerState>,
    name: &str,
    id: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let session = state.uploads.session(id)?;
    let mut session = session.lock().await;
    if session.name != name {
        return Err(ApiError::UploadUnknown(id.to_string()));
    }
    check_content_range(request.headers(), session.offset)?;
    let writer = session
        .writer
        .take()
        .ok_or_else(|| ApiError::UploadUnknown(id.to_string()))?;
    match append(writer, request.into_body()).await {
        Ok((writer, written)) => {
            session.writer = Some(writer);
            session.offset += written;
            session.touched = std::time::Instant::now();
            Ok(upload_response(
                name,
                id,
                session.offset,
                StatusCode::ACCEPTED,
            ))
        }
        Err(e) => {
            state.uploads.remove(id);
            Err(e)
        }
    }
}

/// `PUT /v2/NAME/blobs/uploads/ID?digest=`: the last bytes, then verify and store.
pub(super) async fn finish(
    state: &Arc<ServerState>,
    name: &str,
    id: &str,
    params: &[(String, String)],
    request: Request,
) -> Result<Response, ApiError> {
    let expected = parse_digest(
        query_param(params, "digest")
            .ok_or_else(|| ApiError::DigestInvalid("the digest parameter is missing".into()))?,
    )?;
    let session = state.uploads.session(id)?;
    let mut session = session.lock().await;
    if session.name != name {
        return Err(ApiError::UploadUnknown(id.to_string()));
    }
    let writer = session
        .writer
        .take()
        .ok_or_else(|| ApiError::UploadUnknown(id.to_string()))?;
    state.uploads.remove(id);
    let (writer, _) = append(writer, request.into_body()).await?;
    let digest = commit(writer, expected).await?;
    Ok(created(&format!("/v2/{name}/blobs/{digest}"), &digest))
}

/// `GET /v2/NAME/blobs/uploads/ID`: how far the upload got.
pub(super) fn status(state: &Arc<ServerState>, name: &str, id: &str) -> Result<Response, ApiError> {
    let session = state.uploads.session(id)?;
    let offset = session
        .try_lock()
        .map(|s| s.offset)
        .map_err(|_| ApiError::UploadInvalid("the upload is busy".to_string()))?;
    Ok(upload_response(name, id, offset, StatusCode::NO_CONTENT))
}

/// `DELETE /v2/NAME/blobs/uploads/ID`: drop the upload and its temp file.
pub(super) fn cancel(state: &Arc<ServerState>, id: &str) -> Result<Response, ApiError> {
    state.uploads.session(id)?;
    state.uploads.remove(id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Read at most `limit` bytes of `body`, or `None` when it is larger.
async fn read_limited(body: Body, limit: u64) -> Result<Option<Vec<u8>>, ApiError> {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::ManifestInvalid(format!("reading the body: {e}")))?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// `PUT /v2/NAME/manifests/REF`: verify and store a manifest, tag it.
pub(super) async fn put_manifest(
    state: &Arc<ServerState>,
    name: &str,
    reference: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let store = state.uploads.store()?.clone();
    let limit = state.config.max_manifest_bytes;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (tag, expected) = if reference.contains(':') {
        (None, Some(parse_digest(reference)?))
    } else if is_valid_tag(reference) {
        (Some(reference.to_string()), None)
    } else {
        return Err(ApiError::TagInvalid(reference.to_string()));
    };
    let bytes = read_limited(request.into_body(), limit)
        .await?
        .ok_or(ApiError::ManifestTooLarge(limit))?;
    let inferred = manifest_media_type(&bytes).ok_or_else(|| {
        ApiError::ManifestInvalid("not a schema 2 image manifest or index".to_string())
    })?;
    let media_type = match content_type {
        Some(c) if oci::is_index(&c) || oci::is_manifest(&c) => c,
        _ => inferred,
    };
    let digest = Digest::of(&bytes);
    if let Some(e) = &expected
        && *e != digest
    {
        return Err(ApiError::DigestInvalid(format!(
            "manifest hashed to {digest}, not {e}"
        )));
    }
    let parsed: oci::AnyManifest =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::ManifestInvalid(e.to_string()))?;
    let children: Vec<Digest> = parsed.children().iter().map(|d| d.digest.clone()).collect();
    let st = state.clone();
    let location = format!("/v2/{name}/manifests/{digest}");
    let name = name.to_string();
    let size = bytes.len() as u64;
    let stored = digest.clone();
    blocking(move || {
        for child in &children {
            if !has_blob(&st, child)? {
                return Err(ApiError::ManifestBlobUnknown(child.to_string()));
            }
        }
        store.put_bytes(&bytes)?;
        if let Some(tag) = tag {
            let reference: Reference = format!("{name}:{tag}").parse().map_err(
                |e: crate::spec::reference::InvalidReference| ApiError::NameInvalid(e.to_string()),
            )?;
            let descriptor = Descriptor::new(&media_type, stored, size);
            store.set_ref(&reference.to_string(), &descriptor)?;
        }
        Ok(())
    })
    .await?;
    Ok(created(&location, &digest))
}

/// `DELETE /v2/NAME/manifests/REF`: remove the names pointing at a manifest.
pub(super) async fn delete_manifest(
    state: &Arc<ServerState>,
    reference: &str,
) -> Result<Response, ApiError> {
    if !state.config.delete_enabled {
        return Err(ApiError::Unsupported("deletes are disabled".to_string()));
    }
    let store = state.uploads.store()?.clone();
    let digest = parse_digest(reference)?;
    let removed = blocking(move || {
        let mut removed = false;
        for (name, descriptor) in store.images()? {
            if descriptor.digest == digest {
                removed |= store.remove_ref(&name)?;
            }
        }
        Ok(removed)
    })
    .await?;
    if !removed {
        return Err(ApiError::ManifestUnknown(reference.to_string()));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `DELETE /v2/NAME/blobs/DIGEST`: remove a blob from the push store.
pub(super) async fn delete_blob(
    state: &Arc<ServerState>,
    digest: &str,
) -> Result<Response, ApiError> {
    if !state.config.delete_enabled {
        return Err(ApiError::Unsupported("deletes are disabled".to_string()));
    }
    let store = state.uploads.store()?.clone();
    let digest = parse_digest(digest)?;
    blocking(
        move || match fs_err::remove_file(store.blob_path(&digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ApiError::BlobUnknown(digest.to_string()))
            }
            Err(e) => Err(e.into()),
        },
    )
    .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(store: &Store, idle_for: std::time::Duration) -> Session {
        Session {
            name: "a/b".to_string(),
            writer: Some(store.blob_writer().unwrap()),
            offset: 0,
            touched: std::time::Instant::now() - idle_for,
        }
    }

    #[test]
    fn idle_sessions_are_dropped_and_open_ones_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let uploads = Uploads::new(Some(store.clone()));
        // Small enough to subtract from the clock on a machine that just booted.
        let idle = std::time::Duration::from_secs(5);
        let old = std::time::Duration::from_secs(10);
        uploads
            .open("old".into(), session(&store, old), idle, 2)
            .unwrap();
        uploads
            .open(
                "fresh".into(),
                session(&store, std::time::Duration::ZERO),
                idle,
                2,
            )
            .unwrap();
        assert!(uploads.session("old").is_err(), "the idle one was dropped");
        assert!(uploads.session("fresh").is_ok());
        uploads
            .open(
                "second".into(),
                session(&store, std::time::Duration::ZERO),
                idle,
                2,
            )
            .unwrap();
        let err = uploads
            .open(
                "third".into(),
                session(&store, std::time::Duration::ZERO),
                idle,
                2,
            )
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.code(), "TOOMANYREQUESTS");
        // A session a request holds is never dropped, however old.
        let held = uploads.session("fresh").unwrap();
        let mut guard = held.try_lock().unwrap();
        guard.touched = std::time::Instant::now() - old;
        uploads.remove("second");
        uploads
            .open(
                "fourth".into(),
                session(&store, std::time::Duration::ZERO),
                idle,
                2,
            )
            .unwrap();
        drop(guard);
        assert!(uploads.session("fresh").is_ok());
    }
}
