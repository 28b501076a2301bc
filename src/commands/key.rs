//! `airlock key generate`: an ed25519 key pair for signing bundles.
//!
//! 1. Draw 32 random bytes from the operating system.
//! 2. Write the secret key file with mode 0600 (refusing to overwrite), then `FILE.pub`.
//! 3. Print the fingerprint users compare when they receive a bundle.

use fs_err::os::unix::fs::OpenOptionsExt as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use rand::TryRngCore as _;

use crate::bundle::signing;
use crate::commands::bad_input;
use crate::printer::Printer;
use crate::settings::Settings;

/// `airlock key ...`.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Make a key pair: FILE (secret, mode 0600) and FILE.pub.
    #[command(
        after_help = "Example:\n  airlock key generate -o release.key\n  airlock bundle my/cluster:v1 -o cluster.run --sign release.key"
    )]
    Generate {
        /// The secret key file to write; the public key goes to FILE.pub.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
    },
}

/// Run a `key` subcommand.
pub async fn run(
    command: KeyCommand,
    _settings: &Settings,
    printer: Printer,
) -> anyhow::Result<()> {
    match command {
        KeyCommand::Generate { output } => {
            let secret_path = PathBuf::from(&output);
            let public_path = PathBuf::from(format!("{output}.pub"));
            let mut seed = [0u8; 32];
            rand::rngs::OsRng
                .try_fill_bytes(&mut seed)
                .context("cannot read random bytes")?;
            let files = signing::generate(seed);
            seed.fill(0);
            let mut secret = fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&secret_path)
                .map_err(|e| bad_input(format!("{e} (refusing to overwrite an existing key)")))?;
            secret.write_all(files.secret.expose().as_bytes())?;
            secret.sync_all()?;
            fs_err::write(&public_path, &files.public)?;
            printer.result(format!(
                "wrote {} (secret, keep it private) and {}\nfingerprint: {}",
                secret_path.display(),
                public_path.display(),
                files.fingerprint
            ));
            Ok(())
        }
    }
}
