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
    /// Where s3://, gs:// and az:// repositories are cached (models.object_storage.cache_dir).
    #[arg(long = "model-cache-dir", value_name = "DIR")]
    pub model_cache_dir: Option<PathBuf>,
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

    /// OVMS: address of the REST listener (default: --bind-address).
    #[arg(long = "rest-bind-address", alias = "rest_bind_address")]
    pub rest_bind_address: Option<String>,
    /// OVMS: address of the gRPC listener (default: --bind-address).
    #[arg(long = "grpc-bind-address", alias = "grpc_bind_address")]
    pub grpc_bind_address: Option<String>,
    /// OVMS: worker threads of the gateway, which serve REST and gRPC (default: one per core).
    #[arg(long = "rest-workers", alias = "rest_workers")]
    pub rest_workers: Option<usize>,
    /// OVMS: gRPC server instances; Warden runs one (1 is accepted, others refused).
    #[arg(long = "grpc-workers", alias = "grpc_workers")]
    pub grpc_workers: Option<u32>,
    /// OVMS: gRPC calls handled at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long = "grpc-max-threads", alias = "grpc_max_threads")]
    pub grpc_max_threads: Option<usize>,
    /// OVMS: gRPC channel arguments, e.g. grpc.max_concurrent_streams=8.
    #[arg(long = "grpc-channel-arguments", alias = "grpc_channel_arguments")]
    pub grpc_channel_arguments: Option<String>,
    /// OVMS: request bytes in flight over all callers (0: no total quota).
    #[arg(long = "grpc-memory-quota", alias = "grpc_memory_quota")]
    pub grpc_memory_quota: Option<usize>,
    /// OVMS: infer requests of the model (0: the default).
    #[arg(long)]
    pub nireq: Option<u32>,
    /// OVMS: input shape, "(1,3,224,224)" or '{"input":"(1,3,224,224)"}'.
    #[arg(long)]
    pub shape: Option<String>,
    /// OVMS: input layout, "NHWC:NCHW" (requests send NHWC) or "NCHW" or a JSON object.
    #[arg(long)]
    pub layout: Option<String>,
    /// OVMS: batch size of every input (ignored when --shape is set, as in OVMS).
    #[arg(long = "batch-size", alias = "batch_size")]
    pub batch_size: Option<String>,
    /// OVMS: which versions are served, e.g. '{"latest":{"num_versions":2}}'.
    #[arg(long = "model-version-policy", alias = "model_version_policy")]
    pub model_version_policy: Option<String>,
    /// OVMS: TRACE, DEBUG, INFO, WARNING or ERROR (overrides WARDEN_LOG).
    #[arg(long = "log-level", alias = "log_level")]
    pub log_level: Option<String>,
    /// OVMS: seconds between repository scans (0: on SIGHUP only).
    #[arg(
        long = "file-system-poll-wait-seconds",
        alias = "file_system_poll_wait_seconds"
    )]
    pub file_system_poll_wait_seconds: Option<u64>,
    /// OVMS: export Prometheus metrics (on the admin listener); `false` turns them off.
    #[arg(long = "metrics-enable", alias = "metrics_enable", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_enable: Option<bool>,
    /// OVMS: comma-separated OVMS metric names to export.
    #[arg(long = "metrics-list", alias = "metrics_list")]
    pub metrics_list: Option<String>,

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
        Ok(self.load_with_mapping()?.0)
    }

    /// The `tracing` filter `--log_level` asks for, if given.
    pub fn log_filter(&self) -> anyhow::Result<Option<&'static str>> {
        self.log_level
            .as_deref()
            .map(crate::ovms::log_filter)
            .transpose()
    }

    /// The effective configuration, and one line per OVMS flag or config.json setting
    /// saying what it set (for `warden check`).
    pub fn load_with_mapping(&self) -> anyhow::Result<(Config, Vec<String>)> {
        let mut map = Vec::new();
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
        for (flag, p) in [
            ("--model_path", &self.model_path),
            ("--config_path", &self.config_path),
        ] {
            if let Some(p) = p {
                warden_shared::remote::check_model_path(p)
                    .map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
            }
        }
        set!(self.model_path => c.models.model_path);
        set!(self.model_name => c.models.model_name);
        set!(self.model_cache_dir => c.models.object_storage.cache_dir);
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
        self.apply_ovms(&mut c, &mut map)?;
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
        if c.models
            .model_path
            .as_deref()
            .is_some_and(|p| !p.to_string_lossy().contains("://"))
        {
            abs(&mut c.models.model_path);
        }
        abs(&mut c.models.config_path);
        if c.models.object_storage.cache_dir.is_relative() {
            c.models.object_storage.cache_dir = cwd.join(&c.models.object_storage.cache_dir);
        }
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
        // config.json's `monitoring.metrics` sets metrics where no flag does.
        if let Some(path) = &c.models.config_path
            && self.metrics_enable.is_none()
            && self.metrics_list.is_none()
            && let Ok(ovms) = warden_shared::repository::read_ovms_config_full(path)
            && let Some(m) = ovms.monitoring
        {
            c.metrics.enabled = m.enable;
            c.metrics.list = m.metrics_list.clone();
            map.push(format!(
                "config.json monitoring.metrics: enable {} -> metrics.enabled = {}, metrics_list {:?} -> metrics.list",
                m.enable, m.enable, m.metrics_list
            ));
        }
        Ok((c, map))
    }

    /// Maps the OVMS flags onto Warden's settings, refusing values Warden cannot honour.
    fn apply_ovms(&self, c: &mut Config, map: &mut Vec<String>) -> anyhow::Result<()> {
        if self.rest_port == Some(0) {
            anyhow::bail!(
                "--rest_port 0 is refused: OVMS turns its REST server off with 0, but Warden always serves REST (KServe v2 and health)"
            );
        }
        for (flag, v) in [
            ("--rest_bind_address", &self.rest_bind_address),
            ("--grpc_bind_address", &self.grpc_bind_address),
        ] {
            if let Some(v) = v
                && v.contains(',')
            {
                anyhow::bail!(
                    "{flag} {v:?} is refused: Warden binds each listener to one address, not a list"
                );
            }
        }
        if let Some(a) = &self.rest_bind_address {
            c.gateway.rest_bind_address = Some(a.clone());
            map.push(format!(
                "--rest_bind_address {a} -> gateway.rest_bind_address"
            ));
        }
        if let Some(a) = &self.grpc_bind_address {
            c.gateway.grpc_bind_address = Some(a.clone());
            map.push(format!(
                "--grpc_bind_address {a} -> gateway.grpc_bind_address"
            ));
        }
        if let Some(p) = self.rest_port {
            map.push(format!("--rest_port {p} -> gateway.rest_port (HTTPS)"));
        }
        if let Some(p) = self.grpc_port {
            map.push(format!(
                "--port {p} -> gateway.grpc_port (gRPC over TLS; 0: off)"
            ));
        }
        if let Some(n) = self.rest_workers {
            if n == 0 {
                anyhow::bail!("--rest_workers 0 is refused: at least one worker thread is needed");
            }
            c.gateway.worker_threads = Some(n);
            map.push(format!(
                "--rest_workers {n} -> gateway.worker_threads = {n} (the gateway's threads, serving REST and gRPC)"
            ));
        }
        if let Some(n) = self.grpc_workers {
            if n != 1 {
                anyhow::bail!(
                    "--grpc_workers {n} is refused: Warden serves gRPC from one server on the gateway's shared worker threads; only 1 (OVMS's default) is accepted; size the threads with --rest_workers"
                );
            }
            map.push("--grpc_workers 1 -> one gRPC server (as Warden runs)".into());
        }
        if let Some(n) = self.grpc_max_threads {
            if n == 0 {
                anyhow::bail!("--grpc_max_threads 0 is refused: it must be at least 1");
            }
            c.limits.grpc_max_concurrent_calls = Some(n);
            map.push(format!(
                "--grpc_max_threads {n} -> limits.grpc_max_concurrent_calls = {n} (gRPC calls handled at once; more: RESOURCE_EXHAUSTED)"
            ));
        }
        if let Some(args) = &self.grpc_channel_arguments {
            map.extend(crate::ovms::apply_channel_arguments(args, c)?);
        }
        if let Some(q) = self.grpc_memory_quota {
            c.limits.quota_bytes = q;
            map.push(if q == 0 {
                "--grpc_memory_quota 0 -> limits.quota_bytes = 0 (no total in-flight byte quota, as in OVMS)".into()
            } else {
                format!("--grpc_memory_quota {q} -> limits.quota_bytes = {q} (request bytes in flight over all callers)")
            });
        }
        if let Some(level) = &self.log_level {
            let filter = crate::ovms::log_filter(level)?;
            map.push(format!("--log_level {level} -> log filter {filter:?}"));
        }
        if let Some(n) = self.file_system_poll_wait_seconds {
            c.models.file_system_poll_wait_seconds = n;
            map.push(format!(
                "--file_system_poll_wait_seconds {n} -> models.file_system_poll_wait_seconds = {n}{}",
                if n == 0 { " (repository re-read on SIGHUP only)" } else { "" }
            ));
        }
        if let Some(on) = self.metrics_enable {
            if on && c.gateway.admin_port == 0 {
                anyhow::bail!(
                    "--metrics_enable is refused with --admin-port 0: Warden serves metrics on the admin listener, which is off"
                );
            }
            c.metrics.enabled = on;
            map.push(format!(
                "--metrics_enable {on} -> metrics.enabled = {on} (/metrics on the admin listener)"
            ));
        }
        if let Some(list) = &self.metrics_list {
            c.metrics.list = list
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            for m in &c.metrics.list {
                warden_shared::config::check_ovms_metric(m)
                    .map_err(|why| anyhow::anyhow!("--metrics_list: {why}"))?;
            }
            map.push(format!(
                "--metrics_list {list} -> metrics.list = {:?}",
                c.metrics.list
            ));
        }
        // Model settings of the single model (--model_path).
        if let Some(n) = self.nireq {
            c.models.nireq = Some(n);
            map.push(if n == 0 {
                "--nireq 0 -> the default number of infer requests (as OVMS)".into()
            } else {
                format!("--nireq {n} -> {n} infer requests: inferences in flight per model version")
            });
        }
        if let Some(s) = &self.shape {
            c.models.shape = Some(s.clone());
            map.push(format!(
                "--shape {s} -> the model is reshaped to it before compiling"
            ));
        }
        if let Some(l) = &self.layout {
            c.models.layout = Some(l.clone());
            map.push(format!(
                "--layout {l} -> input layout (TENSOR:MODEL adds a transposition in the backend)"
            ));
        }
        if let Some(b) = &self.batch_size {
            let b = b.trim();
            if b.eq_ignore_ascii_case("auto") {
                anyhow::bail!(
                    "--batch_size auto is refused: reloading the model for each request's batch is not supported; set a number, or --shape with -1 for the batch"
                );
            }
            let n: u64 = b
                .parse()
                .map_err(|_| anyhow::anyhow!("--batch_size {b:?} is not a number"))?;
            // OVMS reads 0 as "as the model declares".
            c.models.batch_size = (n > 0).then_some(n);
            map.push(if self.shape.is_some() || c.models.shape.is_some() {
                format!("--batch_size {n} -> NOT APPLIED: --shape is set (as in OVMS)")
            } else {
                format!("--batch_size {n} -> the batch dimension of every input is set to {n}")
            });
        }
        if let Some(p) = &self.model_version_policy {
            let policy = warden_shared::repository::VersionPolicy::from_json(p)
                .map_err(|e| anyhow::anyhow!("--model_version_policy: {e}"))?;
            c.models.model_version_policy = Some(policy);
            map.push(format!("--model_version_policy {p} -> the versions served"));
        }
        if let Some(p) = &self.plugin_config {
            map.push(format!(
                "--plugin_config {p} -> OpenVINO properties of the model"
            ));
        }
        if let Some(d) = &self.target_device {
            map.push(format!(
                "--target_device {d} -> OpenVINO device of the model"
            ));
        }
        Ok(())
    }
}
