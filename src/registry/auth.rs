//! Registry credentials and auth challenges, shared with Docker's `config.json`.
//!
//! 1. [`DockerConfig::load`] reads `~/.docker/config.json` (path given by the app);
//!    [`DockerConfig::credentials`] finds the `auths` entry of a registry host, however
//!    Docker spelled its key (`host`, `https://host/v1/`, `index.docker.io` for Docker Hub).
//! 2. [`DockerConfig::set`] / [`DockerConfig::remove`] change one entry and
//!    [`DockerConfig::save`] writes the file atomically with mode 0600, keeping every
//!    other field as it was.
//! 3. Credential helpers: [`DockerConfig::helper`] names the helper for a host
//!    (`credHelpers[host]`, else `credsStore`), and [`helper_credentials`] runs
//!    `docker-credential-NAME get` with the server on stdin (never in argv) and
//!    reads its JSON answer. The client asks, in order: `airlock login` overrides,
//!    `credHelpers`, an `auths` entry holding credentials, `credsStore`.
//! 4. [`Challenge::parse`] reads a `WWW-Authenticate` header (`Basic` or `Bearer` with
//!    realm, service, scope), which the client answers.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::remote::Secret;
use crate::spec::reference::DEFAULT_DOMAIN;

/// The key Docker uses for Docker Hub in `config.json`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: Secret,
}

impl Credentials {
    /// `Basic base64(user:password)`.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!("Basic {}", STANDARD.encode(raw))
    }
}

/// Errors reading or writing `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not the JSON Docker writes.
    #[error("{path}: not a Docker config file: {reason} (fix or move it away)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Why a Docker credential helper gave no credentials.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper could not be run.
    #[error(
        "cannot run `{program}` (named by {field} in {config}): {source}; install it or remove that setting"
    )]
    Spawn {
        /// `docker-credential-NAME`.
        program: String,
        /// `credsStore` or `credHelpers`.
        field: &'static str,
        /// The config file.
        config: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The helper failed (other than "not found").
    #[error("`{program} get` for {server} failed: {message}")]
    Failed {
        /// `docker-credential-NAME`.
        program: String,
        /// The server asked for.
        server: String,
        /// Its first line of output, or how it ended.
        message: String,
    },
    /// The helper answered something that is not its JSON.
    #[error("`{program} get` for {server} did not answer with credentials JSON")]
    Output {
        /// `docker-credential-NAME`.
        program: String,
        /// The server asked for.
        server: String,
    },
    /// The helper holds an identity (OAuth refresh) token, which airlock does not use.
    #[error(
        "`{program}` holds an identity token for {server}, which airlock cannot use; run `airlock login {server}`"
    )]
    IdentityToken {
        /// `docker-credential-NAME`.
        program: String,
        /// The server asked for.
        server: String,
    },
}

/// A credential helper to ask for one host, from `config.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Helper {
    /// `docker-credential-NAME`.
    pub program: String,
    /// The setting that named it: `credHelpers` or `credsStore`.
    pub field: &'static str,
    /// The server to ask for (what Docker passes: `host[:port]`, or Docker Hub's key).
    pub server: String,
    /// The config file.
    pub config: PathBuf,
}

/// How long a helper may take (it may ask gpg or a keyring).
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Run `helper` (`PROGRAM get`, the server on stdin) and read its answer: `None`
/// when it has no credentials for the server.
pub async fn helper_credentials(helper: &Helper) -> Result<Option<Credentials>, HelperError> {
    use tokio::io::AsyncWriteExt as _;
    let failed = |message: String| HelperError::Failed {
        program: helper.program.clone(),
        server: helper.server.clone(),
        message,
    };
    let mut child = tokio::process::Command::new(&helper.program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HelperError::Spawn {
            program: helper.program.clone(),
            field: helper.field,
            config: helper.config.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(helper.server.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("no answer in {} s", HELPER_TIMEOUT.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        // The first line only: helpers print one-line errors, and nothing they print
        // on failure is a secret.
        let first = said.lines().next().unwrap_or_default().trim().to_string();
        return Err(failed(if first.is_empty() {
            output.status.to_string()
        } else {
            first
        }));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: Answer =
        serde_json::from_slice(&output.stdout).map_err(|_| HelperError::Output {
            program: helper.program.clone(),
            server: helper.server.clone(),
        })?;
    // Older helpers (docker-credential-pass 0.6) answer "not found" with empty fields.
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    if answer.username == "<token>" {
        return Err(HelperError::IdentityToken {
            program: helper.program.clone(),
            server: helper.server.clone(),
        });
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: Secret::new(answer.secret),
    }))
}

/// Docker's `config.json`, kept as JSON so fields airlock does not know survive a save.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    path: PathBuf,
    json: serde_json::Map<String, serde_json::Value>,
}

/// The host part of a `config.json` key: `https://host/v1/` and `host` both give `host`.
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Hosts that mean Docker Hub.
fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        DEFAULT_DOMAIN | "index.docker.io" | "registry-1.docker.io"
    )
}

