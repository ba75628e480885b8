//! Every error a client can see, and the one place that maps causes to HTTP status and
//! gRPC codes. Messages never carry internal paths, backtraces or OpenVINO's own text.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// For 401: the `WWW-Authenticate` challenge.
    pub challenge: Option<&'static str>,
    /// For 429 and 503: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
}

/// RFC 6750 challenge when no credential was sent.
pub const CHALLENGE_MISSING: &str = "Bearer realm=\"warden\"";
/// RFC 6750 challenge for a credential that was refused.
pub const CHALLENGE_INVALID: &str = "Bearer realm=\"warden\", error=\"invalid_token\"";

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
            retry_after: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, m)
    }
    pub fn unauthenticated(challenge: &'static str) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or invalid credentials".into(),
            challenge: Some(challenge),
            retry_after: None,
        }
    }
    pub fn unavailable(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }

    /// A refusal by the gate (authentication, rate limit, authorization).
    pub fn from_stop(stop: &crate::gate::Stop) -> ApiError {
        use crate::auth::AuthError;
        use crate::gate::Stop;
        match stop {
            Stop::Unauthenticated(AuthError::Missing) => {
                ApiError::unauthenticated(CHALLENGE_MISSING)
            }
            Stop::Unauthenticated(_) => ApiError::unauthenticated(CHALLENGE_INVALID),
            Stop::Denied => ApiError::new(StatusCode::FORBIDDEN, "not allowed"),
            Stop::RateLimited(l) => ApiError {
                retry_after: Some(l.retry_after_secs.max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded")
            },
        }
    }

    /// A memory quota refusal: the caller's own quota is 429, the server's is 503.
    pub fn quota(scope: crate::limits::Scope) -> ApiError {
        let status = match scope {
            crate::limits::Scope::Principal => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(status, "too many request bytes in flight; retry later")
        }
    }

    /// The same refusal as a gRPC status.
    pub fn grpc_from_stop(stop: &crate::gate::Stop) -> tonic::Status {
        use crate::gate::Stop;
        match stop {
            Stop::Unauthenticated(_) => {
                tonic::Status::unauthenticated("missing or invalid credentials")
            }
            Stop::Denied => tonic::Status::permission_denied("not allowed"),
            Stop::RateLimited(l) => {
                let mut s = tonic::Status::resource_exhausted("rate limit exceeded");
                if let Ok(v) = l.retry_after_secs.max(1).to_string().parse() {
                    s.metadata_mut().insert("retry-after", v);
                }
                s
            }
        }
    }

    /// The backend's gRPC status, as the client should see it.
    pub fn from_backend(status: &tonic::Status) -> ApiError {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument => ApiError::bad_request(status.message()),
            Code::NotFound => ApiError::not_found(status.message()),
            Code::ResourceExhausted => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, status.message())
            }
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown => {
                tracing::warn!(code = ?status.code(), message = status.message(), "backend unavailable");
                ApiError::unavailable("the inference backend is unavailable; retry later")
            }
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "backend error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed")
            }
        }
    }

    /// The backend's gRPC status, as a gRPC client should see it: validation and
    /// lookup errors pass through (the backend wrote them for the client), anything
    /// else is reduced to a plain message.
    pub fn grpc_from_backend(status: tonic::Status) -> tonic::Status {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument | Code::NotFound | Code::ResourceExhausted => {
                tonic::Status::new(status.code(), status.message())
            }
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown => {
                tracing::warn!(code = ?status.code(), message = status.message(), "backend unavailable");
                let mut s =
                    tonic::Status::unavailable("the inference backend is unavailable; retry later");
                s.metadata_mut().insert(
                    "retry-after",
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                s
            }
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "backend error");
                tonic::Status::internal("inference failed")
            }
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "error": self.message })).unwrap_or_default();
        let mut resp = json_response(self.status, body);
        if let Some(c) = self.challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        // Every 429 and 503 says when to come back (RFC 9110 §10.2.3).
        let retry_after = match (self.retry_after, self.status) {
            (Some(secs), _) => Some(secs.max(1)),
            (None, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) => Some(1),
            (None, _) => None,
        };
        if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
