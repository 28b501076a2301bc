//! `airlock agent ...`: what airlock runs on a host, as the node agent.
//!
//! The install engine puts the airlock binary on every host and calls these
//! subcommands over SSH; they are hidden from `--help` because people never need them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::image::cluster::{ClusterImage, unpack_rootfs};
use crate::image::oci::Platform;
use crate::image::store::Store;
use crate::install::render::{RenderInput, apply_config, render_template};
use crate::printer::Printer;
use crate::settings::Settings;

/// Agent subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Print the agent's version.
    Version,
    /// Unpack the rootfs of an image in the store (`--root`) into DEST, replacing
    /// what was there only once the new tree is complete.
    Unpack {
        /// The image, as stored.
        name: String,
        /// Where the rootfs goes.
        #[arg(long)]
        dest: PathBuf,
    },
    /// Render the rootfs's `*.tmpl` files and apply `Config` documents, reading a
    /// JSON `RenderInput` (env and configs) on stdin.
    Render {
        /// The unpacked rootfs.
        #[arg(long)]
        rootfs: PathBuf,
    },
    /// Wait until a registry answers `GET /v2/` at ADDR.
    WaitRegistry {
        /// `HOST:PORT` of the registry.
        #[arg(long)]
        addr: String,
        /// It speaks HTTPS (the certificate is not checked: this only waits for it).
        #[arg(long)]
        https: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Run the API server load balancer (on workers) until SIGINT or SIGTERM.
    Lb(Box<super::agent_lb::LbArgs>),
    /// Receive blobs into a store while passing them on to the next node (fan-out).
    /// Reads the one-time token and the wanted blobs on stdin; prints one status
    /// line per event on stdout (see `airlock::distribute::protocol`).
    Relay {
        /// Where to listen (`0.0.0.0:0` picks a free port, printed on stdout).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The node's store (`<data root>/store`).
        #[arg(long)]
        store: PathBuf,
        /// Read the token from stdin (the only way: tokens never go in argv).
        #[arg(long, required = true)]
        token_stdin: bool,
        /// Give up when nobody connects, or nothing arrives, for this many seconds.
        #[arg(long, default_value_t = 60)]
        idle_timeout: u64,
        /// Limit in seconds for connecting to the next node.
        #[arg(long, default_value_t = 5)]
        connect_timeout: u64,
    },
    /// Ship files to hosts as blobs with the fan-out (the operator's side), after
    /// putting this binary on each; for benchmarks and debugging.
    FanOut(FanOutArgs),
}

/// Arguments of `airlock agent fan-out`.
#[derive(Debug, clap::Args)]
pub struct FanOutArgs {
    /// Host addresses, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    hosts: Vec<std::net::IpAddr>,
    /// SSH login user.
    #[arg(long, default_value = "root")]
    user: String,
    /// Private key file for SSH.
    #[arg(long)]
    key: PathBuf,
    /// airlock's known-hosts file (trust on first use).
    #[arg(long)]
    known_hosts: PathBuf,
    /// Data root on the hosts.
    #[arg(long, default_value = "/var/lib/airlock")]
    data_root: String,
    /// The files to ship; each lands in the store as the blob of its digest.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Run an agent subcommand.
pub async fn run(cmd: AgentCommand, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Version => printer.result(env!("CARGO_PKG_VERSION")),
        AgentCommand::Unpack { name, dest } => {
            unpack(settings, &name, &dest)?;
            printer.status(format!("unpacked {name} into {}", dest.display()));
        }
        AgentCommand::Render { rootfs } => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
            let input: RenderInput =
                serde_json::from_str(&input).context("reading the render input on stdin")?;
            let n = render(&rootfs, &input)?;
            printer.status(format!("rendered {n} files in {}", rootfs.display()));
        }
        AgentCommand::WaitRegistry {
            addr,
            https,
            timeout,
        } => {
            wait_registry(&addr, https, Duration::from_secs(timeout)).await?;
            printer.status(format!("registry at {addr} is ready"));
        }
        AgentCommand::Lb(args) => super::agent_lb::run(*args, printer).await?,
        AgentCommand::Relay {
            listen,
            store,
            token_stdin: _,
            idle_timeout,
            connect_timeout,
        } => relay(listen, store, idle_timeout, connect_timeout, printer).await?,
        AgentCommand::FanOut(args) => fan_out(args, printer).await?,
    }
    Ok(())
}

