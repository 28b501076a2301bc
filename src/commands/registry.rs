//! The registry verbs: `airlock registry serve`, `push`, `pull`, `login`, `logout`.
//!
//! `registry serve`:
//! 1. Open the store at `--root`, load the htpasswd file and the TLS identity (given
//!    with `--tls-cert/--tls-key`, or issued by the airlock CA in `--tls-ca-dir`),
//!    and bind `--addr`.
//! 2. Print the URL actually bound (port 0 picks one), so scripts can read it.
//! 3. Serve until Ctrl-C or SIGTERM, then finish the requests in flight and exit 0.
//!
//! `push` / `pull`: resolve the names, build a [`RegistryClient`] from the registry
//! flags and Docker's `config.json`, copy, show a progress bar, print the digest.
//! `login` / `logout`: check the credentials against the registry, then write or
//! remove them in `config.json` (mode 0600), where Docker finds them too.

use std::sync::Arc;

use anyhow::Context as _;

use std::io::BufRead as _;
use std::path::PathBuf;

use crate::commands::{RegistryArgs, bad_input};
use crate::digest::Digest;
use crate::image::oci::Platform;
use crate::image::store::Store;
use crate::printer::Printer;
use crate::registry::auth::{Credentials, DockerConfig};
use crate::registry::client::{ClientConfig, Mirror, RegistryClient, TransferReporter};
use crate::registry::htpasswd::Htpasswd;
use crate::registry::server::{RegistryServer, ServerConfig};
use crate::registry::tls;
use crate::remote::Secret;
use crate::settings::Settings;
use crate::spec::reference::Reference;

/// Registry subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Serve the local store over the OCI distribution API.
    ///
    /// Example: `airlock registry serve --addr 198.18.0.1:5000 --tls-ca-dir /etc/airlock/ca --read-only`
    Serve(ServeArgs),
}

/// Flags of `airlock registry serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub addr: String,
    /// Refuse pushes and deletes.
    #[arg(long)]
    pub read_only: bool,
    /// Allow DELETE of manifests and blobs.
    #[arg(long, conflicts_with = "read_only")]
    pub enable_delete: bool,
    /// Require basic auth from this htpasswd file (bcrypt hashes, `htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM; needs --tls-key).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_ca_dir"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate issued by the airlock CA in DIR (created there,
    /// valid 100 years, when missing); clients trust DIR/ca.pem.
    #[arg(long, value_name = "DIR")]
    pub tls_ca_dir: Option<PathBuf>,
    /// Names and addresses the issued certificate is valid for (repeatable; default:
    /// the --addr IP, or localhost and 127.0.0.1 when it binds every address).
    #[arg(long, value_name = "NAME|IP", requires = "tls_ca_dir")]
    pub tls_name: Vec<String>,
}

/// Run a registry subcommand.
pub async fn run(
    cmd: RegistryCommand,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Serve(args) => serve(args, settings, printer).await,
    }
}

async fn serve(args: ServeArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = args.addr.parse().map_err(|e| {
        bad_input(format!(
            "--addr {:?}: {e} (expected IP:PORT, e.g. 0.0.0.0:5000)",
            args.addr
        ))
    })?;
    let store = Store::open(&settings.root)
        .with_context(|| format!("opening the store {}", settings.root.display()))?;
    let mut config = if args.read_only {
        ServerConfig::read_only()
    } else {
        ServerConfig::writable(store.clone())
    };
    config.delete_enabled = args.enable_delete;
    if let Some(path) = &args.htpasswd {
        config.htpasswd = Some(Arc::new(Htpasswd::load(path).map_err(bad_input)?));
    }
    config.tls = tls_config(&args, addr, &printer)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    printer.result(format!("listening on {scheme}://{bound}"));
    RegistryServer::new(Arc::new(store), config)
        .serve(listener, shutdown_signal())
        .await
        .context("serving the registry")?;
    printer.status("registry stopped");
    Ok(())
}

