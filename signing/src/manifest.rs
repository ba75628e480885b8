//! The signed manifest: an in-toto v1 statement with the OMS v1.0 predicate, listing
//! every file of the model (path relative to the model folder, SHA-256), how the folder
//! was serialized (`method = "files"`, symlinks, ignored paths), and as its subject a
//! digest over all file digests.
//!
//! Parsed only after its signature verified. Still checked strictly: a signer's tool
//! could be buggy, and every name here later becomes a path we compare against.

use crate::VerifyError;
use crate::bundle::clip;
use crate::key::hex;
use aws_lc_rs::digest;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const IN_TOTO_STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const OMS_PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The pre-1.0 predicate; its signatures list no serialization and are not accepted.
const OMS_PREDICATE_TYPE_V0_2: &str = "https://model_signing/Digests/v0.1";

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    ty: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Option<Predicate>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    name: String,
    digest: BTreeMap<String, String>,
}

// Unknown predicate fields are ignored, as the v1.0 predicate asks of verifiers.
#[derive(Deserialize)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<Resource>,
}

#[derive(Deserialize)]
struct Serialization {
    method: String,
    hash_type: String,
    allow_symlinks: bool,
    #[serde(default)]
    ignore_paths: Vec<String>,
}

#[derive(Deserialize)]
struct Resource {
    name: String,
    algorithm: String,
    digest: String,
}

/// A verified manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The model name the signer's folder had (informative only).
    pub model_name: String,
    /// The subject digest: SHA-256 over the file digests, in the listed order.
    pub root_digest: [u8; 32],
    /// Symlinks are followed only when the signer allowed them.
    pub allow_symlinks: bool,
    /// Paths (as clean relative components) left out of the manifest, with all that is
    /// under them.
    pub ignore_paths: Vec<Vec<String>>,
    /// Every file, by its `/`-separated relative path.
    pub files: BTreeMap<String, [u8; 32]>,
}

fn bad(message: impl Into<String>) -> VerifyError {
    VerifyError::Manifest(message.into())
}

fn parse_sha256(hex_text: &str, what: &str) -> Result<[u8; 32], VerifyError> {
    let bytes = hex_text.as_bytes();
    if bytes.len() != 64 {
        return Err(bad(format!("{what}: digest is not 64 hex digits")));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad(format!("{what}: digest not hex")))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad(format!("{what}: digest not hex")))?;
    }
    Ok(out)
}

/// Splits a manifest path into components, refusing anything that is not a plain
/// relative path inside the model folder (`..`, absolute, empty or `.` components).
fn components(path: &str) -> Option<Vec<String>> {
    // An empty or absolute path has an empty component, refused below.
    if path.contains('\0') {
        return None;
    }
    let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    if parts.iter().any(|p| p.is_empty() || p == "." || p == "..") {
        return None;
    }
    Some(parts)
}

/// Ignore paths may be written loosely (`./x`, `dir/`); normalize like Python's pathlib.
/// An entry that leaves the folder can match nothing and is dropped, as model_signing
/// does.
fn ignore_components(path: &str) -> Option<Vec<String>> {
    if path.starts_with('/') {
        return None;
    }
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_owned)
        .collect();
    if parts.is_empty() || parts.iter().any(|p| p == "..") {
        return None;
    }
    Some(parts)
}

impl Manifest {
    /// Parses a signed in-toto statement.
    pub fn from_payload(payload: &[u8]) -> Result<Manifest, VerifyError> {
        let statement: Statement = serde_json::from_slice(payload)
            .map_err(|e| bad(format!("not an in-toto statement: {e}")))?;
        if statement.ty != IN_TOTO_STATEMENT_TYPE {
            return Err(bad(format!(
                "statement type {:?}, expected {IN_TOTO_STATEMENT_TYPE:?}",
                clip(&statement.ty)
            )));
        }
        if statement.predicate_type == OMS_PREDICATE_TYPE_V0_2 {
            return Err(VerifyError::Unsupported(
                "pre-1.0 model_signing signature (Digests/v0.1); re-sign with model_signing >= 1.0"
                    .into(),
            ));
        }
        if statement.predicate_type != OMS_PREDICATE_TYPE {
            return Err(bad(format!(
                "predicate type {:?}, expected {OMS_PREDICATE_TYPE:?}",
                clip(&statement.predicate_type)
            )));
        }
        let [subject] = statement.subject.as_slice() else {
            return Err(bad(format!(
                "{} subjects; expected exactly one",
                statement.subject.len()
            )));
        };
        let root = subject
            .digest
            .get("sha256")
            .ok_or_else(|| bad("subject has no sha256 digest"))?;
        let root_digest = parse_sha256(root, "subject")?;
        let predicate = statement
            .predicate
            .ok_or_else(|| bad("statement has no predicate"))?;
        let ser = predicate.serialization;
        if ser.method != "files" {
            return Err(VerifyError::Unsupported(format!(
                "serialization method {:?}; only \"files\" is verified (sign without --shard)",
                clip(&ser.method)
            )));
        }
        if ser.hash_type != "sha256" {
            return Err(VerifyError::Unsupported(format!(
                "hash type {:?}; only sha256 is verified",
                clip(&ser.hash_type)
            )));
        }

        let mut files = BTreeMap::new();
        let mut over_all = digest::Context::new(&digest::SHA256);
        for r in &predicate.resources {
            if r.algorithm != "sha256" {
                return Err(VerifyError::Unsupported(format!(
                    "resource {:?} hashed with {:?}; only sha256 is verified",
                    clip(&r.name),
                    clip(&r.algorithm)
                )));
            }
            if components(&r.name).is_none() {
                return Err(bad(format!(
                    "resource name {:?} is not a relative path inside the model",
                    clip(&r.name)
                )));
            }
            let d = parse_sha256(&r.digest, &clip(&r.name))?;
            over_all.update(&d);
            if files.insert(r.name.clone(), d).is_some() {
                return Err(bad(format!("resource {:?} listed twice", clip(&r.name))));
            }
        }
        // The subject commits to the resources: they must agree, or the statement says
        // two different things (model_signing refuses this too).
        if over_all.finish().as_ref() != root_digest {
            return Err(bad(
                "the subject digest does not match the listed file digests",
            ));
        }
        Ok(Manifest {
            model_name: subject.name.clone(),
            root_digest,
            allow_symlinks: ser.allow_symlinks,
            ignore_paths: ser
                .ignore_paths
                .iter()
                .filter_map(|p| ignore_components(p))
                .collect(),
            files,
        })
    }

