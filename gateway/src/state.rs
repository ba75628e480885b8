//! What every request handler shares: the configuration, the token verifier and the
//! backend client. Built once at start; read-only afterwards.

use crate::auth::jwt::JwtVerifier;
use crate::backend_client::BackendClient;
use std::sync::atomic::{AtomicU64, Ordering};
use warden_shared::config::Config;

pub struct State {
    pub config: Config,
    pub jwt: JwtVerifier,
    pub backend: BackendClient,
    /// Distinguishes this process's request ids from another run's.
    boot: u64,
    counter: AtomicU64,
}

impl State {
    pub fn new(config: Config, jwt: JwtVerifier, backend: BackendClient) -> State {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32;
        State {
            config,
            jwt,
            backend,
            boot,
            counter: AtomicU64::new(0),
        }
    }

    /// A new request id: unique within the run, and across runs in practice.
    pub fn next_request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:012x}-{n:08x}", self.boot & 0xffff_ffff_ffff)
    }
}