/// The TLS configuration `serve` asked for: the given files, or a certificate the
/// airlock CA in `--tls-ca-dir` issues (the CA is made first when missing).
fn tls_config(
    args: &ServeArgs,
    addr: std::net::SocketAddr,
    printer: &Printer,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok(Some(tls::server_config(cert, key).map_err(bad_input)?));
    }
    let Some(dir) = &args.tls_ca_dir else {
        return Ok(None);
    };
    let now = std::time::SystemTime::now();
    let ca = if dir.join(tls::CA_CERT_FILE).exists() {
        tls::CertificateAuthority::load(dir).map_err(bad_input)?
    } else {
        let ca = tls::generate_ca(dir, now)?;
        printer.status(format!("created the airlock CA {}", ca.cert_path.display()));
        ca
    };
    let names = if args.tls_name.is_empty() {
        if addr.ip().is_unspecified() {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            vec![addr.ip().to_string()]
        }
    } else {
        args.tls_name.clone()
    };
    let server_dir = dir.join("server");
    let issued = tls::issue_server_cert(&ca, &names, &server_dir, now).map_err(bad_input)?;
    printer.status(format!(
        "serving a certificate for {} issued by {}",
        names.join(", "),
        ca.cert_path.display()
    ));
    Ok(Some(tls::server_config(
        &issued.cert_path,
        &issued.key_path,
    )?))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Where Docker keeps credentials: `--docker-config DIR` or `$DOCKER_CONFIG`, else
/// `~/.docker` of the current user.
#[derive(Clone, Debug, clap::Args)]
pub struct DockerConfigArgs {
    /// Directory holding Docker's config.json (default ~/.docker).
    #[arg(long, env = "DOCKER_CONFIG", value_name = "DIR")]
    pub docker_config: Option<PathBuf>,
}

impl DockerConfigArgs {
    /// The `config.json` path.
    pub fn path(&self) -> PathBuf {
        let dir = self.docker_config.clone().unwrap_or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| PathBuf::from("/root"), |u| u.dir)
                .join(".docker")
        });
        dir.join("config.json")
    }
}

/// Flags of `airlock push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Image in the local store.
    pub name: String,
    /// Where to push it (default: NAME itself), e.g. harbor.example/proj/cluster:v1.
    pub destination: Option<String>,
    /// Registry flags.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Credentials.
    #[command(flatten)]
    pub docker: DockerConfigArgs,
}

/// Flags of `airlock pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image to pull, e.g. harbor.example/proj/cluster:v1.
    pub name: String,
    /// Only these platforms of an index (repeatable, e.g. linux/amd64); default all.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Vec<String>,
    /// Registry flags.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Credentials.
    #[command(flatten)]
    pub docker: DockerConfigArgs,
}

/// Flags of `airlock login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Registry host, e.g. harbor.example or 127.0.0.1:5000.
    pub registry: String,
    /// User name.
    #[arg(short, long)]
    pub username: String,
    /// Read the password from standard input (the only way: never on the command line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry flags.
    #[command(flatten)]
    pub registry_args: RegistryArgs,
    /// Credentials.
    #[command(flatten)]
    pub docker: DockerConfigArgs,
}

/// Flags of `airlock logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// Registry host.
    pub registry: String,
    /// Credentials.
    #[command(flatten)]
    pub docker: DockerConfigArgs,
}

/// The client configuration from registry flags and Docker's config.
pub(crate) fn client_config(
    args: &RegistryArgs,
    docker: &DockerConfigArgs,
) -> anyhow::Result<ClientConfig> {
    let mirrors = args
        .registry_mirror
        .iter()
        .map(|m| Mirror::parse(m).map_err(bad_input))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ClientConfig {
        mirrors,
        insecure: args.insecure_registry.clone(),
        ca_certs: args.ca_cert.clone(),
        docker_config: Some(docker.path()),
        retries: 3,
    })
}

fn parse_reference(name: &str) -> anyhow::Result<Reference> {
    name.parse::<Reference>()
        .map_err(|e| bad_input(format!("image name {e}")))
}

/// A progress bar over all bytes moved.
struct ProgressBar {
    bar: indicatif::ProgressBar,
}

impl ProgressBar {
    fn new(verb: &str) -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(verb.to_string());
        Self { bar }
    }
}

impl TransferReporter for ProgressBar {
    fn blob_started(&self, _digest: &Digest, size: u64) {
        self.bar.inc_length(size);
    }

