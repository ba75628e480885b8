//! `warden models verify`: checks one model version folder against its OpenSSF Model
//! Signing signature with the same code the backend runs before loading a model, for
//! operators and CI pipelines. Exit status 0 when it verifies, 1 otherwise.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use warden_shared::config::DEFAULT_SIGNATURE_FILE;
use warden_signing::TrustedKeys;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Verify a model version folder's OMS signature (key method) and print its digest.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The model version folder (e.g. models/resnet/1).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Trusted PEM public key (EC P-256, P-384 or P-521); repeat to trust several.
    #[arg(long, value_name = "PUB.pem", required = true)]
    pub key: Vec<PathBuf>,
    /// The signature file (default: DIR/model.sig). Excluded from the hashed files when
    /// it lies inside DIR.
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
}

pub fn run(command: &ModelsCommand) -> anyhow::Result<i32> {
    match command {
        ModelsCommand::Verify(a) => verify(a),
    }
}

fn verify(a: &VerifyArgs) -> anyhow::Result<i32> {
    // A key that cannot be read is a usage error, reported like any other (exit 1).
    let keys = TrustedKeys::load(&a.key)?;
    let signature = a
        .signature
        .clone()
        .unwrap_or_else(|| a.dir.join(DEFAULT_SIGNATURE_FILE));
    match warden_signing::verify_model_dir(&a.dir, &signature, &keys) {
        Ok(v) => {
            println!("verified: {}", a.dir.display());
            println!("  digest:    {}", v.digest);
            println!("  signed by: {} ({})", v.key, v.curve);
            println!("  files:     {}", v.files.len());
            Ok(0)
        }
        Err(e) => {
            println!("verification FAILED: {}: {e}", a.dir.display());
            Ok(1)
        }
    }
}
