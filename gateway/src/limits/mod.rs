//! Limits that protect the gateway and the backend from their clients: request rates
//! (governor) and in-flight request bytes (quotas). Connection counts, timeouts and
//! HTTP/2 budgets live in `server.rs`, where connections are made.

pub mod quota;
pub mod rate;

/// Which limit refused a request, for the client's status, metrics and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Total,
    Principal,
    Model,
    Ip,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Total => "total",
            Scope::Principal => "principal",
            Scope::Model => "model",
            Scope::Ip => "ip",
        }
    }
}
