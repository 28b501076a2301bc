//! `airlock images`, `inspect`, `tag`, `rmi`, `prune`, `save` and `load`: the local store.
//!
//! 1. Names typed by users are normalised (`demo:v1` → `docker.io/library/demo:v1`)
//!    and looked up with [`cluster::resolve_name`].
//! 2. Read commands print a table or, with `-o json`, JSON.
//! 3. `save`/`load` speak OCI archives ([`crate::image::layout`]); `prune` runs the
//!    store's garbage collection ([`crate::image::gc`]).

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

use crate::commands::bad_input;
use crate::commands::build::human_size;
use crate::image::cluster::{self, ClusterImage, ClusterImageError};
use crate::image::gc::{self, GcLock};
use crate::image::layout;
use crate::image::oci::{Descriptor, ImageIndex, ImageManifest, RootfsConfig};
use crate::image::store::Store;
use crate::printer::Printer;
use crate::settings::Settings;
use crate::spec::reference::Reference;

/// Flags of `airlock images`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  airlock images -o json")]
pub struct ImagesArgs {
    /// Output format.
    #[command(flatten)]
    pub format: super::OutputArgs,
}

/// Flags of `airlock inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  airlock inspect my-cluster:v1")]
pub struct InspectArgs {
    /// Image name.
    pub name: String,
}

/// Flags of `airlock tag`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  airlock tag my-cluster:v1 registry.example.com/team/my-cluster:v1"
)]
pub struct TagArgs {
    /// Existing image.
    pub source: String,
    /// New name.
    pub target: String,
}

/// Flags of `airlock rmi`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  airlock rmi my-cluster:v1 && airlock prune")]
pub struct RmiArgs {
    /// Images to remove (their blobs stay until `airlock prune`).
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Flags of `airlock prune`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  airlock prune")]
pub struct PruneArgs {
    /// Output format.
    #[command(flatten)]
    pub format: super::OutputArgs,
}

/// Flags of `airlock save`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  airlock save my-cluster:v1 -o my-cluster.tar\n  skopeo copy oci-archive:my-cluster.tar docker://registry.example.com/my-cluster:v1"
)]
pub struct SaveArgs {
    /// Images to save.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// The OCI archive to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.tar")]
    pub output: PathBuf,
}

/// Flags of `airlock load`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  airlock load -i my-cluster.tar")]
pub struct LoadArgs {
    /// The OCI archive to read.
    #[arg(short = 'i', long = "input", value_name = "FILE.tar")]
    pub input: PathBuf,
}

fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.root)
        .with_context(|| format!("opening the image store {}", settings.root.display()))
}

/// The stored name of the image the user called `name` (`hello:v1` finds
/// `docker.io/library/hello:v1`); an unknown name is bad input.
pub(crate) fn resolve(store: &Store, name: &str) -> anyhow::Result<String> {
    cluster::resolve_name(store, name).map_err(|e| match e {
        ClusterImageError::Unknown(_) => bad_input(e),
        other => other.into(),
    })
}

/// One row of `airlock images`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageRow {
    name: String,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    container_images: usize,
    size: u64,
}

/// List images.
pub async fn images(args: ImagesArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = open_store(settings)?;
    let mut rows = Vec::new();
    for (name, d) in store.images()? {
        let size = cluster::reachable(&store, &d)
            .map(|blobs| blobs.iter().map(|b| b.size).sum())
            .unwrap_or(d.size);
        let (platforms, container_images) = match ClusterImage::load(&store, &name) {
            Ok(img) => (
                img.rootfs
                    .iter()
                    .filter_map(|r| r.descriptor.platform.as_ref().map(ToString::to_string))
                    .collect(),
                img.container_images.len(),
            ),
            Err(_) => (Vec::new(), 0),
        };
        rows.push(ImageRow {
            name,
            digest: d.digest.to_string(),
            media_type: d.media_type.clone(),
            platforms,
            container_images,
            size,
        });
    }
    if args.format.is_json() {
        printer.json(&rows);
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    printer.result(format!(
        "{:width$}  {:12}  {:14}  {:>6}  {:>10}",
        "NAME", "DIGEST", "PLATFORMS", "IMAGES", "SIZE"
    ));
    for r in rows {
        let short = r.digest.strip_prefix("sha256:").unwrap_or(&r.digest);
        printer.result(format!(
            "{:width$}  {:12}  {:14}  {:>6}  {:>10}",
            r.name,
            &short[..12.min(short.len())],
            r.platforms.join(","),
            r.container_images,
            human_size(r.size)
        ));
    }
    Ok(())
}

/// What `airlock inspect` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection {
    name: String,
    descriptor: Descriptor,
    index: ImageIndex,
    rootfs: Vec<RootfsInspection>,
    container_images: Vec<ContainerImage>,
}

