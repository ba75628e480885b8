//! Warden's configuration: one TOML file (`--config`), with command-line flags layered
//! on top by the binary. Every field has a documented default (`DEFAULT_*`), and
//! [`Config::validate`] refuses a configuration that would run unsafely or not at all,
//! so that `warden check` and every process agree on what is valid.
//!
//! Relative paths in the file are relative to the file's own directory.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// REST (HTTPS) port.
pub const DEFAULT_REST_PORT: u16 = 8443;
/// gRPC (TLS) port.
pub const DEFAULT_GRPC_PORT: u16 = 9443;
/// Address both listeners bind to.
pub const DEFAULT_BIND_ADDRESS: &str = "0.0.0.0";
/// The uid the backend runs as when started as root, like OVMS's container user.
pub const DEFAULT_BACKEND_UID: u32 = 5000;
/// The uid the gateway drops to after binding its ports, when started as root.
pub const DEFAULT_GATEWAY_UID: u32 = 5001;
/// Where the backend's socket lives when started as root.
pub const DEFAULT_SOCKET_DIR: &str = "/run/warden";
/// File name of the socket inside the socket directory.
pub const SOCKET_FILE: &str = "backend.sock";
/// Clock leeway for `exp`, `nbf` and `iat`.
pub const DEFAULT_JWT_LEEWAY_SECS: u64 = 30;
/// The longest token lifetime (`exp - iat`) accepted.
pub const DEFAULT_JWT_MAX_LIFETIME_SECS: u64 = 24 * 3600;
/// Largest REST request body (OVMS: 1 GiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
/// Largest gRPC message, in either direction.
pub const DEFAULT_MAX_GRPC_MESSAGE_BYTES: usize = 64 << 20;
/// Largest number of elements in one input tensor.
pub const DEFAULT_MAX_TENSOR_ELEMENTS: usize = 16 << 20;
/// Default OpenVINO device.
pub const DEFAULT_TARGET_DEVICE: &str = "CPU";
/// Environment variable naming the OpenVINO runtime folder.
pub const OPENVINO_DIR_ENV: &str = "WARDEN_OPENVINO_DIR";
/// The project-relative runtime folder that `scripts/fetch-runtime.sh` fills.
pub const DEFAULT_OPENVINO_DIR: &str = ".runtime/openvino";
/// Name of the OMS signature file inside each model version folder (model_signing's
/// own default).
pub const DEFAULT_SIGNATURE_FILE: &str = "model.sig";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub backend: BackendConfig,
    pub models: ModelsConfig,
    pub limits: LimitsConfig,
    pub signing: SigningConfig,
}

/// The network-facing listeners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the REST and gRPC listeners bind to.
    pub bind_address: String,
    /// HTTPS port for the KServe v2 REST API.
    pub rest_port: u16,
    /// TLS port for the KServe v2 gRPC API; 0 disables it.
    pub grpc_port: u16,
    /// uid the gateway switches to after binding its ports (only when started as root).
    pub uid: u32,
    /// gid the gateway switches to (only when started as root).
    pub gid: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            bind_address: DEFAULT_BIND_ADDRESS.into(),
            rest_port: DEFAULT_REST_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            uid: DEFAULT_GATEWAY_UID,
            gid: DEFAULT_GATEWAY_UID,
        }
    }
}

/// The server certificate. TLS is not optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
}

/// Token verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A PEM public key or a JWKS file.
    pub jwt_key: Option<PathBuf>,
    /// The required `iss`.
    pub jwt_issuer: Option<String>,
    /// The required `aud` (one of the token's audiences must equal it).
    pub jwt_audience: Option<String>,
    /// Clock leeway in seconds for `exp`, `nbf`, `iat`.
    pub leeway_secs: u64,
    /// Longest accepted `exp - iat`, in seconds.
    pub max_lifetime_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            leeway_secs: DEFAULT_JWT_LEEWAY_SECS,
            max_lifetime_secs: DEFAULT_JWT_MAX_LIFETIME_SECS,
        }
    }
}

/// The inference process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Directory holding the socket; created 0750 by `warden serve`.
    pub socket_dir: PathBuf,
    /// uid the backend runs as when started as root.
    pub uid: u32,
    /// gid the backend runs as when started as root.
    pub gid: u32,
    /// The OpenVINO runtime folder (holding `libopenvino_c.so*`). When unset:
    /// `$WARDEN_OPENVINO_DIR`, then `.runtime/openvino` in the working directory, then
    /// beside the executable's project.
    pub openvino_dir: Option<PathBuf>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            socket_dir: DEFAULT_SOCKET_DIR.into(),
            uid: DEFAULT_BACKEND_UID,
            gid: DEFAULT_BACKEND_UID,
            openvino_dir: None,
        }
    }
}

