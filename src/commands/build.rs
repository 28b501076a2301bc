//! `airlock build`: flags to [`BuildOptions`], events to progress on the terminal.
//!
//! 1. Resolve flags: Kubefile path, tag, build args, platforms, image lists, local
//!    image sources (`--image-source oci:DIR | oci-archive:FILE | docker-archive:FILE`).
//! 2. Pick the container-image fetcher: local sources first; registry references
//!    not found there fail with a message naming the image (the registry fetcher
//!    plugs in at [`BuildOptions::fetcher`]).
//! 3. Run [`crate::image::build::build`], showing a spinner on a terminal and plain
//!    lines otherwise; print the image name and digest.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::commands::bad_input;
use crate::image::ImageFetcher;
use crate::image::build::{self, BuildEvent, BuildOptions, BuildReporter, ChartRenderer};
use crate::image::download::Downloader;
use crate::image::layout::{LayoutFetcher, LocalSource};
use crate::image::oci::{Descriptor, Platform};
use crate::image::store::Store;
use crate::printer::Printer;
use crate::registry::client::RegistryClient;
use crate::settings::Settings;
use crate::spec::reference::Reference;

/// Flags of `airlock build`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  airlock build -f Kubefile -t my-cluster:v1 --image-source oci:./images ."
)]
pub struct BuildArgs {
    /// The Kubefile (default: CONTEXT/Kubefile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name of the image to build, NAME[:TAG].
    #[arg(short = 't', long = "tag")]
    pub tag: String,
    /// Build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// Set a build argument (repeatable), K=V.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_arg: Vec<String>,
    /// Target platforms, OS/ARCH (repeatable or comma-separated).
    #[arg(long = "platform", value_name = "OS/ARCH", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Extra container images to include: a file with one reference a line.
    #[arg(long = "image-list", value_name = "FILE")]
    pub image_list: Vec<PathBuf>,
    /// Container images to leave out: a file with one reference a line.
    #[arg(long = "ignored-image-list", value_name = "FILE")]
    pub ignored_image_list: Vec<PathBuf>,
    /// Where container images are taken from before registries (repeatable):
    /// oci:DIR (an OCI layout), oci-archive:FILE.tar or docker-archive:FILE.tar (docker save).
    #[arg(long = "image-source", value_name = "oci:DIR")]
    pub image_source: Vec<String>,
    /// Do not use the build cache.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Registry access.
    #[command(flatten)]
    pub registry: super::RegistryArgs,
    /// Registry credentials.
    #[command(flatten)]
    pub docker: super::registry::DockerConfigArgs,
}

/// Local sources (`--image-source`) first, then registries (with `--registry-mirror`).
struct LocalFirstFetcher {
    local: LayoutFetcher,
    registry: RegistryClient,
}

#[async_trait::async_trait]
impl ImageFetcher for LocalFirstFetcher {
    async fn fetch(
        &self,
        store: &Store,
        reference: &Reference,
        platforms: &[Platform],
    ) -> anyhow::Result<Descriptor> {
        if self.local.find(reference)?.is_some() {
            return self.local.fetch(store, reference, platforms).await;
        }
        self.registry.fetch(store, reference, platforms).await
    }
}

/// `helm template` through the helm binary on PATH.
struct Helm;

impl ChartRenderer for Helm {
    fn render(&self, dir: &Path) -> Result<String, String> {
        let out = std::process::Command::new("helm")
            .arg("template")
            .arg("airlock-discovery")
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

fn helm_available() -> bool {
    std::process::Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Renders build events: a spinner on a terminal, lines otherwise.
struct Progress {
    printer: Printer,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn line(&self, s: String) {
        match &self.bar {
            Some(bar) => bar.println(s),
            None => self.printer.status(s),
        }
    }
}

impl BuildReporter for Progress {
    fn report(&self, event: BuildEvent) {
        match event {
            BuildEvent::Warning(w) => match &self.bar {
                Some(bar) => bar.println(format!("warning: {w}")),
                None => self.printer.warn(w),
            },
            BuildEvent::Step {
                platform,
                index,
                total,
                text,
            } => {
                let s = format!("[{platform} {index}/{total}] {text}");
                if let Some(bar) = &self.bar {
                    bar.set_message(s.clone());
                }
                self.line(s);
            }
            BuildEvent::Cached => self.line("  cached".to_string()),
            BuildEvent::Output(l) => self.line(format!("  | {l}")),
            BuildEvent::Layer { digest, size } => {
                self.line(format!(
                    "  layer {} ({})",
                    &digest.hex()[..12],
                    human_size(size)
                ));
            }
            BuildEvent::Downloaded {
                url,
                digest,
                size,
                cached,
            } => self.line(format!(
                "  {} {url} ({}, {})",
                if cached { "current" } else { "downloaded" },
                human_size(size),
                &digest.hex()[..12]
            )),
            BuildEvent::Found { reference, origins } => {
                self.line(format!("image {reference} (from {})", origins.join(", ")));
            }
            BuildEvent::Unresolved { text, origin } => match &self.bar {
                Some(bar) => bar.println(format!(
                    "warning: cannot resolve image {text} in {origin}; list it with --image-list"
                )),
                None => self.printer.warn(format!(
                    "cannot resolve image {text} in {origin}; list it with --image-list"
                )),
            },
            BuildEvent::Fetching {
                reference,
                index,
                total,
            } => {
                let s = format!("fetching [{index}/{total}] {reference}");
                if let Some(bar) = &self.bar {
                    bar.set_message(s.clone());
                }
                self.line(s);
            }
        }
    }
}

/// `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Build an image.
pub async fn run(args: BuildArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let tag: Reference = args.tag.parse().map_err(|e| {
        bad_input(format!(
            "-t {}: {e}; write NAME[:TAG], e.g. my-cluster:v1",
            args.tag
        ))
    })?;
    let mut build_args = BTreeMap::new();
    for a in &args.build_arg {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| bad_input(format!("--build-arg {a}: write K=V")))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let platforms = args
        .platform
        .iter()
        .map(|p| build::parse_platform(p).map_err(|m| bad_input(format!("--platform: {m}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sources = args
        .image_source
        .iter()
        .map(|s| {
            s.parse::<LocalSource>()
                .map_err(|m| bad_input(format!("--image-source: {m}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local =
        LayoutFetcher::open(&sources).map_err(|e| bad_input(format!("--image-source: {e:#}")))?;
    let kubefile = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Kubefile"));
    let store = Store::open(&settings.root)
        .with_context(|| format!("opening the image store {}", settings.root.display()))?;
    let options = BuildOptions {
        kubefile_label: kubefile.display().to_string(),
        kubefile,
        context: args.context.clone(),
        tag,
        build_args,
        platforms,
        image_lists: args.image_list.clone(),
        ignored_image_lists: args.ignored_image_list.clone(),
        no_cache: args.no_cache,
        threads: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
        fetcher: Arc::new(LocalFirstFetcher {
            local,
            registry: RegistryClient::new(super::registry::client_config(
                &args.registry,
                &args.docker,
            )?)
            .map_err(bad_input)?,
        }),
        downloader: Downloader::new()?,
        helm: helm_available().then(|| Arc::new(Helm) as Arc<dyn ChartRenderer>),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let progress = Progress { printer, bar };
    let result = build::build(&store, &options, &progress).await;
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let output = result.map_err(|e| {
        if e.is_bad_input() {
            bad_input(e)
        } else {
            anyhow::Error::new(e)
        }
    })?;
    printer.result(format!("{} {}", output.name, output.descriptor.digest));
    Ok(())
}
