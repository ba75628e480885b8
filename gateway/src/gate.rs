//! The checks every call passes, in order, shared by REST and gRPC: authenticate,
//! rate-limit, authorize; then, when the call ends, one audit record and the metrics.
//!
//! A handler builds a [`Call`] when a request arrives, runs the checks, does its work,
//! and ends with [`State::finish`], which writes the record. When the record cannot be
//! written the answer becomes 503 (fail closed) unless the operator chose fail-open.

use crate::audit::Record;
use crate::auth::{self, AuthError, Principal};
use crate::authz::Operation;
use crate::limits::quota::Reservation;
use crate::limits::rate::Limited;
use crate::server::ConnInfo;
use crate::state::State;
use std::sync::Arc;
use std::time::Instant;

/// Which listener a call came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Rest,
    Grpc,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Rest => "rest",
            Listener::Grpc => "grpc",
        }
    }
    fn interface(self) -> &'static str {
        match self {
            Listener::Rest => "REST",
            Listener::Grpc => "gRPC",
        }
    }
}

/// One call in flight.
pub struct Call {
    pub id: String,
    pub conn: Arc<ConnInfo>,
    pub listener: Listener,
    pub protocol: String,
    pub start: Instant,
    /// The KServe method, for metrics (`ModelInfer`, `ModelMetadata`, ...).
    pub method: &'static str,
    pub principal: Option<Principal>,
    pub model: Option<String>,
    pub version: Option<String>,
    pub op: Option<Operation>,
    /// `model_digest` the backend reported for the version that answered.
    pub model_digest: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub reservation: Reservation,
    _in_flight: InFlight,
}

/// Counts a call out when it ends, however it ends.
struct InFlight(Arc<std::sync::atomic::AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What the gateway decided, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// allowed, denied, rate_limited, quota_exceeded, invalid, failed.
    pub decision: &'static str,
    pub reason: Option<String>,
}

impl Outcome {
    pub fn allowed(rule: Option<&str>) -> Outcome {
        Outcome {
            decision: "allowed",
            reason: rule.map(|r| format!("rule: {r}")),
        }
    }
    pub fn new(decision: &'static str, reason: impl Into<String>) -> Outcome {
        Outcome {
            decision,
            reason: Some(reason.into()),
        }
    }
}

/// Why the checks stopped a call.
#[derive(Debug)]
pub enum Stop {
    Unauthenticated(AuthError),
    Denied,
    RateLimited(Limited),
}

impl Stop {
    pub fn outcome(&self) -> Outcome {
        match self {
            Stop::Unauthenticated(e) => {
                Outcome::new("denied", format!("authentication: {}", e.reason()))
            }
            Stop::Denied => Outcome::new("denied", "authorization: no rule allows it"),
            Stop::RateLimited(l) => {
                Outcome::new("rate_limited", format!("rate limit: {}", l.scope.as_str()))
            }
        }
    }
}

impl State {
    pub fn begin(
        &self,
        conn: Arc<ConnInfo>,
        listener: Listener,
        protocol: String,
        method: &'static str,
    ) -> Call {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Call {
            _in_flight: InFlight(Arc::clone(&self.in_flight)),
            id: self.next_request_id(),
            conn,
            listener,
            protocol,
            start: Instant::now(),
            method,
            principal: None,
            model: None,
            version: None,
            op: None,
            model_digest: None,
            bytes_in: 0,
            bytes_out: 0,
            reservation: Reservation::default(),
        }
    }

    /// Authentication, then the rate limits, then (for model operations) authorization.
    pub fn admit(&self, call: &mut Call, token: Option<&str>) -> Result<(), Stop> {
        let mode = match call.listener {
            Listener::Rest => self.config.auth.rest_mode,
            Listener::Grpc => self.config.auth.grpc_mode,
        };
        let principal = match auth::authenticate(mode, &self.jwt, &call.conn, token) {
            Ok(p) => p,
            Err(e) => {
                self.metrics
                    .inc("warden_auth_failures_total", &[("reason", e.reason())]);
                tracing::info!(request_id = %call.id, peer = %call.conn.peer, reason = %e, "authentication failed");
                // Failed attempts count against the client's IP: guessing is throttled.
                if let Err(l) = self.rates.check_ip(call.conn.peer.ip()) {
                    self.metrics
                        .inc("warden_rate_limited_total", &[("scope", l.scope.as_str())]);
                    return Err(Stop::RateLimited(l));
                }
                return Err(Stop::Unauthenticated(e));
            }
        };
        let key = principal.display_name();
        let over = self.policy().rate_override(&principal);
        let result = self.rates.check_call(&key, over, call.model.as_deref());
        call.principal = Some(principal);
        if let Err(l) = result {
            self.metrics
                .inc("warden_rate_limited_total", &[("scope", l.scope.as_str())]);
            return Err(Stop::RateLimited(l));
        }
        Ok(())
    }