/// What to serve: one model (`model_path` + `model_name`) or an OVMS `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// OVMS-style model folder: `<model_path>/<version>/model.{xml,onnx,tflite}`.
    pub model_path: Option<PathBuf>,
    /// Name the single model is served under.
    pub model_name: Option<String>,
    /// OpenVINO properties for the single model, e.g. `INFERENCE_PRECISION_HINT = "f32"`.
    pub plugin_config: BTreeMap<String, String>,
    /// OpenVINO device for the single model.
    pub target_device: String,
    /// OVMS `config.json` with a `model_config_list`; excludes `model_path`.
    pub config_path: Option<PathBuf>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            model_path: None,
            model_name: None,
            plugin_config: BTreeMap::new(),
            target_device: DEFAULT_TARGET_DEVICE.into(),
            config_path: None,
        }
    }
}

/// Size caps. Each is enforced while bytes stream in, never after buffering.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest REST request body in bytes.
    pub max_body_bytes: usize,
    /// Largest gRPC message in bytes.
    pub max_grpc_message_bytes: usize,
    /// Largest element count of one input tensor.
    pub max_tensor_elements: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_grpc_message_bytes: DEFAULT_MAX_GRPC_MESSAGE_BYTES,
            max_tensor_elements: DEFAULT_MAX_TENSOR_ELEMENTS,
        }
    }
}

/// Whether a model must carry a valid OpenSSF Model Signing signature.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SigningMode {
    /// A valid signature by a trusted key is required; otherwise the model is not served.
    Required,
    /// An unsigned model is served (and logged); a signature that is present must verify.
    Optional,
    /// Signatures are not read.
    Off,
}

impl std::fmt::Display for SigningMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningMode::Required => "required",
            SigningMode::Optional => "optional",
            SigningMode::Off => "off",
        })
    }
}

impl std::str::FromStr for SigningMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(SigningMode::Required),
            "optional" => Ok(SigningMode::Optional),
            "off" => Ok(SigningMode::Off),
            other => Err(format!(
                "signing mode {other:?} is not one of required, optional, off"
            )),
        }
    }
}

/// Model integrity: OMS signatures checked before a model is loaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// PEM public keys (EC P-256, P-384 or P-521) a model may be signed with.
    pub trusted_keys: Vec<PathBuf>,
    /// The mode for every model without an override. Unset: `required` when any key is
    /// configured, else `off`.
    pub mode: Option<SigningMode>,
    /// File name of the signature inside each version folder.
    pub signature_file: String,
    /// Per-model modes, by served model name.
    pub models: BTreeMap<String, SigningMode>,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            trusted_keys: Vec::new(),
            mode: None,
            signature_file: DEFAULT_SIGNATURE_FILE.into(),
            models: BTreeMap::new(),
        }
    }
}

impl SigningConfig {
    /// The mode of models without an override.
    pub fn default_mode(&self) -> SigningMode {
        self.mode.unwrap_or(if self.trusted_keys.is_empty() {
            SigningMode::Off
        } else {
            SigningMode::Required
        })
    }

    /// The mode that applies to `model`.
    pub fn mode_for(&self, model: &str) -> SigningMode {
        self.models
            .get(model)
            .copied()
            .unwrap_or_else(|| self.default_mode())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let f = &self.signature_file;
        if f.is_empty() || f == "." || f == ".." || f.contains('/') || f.contains('\0') {
            return Err(ConfigError::Invalid(format!(
                "signing.signature_file {f:?} must be a plain file name inside the version folder"
            )));
        }
        for name in self.models.keys() {
            crate::repository::check_model_name(name)
                .map_err(|e| ConfigError::Invalid(format!("signing.models: {e}")))?;
        }
        // A mode that needs a key with no key configured could never load a signed
        // model: say so now rather than refusing every model at start.
        let needs_key = std::iter::once(self.default_mode())
            .chain(self.models.values().copied())
            .any(|m| m != SigningMode::Off);
        if needs_key && self.trusted_keys.is_empty() {
            return Err(ConfigError::Invalid(
                "signing mode required or optional needs signing.trusted_keys (--signing-key)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; relative paths inside it become relative to its folder.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_relative_to(base);
        Ok(config)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
            {
                *path = base.join(&*path);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.auth.jwt_key);
        fix(&mut self.backend.openvino_dir);
        fix(&mut self.models.model_path);
        fix(&mut self.models.config_path);
        for key in &mut self.signing.trusted_keys {
            if key.is_relative() {
                *key = base.join(&*key);
            }
        }
        if self.backend.socket_dir.is_relative() {
            self.backend.socket_dir = base.join(&self.backend.socket_dir);
        }
    }

    /// Checks what each process needs. Called by `warden check` and at every start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let missing = |what: &str, flag: &str| {
            Err(ConfigError::Invalid(format!(
                "{what} is required (set {flag} or the config key)"
            )))
        };
        if self.tls.cert.is_none() {
            return missing("a TLS certificate", "--tls-cert");
        }
        if self.tls.key.is_none() {
            return missing("a TLS private key", "--tls-key");
        }
        if self.auth.jwt_key.is_none() {
            return missing("a JWT verification key", "--jwt-key");
        }
        if self.auth.jwt_issuer.as_deref().unwrap_or("").is_empty() {
            return missing("a JWT issuer", "--jwt-issuer");
        }
        if self.auth.jwt_audience.as_deref().unwrap_or("").is_empty() {
            return missing("a JWT audience", "--jwt-audience");
        }
        self.models_source()?;
        if self.gateway.rest_port == 0 {
            return Err(ConfigError::Invalid("rest_port must not be 0".into()));
        }
        if self.gateway.rest_port == self.gateway.grpc_port {
            return Err(ConfigError::Invalid(
                "rest_port and grpc_port must differ".into(),
            ));
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_grpc_message_bytes == 0 {
            return Err(ConfigError::Invalid("message caps must be above 0".into()));
        }
        self.signing.validate()?;
        Ok(())
    }

    /// Where the models come from, refusing an ambiguous or empty choice.
    pub fn models_source(&self) -> Result<ModelsSource<'_>, ConfigError> {
        let m = &self.models;
        match (&m.model_path, &m.config_path) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid(
                "--model-path and --config-path exclude each other".into(),
            )),
            (None, None) => Err(ConfigError::Invalid(
                "no model to serve: set --model-path and --model-name, or --config-path".into(),
            )),
            (None, Some(path)) => Ok(ModelsSource::OvmsConfig(path)),
            (Some(path), None) => {
                let name = m.model_name.as_deref().unwrap_or("");
                crate::repository::check_model_name(name)
                    .map_err(|e| ConfigError::Invalid(format!("--model-name: {e}")))?;
                Ok(ModelsSource::Single { path, name })
            }
        }
    }

    /// The socket path inside the socket directory.
    pub fn socket_path(&self) -> PathBuf {
        self.backend.socket_dir.join(SOCKET_FILE)
    }
}