async fn relay(
    listen: std::net::SocketAddr,
    store: PathBuf,
    idle_timeout: u64,
    connect_timeout: u64,
    printer: Printer,
) -> anyhow::Result<()> {
    use crate::distribute::{protocol::RelayRequest, relay};
    let mut text = String::new();
    tokio::io::stdin()
        .read_to_string(&mut text)
        .await
        .context("reading the relay request on stdin")?;
    let request = RelayRequest::parse(&text).map_err(super::bad_input)?;
    let config = relay::RelayConfig {
        store,
        idle_timeout: Duration::from_secs(idle_timeout),
        connect_timeout: Duration::from_secs(connect_timeout),
    };
    let (_, failed) = relay::relay(listen, &request, &config, &mut |line| {
        printer.result(line.to_string());
    })
    .await?;
    if failed > 0 {
        anyhow::bail!("{failed} blobs did not arrive");
    }
    Ok(())
}

/// Files as blobs, by digest.
struct Files(std::collections::BTreeMap<crate::digest::Digest, (PathBuf, u64)>);

impl crate::image::BlobSource for Files {
    fn images(&self) -> std::io::Result<Vec<(String, crate::image::oci::Descriptor)>> {
        Ok(Vec::new())
    }

    fn locate(
        &self,
        digest: &crate::digest::Digest,
    ) -> std::io::Result<Option<crate::image::BlobLocation>> {
        Ok(self
            .0
            .get(digest)
            .map(|(path, size)| crate::image::BlobLocation {
                path: path.clone(),
                offset: 0,
                size: *size,
            }))
    }
}

async fn fan_out(args: FanOutArgs, printer: Printer) -> anyhow::Result<()> {
    use crate::distribute::{self, BlobNeed, FanOutHost, FanOutOptions};
    use crate::remote::known_hosts::KnownHosts;
    use crate::remote::ssh::{SshAuth, SshTarget};
    use crate::remote::{Remote, RemoteCommand, UploadSource};
    let mut files = std::collections::BTreeMap::new();
    for path in &args.files {
        let file = fs_err::File::open(path)?;
        let (digest, size) = crate::digest::digest_reader(std::io::BufReader::new(file))
            .with_context(|| format!("reading {}", path.display()))?;
        files.insert(digest, (path.clone(), size));
    }
    let needs: Vec<BlobNeed> = files
        .iter()
        .map(|(digest, (_, size))| BlobNeed {
            digest: digest.clone(),
            size: *size,
        })
        .collect();
    let known = KnownHosts::new(&args.known_hosts);
    let targets = args.hosts.iter().map(|ip| {
        let auth = SshAuth::Key {
            path: args.key.clone(),
            passphrase: None,
        };
        SshTarget::new(ip.to_string(), args.user.clone(), auth)
    });
    let remotes = crate::remote::fleet::Fleet::new(32)
        .connect(targets.collect(), &known)
        .await;
    let opts = FanOutOptions::for_data_root(&args.data_root);
    let me = std::env::current_exe().context("locating this binary")?;
    let agent = UploadSource {
        len: fs_err::metadata(&me)?.len(),
        sha256: Some(
            crate::digest::digest_reader(std::io::BufReader::new(fs_err::File::open(&me)?))?
                .0
                .hex()
                .to_string(),
        ),
        path: me,
        offset: 0,
    };
    let mut hosts = Vec::new();
    for (ip, remote) in args.hosts.iter().zip(remotes) {
        let remote: std::sync::Arc<dyn Remote> = std::sync::Arc::new(remote?);
        hosts.push(FanOutHost {
            addr: *ip,
            remote,
            needs: needs.clone(),
        });
    }
    let placed = futures_util::future::join_all(hosts.iter().map(|h| async {
        let dirs = [
            format!("{}/bin", args.data_root),
            format!("{}/blobs/sha256", opts.store),
        ];
        h.remote
            .check(&RemoteCommand::new("mkdir").arg("-p").args(dirs).sudo())
            .await?;
        h.remote.upload(&agent, &opts.agent, 0o755).await
    }))
    .await;
    for r in placed {
        r?;
    }
    let start = Instant::now();
    let report = distribute::fan_out(&hosts, &Files(files), &opts, &|_| {}).await?;
    let seconds = start.elapsed().as_secs_f64();
    for (ip, host) in &report.hosts {
        let received: u64 = host.received.iter().map(|r| r.received).sum();
        printer.result(format!(
            "{ip} {:?} received {received} present {}",
            host.route,
            host.present.len()
        ));
    }
    printer.result(format!(
        "fan-out: {} bytes from the operator in {seconds:.2}s",
        report.operator_bytes
    ));
    report.check()?;
    Ok(())
}