#[derive(Debug, Serialize)]
struct RootfsInspection {
    descriptor: Descriptor,
    manifest: ImageManifest,
    config: RootfsConfig,
}

#[derive(Debug, Serialize)]
struct ContainerImage {
    reference: String,
    descriptor: Descriptor,
}

/// Inspect an image: its index, rootfs manifests and configs, and container images, as JSON.
pub async fn inspect(
    args: InspectArgs,
    settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    let store = open_store(settings)?;
    let name = resolve(&store, &args.name)?;
    let image = ClusterImage::load(&store, &name)?;
    printer.json(&Inspection {
        name: image.name,
        descriptor: image.descriptor,
        index: image.index,
        rootfs: image
            .rootfs
            .into_iter()
            .map(|r| RootfsInspection {
                descriptor: r.descriptor,
                manifest: r.manifest,
                config: r.config,
            })
            .collect(),
        container_images: image
            .container_images
            .into_iter()
            .map(|(r, d)| ContainerImage {
                reference: r.to_string(),
                descriptor: d,
            })
            .collect(),
    });
    Ok(())
}

/// Give an image another name.
pub async fn tag(args: TagArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = open_store(settings)?;
    let source = resolve(&store, &args.source)?;
    let target: Reference = args
        .target
        .parse()
        .map_err(|e| bad_input(format!("{}: {e}; write NAME[:TAG]", args.target)))?;
    let mut d = store.resolve(&source)?;
    d.annotations.remove(crate::image::oci::ANNOTATION_REF_NAME);
    store.set_ref(&target.to_string(), &d)?;
    printer.status(format!("tagged {source} as {target}"));
    Ok(())
}

/// Remove names; blobs stay until `prune`.
pub async fn rmi(args: RmiArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = open_store(settings)?;
    for name in &args.names {
        let stored = resolve(&store, name)?;
        store.remove_ref(&stored)?;
        printer.result(format!("removed {stored}"));
    }
    Ok(())
}

/// Delete blobs no image uses.
pub async fn prune(args: PruneArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = open_store(settings)?;
    let report = gc::prune(&store)?;
    if args.format.is_json() {
        printer.json(&report);
    } else {
        printer.result(format!(
            "removed {} blobs, freed {}",
            report.blobs,
            human_size(report.bytes)
        ));
    }
    Ok(())
}

/// Write images to an OCI archive.
pub async fn save(args: SaveArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = open_store(settings)?;
    let names = args
        .names
        .iter()
        .map(|n| resolve(&store, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let file = args.output;
    let size = layout::save(&store, &names, &file)
        .with_context(|| format!("writing {}", file.display()))?;
    printer.status(format!(
        "saved {} to {} ({})",
        names.join(", "),
        file.display(),
        human_size(size)
    ));
    Ok(())
}

/// Read images from an OCI archive.
pub async fn load(args: LoadArgs, settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let store = open_store(settings)?;
    if !args.input.is_file() {
        return Err(bad_input(format!(
            "-i {}: no such file",
            args.input.display()
        )));
    }
    let _gc = GcLock::shared(&store)?;
    let names = layout::load(&store, &args.input)
        .with_context(|| format!("loading {}", args.input.display()))?;
    for n in names {
        printer.result(format!("loaded {n}"));
    }
    Ok(())
}
