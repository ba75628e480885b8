//! The flags shared by `serve`, `gateway`, `backend` and `check`, layered over the TOML
//! file. OVMS's spellings are accepted as aliases so existing command lines keep working.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use warden_shared::config::Config;

/// `--rest-client-cert` and friends (the TOML spelling is snake_case).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ClientCertMode {
    Off,
    Optional,
    Required,
}

impl From<ClientCertMode> for warden_shared::config::ClientCertMode {
    fn from(m: ClientCertMode) -> Self {
        match m {
            ClientCertMode::Off => Self::Off,
            ClientCertMode::Optional => Self::Optional,
            ClientCertMode::Required => Self::Required,
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--rest-auth` and `--grpc-auth`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AuthMode {
    Jwt,
    Mtls,
    JwtOrMtls,
    JwtAndMtls,
}

impl From<AuthMode> for warden_shared::config::AuthMode {
    fn from(m: AuthMode) -> Self {
        match m {
            AuthMode::Jwt => Self::Jwt,
            AuthMode::Mtls => Self::Mtls,
            AuthMode::JwtOrMtls => Self::JwtOrMtls,
            AuthMode::JwtAndMtls => Self::JwtAndMtls,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Warden's TOML configuration file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// OVMS-style model folder (`<path>/<version>/model.xml|.onnx|.tflite`).
    #[arg(long = "model-path", alias = "model_path", value_name = "DIR")]
    pub model_path: Option<PathBuf>,
    /// Name to serve the model under.
    #[arg(long = "model-name", alias = "model_name")]
    pub model_name: Option<String>,
    /// OVMS `config.json` listing many models (excludes --model-path).
    #[arg(long = "config-path", alias = "config_path", value_name = "FILE")]
    pub config_path: Option<PathBuf>,
    /// OpenVINO properties for the model, as JSON: '{"INFERENCE_PRECISION_HINT":"f32"}'.
    #[arg(long = "plugin-config", alias = "plugin_config", value_name = "JSON")]
    pub plugin_config: Option<String>,
    /// OpenVINO device for the model.
    #[arg(long = "target-device", alias = "target_device")]
    pub target_device: Option<String>,

    /// Address both listeners bind to.
    #[arg(long = "bind-address", alias = "bind_address")]
    pub bind_address: Option<String>,
    /// HTTPS port of the REST API.
    #[arg(long = "rest-port", alias = "rest_port")]
    pub rest_port: Option<u16>,
    /// TLS port of the gRPC API (0 disables it).
    #[arg(long = "grpc-port", alias = "port")]
    pub grpc_port: Option<u16>,

    /// PEM certificate chain of the server.
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the server.
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM public key or JWKS file that verifies bearer tokens.
    #[arg(long = "jwt-key", value_name = "FILE")]
    pub jwt_key: Option<PathBuf>,
    /// Required `iss` of bearer tokens.
    #[arg(long = "jwt-issuer")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of bearer tokens.
    #[arg(long = "jwt-audience")]
    pub jwt_audience: Option<String>,

    /// Directory of the gateway↔backend socket.
    #[arg(long = "socket-dir", value_name = "DIR")]
    pub socket_dir: Option<PathBuf>,
    /// OpenVINO runtime folder (default: $WARDEN_OPENVINO_DIR, then .runtime/openvino).
    #[arg(long = "openvino-dir", value_name = "DIR")]
    pub openvino_dir: Option<PathBuf>,
    /// uid:gid the backend runs as when started as root (default 5000:5000).
    #[arg(long = "backend-user", value_name = "UID[:GID]")]
    pub backend_user: Option<String>,
    /// uid:gid the gateway drops to when started as root (default 5001:5001).
    #[arg(long = "gateway-user", value_name = "UID[:GID]")]
    pub gateway_user: Option<String>,

    /// Largest REST request body, in bytes.
    #[arg(long = "max-body-bytes")]
    pub max_body_bytes: Option<usize>,
    /// Largest element count of one input tensor.
    #[arg(long = "max-tensor-elements")]
    pub max_tensor_elements: Option<usize>,

    /// PEM bundle of CAs for client certificates (mTLS).
    #[arg(long = "client-ca", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Client certificates on the REST listener: off, optional, required.
    #[arg(long = "rest-client-cert", value_enum)]
    pub rest_client_cert: Option<ClientCertMode>,
    /// Client certificates on the gRPC listener: off, optional, required.
    #[arg(long = "grpc-client-cert", value_enum)]
    pub grpc_client_cert: Option<ClientCertMode>,
    /// How REST calls authenticate: jwt, mtls, jwt-or-mtls, jwt-and-mtls.
    #[arg(long = "rest-auth", value_enum)]
    pub rest_auth: Option<AuthMode>,
    /// How gRPC calls authenticate: jwt, mtls, jwt-or-mtls, jwt-and-mtls.
    #[arg(long = "grpc-auth", value_enum)]
    pub grpc_auth: Option<AuthMode>,
    /// The authorization policy file (see policies/).
    #[arg(long = "authz-policy", value_name = "FILE")]
    pub authz_policy: Option<PathBuf>,
    /// Log format on stderr: text or json (config key log.format).
    #[arg(long = "log-format", value_enum)]
    pub log_format: Option<LogFormat>,
    /// The audit log file (default /var/log/warden/audit.log), or `-` for standard output.
    #[arg(long = "audit-log", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Port of the admin (metrics) listener; 0 disables it.
    #[arg(long = "admin-port")]
    pub admin_port: Option<u16>,
    /// Requests per second per principal (0: unlimited).
    #[arg(long = "rate-per-principal")]
    pub rate_per_principal: Option<u32>,
    /// Request bytes in flight over all callers.
    #[arg(long = "quota-bytes")]
    pub quota_bytes: Option<usize>,
    /// Request bytes in flight per principal.
    #[arg(long = "quota-per-principal-bytes")]
    pub quota_per_principal_bytes: Option<usize>,
    /// PEM public key (EC P-256/P-384/P-521) trusted to sign models; repeat for more.
    /// Replaces `signing.trusted_keys` of the file.
    #[arg(long = "signing-key", value_name = "FILE")]
    pub signing_key: Vec<PathBuf>,
    /// Whether models must carry a valid OMS signature: required, optional or off
    /// (default: required when a key is configured, else off).
    #[arg(long = "signing-mode", value_name = "MODE")]
    pub signing_mode: Option<warden_shared::config::SigningMode>,

    /// `warden check` only: also load every model in the sandbox and run one inference
    /// on zeros of its declared shape.
    #[arg(long)]
    pub probe: bool,

    /// DEVELOPMENT ONLY: start the backend even where the kernel cannot enforce Landlock.
    #[arg(long = "insecure-allow-unenforced-sandbox")]
    pub insecure_allow_unenforced_sandbox: bool,
}

fn user(spec: &str) -> anyhow::Result<(u32, u32)> {
    let (u, g) = spec.split_once(':').unwrap_or((spec, spec));
    Ok((
        u.parse().context("uid must be a number")?,
        g.parse().context("gid must be a number")?,
    ))
}

impl RunArgs {
    /// The effective configuration: the file (if any), then every flag given.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($flag:expr => $field:expr) => {
                if let Some(v) = &$flag {
                    $field = v.clone().into();
                }
            };
        }
        set!(self.model_path => c.models.model_path);
        set!(self.model_name => c.models.model_name);
        set!(self.config_path => c.models.config_path);
        set!(self.target_device => c.models.target_device);
        if let Some(json) = &self.plugin_config {
            c.models.plugin_config = warden_shared::repository::parse_plugin_config(json)
                .map_err(|e| anyhow::anyhow!("--plugin-config: {e}"))?;
        }
        set!(self.bind_address => c.gateway.bind_address);
        set!(self.rest_port => c.gateway.rest_port);
        set!(self.grpc_port => c.gateway.grpc_port);
        set!(self.tls_cert => c.tls.cert);
        set!(self.tls_key => c.tls.key);
        set!(self.jwt_key => c.auth.jwt_key);
        set!(self.jwt_issuer => c.auth.jwt_issuer);
        set!(self.jwt_audience => c.auth.jwt_audience);
        set!(self.socket_dir => c.backend.socket_dir);
        set!(self.openvino_dir => c.backend.openvino_dir);
        set!(self.max_body_bytes => c.limits.max_body_bytes);
        set!(self.max_tensor_elements => c.limits.max_tensor_elements);
        set!(self.client_ca => c.tls.client_ca);
        if let Some(m) = self.rest_client_cert {
            c.tls.rest_client_cert = m.into();
        }
        if let Some(m) = self.grpc_client_cert {
            c.tls.grpc_client_cert = m.into();
        }
        if let Some(m) = self.rest_auth {
            c.auth.rest_mode = m.into();
        }
        if let Some(m) = self.grpc_auth {
            c.auth.grpc_mode = m.into();
        }
        set!(self.authz_policy => c.auth.policy);
        set!(self.audit_log => c.audit.path);
        if let Some(f) = self.log_format {
            c.log.format = match f {
                LogFormat::Text => warden_shared::config::LogFormat::Text,
                LogFormat::Json => warden_shared::config::LogFormat::Json,
            };
        }
        set!(self.admin_port => c.gateway.admin_port);
        set!(self.rate_per_principal => c.limits.rate_per_principal_rps);
        set!(self.quota_bytes => c.limits.quota_bytes);
        set!(self.quota_per_principal_bytes => c.limits.quota_per_principal_bytes);
        if !self.signing_key.is_empty() {
            c.signing.trusted_keys = self.signing_key.clone();
        }
        if let Some(mode) = self.signing_mode {
            c.signing.mode = Some(mode);
        }
        if let Some(spec) = &self.backend_user {
            (c.backend.uid, c.backend.gid) = user(spec).context("--backend-user")?;
        }
        if let Some(spec) = &self.gateway_user {
            (c.gateway.uid, c.gateway.gid) = user(spec).context("--gateway-user")?;
        }
        // Paths given on the command line are relative to the working directory; make
        // them absolute so the children (and the sandbox rules) agree on them.
        let cwd = std::env::current_dir()?;
        let abs = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
            {
                *path = cwd.join(&*path);
            }
        };
        abs(&mut c.models.model_path);
        abs(&mut c.models.config_path);
        abs(&mut c.tls.cert);
        abs(&mut c.tls.key);
        abs(&mut c.auth.jwt_key);
        abs(&mut c.backend.openvino_dir);
        abs(&mut c.tls.client_ca);
        abs(&mut c.auth.policy);
        if c.audit.path != std::path::Path::new("-") && c.audit.path.is_relative() {
            c.audit.path = cwd.join(&c.audit.path);
        }
        for key in &mut c.signing.trusted_keys {
            if key.is_relative() {
                *key = cwd.join(&*key);
            }
        }
        if c.backend.socket_dir.is_relative() {
            c.backend.socket_dir = cwd.join(&c.backend.socket_dir);
        }
        c.backend.insecure_allow_unenforced_sandbox = self.insecure_allow_unenforced_sandbox;
        Ok(c)
    }
}
