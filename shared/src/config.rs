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
/// Port of the admin (metrics) listener, on loopback by default.
pub const DEFAULT_ADMIN_PORT: u16 = 9180;
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
/// Seconds between two scans of the model repository (OVMS
/// `--file_system_poll_wait_seconds`; OVMS's default is 1). 0: no polling, only SIGHUP.
pub const DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS: u64 = 2;
/// gRPC calls handled at once over all gRPC connections (OVMS `--grpc_max_threads`).
/// Unset: no bound beyond connections × streams and the byte quotas.
pub const DEFAULT_GRPC_MAX_CONCURRENT_CALLS: Option<usize> = None;
/// HTTP/2 streams per connection on the gRPC listener (OVMS `--grpc_channel_arguments
/// grpc.max_concurrent_streams=N`). Unset: `limits.h2_max_concurrent_streams`.
pub const DEFAULT_GRPC_H2_MAX_CONCURRENT_STREAMS: Option<u32> = None;
/// Prometheus metrics on the admin listener.
pub const DEFAULT_METRICS_ENABLED: bool = true;

/// Every OVMS metric of a model that Warden exports (`--metrics_list`,
/// `monitoring.metrics.metrics_list`); the first [`OVMS_DEFAULT_METRICS`] are OVMS's
/// default set, the others OVMS's optional metrics. The gateway's metrics registry is
/// checked against this list by a test.
pub const OVMS_METRICS: &[&str] = &[
    "ovms_requests_success",
    "ovms_requests_fail",
    "ovms_request_time_us",
    "ovms_inference_time_us",
    "ovms_wait_for_infer_req_time_us",
    "ovms_streams",
    "ovms_current_requests",
    "ovms_infer_req_queue_size",
    "ovms_infer_req_active",
];
/// How many of [`OVMS_METRICS`] OVMS exports by default.
pub const OVMS_DEFAULT_METRICS: usize = 7;
/// OVMS's MediaPipe graph metrics: OVMS names, but Warden serves no MediaPipe graph,
/// so listing one is refused with that reason rather than exporting an empty family.
pub const OVMS_GRAPH_METRICS: &[&str] = &[
    "ovms_current_graphs",
    "ovms_requests_accepted",
    "ovms_requests_rejected",
    "ovms_responses",
];

/// Checks one name of an OVMS metrics list: `Err` says why it is refused.
pub fn check_ovms_metric(name: &str) -> Result<(), String> {
    if OVMS_METRICS.contains(&name) {
        Ok(())
    } else if OVMS_GRAPH_METRICS.contains(&name) {
        Err(format!(
            "{name:?} is an OVMS MediaPipe graph metric; Warden serves no MediaPipe graphs"
        ))
    } else {
        Err(format!(
            "{name:?} is not an OVMS metric (known: {})",
            OVMS_METRICS.join(", ")
        ))
    }
}

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
    pub audit: AuditConfig,
    pub signing: SigningConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub health: HealthConfig,
    pub triton: TritonConfig,
    pub reflection: ReflectionConfig,
}

/// gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) on the gRPC listener:
/// the descriptors of the services the gateway serves, for grpcurl and the like.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReflectionConfig {
    /// Answer reflection without a credential (still rate-limited per client IP and
    /// audited). Default: a valid credential, like server metadata.
    pub unauthenticated: bool,
}

/// Whether `grpc.health.v1.Health` answers without a credential.
pub const DEFAULT_HEALTH_GRPC_UNAUTHENTICATED: bool = true;

/// `grpc.health.v1.Health` on the gRPC listener. The server-level names (`""` and
/// `inference.GRPCInferenceService`) answer probes (Kubernetes gRPC probes,
/// grpc-health-probe) that carry no credential; per-model names say whether a model
/// exists, so they take a credential and the `ready` operation on the model unless
/// configured otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Server-level health names answer without a credential (rate-limited per client
    /// IP, not audited, like `/v2/health/*`). False: they take a credential and are
    /// audited.
    pub grpc_unauthenticated: bool,
    /// Per-model health names answer without a credential too (anyone can then learn
    /// which model names exist).
    pub grpc_models_unauthenticated: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            grpc_unauthenticated: DEFAULT_HEALTH_GRPC_UNAUTHENTICATED,
            grpc_models_unauthenticated: false,
        }
    }
}

