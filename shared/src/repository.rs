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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
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

    /// Parses OVMS's JSON form, e.g. `{"latest":{"num_versions":2}}`.
    pub fn from_json(text: &str) -> Result<VersionPolicy, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "model_version_policy {text:?} is not {{\"latest\":{{\"num_versions\":N}}}}, {{\"all\":{{}}}} or {{\"specific\":{{\"versions\":[...]}}}}: {e}"
            )
        })
    }
}

/// One model as configured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelSpec {
    pub name: String,
    pub base_path: PathBuf,
    pub target_device: String,
    /// Infer requests; None (or OVMS's 0): the backend's default.
    pub nireq: Option<u32>,
    pub plugin_config: BTreeMap<String, String>,
    pub version_policy: VersionPolicy,
    /// Per-input shapes (OVMS `shape`); the key `""` means the model's only input.
    pub shape: BTreeMap<String, Vec<Dim>>,
    /// Per-input layouts (OVMS `layout`); the key `""` means the model's only input.
    pub layout: BTreeMap<String, LayoutSetting>,
    /// OVMS `batch_size`: the batch dimension of every input is set to it. Not applied
    /// when `shape` is set (as in OVMS).
    pub batch_size: Option<u64>,
}

impl ModelSpec {
    /// The spec of the single model of `--model_path`.
    pub fn single(
        name: &str,
        path: &Path,
        m: &crate::config::ModelsConfig,
    ) -> Result<ModelSpec, String> {
        let shape = match &m.shape {
            Some(s) => parse_shape_setting(&serde_json::Value::String(s.clone()))
                .map_err(|e| format!("--shape: {e}"))?,
            None => BTreeMap::new(),
        };
        let layout = match &m.layout {
            Some(s) => parse_layout_setting(&serde_json::Value::String(s.clone()))
                .map_err(|e| format!("--layout: {e}"))?,
            None => BTreeMap::new(),
        };
        Ok(ModelSpec {
            name: name.into(),
            base_path: path.into(),
            target_device: m.target_device.clone(),
            nireq: m.nireq.filter(|&n| n > 0),
            plugin_config: m.plugin_config.clone(),
            version_policy: m.model_version_policy.clone().unwrap_or_default(),
            shape,
            layout,
            batch_size: m.batch_size,
        })
    }

