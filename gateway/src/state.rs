//! What every request handler shares: the configuration, the token verifier, the
//! policy, the limits, the audit log, the metrics and the backend client. Built once
//! at start; the parts that change at run time (JWKS keys, quotas, counters) guard
//! themselves.

use crate::audit::AuditLog;
use crate::auth::jwt::JwtAuthority;
use crate::authz::Policy;
use crate::backend_client::{BackendClient, Clients, Frames, GaugesClient};
use crate::catalog::Catalog;
use crate::limits::quota::Quotas;
use crate::limits::rate::RateLimits;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicU64, Ordering};
use warden_shared::config::Config;

pub struct State {
    pub config: Config,
    pub jwt: JwtAuthority,
    /// The authorization policy in force; replaced whole on reload.
    policy: std::sync::RwLock<std::sync::Arc<Policy>>,
    /// The TLS configurations in force (REST, gRPC); replaced whole on reload, so a
    /// rotated certificate is used by new handshakes while open connections go on.
    tls: std::sync::RwLock<(
        std::sync::Arc<rustls::ServerConfig>,
        std::sync::Arc<rustls::ServerConfig>,
    )>,
    pub backend: BackendClient,
    /// The framed connections that carry `ModelInfer`.
    pub frames: Frames,
    /// The backend's gauges (streams, infer request pool), read for `/metrics`.
    pub backend_gauges: GaugesClient,
    /// The model names and versions the backend serves.
    pub catalog: Catalog,
    /// gRPC calls handled at once (OVMS `--grpc_max_threads`); `None`: no bound.
    pub grpc_calls: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    pub rates: RateLimits,
    pub quotas: Quotas,
    /// Shared with the blocking thread that writes a batch under `fsync = "always"`.
    pub audit: std::sync::Arc<AuditLog>,
    pub metrics: Metrics,
    /// Per-model inference statistics (Triton's statistics extension).
    pub stats: crate::stats::Stats,
    /// Calls started and not yet dropped, for a graceful stop and the
    /// `ovms_current_requests` gauge. Counted by a guard, so a call whose client went
    /// away mid-request is still counted out.
    pub in_flight: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Set on SIGTERM: readiness turns false while in-flight calls finish.
    pub draining: std::sync::atomic::AtomicBool,
    /// Tells every connection to finish what it has started and close.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Client connections open now (all listeners).
    pub open_connections: std::sync::atomic::AtomicI64,
    /// The most client connections open at once since housekeeping last looked (set at
    /// accept, reset by each housekeeping tick), so a crowd shorter than a tick is seen.
    pub connections_high: std::sync::atomic::AtomicI64,
    /// Distinguishes this process's request ids from another run's.
    boot: u64,
    counter: AtomicU64,
}

impl State {
    pub fn new(
        config: Config,
        jwt: JwtAuthority,
        policy: Policy,
        tls: (
            std::sync::Arc<rustls::ServerConfig>,
            std::sync::Arc<rustls::ServerConfig>,
        ),
        audit: AuditLog,
        backend: Clients,
    ) -> State {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        let grpc_calls = config
            .limits
            .grpc_max_concurrent_calls
            .map(|n| std::sync::Arc::new(tokio::sync::Semaphore::new(n)));
        State {
            rates: RateLimits::new(&config.limits),
            quotas: Quotas::new(
                config.limits.quota_bytes,
                config.limits.quota_per_principal_bytes,
            ),
            config,
            jwt,
            policy: std::sync::RwLock::new(std::sync::Arc::new(policy)),
            tls: std::sync::RwLock::new(tls),
            backend: backend.kserve,
            frames: backend.frames,
            backend_gauges: backend.gauges,
            catalog: Catalog::default(),
            grpc_calls,
            audit: std::sync::Arc::new(audit),
            metrics: Metrics::default(),
            stats: Default::default(),
            in_flight: Default::default(),
            draining: Default::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            open_connections: Default::default(),
            connections_high: Default::default(),
            boot,
            counter: AtomicU64::new(0),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> std::sync::Arc<Policy> {
        std::sync::Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_policy(&self, p: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(p);
    }

    /// The TLS configuration in force for a listener.
    pub fn tls(&self, grpc: bool) -> std::sync::Arc<rustls::ServerConfig> {
        let t = self.tls.read().unwrap_or_else(|e| e.into_inner());
        std::sync::Arc::clone(if grpc { &t.1 } else { &t.0 })
    }

    pub fn set_tls(
        &self,
        rest: std::sync::Arc<rustls::ServerConfig>,
        grpc: std::sync::Arc<rustls::ServerConfig>,
    ) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = (rest, grpc);
    }

    /// A new request id: unique within the run, and across runs in practice.
    pub fn next_request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:012x}-{n:08x}", self.boot & 0xffff_ffff_ffff)
    }
}
