//! The OVMS model repository: `config.json` (`model_config_list`) and the
//! `<base_path>/<version>/model.*` layout.
//!
//! This is parsing of operator-supplied files, not of model bytes: the gateway may use
//! it to know names, and the backend runs it inside its sandbox. Symlinks are refused
//! so that a repository cannot point the backend at files outside it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Longest model name accepted.
pub const MAX_MODEL_NAME_LEN: usize = 128;

/// Model names travel in URLs and audit records: keep them to a safe alphabet.
pub fn check_model_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("model name is empty".into());
    }
    if name.len() > MAX_MODEL_NAME_LEN {
        return Err(format!("model name longer than {MAX_MODEL_NAME_LEN} bytes"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok || name.starts_with('.') {
        return Err(format!(
            "model name {name:?} may hold only letters, digits, '_', '-' and '.', not first"
        ));
    }
    Ok(())
}

/// Which versions of a model are served (OVMS `model_version_policy`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum VersionPolicy {
    /// The `num_versions` highest versions.
    Latest {
        #[serde(default = "one")]
        num_versions: usize,
    },
    /// Every version found.
    All {},
    /// Exactly the listed versions.
    Specific { versions: Vec<u64> },
}

fn one() -> usize {
    1
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest { num_versions: 1 }
    }
}

impl VersionPolicy {
    /// Picks the served versions from those present, highest first.
    pub fn select(&self, mut present: Vec<u64>) -> Vec<u64> {
        present.sort_unstable_by(|a, b| b.cmp(a));
        match self {
            VersionPolicy::Latest { num_versions } => {
                present.truncate(*num_versions);
                present
            }
            VersionPolicy::All {} => present,
            VersionPolicy::Specific { versions } => {
                present.retain(|v| versions.contains(v));
                present
            }
        }
    }
}

/// One model as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub base_path: PathBuf,
    pub target_device: String,
    pub nireq: Option<u32>,
    pub plugin_config: BTreeMap<String, String>,
    pub version_policy: VersionPolicy,
    /// Per-input shape overrides (OVMS `shape`), as text such as `"(1,3,224,224)"`.
    pub shape: BTreeMap<String, String>,
}

/// Why a repository cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> RepositoryError {
    RepositoryError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Largest `config.json` read.
pub const MAX_CONFIG_JSON_BYTES: u64 = 4 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OvmsConfigFile {
    model_config_list: Vec<OvmsEntry>,
    #[serde(default)]
    #[allow(dead_code)]
    mediapipe_config_list: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    monitoring: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OvmsEntry {
    config: OvmsModel,
}

#[derive(Deserialize)]
struct OvmsModel {
    name: String,
    base_path: PathBuf,
    #[serde(default)]
    target_device: Option<String>,
    #[serde(default)]
    nireq: Option<u32>,
    #[serde(default)]
    plugin_config: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    model_version_policy: Option<VersionPolicy>,
    #[serde(default)]
    shape: Option<serde_json::Value>,
}

/// Turns OVMS's loosely typed plugin values (`"f32"`, `1`, `true`) into strings.
pub fn plugin_value_to_string(v: &serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(if *b { "YES" } else { "NO" }.into()),
        other => Err(format!(
            "plugin_config value {other} is not a string or number"
        )),
    }
}

/// Parses a `--plugin-config` JSON object.
pub fn parse_plugin_config(json: &str) -> Result<BTreeMap<String, String>, String> {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| format!("plugin config is not a JSON object: {e}"))?;
    map.into_iter()
        .map(|(k, v)| plugin_value_to_string(&v).map(|v| (k, v)))
        .collect()
}

/// Parses an OVMS `config.json`. Relative `base_path`s are relative to the file.
pub fn parse_ovms_config(path: &Path, text: &str) -> Result<Vec<ModelSpec>, RepositoryError> {
    let file: OvmsConfigFile = serde_json::from_str(text)
        .map_err(|e| invalid(path, format!("not a valid config.json: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut specs: Vec<ModelSpec> = Vec::with_capacity(file.model_config_list.len());
    for OvmsEntry { config: m } in file.model_config_list {
        check_model_name(&m.name).map_err(|e| invalid(path, e))?;
        if specs.iter().any(|s| s.name == m.name) {
            return Err(invalid(path, format!("model {:?} is listed twice", m.name)));
        }
        let plugin_config = m
            .plugin_config
            .iter()
            .map(|(k, v)| plugin_value_to_string(v).map(|v| (k.clone(), v)))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(path, format!("model {:?}: {e}", m.name)))?;
        let shape = match m.shape {
            None => BTreeMap::new(),
            Some(serde_json::Value::String(s)) => BTreeMap::from([(String::new(), s)]),
            Some(serde_json::Value::Object(o)) => o
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    other => Ok((k, other.to_string())),
                })
                .collect::<Result<_, RepositoryError>>()?,
            Some(other) => {
                return Err(invalid(
                    path,
                    format!("model {:?}: shape {other} not understood", m.name),
                ));
            }
        };
        specs.push(ModelSpec {
            base_path: if m.base_path.is_relative() {
                base.join(&m.base_path)
            } else {
                m.base_path
            },
            name: m.name,
            target_device: m
                .target_device
                .unwrap_or_else(|| crate::config::DEFAULT_TARGET_DEVICE.into()),
            nireq: m.nireq,
            plugin_config,
            version_policy: m.model_version_policy.unwrap_or_default(),
            shape,
        });
    }
    Ok(specs)
}