/// Triton's extensions of the KServe v2 API (model configuration, statistics,
/// repository, logging). Configuration and statistics are always served (authorized
/// per model); the repository's load and unload are off unless enabled here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TritonConfig {
    /// Take `repository/models/{m}/load|unload` (and the gRPC `RepositoryModelLoad` /
    /// `RepositoryModelUnload`) from callers the policy grants `admin`. Off: they are
    /// refused as disabled. On: Warden's backend loads the models of its configuration
    /// and follows their folders, and cannot load or unload on request, so they are
    /// refused as not supported (docs/configuration.md, "Triton extensions").
    pub repository_control: bool,
}

/// Prometheus metrics (OVMS `--metrics_enable`, `--metrics_list` and config.json's
/// `monitoring.metrics`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` on the admin listener. False: the admin listener answers 404
    /// there and no metric is exported.
    pub enabled: bool,
    /// Which OVMS metrics ([`OVMS_METRICS`]) are exported, exactly as OVMS's
    /// `metrics_list`; empty: OVMS's default set. Warden's own `warden_*` metrics are
    /// always exported while `enabled`.
    pub list: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: DEFAULT_METRICS_ENABLED,
            list: Vec::new(),
        }
    }
}

impl MetricsConfig {
    /// Whether a metric family is exported.
    pub fn exports(&self, name: &str) -> bool {
        self.enabled
            && (!name.starts_with("ovms_")
                || if self.list.is_empty() {
                    OVMS_METRICS[..OVMS_DEFAULT_METRICS].contains(&name)
                } else {
                    self.list.iter().any(|m| m == name)
                })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for m in &self.list {
            check_ovms_metric(m)
                .map_err(|why| ConfigError::Invalid(format!("metrics.list: {why}")))?;
        }
        Ok(())
    }
}

/// The operational log (stderr; the audit log is separate).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (one human-readable line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    /// Address of the admin listener (Prometheus `/metrics`), plain HTTP.
    pub admin_bind_address: String,
    /// Port of the admin listener; 0 disables it.
    pub admin_port: u16,
    /// A file holding a bearer token the admin listener requires; unset: none (keep
    /// the listener on loopback then).
    pub admin_token: Option<PathBuf>,
    /// Address of the REST listener (OVMS `--rest_bind_address`); unset: `bind_address`.
    pub rest_bind_address: Option<String>,
    /// Address of the gRPC listener (OVMS `--grpc_bind_address`); unset: `bind_address`.
    pub grpc_bind_address: Option<String>,
    /// Worker threads of the gateway's runtime, which serves both listeners (OVMS
    /// `--rest_workers`); unset: one per CPU core.
    pub worker_threads: Option<usize>,
}

impl GatewayConfig {
    /// The address the REST listener binds to.
    pub fn rest_bind(&self) -> &str {
        self.rest_bind_address
            .as_deref()
            .unwrap_or(&self.bind_address)
    }
    /// The address the gRPC listener binds to.
    pub fn grpc_bind(&self) -> &str {
        self.grpc_bind_address
            .as_deref()
            .unwrap_or(&self.bind_address)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            bind_address: DEFAULT_BIND_ADDRESS.into(),
            rest_port: DEFAULT_REST_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            uid: DEFAULT_GATEWAY_UID,
            gid: DEFAULT_GATEWAY_UID,
            admin_bind_address: "127.0.0.1".into(),
            admin_port: DEFAULT_ADMIN_PORT,
            admin_token: None,
            rest_bind_address: None,
            grpc_bind_address: None,
            worker_threads: None,
        }
    }
}

