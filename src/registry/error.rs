//! Errors of the embedded registry, and their translation to the OCI error JSON.
//!
//! 1. Handlers return [`ApiError`], one variant per OCI error code they can produce.
//! 2. [`ApiError::into_response`] turns it into the status, the
//!    `{"errors":[{"code","message","detail"}]}` body and (for 401) the challenge, in
//!    this one place, so every handler answers the same way.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::image::store::StoreError;

/// An error the registry answers with, mapped to an OCI distribution error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No blob with that digest.
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    /// No manifest with that tag or digest.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// The repository is not known.
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    /// The repository name breaks the distribution grammar.
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    /// A tag breaks the distribution grammar.
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    /// A digest is malformed or does not match the content.
    #[error("{0}")]
    DigestInvalid(String),
    /// A manifest is malformed, too large, or references missing blobs.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// A manifest is larger than the registry accepts.
    #[error("manifest is larger than {0} bytes")]
    ManifestTooLarge(u64),
    /// A manifest references a blob the registry does not have.
    #[error("manifest references unknown blob {0}")]
    ManifestBlobUnknown(String),
    /// No upload session with that id.
    #[error("blob upload unknown: {0}")]
    UploadUnknown(String),
    /// An upload request is out of order or malformed.
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// Content length or size does not match.
    #[error("{0}")]
    SizeInvalid(String),
    /// A `Range` header cannot be satisfied.
    #[error("requested range not satisfiable (blob is {size} bytes)")]
    RangeInvalid {
        /// The blob's size, for `Content-Range: bytes */SIZE`.
        size: u64,
    },
    /// The request needs credentials, or the ones given are wrong.
    #[error("authentication required")]
    Unauthorized,
    /// The operation is not allowed on this registry (read-only, delete disabled).
    #[error("{0}")]
    Unsupported(String),
    /// A path this registry does not serve.
    #[error("not found")]
    NotFound,
    /// Too many uploads are open at once: finish or cancel some, then retry.
    #[error("too many uploads in progress ({0}); finish or cancel some and retry")]
    TooManyUploads(usize),
    /// The server failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The OCI error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BlobUnknown(_) => "BLOB_UNKNOWN",
            Self::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            Self::NameUnknown(_) | Self::NotFound => "NAME_UNKNOWN",
            Self::NameInvalid(_) => "NAME_INVALID",
            Self::TagInvalid(_) => "TAG_INVALID",
            Self::DigestInvalid(_) => "DIGEST_INVALID",
            Self::ManifestInvalid(_) | Self::ManifestTooLarge(_) => "MANIFEST_INVALID",
            Self::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            Self::UploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            Self::UploadInvalid(_) => "BLOB_UPLOAD_INVALID",
            Self::SizeInvalid(_) => "SIZE_INVALID",
            Self::RangeInvalid { .. } => "RANGE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Unsupported(_) => "UNSUPPORTED",
            Self::TooManyUploads(_) => "TOOMANYREQUESTS",
            Self::Internal(_) => "UNKNOWN",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BlobUnknown(_)
            | Self::ManifestUnknown(_)
            | Self::NameUnknown(_)
            | Self::UploadUnknown(_)
            | Self::NotFound => StatusCode::NOT_FOUND,
            Self::NameInvalid(_)
            | Self::TagInvalid(_)
            | Self::DigestInvalid(_)
            | Self::ManifestInvalid(_)
            | Self::ManifestBlobUnknown(_)
            | Self::UploadInvalid(_)
            | Self::SizeInvalid(_) => StatusCode::BAD_REQUEST,
            Self::RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::ManifestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyUploads(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DigestMismatch { .. } => Self::DigestInvalid(e.to_string()),
            StoreError::SizeMismatch { .. } => Self::SizeInvalid(e.to_string()),
            StoreError::BlobUnknown(d) => Self::BlobUnknown(d.to_string()),
            StoreError::ImageUnknown(n) => Self::ManifestUnknown(n),
            StoreError::Io(_) | StoreError::Corrupt { .. } => Self::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("registry: {self}");
        }
        let body = serde_json::json!({
            "errors": [{ "code": self.code(), "message": self.to_string(), "detail": null }]
        });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if matches!(self, Self::Unauthorized) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"airlock\""),
            );
        }
        if let Self::RangeInvalid { size } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        response
    }
}
