//! Trusted public keys: PEM `SubjectPublicKeyInfo` files holding an EC key on P-256,
//! P-384 or P-521 (the curves OMS's key method signs with).
//!
//! The curve is recognised by comparing the DER prefix with the one canonical encoding
//! each named curve has: DER admits exactly one encoding per value, so a well-formed
//! named-curve key either starts with these bytes or is not a key we accept. That keeps
//! a general ASN.1 parser out of the trust path; aws-lc-rs still parses and validates
//! the point (on the curve, not the identity) at every verification.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest key file read: a PEM EC key is a few hundred bytes.
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// The curves (and their hash) OMS's key method uses, as `model_signing` pairs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The SPKI DER prefix up to (and including) the uncompressed-point marker `04`,
    /// and the total length of the SPKI.
    fn spki_prefix(self) -> (&'static [u8], usize) {
        match self {
            // SEQ { SEQ { id-ecPublicKey, prime256v1 }, BIT STRING (66) 00 04 .. }
            Curve::P256 => (
                &[
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                    0x04,
                ],
                91,
            ),
            // SEQ { SEQ { id-ecPublicKey, secp384r1 }, BIT STRING (98) 00 04 .. }
            Curve::P384 => (
                &[
                    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00, 0x04,
                ],
                120,
            ),
            // SEQ { SEQ { id-ecPublicKey, secp521r1 }, BIT STRING (134) 00 04 .. }
            Curve::P521 => (
                &[
                    0x30, 0x81, 0x9b, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
                    0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23, 0x03, 0x81, 0x86, 0x00, 0x04,
                ],
                158,
            ),
        }
    }

    fn of_spki(der: &[u8]) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521]
            .into_iter()
            .find(|c| {
                let (prefix, len) = c.spki_prefix();
                der.len() == len && der.starts_with(prefix)
            })
    }

    /// ECDSA with the hash `model_signing` pairs with the curve, signature in ASN.1 DER.
    fn algorithm(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Curve::P256 => "ECDSA P-256/SHA-256",
            Curve::P384 => "ECDSA P-384/SHA-384",
            Curve::P521 => "ECDSA P-521/SHA-512",
        })
    }
}

/// Why a key file cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path} is larger than {MAX_KEY_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("signing key {path} is not a PEM public key (\"BEGIN PUBLIC KEY\"): {message}")]
    NotPem { path: PathBuf, message: String },
    #[error(
        "signing key {path} is not an EC public key on P-256, P-384 or P-521 (named curve, uncompressed point)"
    )]
    Unsupported { path: PathBuf },
}

/// One public key a model signature may be made with.
#[derive(Clone)]
pub struct TrustedKey {
    /// Where it came from, for messages.
    pub source: String,
    pub curve: Curve,
    spki: Vec<u8>,
    /// `model_signing`'s key hint: SHA-256 (hex) of the key's PEM text.
    hint: String,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("source", &self.source)
            .field("curve", &self.curve)
            .field("hint", &self.hint)
            .finish()
    }
}

impl TrustedKey {
    /// Reads one PEM file (bounded in size).
    pub fn from_pem_file(path: &Path) -> Result<TrustedKey, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::TooLarge {
                path: path.to_owned(),
            });
        }
        let pem = std::fs::read(path).map_err(read)?;
        TrustedKey::from_pem(&pem, &path.display().to_string()).map_err(|e| match e {
            KeyError::NotPem { message, .. } => KeyError::NotPem {
                path: path.to_owned(),
                message,
            },
            _ => KeyError::Unsupported {
                path: path.to_owned(),
            },
        })
    }

    /// Parses PEM text; `source` names it in messages.
    pub fn from_pem(pem: &[u8], source: &str) -> Result<TrustedKey, KeyError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| KeyError::NotPem {
            path: source.into(),
            message: e.to_string(),
        })?;
        TrustedKey::from_spki_der(der.as_ref(), source)
    }

    /// Takes a DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(der: &[u8], source: &str) -> Result<TrustedKey, KeyError> {
        let curve = Curve::of_spki(der).ok_or_else(|| KeyError::Unsupported {
            path: source.into(),
        })?;
        Ok(TrustedKey {
            source: source.into(),
            curve,
            hint: hint_of(der),
            spki: der.to_vec(),
        })
    }

    /// The hint `model_signing` writes into `verificationMaterial.publicKey.hint`.
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// Checks an ASN.1 DER ECDSA signature over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(self.curve.algorithm(), &self.spki)
            .verify(message, sig)
            .is_ok()
    }
}