/// The two ways to say what to serve.
#[derive(Debug, Clone, Copy)]
pub enum ModelsSource<'a> {
    Single { path: &'a Path, name: &'a str },
    OvmsConfig(&'a Path),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("[gateway]\nrest_prot = 1\n").unwrap_err();
        assert!(err.contains("rest_prot"), "{err}");
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::default();
        assert_eq!(c.gateway.rest_port, DEFAULT_REST_PORT);
        assert!(c.limits.max_body_bytes < 1 << 30);
        // Nothing to serve and no key: invalid, never "open".
        assert!(c.validate().is_err());
    }

    #[test]
    fn signing_modes_default_to_required_once_a_key_exists() {
        let mut s = SigningConfig::default();
        assert_eq!(s.default_mode(), SigningMode::Off);
        assert!(s.validate().is_ok());
        s.trusted_keys.push("k.pem".into());
        assert_eq!(s.default_mode(), SigningMode::Required);
        s.models.insert("legacy".into(), SigningMode::Off);
        assert_eq!(s.mode_for("legacy"), SigningMode::Off);
        assert_eq!(s.mode_for("other"), SigningMode::Required);
        assert!(s.validate().is_ok());

        let c = Config::from_toml(
            "[signing]\ntrusted_keys = [\"k.pem\"]\nmode = \"optional\"\n[signing.models]\na = \"required\"\n",
        )
        .unwrap();
        assert_eq!(c.signing.default_mode(), SigningMode::Optional);
        assert_eq!(c.signing.mode_for("a"), SigningMode::Required);
        assert!(Config::from_toml("[signing]\nmode = \"sometimes\"\n").is_err());
        assert!(Config::from_toml("[signing]\ntrusted_key = []\n").is_err());
    }

    #[test]
    fn the_example_signing_policy_is_valid() {
        let c = Config::from_toml(include_str!("../../policies/signing.toml")).unwrap();
        assert_eq!(c.signing.default_mode(), SigningMode::Required);
        assert_eq!(c.signing.signature_file, DEFAULT_SIGNATURE_FILE);
        assert!(!c.signing.trusted_keys.is_empty());
        c.signing.validate().unwrap();
    }

    #[test]
    fn signing_configs_that_cannot_work_are_refused() {
        let required_without_key = SigningConfig {
            mode: Some(SigningMode::Required),
            ..Default::default()
        };
        assert!(required_without_key.validate().is_err());
        let override_without_key = SigningConfig {
            models: [("m".to_string(), SigningMode::Optional)].into(),
            ..Default::default()
        };
        assert!(override_without_key.validate().is_err());
        for bad in ["", "..", "a/b.sig"] {
            let c = SigningConfig {
                signature_file: bad.into(),
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{bad:?}");
        }
        let bad_name = SigningConfig {
            trusted_keys: vec!["k".into()],
            models: [("../m".to_string(), SigningMode::Off)].into(),
            ..Default::default()
        };
        assert!(bad_name.validate().is_err());
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let mut c = Config::from_toml(
            "[tls]\ncert = \"a.pem\"\n[models]\nmodel_path = \"/abs\"\n[signing]\ntrusted_keys = [\"keys/k.pem\"]\n",
        )
        .unwrap();
        c.resolve_relative_to(Path::new("/etc/warden"));
        assert_eq!(
            c.signing.trusted_keys,
            vec![PathBuf::from("/etc/warden/keys/k.pem")]
        );
        assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/etc/warden/a.pem")));
        assert_eq!(c.models.model_path.as_deref(), Some(Path::new("/abs")));
    }
}
