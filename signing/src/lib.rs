//! Verification of OpenSSF Model Signing (OMS) signatures made with the key method, as
//! `model_signing sign key` writes them (model_signing >= 1.0):
//!
//! 1. the signature file is a Sigstore bundle v0.3 (JSON) holding a DSSE envelope;
//! 2. its one signature is ECDSA (P-256/SHA-256, P-384/SHA-384, P-521/SHA-512) over the
//!    DSSE pre-authentication encoding of the payload, by one of the trusted keys;
//! 3. only then is the payload parsed: an in-toto statement whose predicate lists every
//!    file of the model with its SHA-256, and whose subject digests those digests;
//! 4. the model folder is hashed and must hold exactly those files with those digests:
//!    no extra file, no missing one, no symlink unless the signer allowed them; paths the
//!    manifest ignores, and the signature file itself, are left out.
//!
//! Nothing here parses model bytes: files are only hashed. The backend calls
//! [`verify_model_dir`] inside its sandbox before OpenVINO opens a model, and may call
//! it again at any time (reload). Keys are read up front, before the sandbox.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod key;
pub mod manifest;
pub mod tree;

pub use key::{Curve, KeyError, TrustedKey, TrustedKeys};
pub use manifest::Manifest;

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest signature file read. A bundle lists one line per file; this allows tens of
/// thousands of files and keeps a hostile file from filling memory.
pub const MAX_SIGNATURE_BYTES: u64 = 16 << 20;

/// Why a model folder does not verify. The variants say whose fault it is: the
/// signature file (`Missing`, `Malformed`), the signer (`UntrustedKey`, `Unsupported`),
/// forgery or corruption (`BadSignature`), or the folder's contents (`Mismatch`,
/// `Folder`, `Changed`).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no signature file at {path}")]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signature file {path} is larger than {MAX_SIGNATURE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("signature file is malformed: {0}")]
    Malformed(String),
    #[error("signature is not supported: {0}")]
    Unsupported(String),
    #[error("signed by a key that is not trusted (key hint {hint})")]
    UntrustedKey { hint: String },
    #[error("the signature does not verify with any trusted key")]
    BadSignature,
    #[error("signed manifest is invalid: {0}")]
    Manifest(String),
    #[error("{path}: {message}")]
    Folder { path: PathBuf, message: String },
    #[error("model files do not match the signed manifest: {0}")]
    Mismatch(Mismatch),
    #[error("{path} changed after it was verified")]
    Changed { path: PathBuf },
}

/// How a folder differs from its manifest (names sorted; each list clipped in messages).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Files present but not signed.
    pub extra: Vec<String>,
    /// Files signed but absent.
    pub missing: Vec<String>,
    /// Files whose content differs.
    pub changed: Vec<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (what, names) in [
            ("unsigned extra file", &self.extra),
            ("missing file", &self.missing),
            ("digest mismatch", &self.changed),
        ] {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            let shown: Vec<String> = names.iter().take(8).map(|n| bundle::clip(n)).collect();
            write!(f, "{what}(s): {}", shown.join(", "))?;
            if names.len() > shown.len() {
                write!(f, " and {} more", names.len() - shown.len())?;
            }
        }
        Ok(())
    }
}

/// A folder that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `sha256:<hex>`: the in-toto subject digest (SHA-256 over the file digests, in
    /// manifest order), the same value `model_signing` signs as the model's identity.
    pub digest: String,
    /// Which trusted key signed it (its source path) and the curve.
    pub key: String,
    pub curve: Curve,
    /// The model name recorded by the signer (informative; not checked).
    pub signed_name: String,
    /// The files checked.
    pub files: Vec<tree::HashedFile>,
}

impl Verified {
    /// Checks that no verified file was replaced or written since it was hashed
    /// (inode, size, mtime, ctime). Call after the loader has read the files, to close
    /// the window between verifying and loading.
    pub fn check_unchanged(&self) -> Result<(), VerifyError> {
        for f in &self.files {
            let now = std::fs::metadata(&f.path).map_err(|source| VerifyError::Io {
                path: f.path.clone(),
                source,
            })?;
            if tree::Stamp::of(&now) != f.stamp {
                return Err(VerifyError::Changed {
                    path: f.path.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Reads a signature file, bounded; a missing file is [`VerifyError::Missing`].
pub fn read_signature(path: &Path) -> Result<Vec<u8>, VerifyError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::Missing {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(VerifyError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIGNATURE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| VerifyError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
        return Err(VerifyError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Verifies the model folder `dir` against the signature file `signature` (inside the
/// folder or not) with `keys`.
pub fn verify_model_dir(
    dir: &Path,
    signature: &Path,
    keys: &TrustedKeys,
) -> Result<Verified, VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::Unsupported(
            "no trusted key is configured".into(),
        ));
    }
    let bytes = read_signature(signature)?;
    let signed = bundle::verify_bundle(&bytes, keys)?;
    let manifest = Manifest::from_payload(&signed.payload)?;

    // The signature file is never part of what it signs.
    let skip = relative_inside(dir, signature);
    let actual = tree::hash_folder(dir, &manifest, skip.as_deref())?;

    let mut mismatch = Mismatch::default();
    for (name, file) in &actual {
        match manifest.files.get(name) {
            None => mismatch.extra.push(name.clone()),
            Some(d) if *d != file.digest => mismatch.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    mismatch.missing = manifest
        .files
        .keys()
        .filter(|n| !actual.contains_key(*n))
        .cloned()
        .collect();
    if mismatch != Mismatch::default() {
        return Err(VerifyError::Mismatch(mismatch));
    }
    Ok(Verified {
        digest: manifest.digest_string(),
        key: signed.key.source.clone(),
        curve: signed.key.curve,
        signed_name: manifest.model_name,
        files: actual.into_values().collect(),
    })
}

/// `path` as components relative to `dir`, when it lies inside it (compared as given,
/// then with both resolved, so `./m/model.sig` is found inside `m`).
fn relative_inside(dir: &Path, path: &Path) -> Option<Vec<String>> {
    let split = |rel: &Path| -> Option<Vec<String>> {
        rel.components()
            .map(|c| c.as_os_str().to_str().map(str::to_owned))
            .collect()
    };
    if let Ok(rel) = path.strip_prefix(dir) {
        return split(rel);
    }
    let dir = std::fs::canonicalize(dir).ok()?;
    let path = std::fs::canonicalize(path).ok()?;
    split(path.strip_prefix(&dir).ok()?)
}

#[cfg(test)]
mod tests;