/// The server certificate, and client certificates. TLS is not optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// PEM bundle of CAs that issue client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Client certificates on the REST listener.
    pub rest_client_cert: ClientCertMode,
    /// Client certificates on the gRPC listener.
    pub grpc_client_cert: ClientCertMode,
}

/// Whether a listener asks for client certificates.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Not requested.
    #[default]
    Off,
    /// Requested; a connection without one is still accepted (verified if sent).
    Optional,
    /// Required: the handshake fails without a certificate from `client_ca`.
    Required,
}

/// How a listener authenticates calls.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A bearer JWT.
    #[default]
    Jwt,
    /// A verified client certificate.
    Mtls,
    /// Either (the token wins when both are present).
    JwtOrMtls,
    /// Both, on the same call.
    JwtAndMtls,
}

impl AuthMode {
    pub fn uses_jwt(self) -> bool {
        !matches!(self, AuthMode::Mtls)
    }
    pub fn uses_mtls(self) -> bool {
        !matches!(self, AuthMode::Jwt)
    }
}

/// One token issuer and how its tokens are verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry one of them.
    pub audiences: Vec<String>,
    /// PEM public keys and/or JWKS files (keys picked by `kid`).
    pub keys: Vec<PathBuf>,
    /// A file holding an HS256 shared secret. Only for an issuer with no public keys:
    /// HMAC is never accepted where an asymmetric key is configured.
    pub hs256_secret: Option<PathBuf>,
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
    /// More issuers, each with its own keys and audiences.
    pub issuers: Vec<IssuerConfig>,
    /// Least time between two re-reads of a JWKS file on an unknown `kid`.
    pub jwks_refresh_secs: u64,
    /// The authorization policy file (see policies/). Unset: every authenticated
    /// caller may use every model, which the start log and `warden check` say loudly.
    pub policy: Option<PathBuf>,
    /// Token confirmation (`cnf`) members accepted without being checked (the token is
    /// then a bearer token as far as they go). Warden checks `x5t#S256` (RFC 8705); a
    /// token with any other member (`jkt`, `jwk`, ...) is refused unless listed here.
    pub ignore_cnf_methods: Vec<String>,
    /// How the REST listener authenticates.
    pub rest_mode: AuthMode,
    /// How the gRPC listener authenticates.
    pub grpc_mode: AuthMode,
}

/// Least time between JWKS re-reads triggered by unknown key ids.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 30;

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            leeway_secs: DEFAULT_JWT_LEEWAY_SECS,
            max_lifetime_secs: DEFAULT_JWT_MAX_LIFETIME_SECS,
            issuers: Vec::new(),
            jwks_refresh_secs: DEFAULT_JWKS_REFRESH_SECS,
            policy: None,
            ignore_cnf_methods: Vec::new(),
            rest_mode: AuthMode::Jwt,
            grpc_mode: AuthMode::Jwt,
        }
    }
}

