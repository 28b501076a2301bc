//! Remote build sources: the files behind `ADD https://...` and `APP NAME https://...`.
//!
//! 1. Each URL has a cache entry, `STORE/cache/downloads/<sha256 of the URL>.json`,
//!    holding the `ETag`, `Last-Modified`, digest and size of what was fetched last.
//! 2. With an entry whose blob is still in the store, the request carries
//!    `If-None-Match` / `If-Modified-Since`; `304 Not Modified` means the stored blob.
//! 3. Otherwise the body is streamed into the store, hashed as it comes. A body whose
//!    length differs from `Content-Length` is refused, and so is one whose digest is
//!    not the one the Kubefile pinned (`ADD --checksum=sha256:...`).
//! 4. The caller adds the blob to the rootfs under the URL's last path segment.
//!
//! Proxies come from the caller, never from the environment.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::store::{self, Store, StoreError};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The URL does not parse.
    #[error("`{url}` is not a URL: {reason}")]
    BadUrl {
        /// As written.
        url: String,
        /// Why.
        reason: String,
    },
    /// The request failed (connection, TLS, reading the body).
    #[error("downloading {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("downloading {url}: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The body was cut short or too long.
    #[error("downloading {url}: got {got} bytes, but the server announced {expected}")]
    Length {
        /// The URL.
        url: String,
        /// `Content-Length`.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The content is not what the Kubefile pinned.
    #[error("downloading {url}: the content is {got}, but the Kubefile expects {expected}")]
    Checksum {
        /// The URL.
        url: String,
        /// Pinned.
        expected: Digest,
        /// Received.
        got: Digest,
    },
    /// Writing the blob failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fetched file, in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The blob holding it.
    pub path: PathBuf,
    /// The URL's last path segment (`download` when it has none).
    pub file_name: String,
    /// Whether the server said the cached copy is current (`304`).
    pub cached: bool,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    digest: Digest,
    size: u64,
}

/// Fetches remote build sources over HTTP(S), with a cache in the store.
#[derive(Clone, Debug)]
pub struct Downloader {
    client: reqwest::Client,
}

impl Downloader {
    /// A downloader that trusts the system's CA roots and uses no proxy.
    pub fn new() -> Result<Self, DownloadError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| DownloadError::Http {
                url: String::new(),
                source,
            })?;
        Ok(Self { client })
    }

    /// Fetch `url` into `store` (or confirm the cached copy), checking it against
    /// `expected` when given.
    pub async fn fetch(
        &self,
        store: &Store,
        url: &str,
        expected: Option<&Digest>,
    ) -> Result<Downloaded, DownloadError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let file_name = parsed
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|s| !s.is_empty())
            .unwrap_or("download")
            .to_string();
        let entry_path = store
            .root()
            .join("cache/downloads")
            .join(format!("{}.json", Digest::of(url.as_bytes()).hex()));
        let entry: Option<Entry> = fs::read(&entry_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|e: &Entry| e.url == url && store.has_blob(&e.digest));
        let http = |source| DownloadError::Http {
            url: url.to_string(),
            source,
        };
        let mut request = self.client.get(parsed.clone());
        if let Some(e) = &entry {
            if let Some(etag) = &e.etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(modified) = &e.last_modified {
                request = request.header(reqwest::header::IF_MODIFIED_SINCE, modified);
            }
        }
        let mut response = request.send().await.map_err(http)?;
        let done = |digest: Digest, size: u64, cached: bool| -> Result<Downloaded, DownloadError> {
            if let Some(expected) = expected
                && *expected != digest
            {
                return Err(DownloadError::Checksum {
                    url: url.to_string(),
                    expected: expected.clone(),
                    got: digest,
                });
            }
            Ok(Downloaded {
                path: store.blob_path(&digest),
                digest,
                size,
                file_name: file_name.clone(),
                cached,
            })
        };
        if response.status() == reqwest::StatusCode::NOT_MODIFIED
            && let Some(e) = entry
        {
            return done(e.digest, e.size, true);
        }
        if !response.status().is_success() {
            return Err(DownloadError::Status {
                url: url.to_string(),
                status: response.status(),
            });
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        let announced = response.content_length();
        let mut blob = store.blob_writer()?;
        let mut got = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            blob.write_all(&chunk).map_err(StoreError::from)?;
            got += chunk.len() as u64;
        }
        if let Some(expected) = announced
            && expected != got
        {
            return Err(DownloadError::Length {
                url: url.to_string(),
                expected,
                got,
            });
        }
        let (digest, size) = blob.commit(None, None)?;
        if let Some(dir) = entry_path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        // The cache saves a transfer; a build does not fail because it cannot be written.
        let _ = store::write_atomic(
            &entry_path,
            &store::to_json(&Entry {
                url: url.to_string(),
                etag,
                last_modified,
                digest: digest.clone(),
                size,
            }),
        );
        done(digest, size, false)
    }
}
