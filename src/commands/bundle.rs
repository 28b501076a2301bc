//! `airlock bundle`, and running a bundle (`./FILE.run ...`).
//!
//! Writing (`airlock bundle NAME -o FILE.run`):
//! 1. read the signing key and the base bundle, if given;
//! 2. [`bundle::pack`] the image from the store after the runner binary (this
//!    executable unless `--runner`), warning when the runner is dynamically linked.
//!
//! Running (`./FILE.run [info|verify|extract|serve|install]`):
//! 1. [`run_if_bundle`], first thing in `cli::main`, opens the current executable as
//!    a bundle; plain airlock goes on to its own CLI;
//! 2. the bundle's own CLI is parsed and run; `install` verifies every byte (and the
//!    signer, with `--trust`) before the install touches any host, then installs with
//!    the bundle itself as the blob source.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fs_err as fs;

use crate::bundle::{self, Bundle, signing, summary};
use crate::commands::{bad_input, exit_code};
use crate::image::BlobSource;
use crate::image::store::Store;
use crate::printer::Printer;
use crate::registry::server::{RegistryServer, ServerConfig};
use crate::remote::UploadSource;
use crate::settings::{Env, OutputFormat, Settings};
use crate::spec::reference::Reference;

/// Flags of `airlock bundle`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  airlock bundle registry.local/k8s:v1.30 -o k8s-v1.30.run --sign release.key"
)]
pub struct BundleArgs {
    /// Image to bundle.
    pub name: String,
    /// Output file.
    #[arg(short = 'o', long = "output", value_name = "FILE.run")]
    pub output: PathBuf,
    /// The binary that runs the bundle (default: this airlock; use a static musl build).
    #[arg(long, value_name = "PATH")]
    pub runner: Option<PathBuf>,
    /// Sign the bundle with this secret key (see `airlock key generate`).
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// Carry this Clusterfile template (shown by `info`, written on the ISO).
    #[arg(long, value_name = "TEMPLATE")]
    pub clusterfile: Option<PathBuf>,
    /// Write a delta: leave out the blobs of this older bundle file, or of this image
    /// in the store (a path to an existing file is a bundle, anything else an image).
    /// Running the delta needs the complete bundle of that image (`--base OLD.run`).
    #[arg(long, value_name = "OLD.run|NAME")]
    pub base: Option<String>,
}

/// Write a bundle.
pub async fn run(args: BundleArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let runner = match args.runner {
        Some(path) => path,
        None => {
            std::env::current_exe().context("cannot find this executable to use as the runner")?
        }
    };
    let signing_key = match &args.sign {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(bad_input)?;
            Some(signing::parse_secret(&text, &path.display().to_string()).map_err(bad_input)?)
        }
        None => None,
    };
    let clusterfile = match &args.clusterfile {
        Some(path) => Some(fs::read(path).map_err(bad_input)?),
        None => None,
    };
    let store = Store::open(&settings.root)?;
    let base = match &args.base {
        Some(base) => Some(delta_base(&store, base)?),
        None => None,
    };
    let progress = progress_reporter(printer, "writing");
    let options = bundle::PackOptions {
        runner: &runner,
        created_by: created_by(),
        signing_key: signing_key.as_ref(),
        clusterfile,
        base: base.as_ref(),
    };
    let name = super::images::resolve(&store, &args.name)?;
    let output = args.output.clone();
    let summary = tokio::task::block_in_place(|| {
        bundle::pack(&store, &name, &output, &options, &|d, t| progress(d, t))
    })
    .map_err(|e| match e {
        bundle::PackError::Store(crate::image::store::StoreError::ImageUnknown(_)) => bad_input(e),
        other => anyhow::Error::new(other),
    })
    .with_context(|| format!("writing the bundle {}", args.output.display()))?;
    if summary.runner_is_dynamic {
        printer.warn(format!(
            "the runner {} is dynamically linked: the bundle runs only where its libraries exist; build a static one with `cargo build --release --target x86_64-unknown-linux-musl` and pass --runner",
            runner.display()
        ));
    }
    printer.result(format!(
        "wrote {} ({}, {} blobs{}, index {})",
        summary.path.display(),
        human_size(summary.size),
        summary.blobs,
        if summary.blobs_in_base > 0 {
            format!(", {} left to the base bundle", summary.blobs_in_base)
        } else {
            String::new()
        },
        summary.index_digest
    ));
    Ok(())
}