fn unpack(settings: &Settings, name: &str, dest: &Path) -> anyhow::Result<()> {
    let store = Store::open(&settings.root)
        .with_context(|| format!("opening {}", settings.root.display()))?;
    let image = ClusterImage::load(&store, name)?;
    let rootfs = image
        .rootfs_for(&Platform::host())
        .unwrap_or_else(|| image.primary());
    let staging = dest.with_extension("airlock-new");
    if staging.exists() {
        fs_err::remove_dir_all(&staging)?;
    }
    unpack_rootfs(&store, rootfs, &staging)?;
    if dest.exists() {
        fs_err::remove_dir_all(dest)?;
    }
    fs_err::rename(&staging, dest)?;
    Ok(())
}

/// Render every `*.tmpl` under `rootfs` next to itself (without the suffix), then apply
/// each `Config` document; returns how many files were written.
fn render(rootfs: &Path, input: &RenderInput) -> anyhow::Result<usize> {
    let mut written = 0;
    let mut stack = vec![rootfs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "tmpl") {
                let text = fs_err::read_to_string(&path)?;
                let out = render_template(&text, &input.env).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {e}",
                        path.strip_prefix(rootfs).unwrap_or(&path).display()
                    )
                })?;
                let dest = path.with_extension("");
                let mode = fs_err::metadata(&path)?.permissions();
                fs_err::write(&dest, out)?;
                fs_err::set_permissions(&dest, mode)?;
                written += 1;
            }
        }
    }
    for (i, config) in input.configs.iter().enumerate() {
        let rel = Path::new(config.path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            anyhow::bail!(
                "Config #{}: spec.path {:?} must be a path inside the rootfs",
                i + 1,
                config.path
            );
        }
        let dest = rootfs.join(rel);
        let current = fs_err::read_to_string(&dest).ok();
        let out = apply_config(current.as_deref(), config)
            .map_err(|e| anyhow::anyhow!("Config #{} ({}): {e}", i + 1, config.path))?;
        if let Some(parent) = dest.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&dest, out)?;
        written += 1;
    }
    Ok(written)
}

/// Poll `http(s)://ADDR/v2/` until it answers 200 or 401.
async fn wait_registry(addr: &str, https: bool, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    // Only readiness is checked here: who may trust the certificate is the mirrors' job.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(2))
        .build()?;
    while start.elapsed() < timeout {
        let answer = if https {
            client
                .get(format!("https://{addr}/v2/"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(anyhow::Error::from)
        } else {
            probe(addr).await
        };
        match answer {
            Ok(status) if status == 200 || status == 401 => return Ok(()),
            Ok(status) => last = format!("answered HTTP {status}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "registry at {addr} did not answer within {}s: {last}",
        timeout.as_secs()
    )
}

async fn probe(addr: &str) -> anyhow::Result<u16> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut head))
        .await
        .context("no answer")??;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))
}