impl AuthConfig {
    /// Every issuer: the `jwt_*` shortcut (if set) followed by `issuers`.
    pub fn all_issuers(&self) -> Vec<IssuerConfig> {
        let mut out = Vec::new();
        if let Some(key) = &self.jwt_key {
            out.push(IssuerConfig {
                issuer: self.jwt_issuer.clone().unwrap_or_default(),
                audiences: self.jwt_audience.iter().cloned().collect(),
                keys: vec![key.clone()],
                hs256_secret: None,
            });
        }
        out.extend(self.issuers.iter().cloned());
        out
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
    /// The uid allowed to connect to the backend's socket (checked with SO_PEERCRED).
    /// Unset: `gateway.uid` when the backend starts as root (`warden serve`), else the
    /// backend's own uid. Set it when gateway and backend run as separate non-root
    /// users, as in the two-container pod.
    pub gateway_uid: Option<u32>,
    /// DEVELOPMENT ONLY, from `--insecure-allow-unenforced-sandbox` alone (never from a
    /// file): start even where the kernel cannot enforce Landlock or seccomp.
    #[serde(skip)]
    pub insecure_allow_unenforced_sandbox: bool,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            socket_dir: DEFAULT_SOCKET_DIR.into(),
            uid: DEFAULT_BACKEND_UID,
            gid: DEFAULT_BACKEND_UID,
            openvino_dir: None,
            gateway_uid: None,
            insecure_allow_unenforced_sandbox: false,
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
    /// OVMS `shape` of the single model: `"(1,3,224,224)"` for its only input, or a
    /// JSON object `{"input": "(1,3,224,224)"}`. `auto` is refused.
    pub shape: Option<String>,
    /// OVMS `layout` of the single model: `"NHWC:NCHW"` (clients send NHWC, the model
    /// takes NCHW), `"NCHW"`, or a JSON object per input.
    pub layout: Option<String>,
    /// OVMS `batch_size` of the single model (ignored when `shape` is set, as in OVMS).
    pub batch_size: Option<u64>,
    /// Infer requests of the single model (OVMS `nireq`; 0 or unset: the default).
    pub nireq: Option<u32>,
    /// Which versions of the single model are served (OVMS `model_version_policy`).
    pub model_version_policy: Option<crate::repository::VersionPolicy>,
    /// Seconds between scans of the repository for new, removed or changed versions
    /// (and of `config.json`); 0: only on SIGHUP.
    pub file_system_poll_wait_seconds: u64,
    /// Model repositories in S3, GCS or Azure Blob (`s3://`, `gs://`, `az://` paths).
    pub object_storage: ObjectStorageConfig,
}

/// Where remote repositories are cached: 0750, owned by the fetcher's uid, group the
/// backend's gid (which reads it, read-only).
pub const DEFAULT_MODEL_CACHE_DIR: &str = "/var/cache/warden/models";
/// The uid `warden fetcher` runs as when started as root.
pub const DEFAULT_FETCHER_UID: u32 = 5002;
/// Largest total size of all remote repositories.
pub const DEFAULT_MAX_REPOSITORY_BYTES: u64 = 16 << 30;
/// Most objects over all remote repositories.
pub const DEFAULT_MAX_REPOSITORY_FILES: usize = 10_000;
/// Longest time one request (a listing, one object's download) may take.
pub const DEFAULT_OBJECT_STORAGE_TIMEOUT_SECS: u64 = 300;
/// Retries of a failed request, with exponential backoff.
pub const DEFAULT_OBJECT_STORAGE_RETRIES: usize = 5;

/// Model repositories in object storage, synced by `warden fetcher` into `cache_dir`.
/// Credentials are never in this file: they come from the environment, as OVMS and
/// the clouds' own tools take them (docs/configuration.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectStorageConfig {
    /// The local cache the backend reads; only the fetcher writes it.
    pub cache_dir: PathBuf,
    /// uid the fetcher runs as when started as root (its gid is the backend's, so the
    /// backend can read what it writes).
    pub uid: u32,
    /// Largest total size of the remote repositories; a larger listing is refused and
    /// the versions already cached keep serving.
    pub max_repository_bytes: u64,
    /// Most objects in the remote repositories.
    pub max_repository_files: usize,
    /// Timeout of one request (a listing, one object's download), in seconds.
    pub timeout_secs: u64,
    /// Retries of a failed request, with exponential backoff.
    pub retries: usize,
}

impl Default for ObjectStorageConfig {
    fn default() -> Self {
        ObjectStorageConfig {
            cache_dir: DEFAULT_MODEL_CACHE_DIR.into(),
            uid: DEFAULT_FETCHER_UID,
            max_repository_bytes: DEFAULT_MAX_REPOSITORY_BYTES,
            max_repository_files: DEFAULT_MAX_REPOSITORY_FILES,
            timeout_secs: DEFAULT_OBJECT_STORAGE_TIMEOUT_SECS,
            retries: DEFAULT_OBJECT_STORAGE_RETRIES,
        }
    }
}

