//! `airlock registry serve`: the embedded OCI registry over the local store.
//!
//! 1. Open the store at `--root` and bind `--addr`.
//! 2. Print the address actually bound (port 0 picks one), so scripts can read it.
//! 3. Serve until Ctrl-C or SIGTERM, then finish the requests in flight and exit 0.

use std::sync::Arc;

use anyhow::Context as _;

use crate::commands::bad_input;
use crate::image::store::Store;
use crate::printer::Printer;
use crate::registry::server::{RegistryServer, ServerConfig};
use crate::settings::Settings;

/// Registry subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Serve the local store over the OCI distribution API.
    ///
    /// Example: `airlock registry serve --addr 0.0.0.0:5000 --read-only`
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
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    printer.result(format!("listening on {bound}"));
    RegistryServer::new(Arc::new(store), config)
        .serve(listener, shutdown_signal())
        .await
        .context("serving the registry")?;
    printer.status("registry stopped");
    Ok(())
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
