//! The client's Bearer token flow, end to end: airlock's registry behind a gate that
//! answers `401` with a `Bearer` challenge (realm, service, scope) the way Docker Hub
//! and Harbor do, and a token service that hands out opaque tokens for a scope to a
//! user with the right password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock::image::store::Store;
use airlock::registry::auth::Credentials;
use airlock::registry::client::{ClientConfig, ClientError, RegistryClient};
use airlock::registry::server::{RegistryServer, ServerConfig};
use airlock::remote::Secret;
use airlock::spec::reference::Reference;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::cluster;

const USER: &str = "tina";
const PASSWORD: &str = "token-pass-3";

/// The token service and the gate in front of the registry.
#[derive(Default)]
struct Tokens {
    /// `http://ADDR/token`.
    realm: Mutex<String>,
    /// Token -> the scope it grants.
    issued: Mutex<HashMap<String, String>>,
    /// Every scope asked for, in order.
    requests: Mutex<Vec<String>>,
    /// Blob upload PUTs let through the gate so far.
    puts: Mutex<usize>,
    /// At this PUT every token expires (the PUT gets `401`).
    expire_at_put: Mutex<Option<usize>>,
}

/// `GET /token?service=..&scope=..`: a token for the scope, to the right user only.
async fn token(State(tokens): State<Arc<Tokens>>, request: Request) -> Response {
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let scope = query.get("scope").cloned().unwrap_or_default();
    tokens.requests.lock().unwrap().push(scope.clone());
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized || query.get("service").map(String::as_str) != Some("airlock-test") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let value = format!("opaque-{}", hex::encode(rand::random::<[u8; 12]>()));
    tokens.issued.lock().unwrap().insert(value.clone(), scope);
    axum::Json(serde_json::json!({ "token": value, "expires_in": 300 })).into_response()
}

/// The repository and the scope a registry request needs.
fn needed_scope(request: &Request) -> Option<String> {
    let path = request.uri().path().strip_prefix("/v2/")?;
    let name = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .find_map(|marker| path.find(marker).map(|at| &path[..at]))?;
    let actions = if matches!(request.method().as_str(), "GET" | "HEAD") {
        "pull"
    } else {
        "pull,push"
    };
    Some(format!("repository:{name}:{actions}"))
}

/// Let a request through only with a Bearer token granting what it needs.
async fn gate(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    let needed = needed_scope(&request);
    let granted = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| tokens.issued.lock().unwrap().get(t).cloned());
    let allowed = match (&granted, &needed) {
        (Some(_), None) => true,
        (Some(granted), Some(needed)) => {
            granted == needed || (needed.ends_with(":pull") && granted.ends_with(":pull,push"))
        }
        (None, _) => false,
    };
    let is_upload = request.method() == "PUT" && request.uri().path().contains("/blobs/uploads/");
    if allowed && is_upload {
        let mut puts = tokens.puts.lock().unwrap();
        *puts += 1;
        if Some(*puts) == *tokens.expire_at_put.lock().unwrap() {
            tokens.issued.lock().unwrap().clear();
            drop(puts);
            return challenge(&tokens, needed);
        }
    }
    if allowed {
        return next.run(request).await;
    }
    challenge(&tokens, needed)
}

/// `401` with the Bearer challenge for `needed`.
fn challenge(tokens: &Tokens, needed: Option<String>) -> Response {
    let realm = tokens.realm.lock().unwrap().clone();
    let mut challenge = format!("Bearer realm=\"{realm}\",service=\"airlock-test\"");
    if let Some(scope) = needed {
        challenge.push_str(&format!(",scope=\"{scope}\""));
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#,
    )
        .into_response()
}

/// Serve `store` (writable) behind the gate, with the token service at `/token`.
async fn serve_gated(store: &Store) -> (String, Arc<Tokens>, tokio::task::JoinHandle<()>) {
    let tokens = Arc::new(Tokens::default());
    let registry = RegistryServer::new(
        Arc::new(store.clone()),
        ServerConfig::writable(store.clone()),
    )
    .router()
    .layer(axum::middleware::from_fn_with_state(tokens.clone(), gate));
    let app = axum::Router::new()
        .route("/token", axum::routing::get(token))
        .with_state(tokens.clone())
        .fallback_service(registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    *tokens.realm.lock().unwrap() = format!("http://{addr}/token");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, tokens, task)
}

