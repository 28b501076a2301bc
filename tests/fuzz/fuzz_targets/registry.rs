//! Fuzz the registry's request handling: the axum router, in process, with a push store.
//!
//! 1. The input is a few requests separated by NUL bytes. Each is `METHOD PATH` on
//!    the first line, then `name: value` header lines, an empty line and the body.
//!    `{loc}` in a path becomes the `Location` of the previous response, so upload
//!    sessions (start, patch, finish) can be chained.
//! 2. Each input gets a fresh server over one shared store: sessions do not leak
//!    from one input to the next, blobs pushed with a right digest stay.
//! 3. Every response must be a complete HTTP response: no panic, no hang (libFuzzer's
//!    `-timeout`), and no 500 for anything a client sent.
#![no_main]

use std::sync::{Arc, OnceLock};

use airlock::image::store::Store;
use airlock::registry::server::{RegistryServer, ServerConfig};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

struct World {
    runtime: tokio::runtime::Runtime,
    store: Store,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        World {
            runtime,
            store,
            _dir: dir,
        }
    })
}

/// One request from the input: `METHOD PATH\nheaders\n\nbody`.
fn request(raw: &[u8], location: &str) -> Option<Request<Body>> {
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&raw[..i], &raw[i + 2..]),
        None => (raw, &b""[..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let (method, path) = lines.next()?.split_once(' ')?;
    let path = path.replace("{loc}", location);
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(path);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let mut config = ServerConfig::writable(world.store.clone());
    config.delete_enabled = true;
    config.max_manifest_bytes = 64 << 10;
    let source: Arc<dyn airlock::image::BlobSource> = Arc::new(world.store.clone());
    let server = RegistryServer::new(source, config);
    world.runtime.block_on(async {
        let mut location = String::new();
        for raw in data.split(|b| *b == 0).take(8) {
            let Some(request) = request(raw, &location) else {
                continue;
            };
            let response = server
                .router()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            if let Some(l) = response.headers().get("location").and_then(|v| v.to_str().ok()) {
                location = l.to_string();
            }
            let body = response.into_body().collect().await;
            assert!(body.is_ok(), "the response body failed");
            assert_ne!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "a client's request gave 500: {:?}",
                body.map(|b| b.to_bytes())
            );
        }
    });
});
