//! `airlock images` and `airlock inspect`.

use crate::printer::Printer;
use crate::settings::Settings;

/// Flags of `airlock images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {}

/// Flags of `airlock inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Image name.
    pub name: String,
}

/// List images.
pub async fn images(
    _args: ImagesArgs,
    _settings: &Settings,
    _printer: Printer,
) -> anyhow::Result<()> {
    anyhow::bail!("images is not wired yet")
}

/// Inspect an image.
pub async fn inspect(
    _args: InspectArgs,
    _settings: &Settings,
    _printer: Printer,
) -> anyhow::Result<()> {
    anyhow::bail!("inspect is not wired yet")
}