/// `--base`: an existing file is a complete bundle, anything else an image in the store.
fn delta_base(store: &Store, base: &str) -> anyhow::Result<bundle::DeltaBase> {
    if std::path::Path::new(base).is_file() {
        let bundle = Bundle::open(base).map_err(bad_input)?;
        return bundle::DeltaBase::from_bundle(&bundle).map_err(bad_input);
    }
    let name = super::images::resolve(store, base).map_err(|e| {
        bad_input(format!(
            "--base {base:?} is neither a bundle file nor an image in the store: {e:#}"
        ))
    })?;
    bundle::DeltaBase::from_store(store, &name).map_err(bad_input)
}

/// `airlock <version>`, recorded in bundles.
fn created_by() -> String {
    format!("airlock {}", env!("CARGO_PKG_VERSION"))
}

/// A bundle's own command line: `./FILE.run [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    about = "A self-contained airlock cluster installer: the airlock binary with a cluster image inside",
    version,
    after_help = "Examples:\n  ./FILE.run verify\n  ./FILE.run info -o json\n  ./FILE.run install -f Clusterfile --yes\n  ./FILE.run extract ./image && skopeo inspect oci:./image:NAME"
)]
struct BundleCli {
    /// Output format of read commands.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// More log detail (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// For a delta bundle: the complete bundle it was made against.
    #[arg(long, global = true, value_name = "OLD.run")]
    base: Option<PathBuf>,
    /// What to do (the install wizard on a terminal when omitted).
    #[command(subcommand)]
    command: Option<BundleCommand>,
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Show the image, runtime, versions, size, images and signer.
    Info {
        /// Print the SBOM (CycloneDX JSON) instead.
        #[arg(long)]
        sbom: bool,
    },
    /// Check every byte of the bundle (runner, every blob, padding) and its signature.
    Verify(TrustArgs),
    /// Unpack the image as an OCI image layout in DIR.
    Extract {
        /// Target directory: new, empty, or an OCI layout to add the image to (other
        /// directories are refused).
        dir: PathBuf,
    },
    /// Serve the image over the OCI distribution API, straight from this file.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: String,
    },
    /// Install the cluster onto the hosts of a Clusterfile.
    Install(InstallArgs),
}

#[derive(Debug, clap::Args)]
struct TrustArgs {
    /// Require the bundle to be signed by this key: a public key file or its `SHA256:` fingerprint.
    #[arg(long, value_name = "PUBKEY")]
    trust: Option<String>,
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// The Clusterfile.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
    #[command(flatten)]
    trust: TrustArgs,
    /// Step time limits, host concurrency and `-o json` events, as `airlock run`.
    #[command(flatten)]
    engine: crate::commands::progress::EngineArgs,
}

/// When this executable is a bundle, run as the bundle and return its exit code.
pub fn run_if_bundle(env: &Env) -> Option<ExitCode> {
    let exe = std::env::current_exe().ok()?;
    let printer = Printer { quiet: false };
    let bundle = match Bundle::open_self(&exe) {
        Ok(Some(bundle)) => bundle,
        Ok(None) => return None,
        Err(err) => {
            let err = bad_input(err).context("this bundle cannot be used");
            return Some(exit_code(Err(err), printer));
        }
    };
    let cli = BundleCli::parse();
    let settings = Settings::resolve(None, cli.verbose, env);
    crate::cli::init_tracing(env, cli.verbose);
    let result = attach_base(bundle, cli.base.as_deref(), cli.command.as_ref())
        .and_then(|bundle| run_bundle(bundle, cli.command, cli.output, &settings, printer));
    Some(exit_code(result, printer))
}

/// A delta bundle needs its base for everything but `info` and help.
fn attach_base(
    bundle: Bundle,
    base: Option<&std::path::Path>,
    command: Option<&BundleCommand>,
) -> anyhow::Result<Bundle> {
    let needs_base = !matches!(command, None | Some(BundleCommand::Info { .. }));
    match (bundle.index().base.clone(), base) {
        (None, None) => Ok(bundle),
        (None, Some(_)) => Err(bad_input(
            "--base is only for delta bundles, and this one is complete",
        )),
        (Some(_), Some(path)) => {
            let base = Bundle::open(path).map_err(bad_input)?;
            Ok(bundle.with_base(base).map_err(bad_input)?)
        }
        (Some(wanted), None) if needs_base => Err(bad_input(format!(
            "this is a delta bundle: it holds only what a complete bundle of {} (image {}) lacks; pass --base OLD.run, a complete bundle of that image",
            wanted.image, wanted.image_digest
        ))),
        (Some(_), None) => Ok(bundle),
    }
}

