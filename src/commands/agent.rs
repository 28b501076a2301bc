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
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Run the API server load balancer (on workers) until SIGINT or SIGTERM.
    Lb(Box<super::agent_lb::LbArgs>),
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
        AgentCommand::WaitRegistry { addr, timeout } => {
            wait_registry(&addr, Duration::from_secs(timeout)).await?;
            printer.status(format!("registry at {addr} is ready"));
        }
        AgentCommand::Lb(args) => super::agent_lb::run(*args, printer).await?,
    }
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

/// Poll `http://ADDR/v2/` until it answers 200 or 401.
async fn wait_registry(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < timeout {
        match probe(addr).await {
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
