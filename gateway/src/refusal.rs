//! Every reason the gateway refuses a request, in one table.
//!
//! Each [`Refusal`] names, in one place, the HTTP status a REST client gets, the gRPC
//! code a gRPC client gets, the audit [`Decision`], the fixed metric label and the
//! message the client reads. The fronts (REST, gRPC, ...) only translate a refusal into
//! their wire format; none of them decides a status of its own, so the same refusal is
//! the same decision through every protocol.
//!
//! Messages never carry internal paths, backtraces, key ids or which claim check
//! failed (that goes to the audit record's `reason`), nor OpenVINO's own text.

use crate::auth::AuthError;
use crate::limits::Scope;
use crate::limits::rate::Limited;
use http::StatusCode;
use tonic::Code;

/// What the audit record says was decided about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Authentication or authorization said no.
    Denied,
    RateLimited,
    QuotaExceeded,
    /// The request itself is wrong: malformed, too large, unknown model or version.
    Invalid,
    /// The gateway or the backend could not do what was allowed.
    Failed,
}

impl Decision {
    /// Every decision, for the docs and the tests that hold them together.
    pub const ALL: [Decision; 6] = [
        Decision::Allowed,
        Decision::Denied,
        Decision::RateLimited,
        Decision::QuotaExceeded,
        Decision::Invalid,
        Decision::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::RateLimited => "rate_limited",
            Decision::QuotaExceeded => "quota_exceeded",
            Decision::Invalid => "invalid",
            Decision::Failed => "failed",
        }
    }
}