    fn blob_progress(&self, _digest: &Digest, bytes: u64) {
        self.bar.inc(bytes);
    }
}

/// `airlock push NAME [DEST]`.
pub async fn push(args: PushArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = Store::open(&settings.root)?;
    let local = parse_reference(&args.name)?;
    let descriptor = store
        .resolve(&local.to_string())
        .or_else(|_| store.resolve(&args.name))
        .map_err(bad_input)?;
    let destination = match &args.destination {
        Some(d) => parse_reference(d)?,
        None => local,
    };
    let bar = std::sync::Arc::new(ProgressBar::new("pushing"));
    let client = RegistryClient::new(client_config(&args.registry, &args.docker)?)?
        .with_reporter(bar.clone());
    let summary = client
        .push(&store, &descriptor, &destination)
        .await
        .with_context(|| format!("pushing {} to {destination}", args.name))?;
    bar.bar.finish_and_clear();
    printer.status(format!(
        "pushed {destination}: {} uploaded ({} bytes), {} already there",
        summary.uploaded, summary.bytes, summary.skipped
    ));
    printer.result(descriptor.digest.to_string());
    Ok(())
}

/// `airlock pull NAME`.
pub async fn pull(args: PullArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = Store::open(&settings.root)?;
    // Held until the image is named, so `airlock prune` cannot delete blobs in between.
    let _gc = crate::image::gc::GcLock::shared(&store)
        .with_context(|| format!("locking the image store {}", settings.root.display()))?;
    let reference = parse_reference(&args.name)?;
    let platforms = args
        .platform
        .iter()
        .map(|p| {
            let mut parts = p.split('/');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                    Ok(Platform {
                        os: os.to_string(),
                        architecture: arch.to_string(),
                        variant: variant.map(str::to_string),
                    })
                }
                _ => Err(bad_input(format!(
                    "--platform {p:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64"
                ))),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bar = std::sync::Arc::new(ProgressBar::new("pulling"));
    let client = RegistryClient::new(client_config(&args.registry, &args.docker)?)?
        .with_reporter(bar.clone());
    let descriptor = client
        .pull(&store, &reference, &platforms)
        .await
        .with_context(|| format!("pulling {reference}"))?;
    bar.bar.finish_and_clear();
    store.set_ref(&reference.to_string(), &descriptor)?;
    printer.status(format!("pulled {reference}"));
    printer.result(descriptor.digest.to_string());
    Ok(())
}

/// `airlock login REGISTRY -u USER --password-stdin`.
pub async fn login(args: LoginArgs, _settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    if !args.password_stdin {
        return Err(bad_input(
            "give the password on standard input with --password-stdin (never as an argument)",
        ));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(bad_input("the password on standard input is empty"));
    }
    let host = registry_host(&args.registry);
    let credentials = Credentials {
        username: args.username.clone(),
        password: Secret::new(password),
    };
    let client = RegistryClient::new(client_config(&args.registry_args, &args.docker)?)?
        .with_credentials(&host, credentials.clone());
    client
        .check_login(&host)
        .await
        .with_context(|| format!("logging in to {host} as {}", args.username))?;
    let path = args.docker.path();
    let mut config = DockerConfig::load(&path).map_err(bad_input)?;
    config.set(&host, &credentials);
    config.save()?;
    printer.status(format!(
        "login succeeded; credentials saved in {}",
        path.display()
    ));
    Ok(())
}

/// `airlock logout REGISTRY`.
pub async fn logout(
    args: LogoutArgs,
    _settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    let host = registry_host(&args.registry);
    let path = args.docker.path();
    let mut config = DockerConfig::load(&path).map_err(bad_input)?;
    if config.remove(&host) {
        config.save()?;
        printer.status(format!(
            "removed the credentials of {host} from {}",
            path.display()
        ));
    } else {
        printer.status(format!("no credentials for {host} in {}", path.display()));
    }
    Ok(())
}

/// `https://host/` and `host` both name `host`.
fn registry_host(registry: &str) -> String {
    let rest = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    rest.split('/').next().unwrap_or(rest).to_string()
}