fn client_as(host: &str, password: Option<&str>) -> RegistryClient {
    let client = RegistryClient::new(ClientConfig {
        retries: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    match password {
        Some(p) => client.with_credentials(
            host,
            Credentials {
                username: USER.to_string(),
                password: Secret::new(p),
            },
        ),
        None => client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gets_bearer_tokens_for_pull_and_push_scopes() {
    let Some(c) = cluster() else { return };
    let (addr, tokens, server) = serve_gated(&c.store).await;
    let reference: Reference = format!("{addr}/library/busybox:1.36").parse().unwrap();

    let pulled = tempfile::tempdir().unwrap();
    let store = Store::open(pulled.path()).unwrap();
    let descriptor = client_as(&addr, Some(PASSWORD))
        .pull(&store, &reference, &[])
        .await
        .unwrap();
    assert_eq!(descriptor.digest.to_string(), c.layout.manifest_digest);
    // one token for the repository, reused for the manifest and every blob
    assert_eq!(
        *tokens.requests.lock().unwrap(),
        vec!["repository:library/busybox:pull".to_string()]
    );

    // pushing asks again, for pull and push
    let destination: Reference = format!("{addr}/team/demo:v1").parse().unwrap();
    let cluster = c.store.resolve("docker.io/library/demo:v1").unwrap();
    let summary = client_as(&addr, Some(PASSWORD))
        .push(&c.store, &cluster, &destination)
        .await
        .unwrap();
    assert!(summary.uploaded + summary.skipped > 0, "{summary:?}");
    assert!(
        tokens
            .requests
            .lock()
            .unwrap()
            .contains(&"repository:team/demo:pull,push".to_string()),
        "{:?}",
        tokens.requests.lock().unwrap()
    );
    let back = tempfile::tempdir().unwrap();
    let again = client_as(&addr, Some(PASSWORD))
        .pull(&Store::open(back.path()).unwrap(), &destination, &[])
        .await
        .unwrap();
    assert_eq!(again.digest, c.index_digest);

    for password in [None, Some("wrong")] {
        let fresh = tempfile::tempdir().unwrap();
        let err = client_as(&addr, password)
            .pull(&Store::open(fresh.path()).unwrap(), &reference, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Unauthorized { .. }),
            "{password:?}: {err}"
        );
        assert!(!err.to_string().contains("wrong"), "password leaked: {err}");
    }
    server.abort();
}

/// Issue 4: a token that expires in the middle of a push (the registry answers a
/// blob PUT with `401`) is renewed and the blob is sent again, whole: the file is
/// opened afresh for the second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_push_is_renewed_and_the_blob_sent_again() {
    let Some(c) = cluster() else { return };
    let target = tempfile::tempdir().unwrap();
    let target_store = Store::open(target.path()).unwrap();
    let (addr, tokens, server) = serve_gated(&target_store).await;
    *tokens.expire_at_put.lock().unwrap() = Some(2);
    let destination: Reference = format!("{addr}/team/expiry:v1").parse().unwrap();
    let cluster = c.store.resolve("docker.io/library/demo:v1").unwrap();
    let summary = client_as(&addr, Some(PASSWORD))
        .push(&c.store, &cluster, &destination)
        .await
        .unwrap();
    let puts = *tokens.puts.lock().unwrap();
    assert!(
        puts > 2,
        "the token never expired: {puts} PUTs, {summary:?}"
    );
    let asked = tokens.requests.lock().unwrap().clone();
    assert_eq!(
        asked
            .iter()
            .filter(|s| *s == "repository:team/expiry:pull,push")
            .count(),
        2,
        "{asked:?}"
    );
    // Every blob arrived whole: the registry verified each digest, and a pull
    // verifies them again.
    let back = tempfile::tempdir().unwrap();
    let again = client_as(&addr, Some(PASSWORD))
        .pull(&Store::open(back.path()).unwrap(), &destination, &[])
        .await
        .unwrap();
    assert_eq!(again.digest, c.index_digest);
    server.abort();
}