    /// The digest Warden reports for a verified model: the in-toto subject digest.
    pub fn digest_string(&self) -> String {
        format!("sha256:{}", hex(&self.root_digest))
    }

    /// True when `rel` (components of a path in the folder) is at or under an ignored path.
    pub fn is_ignored(&self, rel: &[String]) -> bool {
        self.ignore_paths
            .iter()
            .any(|ig| rel.len() >= ig.len() && rel[..ig.len()] == ig[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(resources: serde_json::Value, root: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "_type": IN_TOTO_STATEMENT_TYPE,
            "subject": [{"name": "m", "digest": {"sha256": root}}],
            "predicateType": OMS_PREDICATE_TYPE,
            "predicate": {
                "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
                                  "ignore_paths": ["model.sig", "./.git/", "../outside", "/abs"]},
                "resources": resources,
                "future_field": 1
            }
        }))
        .unwrap()
    }

    fn root_of(digests: &[[u8; 32]]) -> String {
        let mut c = digest::Context::new(&digest::SHA256);
        for d in digests {
            c.update(d);
        }
        hex(c.finish().as_ref())
    }

    #[test]
    fn parses_and_checks_the_subject() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let res = serde_json::json!([
            {"name": "a.bin", "algorithm": "sha256", "digest": hex(&a)},
            {"name": "sub/b.xml", "algorithm": "sha256", "digest": hex(&b)},
        ]);
        let m = Manifest::from_payload(&statement(res.clone(), &root_of(&[a, b]))).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files["sub/b.xml"], b);
        assert_eq!(
            m.ignore_paths,
            vec![vec!["model.sig".to_string()], vec![".git".to_string()]]
        );
        assert!(m.is_ignored(&[".git".into(), "HEAD".into()]));
        assert!(!m.is_ignored(&[".gitx".into()]));
        assert_eq!(m.digest_string(), format!("sha256:{}", root_of(&[a, b])));
        // The order of the listed digests is what the subject commits to.
        let err = Manifest::from_payload(&statement(res, &root_of(&[b, a]))).unwrap_err();
        assert!(err.to_string().contains("subject digest"), "{err}");
    }

    #[test]
    fn refuses_bad_names_duplicates_and_other_methods() {
        let d = [3u8; 32];
        for name in [
            "../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "",
            "a/./b",
            "a\0b",
            "a/",
        ] {
            let res = serde_json::json!([{"name": name, "algorithm": "sha256", "digest": hex(&d)}]);
            assert!(
                Manifest::from_payload(&statement(res, &root_of(&[d]))).is_err(),
                "{name:?}"
            );
        }
        let dup = serde_json::json!([
            {"name": "a", "algorithm": "sha256", "digest": hex(&d)},
            {"name": "a", "algorithm": "sha256", "digest": hex(&d)}]);
        assert!(Manifest::from_payload(&statement(dup, &root_of(&[d, d]))).is_err());
        let short = serde_json::json!([{"name": "a", "algorithm": "sha256", "digest": "abcd"}]);
        assert!(Manifest::from_payload(&statement(short, &root_of(&[d]))).is_err());
        let blake = serde_json::json!([{"name": "a", "algorithm": "blake2", "digest": hex(&d)}]);
        assert!(matches!(
            Manifest::from_payload(&statement(blake, &root_of(&[d]))),
            Err(VerifyError::Unsupported(_))
        ));
        let shards = serde_json::to_vec(&serde_json::json!({
            "_type": IN_TOTO_STATEMENT_TYPE,
            "subject": [{"name": "m", "digest": {"sha256": root_of(&[])}}],
            "predicateType": OMS_PREDICATE_TYPE,
            "predicate": {"serialization": {"method": "shards", "hash_type": "sha256",
                "allow_symlinks": false, "shard_size": 1000}, "resources": []}
        }))
        .unwrap();
        assert!(matches!(
            Manifest::from_payload(&shards),
            Err(VerifyError::Unsupported(_))
        ));
        let old = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"https://model_signing/Digests/v0.1"}"#;
        assert!(matches!(
            Manifest::from_payload(old),
            Err(VerifyError::Unsupported(_))
        ));
        assert!(Manifest::from_payload(b"{}").is_err());
        assert!(Manifest::from_payload(b"\xff").is_err());
    }
}
