//! Model integrity: the signing policy applied to one model version folder, inside the
//! sandbox, before OpenVINO opens a byte of it.
//!
//! The trusted keys are read in [`crate::run`] before the sandbox is entered; from then
//! on this module only reads the version folder (hashing, never parsing model bytes) and
//! the signature file in it. [`Integrity::check`] is a pure function of the policy and
//! the folder, so a reload can call it again.

use std::path::Path;
use warden_shared::config::{SigningConfig, SigningMode};
use warden_signing::{TrustedKeys, Verified, VerifyError};

/// The signing policy of a running backend.
#[derive(Debug, Clone, Default)]
pub struct Integrity {
    pub config: SigningConfig,
    pub keys: TrustedKeys,
}

/// What the policy decided for one version folder.
#[derive(Debug)]
pub enum Outcome {
    /// Signed by a trusted key and every file matches.
    Verified(Box<Verified>),
    /// Not checked: the mode is `off`.
    NotChecked,
    /// No signature file, and the mode is `optional`.
    Unsigned,
}

impl Outcome {
    /// The digest to report, when there is one.
    pub fn digest(&self) -> Option<&str> {
        match self {
            Outcome::Verified(v) => Some(&v.digest),
            _ => None,
        }
    }
}

/// Why a version folder may not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("model {model} version {version}: signature check failed ({mode} mode): {source}")]
pub struct IntegrityError {
    pub model: String,
    pub version: u64,
    pub mode: SigningMode,
    pub source: VerifyError,
}

impl Integrity {
    /// Reads the trusted keys. Runs before the sandbox: the key files need not be in it.
    pub fn load(config: &SigningConfig) -> Result<Integrity, warden_signing::KeyError> {
        Ok(Integrity {
            config: config.clone(),
            keys: TrustedKeys::load(&config.trusted_keys)?,
        })
    }

    /// Applies the policy to one version folder.
    pub fn check(&self, model: &str, version: u64, dir: &Path) -> Result<Outcome, IntegrityError> {
        let mode = self.config.mode_for(model);
        if mode == SigningMode::Off {
            return Ok(Outcome::NotChecked);
        }
        let signature = dir.join(&self.config.signature_file);
        match warden_signing::verify_model_dir(dir, &signature, &self.keys) {
            Ok(v) => Ok(Outcome::Verified(Box::new(v))),
            // Optional means "unsigned is allowed", not "a broken signature is": a
            // signature that is there and fails is a tampering signal either way.
            Err(VerifyError::Missing { .. }) if mode == SigningMode::Optional => {
                Ok(Outcome::Unsigned)
            }
            Err(source) => Err(IntegrityError {
                model: model.into(),
                version,
                mode,
                source,
            }),
        }
    }
}