/// RFC 6750 challenge when no credential was sent.
pub const CHALLENGE_MISSING: &str = "Bearer realm=\"warden\"";
/// RFC 6750 challenge for a credential that was refused.
pub const CHALLENGE_INVALID: &str = "Bearer realm=\"warden\", error=\"invalid_token\"";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The request head (HTTP/1.1) is over `limits.max_header_bytes`.
    HeadersTooLarge,
    /// The request target is over `limits.max_url_bytes`.
    UrlTooLong,
    /// HTTP framing another implementation could read differently (smuggling).
    Framing(&'static str),
    /// No such endpoint or gRPC method.
    NoRoute,
    /// The endpoint exists, with another HTTP method.
    MethodNotAllowed,
    /// A model name, version or path segment that is not of the allowed form.
    BadName(&'static str),
    /// No valid credential.
    Unauthenticated(AuthError),
    /// A rate limit; `retry_after_secs` inside.
    RateLimited(Limited),
    /// The policy has no rule that allows this principal this operation on this model.
    Forbidden,
    /// The model is not in the repository (checked after authorization, so a stranger
    /// cannot probe names).
    UnknownModel,
    /// The model has no such version.
    UnknownVersion,
    /// The body or message is over its cap (bytes).
    TooLarge(usize),
    /// The in-flight bytes quota (the caller's own, or the server's) is spent.
    Quota(Scope),
    /// The body cannot be decoded, or does not fit the model. The message is the
    /// gateway's or the backend's own validation text, written for the client.
    Malformed(String),
    /// A feature of the wire format Warden does not take (e.g. gRPC compression).
    Unsupported(&'static str),
    /// The call ran past its deadline (`limits.request_timeout_secs` or `grpc-timeout`).
    Timeout,
    /// The backend refused the request as not found (model or version gone meanwhile).
    BackendNotFound(String),
    /// The backend is busy (its bounded queue is full).
    BackendBusy,
    /// The front's bound on calls handled at once is reached (`--grpc_max_threads`).
    Overloaded,
    /// The backend cannot be reached, or is restarting.
    BackendUnavailable,
    /// Anything else: the client learns nothing more.
    Internal,
    /// The audit record could not be written (fail closed).
    AuditUnavailable,
    /// An operation this server's configuration turns off (e.g. Triton's model
    /// load/unload while `triton.repository_control` is false).
    Disabled(&'static str),
    /// An operation Warden's design cannot carry out, though allowed (e.g. loading a
    /// model on request: the backend serves the models of its configuration).
    NotSupported(&'static str),
}

impl Refusal {
    /// The HTTP status a REST client gets (and the audit record's `status` for gRPC).
    pub fn http_status(&self) -> StatusCode {
        use Refusal::*;
        match self {
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            UrlTooLong => StatusCode::URI_TOO_LONG,
            Framing(_) | BadName(_) | Malformed(_) => StatusCode::BAD_REQUEST,
            NoRoute | UnknownModel | UnknownVersion | BackendNotFound(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Forbidden => StatusCode::FORBIDDEN,
            TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Quota(Scope::Principal) => StatusCode::TOO_MANY_REQUESTS,
            Quota(_) => StatusCode::SERVICE_UNAVAILABLE,
            Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Timeout => StatusCode::REQUEST_TIMEOUT,
            BackendBusy | Overloaded => StatusCode::TOO_MANY_REQUESTS,
            BackendUnavailable | AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Disabled(_) => StatusCode::FORBIDDEN,
            NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The gRPC code a gRPC client gets.
    pub fn grpc_code(&self) -> Code {
        use Refusal::*;
        match self {
            HeadersTooLarge | TooLarge(_) | Quota(_) | RateLimited(_) | BackendBusy
            | Overloaded => Code::ResourceExhausted,
            UrlTooLong | Framing(_) | BadName(_) | Malformed(_) => Code::InvalidArgument,
            NoRoute | Unsupported(_) | MethodNotAllowed | NotSupported(_) => Code::Unimplemented,
            Unauthenticated(_) => Code::Unauthenticated,
            Forbidden | Disabled(_) => Code::PermissionDenied,
            UnknownModel | UnknownVersion | BackendNotFound(_) => Code::NotFound,
            Timeout => Code::DeadlineExceeded,
            BackendUnavailable | AuditUnavailable => Code::Unavailable,
            Internal => Code::Internal,
        }
    }

    /// The audit record's decision.
    pub fn decision(&self) -> Decision {
        use Refusal::*;
        match self {
            Unauthenticated(_) | Forbidden | Disabled(_) => Decision::Denied,
            RateLimited(_) | Overloaded => Decision::RateLimited,
            Quota(_) => Decision::QuotaExceeded,
            HeadersTooLarge | UrlTooLong | Framing(_) | NoRoute | MethodNotAllowed | BadName(_)
            | UnknownModel | UnknownVersion | TooLarge(_) | Malformed(_) | Unsupported(_)
            | BackendNotFound(_) => Decision::Invalid,
            Timeout | BackendBusy | BackendUnavailable | Internal | AuditUnavailable
            | NotSupported(_) => Decision::Failed,
        }
    }

    /// A fixed label for metrics (`warden_refusals_total{reason=...}`): never anything
    /// a client wrote.
    pub fn label(&self) -> &'static str {
        use Refusal::*;
        match self {
            HeadersTooLarge => "headers_too_large",
            UrlTooLong => "url_too_long",
            Framing(_) => "framing",
            NoRoute => "no_route",
            MethodNotAllowed => "method_not_allowed",
            BadName(_) => "bad_name",
            Unauthenticated(_) => "unauthenticated",
            RateLimited(_) => "rate_limited",
            Forbidden => "forbidden",
            UnknownModel => "unknown_model",
            UnknownVersion => "unknown_version",
            TooLarge(_) => "too_large",
            Quota(_) => "quota",
            Malformed(_) => "malformed",
            Unsupported(_) => "unsupported",
            Timeout => "timeout",
            BackendNotFound(_) => "backend_not_found",
            BackendBusy => "backend_busy",
            Overloaded => "overloaded",
            BackendUnavailable => "backend_unavailable",
            Internal => "internal",
            AuditUnavailable => "audit_unavailable",
            Disabled(_) => "disabled",
            NotSupported(_) => "not_supported",
        }
    }

    /// What the client reads.
    pub fn message(&self) -> String {
        use Refusal::*;
        match self {
            HeadersTooLarge => "request headers too large".into(),
            UrlTooLong => "request URL too long".into(),
            Framing(m) | BadName(m) | Disabled(m) | NotSupported(m) => (*m).into(),
            NoRoute => "no such endpoint".into(),
            MethodNotAllowed => "method not allowed".into(),
            Unauthenticated(_) => "missing or invalid credentials".into(),
            RateLimited(_) => "rate limit exceeded".into(),
            Forbidden => "not allowed".into(),
            UnknownModel => "no such model".into(),
            UnknownVersion => "no such model version".into(),
            TooLarge(max) => format!("request exceeds {max} bytes"),
            Quota(_) => "too many request bytes in flight; retry later".into(),
            Malformed(m) | BackendNotFound(m) => m.clone(),
            Unsupported(m) => (*m).into(),
            Timeout => "request took too long".into(),
            BackendBusy => "the model is busy; retry later".into(),
            Overloaded => "too many calls in progress; retry later".into(),
            BackendUnavailable => "the inference backend is unavailable; retry later".into(),
            Internal => "inference failed".into(),
            AuditUnavailable => "audit log unavailable; request refused".into(),
        }
    }

    /// The audit record's `reason`: the client's message where that is the reason, the
    /// precise internal cause where the client must not learn it.
    pub fn reason(&self) -> String {
        use Refusal::*;
        match self {
            Unauthenticated(e) => format!("authentication: {}", e.reason()),
            Forbidden => "authorization: no rule allows it".into(),
            RateLimited(l) => format!("rate limit: {}", l.scope.as_str()),
            Quota(s) => format!("quota: {}", s.as_str()),
            Malformed(_) => "malformed request".into(),
            other => other.label().replace('_', " "),
        }
    }

    /// Seconds until a retry may succeed (`Retry-After`), for refusals that pass.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited(l) => Some(l.retry_after_secs.max(1)),
            Refusal::Quota(_)
            | Refusal::BackendBusy
            | Refusal::Overloaded
            | Refusal::BackendUnavailable
            | Refusal::AuditUnavailable => Some(1),
            _ => None,
        }
    }

    /// For 401: the `WWW-Authenticate` challenge.
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Refusal::Unauthenticated(AuthError::Missing) => Some(CHALLENGE_MISSING),
            Refusal::Unauthenticated(_) => Some(CHALLENGE_INVALID),
            _ => None,
        }
    }

    /// The backend's gRPC status, as the gateway passes it on. Validation and lookup
    /// messages were written by the backend for the client and pass through; anything
    /// else is reduced to a fixed message (and logged here).
    pub fn from_backend(status: &tonic::Status) -> Refusal {
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Refusal::Malformed(status.message().into())
            }
            Code::NotFound => Refusal::BackendNotFound(status.message().into()),
            Code::ResourceExhausted => Refusal::BackendBusy,
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown => {
                tracing::warn!(code = ?status.code(), message = status.message(), "backend unavailable");
                Refusal::BackendUnavailable
            }
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "backend error");
                Refusal::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_refusal() -> Vec<Refusal> {
        vec![
            Refusal::HeadersTooLarge,
            Refusal::UrlTooLong,
            Refusal::Framing("x"),
            Refusal::NoRoute,
            Refusal::MethodNotAllowed,
            Refusal::BadName("x"),
            Refusal::Unauthenticated(AuthError::Missing),
            Refusal::RateLimited(Limited {
                scope: Scope::Principal,
                retry_after_secs: 0,
            }),
            Refusal::Forbidden,
            Refusal::UnknownModel,
            Refusal::UnknownVersion,
            Refusal::TooLarge(1),
            Refusal::Quota(Scope::Principal),
            Refusal::Quota(Scope::Total),
            Refusal::Malformed("x".into()),
            Refusal::Unsupported("x"),
            Refusal::Timeout,
            Refusal::BackendNotFound("x".into()),
            Refusal::BackendBusy,
            Refusal::Overloaded,
            Refusal::BackendUnavailable,
            Refusal::Internal,
            Refusal::AuditUnavailable,
            Refusal::Disabled("x"),
            Refusal::NotSupported("x"),
        ]
    }

    #[test]
    fn every_refusal_maps_to_an_error_on_every_front() {
        for r in every_refusal() {
            assert!(r.http_status().as_u16() >= 400, "{r:?}");
            assert_ne!(r.grpc_code(), Code::Ok, "{r:?}");
            assert_ne!(r.decision(), Decision::Allowed, "{r:?}");
            assert!(!r.message().is_empty() && !r.reason().is_empty(), "{r:?}");
        }
    }

    #[test]
    fn the_docs_list_exactly_the_decisions_the_code_can_write() {
        let doc = include_str!("../../docs/audit.md");
        let line = doc
            .lines()
            .find(|l| l.starts_with("| `decision` |"))
            .expect("docs/audit.md has the decision row");
        let documented: Vec<&str> = line
            .split('`')
            .skip(3)
            .step_by(2)
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        let code: Vec<&str> = Decision::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(documented, code);
        let mut reachable: Vec<&str> = every_refusal()
            .iter()
            .map(|r| r.decision().as_str())
            .collect();
        reachable.push(Decision::Allowed.as_str());
        for d in code {
            assert!(reachable.contains(&d), "{d} is never written");
        }
    }

    #[test]
    fn retry_after_on_every_429_and_503() {
        for r in every_refusal() {
            let s = r.http_status();
            if s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::SERVICE_UNAVAILABLE {
                assert!(r.retry_after().is_some_and(|s| s >= 1), "{r:?}");
            }
        }
    }

    #[test]
    fn a_401_never_says_which_check_failed() {
        let r = Refusal::Unauthenticated(AuthError::CertificateBinding);
        assert_eq!(r.message(), "missing or invalid credentials");
        assert_eq!(r.challenge(), Some(CHALLENGE_INVALID));
        assert!(r.reason().contains("certificate_binding"));
    }

    /// One metric label per kind of refusal: two kinds never share one, and each is a
    /// plain lowercase word (never anything a client wrote).
    #[test]
    fn every_kind_of_refusal_has_its_own_fixed_label() {
        let mut seen: Vec<(std::mem::Discriminant<Refusal>, &str)> = Vec::new();
        for r in every_refusal() {
            let (kind, label) = (std::mem::discriminant(&r), r.label());
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
            for (k, l) in &seen {
                assert_eq!(*k == kind, *l == label, "{r:?}: {label} vs {l}");
            }
            seen.push((kind, label));
        }
    }

    /// Retry-After says when the limit that refused will pass, and only refusals that
    /// pass carry one.
    #[test]
    fn retry_after_only_where_a_retry_can_succeed() {
        let limited = Refusal::RateLimited(Limited {
            scope: Scope::Ip,
            retry_after_secs: 7,
        });
        assert_eq!(limited.retry_after(), Some(7));
        for r in every_refusal() {
            let s = r.http_status();
            if s != StatusCode::TOO_MANY_REQUESTS && s != StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(r.retry_after(), None, "{r:?}");
            }
        }
    }

    /// RFC 6750 §3.1: a request without credentials gets a challenge with no error code.
    #[test]
    fn a_missing_credential_is_challenged_without_an_error_code() {
        let missing = Refusal::Unauthenticated(AuthError::Missing);
        assert_eq!(missing.challenge(), Some(CHALLENGE_MISSING));
        assert!(!CHALLENGE_MISSING.contains("error="));
        assert_eq!(Refusal::Forbidden.challenge(), None);
    }

    /// What the backend answers maps onto the refusal table; only validation and lookup
    /// messages reach the client, anything else is a fixed message.
    #[test]
    fn backend_statuses_map_onto_the_table() {
        let st = |c: Code| tonic::Status::new(c, "detail from the backend");
        for c in [
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::FailedPrecondition,
        ] {
            assert_eq!(
                Refusal::from_backend(&st(c)),
                Refusal::Malformed("detail from the backend".into()),
                "{c:?}"
            );
        }
        assert_eq!(
            Refusal::from_backend(&st(Code::NotFound)),
            Refusal::BackendNotFound("detail from the backend".into())
        );
        assert_eq!(
            Refusal::from_backend(&st(Code::ResourceExhausted)),
            Refusal::BackendBusy
        );
        for c in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Unknown,
        ] {
            assert_eq!(
                Refusal::from_backend(&st(c)),
                Refusal::BackendUnavailable,
                "{c:?}"
            );
        }
        for c in [Code::PermissionDenied, Code::Internal, Code::DataLoss] {
            let r = Refusal::from_backend(&st(c));
            assert_eq!(r, Refusal::Internal, "{c:?}");
            assert!(!r.message().contains("detail"), "{c:?}");
        }
    }
}