impl DockerConfig {
    /// Read `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let io_err = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let json = match fs_err::read(path) {
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        reason: "not a JSON object".to_string(),
                    });
                }
                Err(e) => {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    });
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::Map::new(),
            Err(e) => return Err(io_err(e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            json,
        })
    }

    /// The credentials stored for registry `host` (`HOST[:PORT]`), if any.
    pub fn credentials(&self, host: &str) -> Option<Credentials> {
        let auths = self.json.get("auths")?.as_object()?;
        let (_, entry) = auths.iter().find(|(key, _)| {
            let k = key_host(key);
            k == host || (is_docker_hub(k) && is_docker_hub(host))
        })?;
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|v| v.as_str()),
            entry.get("password").and_then(|v| v.as_str()),
        ) {
            return Some(Credentials {
                username: u.to_string(),
                password: Secret::new(p),
            });
        }
        let auth = entry.get("auth")?.as_str()?;
        let decoded = String::from_utf8(STANDARD.decode(auth).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some(Credentials {
            username: user.to_string(),
            password: Secret::new(password),
        })
    }

    /// The credential helper for registry `host`: `credHelpers[host]`, else
    /// `credsStore` (an empty name means none).
    pub fn helper(&self, host: &str) -> Option<Helper> {
        let named = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_str())
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        let per_host = self
            .json
            .get("credHelpers")
            .and_then(|h| h.as_object())
            .and_then(|h| {
                named(
                    h.iter()
                        .find(|(key, _)| {
                            let k = key_host(key);
                            k == host || (is_docker_hub(k) && is_docker_hub(host))
                        })
                        .map(|(_, v)| v),
                )
            });
        let (name, field) = match per_host {
            Some(n) => (n, "credHelpers"),
            None => (named(self.json.get("credsStore"))?, "credsStore"),
        };
        Some(Helper {
            program: format!("docker-credential-{name}"),
            field,
            server: Self::key_for(host),
            config: self.path.clone(),
        })
    }

    fn key_for(host: &str) -> String {
        if is_docker_hub(host) {
            DOCKER_HUB_KEY.to_string()
        } else {
            host.to_string()
        }
    }

    /// Store `credentials` for `host`, replacing what was there.
    pub fn set(&mut self, host: &str, credentials: &Credentials) {
        self.remove(host);
        let raw = format!("{}:{}", credentials.username, credentials.password.expose());
        let auths = self
            .json
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if !auths.is_object() {
            *auths = serde_json::Value::Object(serde_json::Map::new());
        }
        if let Some(map) = auths.as_object_mut() {
            map.insert(
                Self::key_for(host),
                serde_json::json!({ "auth": STANDARD.encode(raw) }),
            );
        }
    }

    /// Forget the credentials of `host`; returns whether there were any.
    pub fn remove(&mut self, host: &str) -> bool {
        let Some(auths) = self.json.get_mut("auths").and_then(|a| a.as_object_mut()) else {
            return false;
        };
        let before = auths.len();
        auths.retain(|key, _| {
            let k = key_host(key);
            !(k == host || (is_docker_hub(k) && is_docker_hub(host)))
        });
        auths.len() != before
    }

    /// Write the file atomically, readable by its owner only.
    pub fn save(&self) -> Result<(), ConfigError> {
        let io_err = |source| ConfigError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs_err::create_dir_all(dir).map_err(io_err)?;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
        let mut bytes = serde_json::to_vec_pretty(&self.json).unwrap_or_default();
        bytes.push(b'\n');
        io::Write::write_all(&mut tmp, &bytes).map_err(io_err)?;
        tmp.as_file().sync_all().map_err(io_err)?;
        tmp.persist(&self.path).map_err(|e| io_err(e.error))?;
        Ok(())
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter, if given.
        service: Option<String>,
        /// `scope` parameter, if given.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parse a header value; `None` for schemes airlock does not speak.
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let params = parse_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Self::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Self::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            None
        }
    }
}

/// `k="v",k2=v2` with quoted values that may hold commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_keep_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn config_round_trips_and_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs_err::write(
            &path,
            r#"{"credsStore":"","auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let mut config = DockerConfig::load(&path).unwrap();
        let hub = config.credentials("docker.io").unwrap();
        assert_eq!((hub.username.as_str(), hub.password.expose()), ("u", "p"));
        let creds = Credentials {
            username: "alice".into(),
            password: Secret::new("s3cret:x"),
        };
        config.set("127.0.0.1:5000", &creds);
        config.save().unwrap();
        let mode = fs_err::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut again = DockerConfig::load(&path).unwrap();
        assert_eq!(again.credentials("127.0.0.1:5000"), Some(creds));
        assert!(again.json.contains_key("credsStore"));
        assert!(again.remove("127.0.0.1:5000"));
        assert!(!again.remove("127.0.0.1:5000"));
        assert_eq!(again.credentials("127.0.0.1:5000"), None);
    }
}