fn run_bundle(
    bundle: Bundle,
    command: Option<BundleCommand>,
    format: OutputFormat,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    match command {
        None => {
            let mut command = <BundleCli as clap::CommandFactory>::command();
            let help = command.render_help().to_string();
            if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
                let agent = runner_region(&bundle);
                return async_runtime()?.block_on(crate::commands::wizard::run(
                    bundle, agent, settings, printer,
                ));
            }
            printer.result(help);
            Ok(())
        }
        Some(BundleCommand::Info { sbom: false }) => {
            info(&bundle, format, printer);
            Ok(())
        }
        Some(BundleCommand::Info { sbom: true }) => {
            let digest = bundle
                .index()
                .sbom
                .clone()
                .ok_or_else(|| anyhow::anyhow!("this bundle carries no SBOM"))?;
            let bytes = bundle
                .read_blob(&digest)?
                .ok_or_else(|| anyhow::anyhow!("the SBOM blob {digest} is missing"))?;
            printer.result(String::from_utf8_lossy(&bytes).trim_end());
            Ok(())
        }
        Some(BundleCommand::Verify(trust)) => {
            verify(&bundle, &trust, false, printer)?;
            printer.result(format!("{}: ok", bundle.path().display()));
            Ok(())
        }
        Some(BundleCommand::Extract { dir }) => {
            let progress = progress_reporter(printer, "extracting");
            let store = bundle::extract(&bundle, &dir, &|d, t| progress(d, t))
                .map_err(|e| match e {
                    bundle::PackError::TargetNotEmpty { .. } => bad_input(e),
                    other => anyhow::Error::new(other),
                })
                .with_context(|| format!("extracting into {}", dir.display()))?;
            printer.result(format!(
                "extracted {} into {} (an OCI image layout: `skopeo inspect oci:{}:{}`)",
                bundle.image_name(),
                store.root().display(),
                store.root().display(),
                bundle.image_name()
            ));
            Ok(())
        }
        Some(BundleCommand::Serve { addr }) => {
            let runtime = async_runtime()?;
            runtime.block_on(serve(bundle, &addr, printer))
        }
        Some(BundleCommand::Install(args)) => {
            verify(&bundle, &args.trust, args.yes, printer)?;
            let image = bundle.image_name().to_string();
            let agent = runner_region(&bundle);
            let run_args = crate::commands::run::RunArgs {
                image: Some(image.clone()),
                file: Some(args.file),
                yes: args.yes,
                engine: args.engine,
            };
            let source: Arc<dyn BlobSource> = Arc::new(bundle);
            async_runtime()?.block_on(crate::commands::run::run_from(
                run_args, source, image, agent, settings, printer,
            ))
        }
    }
}