/// SHA-256 of the key as Python's `cryptography` writes it (PEM, SubjectPublicKeyInfo,
/// 64-column base64): that is what `model_signing` hashes for the hint.
fn hint_of(spki: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    hex(digest::digest(&digest::SHA256, pem.as_bytes()).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The set of keys a deployment trusts. Read before the backend's sandbox, so the key
/// files need not be inside it.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    pub keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys, KeyError> {
        Ok(TrustedKeys {
            keys: paths
                .iter()
                .map(|p| TrustedKey::from_pem_file(p))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    #[test]
    fn openssl_keys_are_recognised_and_hinted_like_model_signing() {
        for (file, curve) in [
            ("p256.pub.pem", Curve::P256),
            ("p384.pub.pem", Curve::P384),
            ("p521.pub.pem", Curve::P521),
        ] {
            let path = testdata(file);
            let key = TrustedKey::from_pem_file(&path).unwrap();
            assert_eq!(key.curve, curve);
            // openssl writes the same PEM text as `cryptography`: the hint is its hash.
            let text = std::fs::read(&path).unwrap();
            assert_eq!(
                key.hint(),
                hex(digest::digest(&digest::SHA256, &text).as_ref())
            );
        }
    }

    #[test]
    fn other_keys_are_refused() {
        // An Ed25519 SPKI, a P-256 key with a compressed point, and garbage.
        let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            TrustedKey::from_pem(ed25519.as_bytes(), "ed"),
            Err(KeyError::Unsupported { .. })
        ));
        let p256 = std::fs::read(testdata("p256.pub.pem")).unwrap();
        let der = SubjectPublicKeyInfoDer::from_pem_slice(&p256).unwrap();
        let mut compressed = der.as_ref()[..der.as_ref().len() - 32].to_vec();
        compressed[1] = 0x39;
        assert!(TrustedKey::from_spki_der(&compressed, "c").is_err());
        let mut long = der.as_ref().to_vec();
        long.push(0);
        assert!(TrustedKey::from_spki_der(&long, "l").is_err());
        assert!(matches!(
            TrustedKey::from_pem(b"not a key", "g"),
            Err(KeyError::NotPem { .. })
        ));
        assert!(matches!(
            TrustedKey::from_pem_file(&testdata("missing.pem")),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn a_key_file_is_read_up_to_its_size_limit_and_named_in_its_error() {
        let dir = std::env::temp_dir().join(format!("warden-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.pem");
        // At the limit the file is read (and is not PEM); one byte more is refused unread.
        std::fs::write(&path, vec![b'x'; MAX_KEY_FILE_BYTES as usize]).unwrap();
        match TrustedKey::from_pem_file(&path) {
            Err(KeyError::NotPem { path: p, .. }) => assert_eq!(p, path),
            other => panic!("want NotPem naming the file, got {other:?}"),
        }
        std::fs::write(&path, vec![b'x'; MAX_KEY_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            TrustedKey::from_pem_file(&path),
            Err(KeyError::TooLarge { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_describe_themselves_without_their_bytes() {
        let names: Vec<String> = [Curve::P256, Curve::P384, Curve::P521]
            .iter()
            .map(Curve::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "ECDSA P-256/SHA-256",
                "ECDSA P-384/SHA-384",
                "ECDSA P-521/SHA-512"
            ]
        );
        let key = TrustedKey::from_pem_file(&testdata("p256.pub.pem")).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.starts_with("TrustedKey { source: "), "{shown}");
        assert!(
            shown.contains("p256.pub.pem") && shown.contains(&key.hint),
            "{shown}"
        );
        assert!(!shown.contains("spki"), "{shown}");
        assert!(TrustedKeys::load(&[]).unwrap().is_empty());
        assert!(
            !TrustedKeys::load(&[testdata("p256.pub.pem")])
                .unwrap()
                .is_empty()
        );
    }
}
