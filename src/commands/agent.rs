//! `airlock agent ...`: what airlock runs on a host, as the node agent.
//!
//! The install engine puts the airlock binary on every host and calls these
//! subcommands over SSH; they are hidden from `--help` because people never need them.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::printer::Printer;
use crate::settings::Settings;

/// Agent subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Print the agent's version.
    Version,
    /// Wait until a registry answers `GET /v2/` at ADDR.
    WaitRegistry {
        /// `HOST:PORT` of the registry.
        #[arg(long)]
        addr: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

/// Run an agent subcommand.
pub async fn run(cmd: AgentCommand, _settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Version => printer.result(env!("CARGO_PKG_VERSION")),
        AgentCommand::WaitRegistry { addr, timeout } => {
            wait_registry(&addr, Duration::from_secs(timeout)).await?;
            printer.status(format!("registry at {addr} is ready"));
        }
    }
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