/// Reads and parses an OVMS `config.json`, bounded in size.
pub fn read_ovms_config(path: &Path) -> Result<Vec<ModelSpec>, RepositoryError> {
    let io = |source| RepositoryError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_CONFIG_JSON_BYTES {
        return Err(invalid(
            path,
            format!("larger than {MAX_CONFIG_JSON_BYTES} bytes"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_ovms_config(path, &text)
}

/// The files of one model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// OpenVINO IR: the topology and its weights.
    Ir { xml: PathBuf, bin: PathBuf },
    /// A single-file format OpenVINO reads directly (ONNX, TFLite).
    Single(PathBuf),
}

impl ModelFiles {
    pub fn primary(&self) -> &Path {
        match self {
            ModelFiles::Ir { xml, .. } => xml,
            ModelFiles::Single(p) => p,
        }
    }
}

/// Lists the numeric version folders under a model's base path.
pub fn list_versions(base: &Path) -> Result<Vec<(u64, PathBuf)>, RepositoryError> {
    let io = |source| RepositoryError::Io {
        path: base.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(base).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue; // OVMS ignores non-numeric entries too.
        };
        if version == 0 {
            continue;
        }
        let ft = entry.file_type().map_err(io)?;
        if ft.is_symlink() {
            return Err(invalid(
                &entry.path(),
                "version folder is a symlink; refused",
            ));
        }
        if ft.is_dir() {
            out.push((version, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(v, _)| *v);
    Ok(out)
}

/// Finds the model file(s) in one version folder. Exactly one model must be there.
pub fn find_model_files(dir: &Path) -> Result<ModelFiles, RepositoryError> {
    let io = |source| RepositoryError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut xml = Vec::new();
    let mut single = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "xml" | "bin" | "onnx" | "tflite") {
            continue;
        }
        let ft = entry.file_type().map_err(io)?;
        if ft.is_symlink() {
            return Err(invalid(&path, "model file is a symlink; refused"));
        }
        if !ft.is_file() {
            continue;
        }
        match ext {
            "xml" => xml.push(path),
            "onnx" | "tflite" => single.push(path),
            _ => {}
        }
    }
    match (xml.len(), single.len()) {
        (1, 0) => {
            let xml = xml.remove(0);
            let bin = xml.with_extension("bin");
            match std::fs::symlink_metadata(&bin) {
                Ok(m) if m.file_type().is_file() => Ok(ModelFiles::Ir { xml, bin }),
                Ok(_) => Err(invalid(&bin, "weights are not a regular file")),
                Err(_) => Err(invalid(&xml, "IR topology without its .bin weights")),
            }
        }
        (0, 1) => Ok(ModelFiles::Single(single.remove(0))),
        (0, 0) => Err(invalid(
            dir,
            "no model file (model.xml+.bin, .onnx or .tflite)",
        )),
        _ => Err(invalid(
            dir,
            "more than one model file; keep one per version folder",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_model_name("resnet-50_v1.2").is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            "a%2fb",
            &"x".repeat(200),
        ] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_policies() {
        let present = vec![1, 3, 2];
        assert_eq!(VersionPolicy::default().select(present.clone()), vec![3]);
        assert_eq!(
            VersionPolicy::Latest { num_versions: 2 }.select(present.clone()),
            vec![3, 2]
        );
        assert_eq!(VersionPolicy::All {}.select(present.clone()), vec![3, 2, 1]);
        assert_eq!(
            VersionPolicy::Specific {
                versions: vec![1, 7]
            }
            .select(present),
            vec![1]
        );
    }

    #[test]
    fn ovms_config() {
        let text = r#"{"model_config_list":[
            {"config":{"name":"a","base_path":"models/a","plugin_config":{"NUM_STREAMS":1,"INFERENCE_PRECISION_HINT":"f32"},
                       "model_version_policy":{"specific":{"versions":[1,2]}},"nireq":4}},
            {"config":{"name":"b","base_path":"/m/b","model_version_policy":{"all":{}}}}]}"#;
        let specs = parse_ovms_config(Path::new("/etc/w/config.json"), text).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].base_path, Path::new("/etc/w/models/a"));
        assert_eq!(specs[0].plugin_config["NUM_STREAMS"], "1");
        assert_eq!(specs[0].nireq, Some(4));
        assert_eq!(
            specs[0].version_policy,
            VersionPolicy::Specific {
                versions: vec![1, 2]
            }
        );
        assert_eq!(specs[1].version_policy, VersionPolicy::All {});
        let dup = r#"{"model_config_list":[{"config":{"name":"a","base_path":"x"}},{"config":{"name":"a","base_path":"y"}}]}"#;
        assert!(parse_ovms_config(Path::new("c.json"), dup).is_err());
        let bad_name = r#"{"model_config_list":[{"config":{"name":"../a","base_path":"x"}}]}"#;
        assert!(parse_ovms_config(Path::new("c.json"), bad_name).is_err());
    }
}
