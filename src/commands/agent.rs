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
    /// Wait until a registry answers `GET /v2/` at ADDR.
    WaitRegistry {
        /// `HOST:PORT` of the registry.
        #[arg(long)]
        addr: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
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
}

/// Run an agent subcommand.
pub async fn run(cmd: AgentCommand, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Version => printer.result(env!("CARGO_PKG_VERSION")),
        AgentCommand::Unpack { name, dest } => {
            unpack(settings, &name, &dest)?;
            printer.status(format!("unpacked {name} into {}", dest.display()));
        }
        AgentCommand::WaitRegistry { addr, timeout } => {
            wait_registry(&addr, Duration::from_secs(timeout)).await?;
            printer.status(format!("registry at {addr} is ready"));
        }
        AgentCommand::Relay {
            listen,
            store,
            token_stdin: _,
            idle_timeout,
            connect_timeout,
        } => relay(listen, store, idle_timeout, connect_timeout, printer).await?,
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
