//! `airlock iso FILE.run -o FILE.iso`: a disc image for handing a bundle over.
//!
//! 1. Open and verify the bundle (a damaged bundle is never burnt to a disc).
//! 2. Hash the whole file for `SHA256SUMS`; render the README and the Clusterfile
//!    template (the bundle's own, or `iso/Clusterfile.template`).
//! 3. [`iso::write_iso`] into a temp file beside the output, then rename.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fs_err as fs;

use crate::bundle::Bundle;
use crate::bundle::iso::{self, IsoFile, IsoOptions, IsoSource};
use crate::commands::bad_input;
use crate::printer::Printer;
use crate::settings::Settings;

const README: &str = include_str!("../../iso/README.txt");
const CLUSTERFILE: &str = include_str!("../../iso/Clusterfile.template");

/// Flags of `airlock iso`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  airlock iso cluster-v1.run -o cluster-v1.iso\n  xorriso -indev cluster-v1.iso -find"
)]
pub struct IsoArgs {
    /// The bundle to put on the disc.
    pub bundle: PathBuf,
    /// The ISO file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.iso")]
    pub output: PathBuf,
    /// Volume label (default: from the image name).
    #[arg(long)]
    pub label: Option<String>,
}

/// Write the ISO.
pub async fn run(args: IsoArgs, _settings: &Settings, printer: Printer) -> anyhow::Result<()> {
    let bundle = Bundle::open(&args.bundle).map_err(bad_input)?;
    tokio::task::block_in_place(|| bundle.verify(&|_, _| {}))
        .map_err(bad_input)
        .context("the bundle failed verification: not writing it to an ISO")?;
    let file_name = args
        .bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| bad_input(format!("{} has no file name", args.bundle.display())))?;
    let size = bundle.size();
    let (digest, _) = crate::digest::digest_reader(fs::File::open(&args.bundle)?)?;
    let image = bundle.image_name().to_string();
    let clusterfile = match &bundle.index().clusterfile {
        Some(d) => bundle.read_blob(d)?.unwrap_or_default(),
        None => CLUSTERFILE.replace("{image}", &image).into_bytes(),
    };
    let mut readme = README
        .replace("{image}", &image)
        .replace("{bundle}", &file_name);
    if let Some(base) = &bundle.index().base {
        readme.push_str(&format!(
            "\nThis installer is a delta: it holds only what the complete installer of\n\n    {} ({})\n\nlacks. Keep that older .run file at hand and add `--base OLD.run` to\nevery command above but `info`, e.g.\n       ./{file_name} verify --base OLD.run\n",
            base.image, base.image_digest
        ));
    }
    let files = vec![
        IsoFile {
            name: file_name.clone(),
            source: IsoSource::File(args.bundle.clone()),
            size,
            mode: 0o755,
        },
        text_file(
            "SHA256SUMS",
            format!("{}  {file_name}\n", digest.hex()).into_bytes(),
        ),
        text_file("README.txt", readme.into_bytes()),
        text_file("Clusterfile", clusterfile),
    ];
    let label = args.label.clone().unwrap_or_else(|| label_of(&image));
    let options = IsoOptions {
        label,
        max_extent: iso::MAX_EXTENT,
    };
    let output = args.output.clone();
    tokio::task::block_in_place(|| write(&files, &options, &output))
        .with_context(|| format!("writing {}", output.display()))?;
    printer.result(format!(
        "wrote {} (label {}, {file_name} sha256 {})",
        output.display(),
        iso::volume_label(&options.label),
        digest.hex()
    ));
    Ok(())
}

fn text_file(name: &str, bytes: Vec<u8>) -> IsoFile {
    IsoFile {
        name: name.to_string(),
        size: bytes.len() as u64,
        source: IsoSource::Bytes(bytes),
        mode: 0o644,
    }
}

/// `registry.local/team/k8s:v1.30` -> `K8S_V1_30`.
fn label_of(image: &str) -> String {
    image.rsplit('/').next().unwrap_or(image).to_string()
}

fn write(files: &[IsoFile], options: &IsoOptions, output: &Path) -> anyhow::Result<()> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    iso::write_iso(files, options, tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(output).map_err(|e| e.error)?;
    Ok(())
}