/// The bundle's own airlock binary (its first bytes), which installs put on hosts.
fn runner_region(bundle: &Bundle) -> UploadSource {
    let runner = &bundle.index().runner;
    UploadSource {
        path: bundle.path().to_path_buf(),
        offset: 0,
        len: runner.size,
        sha256: Some(runner.digest.hex().to_string()),
    }
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Serve the bundle's image read-only, reading blobs at their offsets in the file,
/// until Ctrl-C or SIGTERM. Only the trailer and index are checked first (so it is
/// ready at once); clients check every blob's digest as they pull.
async fn serve(bundle: Bundle, addr: &str, printer: Printer) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| {
        bad_input(format!(
            "--addr {addr:?}: {e} (expected IP:PORT, e.g. 0.0.0.0:5000)"
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    printer.result(format!(
        "serving {} on {bound} (e.g. skopeo inspect --tls-verify=false docker://{bound}/{})",
        bundle.image_name(),
        image_path(bundle.image_name())
    ));
    let source: Arc<dyn BlobSource> = Arc::new(bundle);
    RegistryServer::new(source, ServerConfig::read_only())
        .serve(listener, stop_signal())
        .await
        .context("serving the registry")?;
    printer.status("registry stopped");
    Ok(())
}

/// `registry.local/team/app:v1` -> `team/app:v1`: the name as a client of this
/// registry asks for it.
fn image_path(name: &str) -> String {
    name.parse::<Reference>().map_or_else(
        |_| name.to_string(),
        |r| format!("{}:{}", r.repository, r.tag.as_deref().unwrap_or("latest")),
    )
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(s) => drop(s.recv().await),
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// Verify every byte, then the signer: against `--trust`, or (signed, on a terminal,
/// without `--yes`) by asking the user to confirm the fingerprint.
fn verify(bundle: &Bundle, trust: &TrustArgs, yes: bool, printer: Printer) -> anyhow::Result<()> {
    for part in std::iter::once(bundle).chain(bundle.base()) {
        let progress = progress_reporter(printer, "verifying");
        part.verify(&|d, t| progress(d, t))
            .map_err(bad_input)
            .context("verification failed: nothing was installed or changed")?;
    }
    let signer = bundle
        .index()
        .signer
        .as_ref()
        .map(|s| s.fingerprint.clone());
    match (&trust.trust, signer) {
        (Some(trusted), _) => {
            let fingerprint = trusted_fingerprint(trusted)?;
            signing::check_trust(bundle, &fingerprint).map_err(bad_input)?;
            printer.status(format!("signed by the trusted key {fingerprint}"));
        }
        (None, Some(fingerprint)) => {
            let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
            if interactive && !yes {
                printer.status(format!(
                    "the bundle is signed by {fingerprint}\ncompare it with the fingerprint your supplier gave you; is it the same? [y/N]"
                ));
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err(bad_input(
                        "the signer was not confirmed: refusing the bundle",
                    ));
                }
            } else {
                printer.status(format!(
                    "signed by {fingerprint} (not checked against a trusted key: pass --trust PUBKEY)"
                ));
            }
        }
        (None, None) => printer.status("the bundle is not signed"),
    }
    Ok(())
}

/// `--trust` is a fingerprint (`SHA256:...`) or a public key file.
fn trusted_fingerprint(trust: &str) -> anyhow::Result<String> {
    if trust.starts_with("SHA256:") {
        return Ok(trust.to_string());
    }
    let text = fs::read_to_string(trust).map_err(bad_input)?;
    let key = signing::parse_public(&text, trust).map_err(bad_input)?;
    Ok(signing::fingerprint(&key))
}

fn info(bundle: &Bundle, format: OutputFormat, printer: Printer) {
    let s = summary::summarise(bundle);
    if format == OutputFormat::Json {
        printer.json(&s);
        return;
    }
    printer.result(format!("image:     {}", s.image));
    printer.result(format!("digest:    {}", s.digest));
    printer.result(format!(
        "size:      {} (payload {} in {} blobs)",
        human_size(s.file_size),
        human_size(s.payload_size),
        s.blobs
    ));
    printer.result(format!(
        "runner:    {}, {}, {}",
        s.created_by,
        human_size(s.runner_size),
        s.runner_digest
    ));
    if let Some(runtime) = &s.runtime {
        let version = s.runtime_version.as_deref().unwrap_or("");
        let container = s
            .container_runtime
            .as_ref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        printer.result(format!("runtime:   {runtime} {version}{container}"));
    }
    printer.result(format!(
        "signer:    {}",
        s.signer.as_deref().unwrap_or("unsigned")
    ));
    if let Some(sbom) = &s.sbom {
        printer.result(format!(
            "sbom:      {sbom} (CycloneDX JSON, {} components; `info --sbom` prints it)",
            s.sbom_components.len()
        ));
        for component in &s.sbom_components {
            printer.result(format!("  {component}"));
        }
    }
    if let Some(clusterfile) = &s.clusterfile {
        printer.result(format!(
            "clusterfile: {clusterfile} (a template for this image)"
        ));
    }
    if let Some(base) = &s.delta_of {
        printer.result(format!(
            "delta of:  {} {} (run it with a complete bundle of that image: --base OLD.run)",
            base.image, base.image_digest
        ));
    }
    printer.result(format!("images:    {}", s.images.len()));
    for image in &s.images {
        printer.result(format!(
            "  {:<16} {}  {}",
            image.role, image.reference, image.digest
        ));
    }
    if !s.image_list.is_empty() {
        printer.result("image list:");
        for image in &s.image_list {
            printer.result(format!("  {image}"));
        }
    }
}

/// A progress callback: a bar on a terminal, a line every 10% elsewhere.
fn progress_reporter(printer: Printer, label: &'static str) -> impl Fn(u64, u64) + Sync {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(label);
        bar
    });
    let last_step = AtomicU64::new(u64::MAX);
    move |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
            if done >= total {
                bar.finish_and_clear();
            }
            return;
        }
        let step = (done * 10).checked_div(total).unwrap_or(10);
        if last_step.swap(step, Ordering::Relaxed) != step {
            printer.status(format!("{label}: {}% of {}", step * 10, human_size(total)));
        }
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