impl ObjectStorageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cache_dir.is_relative() || self.cache_dir == Path::new("/") {
            return Err(ConfigError::Invalid(format!(
                "models.object_storage.cache_dir {} must be an absolute folder other than /",
                self.cache_dir.display()
            )));
        }
        if self.max_repository_bytes == 0 || self.max_repository_files == 0 {
            return Err(ConfigError::Invalid(
                "models.object_storage.max_repository_bytes and max_repository_files must be above 0"
                    .into(),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "models.object_storage.timeout_secs must be above 0".into(),
            ));
        }
        Ok(())
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            model_path: None,
            model_name: None,
            plugin_config: BTreeMap::new(),
            target_device: DEFAULT_TARGET_DEVICE.into(),
            config_path: None,
            shape: None,
            layout: None,
            batch_size: None,
            nireq: None,
            model_version_policy: None,
            file_system_poll_wait_seconds: DEFAULT_FILE_SYSTEM_POLL_WAIT_SECONDS,
            object_storage: ObjectStorageConfig::default(),
        }
    }
}

/// Limits. Defaults follow Envoy's edge guidance, not OVMS's (1 GiB messages, no idle
/// timeout, unlimited connections per IP). Every one is configurable and tested.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest REST request body in bytes.
    pub max_body_bytes: usize,
    /// Largest gRPC message in bytes (decoded and encoded).
    pub max_grpc_message_bytes: usize,
    /// Largest element count of one input tensor.
    pub max_tensor_elements: usize,
    /// Deepest nesting of JSON arrays in `data`.
    pub max_json_depth: usize,
    /// Largest request URL (path and query) in bytes.
    pub max_url_bytes: usize,
    /// Most request headers on one HTTP/1.1 request.
    pub max_headers: usize,
    /// Largest request header block in bytes (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Open client connections, in total.
    pub max_connections: usize,
    /// Open client connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Seconds a client has to finish the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a client has to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may sit with no request in flight.
    pub idle_timeout_secs: u64,
    /// Seconds one request may take, body upload included.
    pub request_timeout_secs: u64,
    /// HTTP/2 streams open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream flow-control window, bytes. What one connection can make
    /// the gateway hold unread is bounded by the connection window, whatever this is.
    pub h2_stream_window_bytes: u32,
    /// HTTP/2 connection flow-control window, bytes.
    pub h2_connection_window_bytes: u32,
    /// HTTP/2 streams a client may reset before the server handles them (rapid reset).
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the server may reset for protocol errors before closing.
    pub h2_max_local_error_reset_streams: usize,
    /// Requests per second over all callers (0: no limit).
    pub rate_total_rps: u32,
    /// Requests per second per authenticated principal (0: no limit).
    pub rate_per_principal_rps: u32,
    /// Requests per second per model (0: no limit).
    pub rate_per_model_rps: u32,
    /// Requests per second per client IP for unauthenticated traffic (health checks,
    /// calls that fail authentication).
    pub rate_per_ip_unauthenticated_rps: u32,
    /// Burst allowed above each rate, as a multiple of one second's worth.
    pub rate_burst_seconds: u32,
    /// Request bytes in flight over all callers (OVMS `--grpc_memory_quota`); 0: no
    /// total quota, as in OVMS.
    pub quota_bytes: usize,
    /// Request bytes in flight for one principal.
    pub quota_per_principal_bytes: usize,
    /// Fraction (percent) of `quota_bytes` in use above which new connections wait.
    pub overload_accept_pause_percent: u8,
    /// Inferences that may wait for a free infer request, per model version; more are
    /// refused at once (503 / UNAVAILABLE). Unset: `4 × nireq`, at least 16.
    pub max_queued_inferences: Option<usize>,
    /// gRPC calls handled at once over all gRPC connections (OVMS `--grpc_max_threads`);
    /// past it a call is refused with RESOURCE_EXHAUSTED. Unset: no such bound.
    pub grpc_max_concurrent_calls: Option<usize>,
    /// HTTP/2 streams per connection on the gRPC listener (OVMS
    /// `grpc.max_concurrent_streams`). Unset: `h2_max_concurrent_streams`.
    pub grpc_h2_max_concurrent_streams: Option<u32>,
}