    /// Authorization for a model operation; returns the rule that allows it.
    pub fn authorize(&self, call: &Call) -> Result<Option<String>, Stop> {
        let (Some(p), Some(model), Some(op)) = (&call.principal, &call.model, call.op) else {
            return Ok(None);
        };
        let version = call.version.as_deref().and_then(|v| v.parse().ok());
        match self.policy().allows(p, model, version, op) {
            Some(rule) => Ok(Some(rule.to_owned())),
            None => {
                self.metrics
                    .inc("warden_authz_denied_total", &[("model", model)]);
                tracing::info!(request_id = %call.id, principal = %p.display_name(), model, op = op.as_str(), "authorization denied");
                Err(Stop::Denied)
            }
        }
    }

    /// Open endpoints (health) are limited per client IP.
    pub fn admit_open(&self, conn: &ConnInfo) -> Result<(), Limited> {
        self.rates.check_ip(conn.peer.ip()).inspect_err(|l| {
            self.metrics
                .inc("warden_rate_limited_total", &[("scope", l.scope.as_str())]);
        })
    }

    /// Ends a call: metrics and the audit record. `Err` means the record could not be
    /// written and the answer must become 503 (fail closed).
    #[allow(clippy::result_unit_err)] // the only failure is "no record", said by the name
    pub fn finish(
        &self,
        call: Call,
        outcome: &Outcome,
        status: u16,
        grpc_code: Option<i32>,
    ) -> Result<(), ()> {
        let latency = call.start.elapsed();
        let model = call.model.clone().unwrap_or_default();
        let version = call.version.clone().unwrap_or_default();
        let labels = [
            ("api", "KServe"),
            ("interface", call.listener.interface()),
            ("method", call.method),
            ("name", model.as_str()),
            ("version", version.as_str()),
        ];
        let ok = outcome.decision == "allowed" && status < 400;
        self.metrics.inc(
            if ok {
                "ovms_requests_success"
            } else {
                "ovms_requests_fail"
            },
            &labels,
        );
        if call.model.is_some() {
            self.metrics.observe(
                "ovms_request_time_us",
                &[
                    ("interface", call.listener.interface()),
                    ("name", &model),
                    ("version", &version),
                ],
                latency.as_micros() as f64,
            );
        }
        let p = call.principal.as_ref();
        let record = Record {
            event: "request",
            request_id: Some(call.id.clone()),
            client_request_id: None,
            client: Some(call.conn.peer.to_string()),
            listener: Some(call.listener.as_str()),
            protocol: Some(call.protocol.clone()),
            tls_version: Some(call.conn.tls_version),
            cipher: Some(call.conn.cipher.clone()),
            auth_method: p.map(|p| p.method.as_str()),
            principal: p.map(|p| p.subject.clone()),
            issuer: p.map(|p| p.issuer.clone()),
            certificate: p
                .and_then(|p| p.certificate.clone())
                .or_else(|| call.conn.client_cert.as_ref().map(|c| c.identity.clone())),
            key_id: p.and_then(|p| p.key_id.clone()),
            jti_sha256: p.and_then(|p| p.jti_hash.clone()),
            model: call.model.clone(),
            version: call.version.clone().filter(|v| !v.is_empty()),
            operation: call.op.map(Operation::as_str),
            decision: Some(outcome.decision),
            reason: outcome.reason.clone(),
            status: Some(status),
            grpc_code,
            bytes_in: Some(call.bytes_in),
            bytes_out: Some(call.bytes_out),
            latency_us: Some(latency.as_micros() as u64),
            settings: None,
            model_digest: call.model_digest.clone(),
        };
        match self.audit.write(&record) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.metrics.inc("warden_audit_write_failures_total", &[]);
                if self.audit.fail_open() {
                    Ok(())
                } else {
                    Err(())
                }
            }
        }
    }
}

/// The `model_digest` string parameter of a backend response, if any.
pub fn digest_of(
    params: &std::collections::HashMap<String, warden_shared::proto::InferParameter>,
) -> Option<String> {
    match params.get("model_digest")?.parameter_choice.as_ref()? {
        warden_shared::proto::infer_parameter::ParameterChoice::StringParam(s) => Some(s.clone()),
        _ => None,
    }
}