    /// One line on the OVMS model settings in effect, for logs and `warden check`.
    pub fn describe_settings(&self) -> String {
        let mut parts = Vec::new();
        for (input, dims) in &self.shape {
            let dims: Vec<String> = dims.iter().map(Dim::to_string).collect();
            parts.push(format!(
                "shape {}({})",
                if input.is_empty() {
                    String::new()
                } else {
                    format!("{input}=")
                },
                dims.join(",")
            ));
        }
        for (input, l) in &self.layout {
            parts.push(format!(
                "layout {}{}",
                if input.is_empty() {
                    String::new()
                } else {
                    format!("{input}=")
                },
                l
            ));
        }
        if let Some(b) = self.batch_size {
            if self.shape.is_empty() {
                parts.push(format!("batch_size {b}"));
            } else {
                parts.push(format!(
                    "batch_size {b} NOT APPLIED: shape is set (as in OVMS)"
                ));
            }
        }
        if let Some(n) = self.nireq {
            parts.push(format!("nireq {n}"));
        }
        if parts.is_empty() {
            "as the model declares".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One dimension of an OVMS shape: fixed, any (`-1`), or a range (`1:8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Any,
    Range(i64, i64),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Any => f.write_str("-1"),
            Dim::Range(a, b) => write!(f, "{a}:{b}"),
        }
    }
}

/// Parses an OVMS shape such as `(1,3,224,224)`, `[1,3,-1,-1]` or `(1,3,200:300,200:300)`.
/// OVMS's `auto` (reload the model per request shape) is refused: Warden compiles each
/// model once.
pub fn parse_shape(text: &str) -> Result<Vec<Dim>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Err(
            "shape \"auto\" (reload the model for each request's shape) is not supported: set fixed dimensions, -1 or ranges such as 1:8"
                .into(),
        );
    }
    let inner = t
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .or_else(|| t.strip_prefix('[').and_then(|r| r.strip_suffix(']')))
        .ok_or_else(|| format!("shape {t:?} is not of the form (1,3,224,224)"))?;
    if inner.trim().is_empty() {
        return Err(format!("shape {t:?} has no dimension"));
    }
    inner
        .split(',')
        .map(|d| {
            let d = d.trim();
            let bad = || format!("shape {t:?}: {d:?} is not a dimension (N > 0, -1 or MIN:MAX)");
            if d == "-1" {
                return Ok(Dim::Any);
            }
            if let Some((a, b)) = d.split_once(':') {
                let (a, b) = (
                    a.trim().parse::<i64>().map_err(|_| bad())?,
                    b.trim().parse::<i64>().map_err(|_| bad())?,
                );
                return if a >= 0 && b >= a && b > 0 {
                    Ok(Dim::Range(a, b))
                } else {
                    Err(bad())
                };
            }
            d.parse::<i64>()
                .ok()
                .filter(|&n| n > 0)
                .map(Dim::Fixed)
                .ok_or_else(bad)
        })
        .collect()
}

/// OVMS `shape` as written in config.json or `--shape`: a shape for the only input, or
/// an object (or JSON text of one) of per-input shapes.
pub fn parse_shape_setting(v: &serde_json::Value) -> Result<BTreeMap<String, Vec<Dim>>, String> {
    per_input(v, "shape", parse_shape)
}

/// OVMS `layout` as written in config.json or `--layout`.
pub fn parse_layout_setting(
    v: &serde_json::Value,
) -> Result<BTreeMap<String, LayoutSetting>, String> {
    per_input(v, "layout", LayoutSetting::parse)
}

fn per_input<T>(
    v: &serde_json::Value,
    what: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<BTreeMap<String, T>, String> {
    match v {
        serde_json::Value::String(s) if s.trim_start().starts_with('{') => {
            let obj: serde_json::Value = serde_json::from_str(s)
                .map_err(|e| format!("{what} {s:?} is not a JSON object: {e}"))?;
            per_input(&obj, what, parse)
        }
        serde_json::Value::String(s) => Ok(BTreeMap::from([(String::new(), parse(s)?)])),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => parse(s)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| format!("{k}: {e}")),
                other => Err(format!("{what} of {k:?}: {other} is not a string")),
            })
            .collect(),
        other => Err(format!("{what} {other} is not a string or an object")),
    }
}

/// OVMS `layout`: `TENSOR:MODEL` (clients send TENSOR, a transposition turns it into
/// the model's MODEL layout) or one layout that only names the dimensions (e.g. where
/// the batch is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSetting {
    /// The layout requests use.
    pub tensor: String,
    /// The model's own layout.
    pub model: String,
}

impl std::fmt::Display for LayoutSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tensor == self.model {
            f.write_str(&self.tensor)
        } else {
            write!(f, "{}:{}", self.tensor, self.model)
        }
    }
}

impl LayoutSetting {
    /// Parses `NHWC:NCHW` or `NCHW` (letters, `?` for an unnamed dimension, `...`).
    pub fn parse(text: &str) -> Result<LayoutSetting, String> {
        let t = text.trim();
        let (tensor, model) = t.split_once(':').unwrap_or((t, t));
        for side in [tensor, model] {
            let ok = !side.is_empty()
                && side.len() <= 16
                && side
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'?' || b == b'.');
            if !ok {
                return Err(format!(
                    "layout {t:?}: {side:?} is not a layout such as NCHW (capital letters, '?', '...')"
                ));
            }
            let letters: Vec<u8> = side.bytes().filter(u8::is_ascii_uppercase).collect();
            let mut dedup = letters.clone();
            dedup.sort_unstable();
            dedup.dedup();
            if dedup.len() != letters.len() {
                return Err(format!("layout {t:?}: {side:?} names a dimension twice"));
            }
            if side.contains('.') && !side.contains("...") {
                return Err(format!("layout {t:?}: {side:?} has a lone '.'"));
            }
        }
        if tensor != model {
            let sorted = |s: &str| {
                let mut v: Vec<u8> = s.bytes().collect();
                v.sort_unstable();
                v
            };
            if sorted(tensor) != sorted(model) || tensor.contains('?') || tensor.contains('.') {
                return Err(format!(
                    "layout {t:?}: {tensor} and {model} must name the same dimensions for a transposition"
                ));
            }
        }
        Ok(LayoutSetting {
            tensor: tensor.into(),
            model: model.into(),
        })
    }

    /// Where the batch dimension (`N`) is in the layout requests use.
    pub fn batch_index(&self) -> Option<usize> {
        if self.tensor.contains("...") && self.tensor.find('N') > self.tensor.find('.') {
            return None;
        }
        self.tensor.find('N')
    }
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

/// OVMS `monitoring.metrics` of a config.json.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Monitoring {
    pub enable: bool,
    pub metrics_list: Vec<String>,
}

/// What a config.json holds that Warden uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OvmsConfig {
    pub models: Vec<ModelSpec>,
    pub monitoring: Option<Monitoring>,
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

/// Top-level config.json lists Warden does not serve; an empty list is accepted.
const REFUSED_LISTS: &[(&str, &str)] = &[
    ("pipeline_config_list", "DAG pipelines are not supported"),
    (
        "mediapipe_config_list",
        "MediaPipe graphs are not supported",
    ),
    (
        "custom_node_library_config_list",
        "custom node libraries are not loaded (no native code beside OpenVINO in the sandbox)",
    ),
    (
        "custom_loader_config_list",
        "custom model loaders are not loaded (no native code beside OpenVINO in the sandbox)",
    ),
];

/// Model keys OVMS accepts that Warden refuses, and why.
const REFUSED_MODEL_KEYS: &[(&str, &str)] = &[
    (
        "idle_sequence_cleanup",
        "stateful (sequence) models are not supported",
    ),
    (
        "max_sequence_number",
        "stateful (sequence) models are not supported",
    ),
    (
        "low_latency_transformation",
        "stateful (sequence) models are not supported",
    ),
    (
        "custom_loader_options",
        "custom model loaders are not loaded (no native code beside OpenVINO in the sandbox)",
    ),
    ("graph_path", "MediaPipe graphs are not supported"),
    ("subconfig", "MediaPipe graphs are not supported"),
    (
        "mean",
        "input preprocessing (mean) is not supported yet; normalize on the client",
    ),
    (
        "scale",
        "input preprocessing (scale) is not supported yet; normalize on the client",
    ),
    (
        "color_format",
        "input preprocessing (color_format) is not supported yet; convert on the client",
    ),
    (
        "precision",
        "input precision conversion is not supported yet; send the model's own datatype",
    ),
];

fn model_entry(
    path: &Path,
    base: &Path,
    entry: &serde_json::Value,
) -> Result<ModelSpec, RepositoryError> {
    let obj = entry
        .as_object()
        .ok_or_else(|| invalid(path, "model_config_list entries must be objects"))?;
    for k in obj.keys() {
        if k != "config" {
            return Err(invalid(
                path,
                format!("model_config_list entry: unknown key {k:?} (only \"config\")"),
            ));
        }
    }
    let m = obj
        .get("config")
        .and_then(|c| c.as_object())
        .ok_or_else(|| invalid(path, "model_config_list entry without a \"config\" object"))?;
    let name = m
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| invalid(path, "a model entry has no \"name\""))?
        .to_owned();
    check_model_name(&name).map_err(|e| invalid(path, e))?;
    let err = |msg: String| invalid(path, format!("model {name:?}: {msg}"));
    let mut spec = ModelSpec {
        name: name.clone(),
        target_device: crate::config::DEFAULT_TARGET_DEVICE.into(),
        ..ModelSpec::default()
    };
    let mut base_path = None;
    for (key, v) in m {
        match key.as_str() {
            "name" => {}
            "base_path" => {
                let p = v
                    .as_str()
                    .ok_or_else(|| err("base_path is not a string".into()))?;
                crate::remote::check_model_path(Path::new(p))
                    .map_err(|e| err(format!("base_path {e}")))?;
                base_path = Some(PathBuf::from(p));
            }
            "target_device" => {
                spec.target_device = v
                    .as_str()
                    .ok_or_else(|| err("target_device is not a string".into()))?
                    .to_owned();
            }
            "nireq" => {
                let n = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| err(format!("nireq {v} is not a count")))?;
                spec.nireq = (n > 0).then_some(n);
            }
            "plugin_config" => {
                let o = v
                    .as_object()
                    .ok_or_else(|| err("plugin_config is not an object".into()))?;
                spec.plugin_config = o
                    .iter()
                    .map(|(k, v)| plugin_value_to_string(v).map(|v| (k.clone(), v)))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
            }
            "model_version_policy" => {
                spec.version_policy = serde_json::from_value(v.clone())
                    .map_err(|e| err(format!("model_version_policy: {e}")))?;
            }
            "shape" => {
                spec.shape = parse_shape_setting(v).map_err(|e| err(format!("shape: {e}")))?;
            }
            "layout" => {
                spec.layout = parse_layout_setting(v).map_err(|e| err(format!("layout: {e}")))?;
            }
            "batch_size" => {
                let n = match v {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) if s.trim().eq_ignore_ascii_case("auto") => {
                        return Err(err(
                            "batch_size \"auto\" (reload the model for each request's batch) is not supported: set a number, or shape with -1 for the batch"
                                .into(),
                        ));
                    }
                    serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                // OVMS reads 0 as "as the model declares".
                spec.batch_size = match n {
                    Some(0) => None,
                    Some(n) => Some(n),
                    None => return Err(err(format!("batch_size {v} is not a number"))),
                };
            }
            "stateful" => match v {
                serde_json::Value::Bool(false) => {}
                serde_json::Value::Bool(true) => {
                    return Err(err(
                        "stateful: true is refused: stateful (sequence) models are not supported"
                            .into(),
                    ));
                }
                other => return Err(err(format!("stateful {other} is not a boolean"))),
            },
            "allow_cache" => match v {
                serde_json::Value::Bool(false) => {}
                _ => {
                    return Err(err(
                        "allow_cache is refused: the sandboxed backend keeps no model cache (it has no writable folder)"
                            .into(),
                    ));
                }
            },
            other => {
                if let Some((_, why)) = REFUSED_MODEL_KEYS.iter().find(|(k, _)| *k == other) {
                    return Err(err(format!("{other} is refused: {why}")));
                }
                return Err(err(format!("unknown key {other:?}")));
            }
        }
    }
    let base_path = base_path.ok_or_else(|| err("no base_path".into()))?;
    // An object-storage URL is not relative to anything.
    let remote = crate::remote::RemoteUrl::of(&base_path)
        .ok()
        .flatten()
        .is_some();
    spec.base_path = if base_path.is_relative() && !remote {
        base.join(base_path)
    } else {
        base_path
    };
    Ok(spec)
}

fn monitoring(path: &Path, v: &serde_json::Value) -> Result<Monitoring, RepositoryError> {
    let bad = |m: String| invalid(path, format!("monitoring: {m}"));
    let o = v.as_object().ok_or_else(|| bad("not an object".into()))?;
    let mut out = Monitoring::default();
    for (k, v) in o {
        if k != "metrics" {
            return Err(bad(format!("unknown key {k:?} (only \"metrics\")")));
        }
        let m = v
            .as_object()
            .ok_or_else(|| bad("metrics is not an object".into()))?;
        for (k, v) in m {
            match k.as_str() {
                "enable" => {
                    out.enable = v
                        .as_bool()
                        .ok_or_else(|| bad("metrics.enable is not a boolean".into()))?;
                }
                "metrics_list" => {
                    out.metrics_list = v
                        .as_array()
                        .and_then(|a| a.iter().map(|m| m.as_str().map(str::to_owned)).collect())
                        .ok_or_else(|| bad("metrics.metrics_list is not a list of names".into()))?;
                    for name in &out.metrics_list {
                        crate::config::check_ovms_metric(name)
                            .map_err(|why| bad(format!("metrics.metrics_list: {why}")))?;
                    }
                }
                other => return Err(bad(format!("metrics: unknown key {other:?}"))),
            }
        }
    }
    Ok(out)
}

/// Parses an OVMS `config.json`. Relative `base_path`s are relative to the file. Every
/// key either takes effect or is refused with its name: none is ignored.
pub fn parse_ovms_config_full(path: &Path, text: &str) -> Result<OvmsConfig, RepositoryError> {
    let file: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| invalid(path, format!("not a valid config.json: {e}")))?;
    let top = file
        .as_object()
        .ok_or_else(|| invalid(path, "not a JSON object"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = OvmsConfig::default();
    let mut seen_list = false;
    for (key, v) in top {
        match key.as_str() {
            "model_config_list" => {
                seen_list = true;
                let list = v
                    .as_array()
                    .ok_or_else(|| invalid(path, "model_config_list is not a list"))?;
                for entry in list {
                    let spec = model_entry(path, base, entry)?;
                    if out.models.iter().any(|s| s.name == spec.name) {
                        return Err(invalid(
                            path,
                            format!("model {:?} is listed twice", spec.name),
                        ));
                    }
                    out.models.push(spec);
                }
            }
            "monitoring" => out.monitoring = Some(monitoring(path, v)?),
            other => match REFUSED_LISTS.iter().find(|(k, _)| *k == other) {
                Some(_) if v.as_array().is_some_and(|a| a.is_empty()) => {}
                Some((_, why)) => {
                    return Err(invalid(path, format!("{other} is refused: {why}")));
                }
                None => return Err(invalid(path, format!("unknown key {other:?}"))),
            },
        }
    }
    if !seen_list {
        return Err(invalid(path, "no model_config_list"));
    }
    Ok(out)
}

/// The models of an OVMS `config.json` (see [`parse_ovms_config_full`]).
pub fn parse_ovms_config(path: &Path, text: &str) -> Result<Vec<ModelSpec>, RepositoryError> {
    parse_ovms_config_full(path, text).map(|c| c.models)
}

/// Reads and parses an OVMS `config.json`, bounded in size.
pub fn read_ovms_config(path: &Path) -> Result<Vec<ModelSpec>, RepositoryError> {
    read_ovms_config_full(path).map(|c| c.models)
}

/// Reads and parses an OVMS `config.json` with its `monitoring` section.
pub fn read_ovms_config_full(path: &Path) -> Result<OvmsConfig, RepositoryError> {
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
    parse_ovms_config_full(path, &text)
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