impl LimitsConfig {
    /// HTTP/2 streams per connection on the gRPC listener.
    pub fn grpc_h2_streams(&self) -> u32 {
        self.grpc_h2_max_concurrent_streams
            .unwrap_or(self.h2_max_concurrent_streams)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_grpc_message_bytes: DEFAULT_MAX_GRPC_MESSAGE_BYTES,
            max_tensor_elements: DEFAULT_MAX_TENSOR_ELEMENTS,
            max_json_depth: 32,
            max_url_bytes: 8 * 1024,
            max_headers: 100,
            max_header_bytes: 60 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            tls_handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 300,
            request_timeout_secs: 120,
            h2_max_concurrent_streams: 100,
            // A quarter of the connection window: a tensor-sized body (hundreds of KiB)
            // then needs few WINDOW_UPDATE frames (each one a TLS record and a write of
            // its own), and a connection still holds at most its connection window.
            h2_stream_window_bytes: 256 * 1024,
            h2_connection_window_bytes: 1024 * 1024,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            rate_total_rps: 0,
            rate_per_principal_rps: 1000,
            rate_per_model_rps: 0,
            rate_per_ip_unauthenticated_rps: 50,
            rate_burst_seconds: 2,
            quota_bytes: 1 << 30,
            quota_per_principal_bytes: 256 << 20,
            overload_accept_pause_percent: 95,
            max_queued_inferences: None,
            grpc_max_concurrent_calls: DEFAULT_GRPC_MAX_CONCURRENT_CALLS,
            grpc_h2_max_concurrent_streams: DEFAULT_GRPC_H2_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// The default audit log: its own file, never mixed with process output.
pub const DEFAULT_AUDIT_PATH: &str = "/var/log/warden/audit.log";

/// The audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// File to append records to; `-` for standard output (shared with whatever else
    /// the process writes there, so only when a collector parses it).
    pub path: PathBuf,
    /// Size at which the file is rotated (renamed `<path>.<first seq>`); 0: never.
    pub max_file_bytes: u64,
    /// Age of the file's first record at which it is rotated, in seconds; 0: never.
    pub max_file_age_secs: u64,
    /// Rotated files kept; the oldest are deleted beyond it. 0: no limit.
    pub max_files: u32,
    /// Bytes kept across the live and rotated files; the oldest rotated files are
    /// deleted beyond it. 0: no limit.
    pub max_total_bytes: u64,
    /// Least free space on the audit file system for the gateway to start.
    pub min_free_bytes: u64,
    /// `always`: fsync after every record; `never`: leave it to the kernel.
    pub fsync: FsyncPolicy,
    /// Serve requests even when their record cannot be written (logged loudly).
    pub fail_open: bool,
}

/// When audit records reach the disk.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    Always,
    #[default]
    Never,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: DEFAULT_AUDIT_PATH.into(),
            max_file_bytes: 100 << 20,
            max_file_age_secs: 24 * 3600,
            max_files: 20,
            max_total_bytes: 2 << 30,
            min_free_bytes: 64 << 20,
            fsync: FsyncPolicy::Never,
            fail_open: false,
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
        fix(&mut self.tls.client_ca);
        fix(&mut self.auth.policy);
        fix(&mut self.gateway.admin_token);
        for issuer in &mut self.auth.issuers {
            for k in &mut issuer.keys {
                if k.is_relative() {
                    *k = base.join(&*k);
                }
            }
            fix(&mut issuer.hs256_secret);
        }
        if self.audit.path != Path::new("-") && self.audit.path.is_relative() {
            self.audit.path = base.join(&self.audit.path);
        }
        fix(&mut self.auth.jwt_key);
        fix(&mut self.backend.openvino_dir);
        if self
            .models
            .model_path
            .as_deref()
            .is_some_and(|p| !p.to_string_lossy().contains("://"))
        {
            fix(&mut self.models.model_path);
        }
        if self.models.object_storage.cache_dir.is_relative() {
            self.models.object_storage.cache_dir = base.join(&self.models.object_storage.cache_dir);
        }
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
        let issuers = self.auth.all_issuers();
        let modes = [self.auth.rest_mode, self.auth.grpc_mode];
        if modes.iter().any(|m| m.uses_jwt())
            && !modes.iter().all(|m| *m == AuthMode::JwtOrMtls)
            && issuers.is_empty()
        {
            return missing("a JWT verification key", "--jwt-key");
        }
        for i in &issuers {
            if i.issuer.is_empty() {
                return missing("a JWT issuer", "--jwt-issuer");
            }
            if i.audiences.iter().all(|a| a.is_empty()) {
                return missing("a JWT audience", "--jwt-audience");
            }
            match (i.keys.is_empty(), i.hs256_secret.is_some()) {
                (true, false) => {
                    return Err(ConfigError::Invalid(format!(
                        "issuer {:?} has no keys",
                        i.issuer
                    )));
                }
                (false, true) => {
                    return Err(ConfigError::Invalid(format!(
                        "issuer {:?} has public keys and an HS256 secret; HMAC is never accepted beside asymmetric keys",
                        i.issuer
                    )));
                }
                _ => {}
            }
        }
        for (mode, cert, listener) in [
            (self.auth.rest_mode, self.tls.rest_client_cert, "rest"),
            (self.auth.grpc_mode, self.tls.grpc_client_cert, "grpc"),
        ] {
            if mode.uses_mtls() && cert == ClientCertMode::Off {
                return Err(ConfigError::Invalid(format!(
                    "auth.{listener}_mode {mode:?} needs tls.{listener}_client_cert optional or required"
                )));
            }
            if cert != ClientCertMode::Off && self.tls.client_ca.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "tls.{listener}_client_cert needs tls.client_ca"
                )));
            }
        }
        self.models_source()?;
        if self.gateway.rest_port == 0 {
            return Err(ConfigError::Invalid("rest_port must not be 0".into()));
        }
        for (what, address) in [
            ("REST bind address", self.gateway.rest_bind()),
            ("gRPC bind address", self.gateway.grpc_bind()),
            (
                "admin bind address",
                self.gateway.admin_bind_address.as_str(),
            ),
        ] {
            if address.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "{what} {address:?} is not an IP address"
                )));
            }
        }
        if self.gateway.rest_port == self.gateway.grpc_port {
            return Err(ConfigError::Invalid(
                "rest_port and grpc_port must differ".into(),
            ));
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_grpc_message_bytes == 0 {
            return Err(ConfigError::Invalid("message caps must be above 0".into()));
        }
        if self.limits.grpc_max_concurrent_calls == Some(0) {
            return Err(ConfigError::Invalid(
                "limits.grpc_max_concurrent_calls (--grpc_max_threads) must be at least 1".into(),
            ));
        }
        if self.limits.grpc_h2_max_concurrent_streams == Some(0) {
            return Err(ConfigError::Invalid(
                "limits.grpc_h2_max_concurrent_streams (grpc.max_concurrent_streams) must be at least 1"
                    .into(),
            ));
        }
        if self.gateway.worker_threads == Some(0) {
            return Err(ConfigError::Invalid(
                "gateway.worker_threads (--rest_workers) must be at least 1".into(),
            ));
        }
        self.metrics.validate()?;
        self.single_model_settings()?;
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

    /// Checks the OVMS model settings given for the single model (`--shape`,
    /// `--layout`, ...): they belong to `--model_path` and are refused beside
    /// `--config_path`, whose entries carry their own.
    fn single_model_settings(&self) -> Result<(), ConfigError> {
        let m = &self.models;
        let set: Vec<&str> = [
            ("shape", m.shape.is_some()),
            ("layout", m.layout.is_some()),
            ("batch_size", m.batch_size.is_some()),
            ("nireq", m.nireq.is_some()),
            ("model_version_policy", m.model_version_policy.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        if m.config_path.is_some() && !set.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "models.{} (--{}) applies to --model_path only; with --config_path set it in each config.json entry",
                set[0], set[0]
            )));
        }
        if let Some(path) = &m.model_path {
            crate::remote::check_model_path(path).map_err(ConfigError::Invalid)?;
        }
        if let Some(path) = &m.config_path
            && path.to_string_lossy().contains("://")
        {
            return Err(ConfigError::Invalid(format!(
                "--config_path {}: config.json must be a local file (its base_path entries may be s3://, gs:// or az:// URLs)",
                path.display()
            )));
        }
        m.object_storage.validate()?;
        if let Some(shape) = &m.shape {
            crate::repository::parse_shape_setting(&serde_json::Value::String(shape.clone()))
                .map_err(|e| ConfigError::Invalid(format!("models.shape (--shape): {e}")))?;
        }
        if let Some(layout) = &m.layout {
            crate::repository::parse_layout_setting(&serde_json::Value::String(layout.clone()))
                .map_err(|e| ConfigError::Invalid(format!("models.layout (--layout): {e}")))?;
        }
        if m.batch_size == Some(0) {
            return Err(ConfigError::Invalid(
                "models.batch_size (--batch_size) must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Every model served, with remote base paths replaced by their cache folders (what
    /// the backend reads), and the config.json read, if any.
    pub fn model_specs(
        &self,
    ) -> Result<(Vec<crate::repository::ModelSpec>, Option<PathBuf>), String> {
        let (mut specs, file) = self.configured_specs()?;
        crate::remote::localize(&mut specs, &self.models.object_storage.cache_dir)?;
        Ok((specs, file))
    }

    /// Every model served, base paths as configured (`s3://...` kept).
    pub fn configured_specs(
        &self,
    ) -> Result<(Vec<crate::repository::ModelSpec>, Option<PathBuf>), String> {
        match self.models_source().map_err(|e| e.to_string())? {
            ModelsSource::Single { path, name } => Ok((
                vec![crate::repository::ModelSpec::single(
                    name,
                    path,
                    &self.models,
                )?],
                None,
            )),
            ModelsSource::OvmsConfig(path) => {
                let specs = crate::repository::read_ovms_config(path).map_err(|e| e.to_string())?;
                Ok((specs, Some(path.to_owned())))
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
    fn metrics_list_selects_as_ovms_and_names_what_it_refuses() {
        let default = MetricsConfig::default();
        assert!(
            default.exports("ovms_current_requests"),
            "in OVMS's default set"
        );
        assert!(
            !default.exports("ovms_infer_req_active"),
            "optional in OVMS"
        );
        assert!(default.exports("warden_requests_total"));
        let listed = MetricsConfig {
            enabled: true,
            list: vec!["ovms_infer_req_active".into()],
        };
        assert!(listed.exports("ovms_infer_req_active"));
        assert!(
            !listed.exports("ovms_requests_success"),
            "only what is listed"
        );
        assert!(listed.exports("warden_requests_total"));
        let off = MetricsConfig {
            enabled: false,
            list: Vec::new(),
        };
        assert!(!off.exports("warden_requests_total"));
        assert!(check_ovms_metric("ovms_streams").is_ok());
        assert!(
            check_ovms_metric("ovms_bogus")
                .unwrap_err()
                .contains("\"ovms_bogus\" is not")
        );
        assert!(
            check_ovms_metric("ovms_current_graphs")
                .unwrap_err()
                .contains("MediaPipe")
        );
    }

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
