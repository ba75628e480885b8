//! KServe v2 REST: routing, authentication of each call, and translation to the
//! backend's gRPC form.

use crate::auth::{self, Principal};
use crate::authz::Operation;
use crate::error::{ApiError, json_response};
use crate::gate::{Call, Listener, Outcome};
use crate::server::ConnInfo;
use crate::state::State;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use tonic::metadata::MetadataValue;
use warden_shared::proto;
use warden_shared::repository::check_model_name;
use warden_shared::wire;

/// The binary tensor data extension's header: the JSON part's length.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Live,
    Ready,
    ServerMetadata,
    ModelMetadata { model: &'a str, version: &'a str },
    ModelReady { model: &'a str, version: &'a str },
    Infer { model: &'a str, version: &'a str },
}

fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, ApiError> {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    // Dot segments are never resolved (a model folder is not a path); refuse them, and
    // their percent-encoded spellings, rather than answer 404.
    if segs.iter().any(|s| {
        let l = s.to_ascii_lowercase();
        l == "." || l == ".." || l.contains("%2e") || l.contains("%2f") || l.contains("%5c")
    }) {
        return Err(ApiError::bad_request("invalid request path"));
    }
    let (r, wanted) = match segs.as_slice() {
        ["v2", "health", "live"] => (Route::Live, Method::GET),
        ["v2", "health", "ready"] => (Route::Ready, Method::GET),
        ["v2"] => (Route::ServerMetadata, Method::GET),
        ["v2", "models", model] => (Route::ModelMetadata { model, version: "" }, Method::GET),
        ["v2", "models", model, "versions", version] => {
            (Route::ModelMetadata { model, version }, Method::GET)
        }
        ["v2", "models", model, "ready"] => (Route::ModelReady { model, version: "" }, Method::GET),
        ["v2", "models", model, "versions", version, "ready"] => {
            (Route::ModelReady { model, version }, Method::GET)
        }
        ["v2", "models", model, "infer"] => (Route::Infer { model, version: "" }, Method::POST),
        ["v2", "models", model, "versions", version, "infer"] => {
            (Route::Infer { model, version }, Method::POST)
        }
        _ => return Err(ApiError::not_found("no such endpoint")),
    };
    if *method != wanted {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ));
    }
    match &r {
        Route::ModelMetadata { model, version }
        | Route::ModelReady { model, version }
        | Route::Infer { model, version } => {
            check_model_name(model).map_err(|_| ApiError::bad_request("invalid model name"))?;
            if !version.is_empty()
                && (version.len() > 20 || !version.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ApiError::bad_request(
                    "model version must be a positive integer",
                ));
            }
        }
        _ => {}
    }
    Ok(r)
}

/// Refuses HTTP/1 requests whose framing or target another HTTP implementation could
/// read differently (request smuggling), before routing. hyper already refuses
/// conflicting Content-Lengths, a Transfer-Encoding whose last coding is not chunked,
/// obs-fold and bad header names; this adds what it lets through.
fn check_framing<B>(req: &Request<B>) -> Result<(), ApiError> {
    let h1 = req.version() < http::Version::HTTP_2;
    let te: Vec<&http::HeaderValue> = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .collect();
    if !te.is_empty() {
        // Only a single `chunked`: no stacked codings, no repeated or split headers.
        let single_chunked = te.len() == 1
            && te[0]
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        if !single_chunked || req.headers().contains_key(header::CONTENT_LENGTH) {
            return Err(framing_error("unsupported Transfer-Encoding"));
        }
    }
    if h1 && (req.uri().scheme().is_some() || req.uri().authority().is_some()) {
        // An origin server, not a proxy: only origin-form targets.
        return Err(framing_error(
            "absolute-form request targets are not accepted",
        ));
    }
    Ok(())
}

fn framing_error(message: &str) -> ApiError {
    ApiError::bad_request(message)
}

/// Handles one request. Never fails: every error becomes a JSON error response, and
/// every decision about a call (except the open health endpoints) one audit record.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let _active = conn.activity.enter();
    let protocol = format!("{:?}", req.version());
    let path = req.uri().path().to_owned();
    // HTTP/1.1: hyper bounds the head only by its read buffer, which can hold more
    // than the cap; measure the head as sent ("name: value\r\n" per header). HTTP/2
    // heads are bounded by SETTINGS_MAX_HEADER_LIST_SIZE before they get here.
    if req.version() <= http::Version::HTTP_11
        && head_len(&req) > state.config.limits.max_header_bytes
    {
        let mut call = state.begin(Arc::clone(&conn), Listener::Rest, protocol, "Unknown");
        call.bytes_in = 0;
        let e = ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        );
        return finish(
            &state,
            call,
            Outcome::new("invalid", "headers too large"),
            e,
        );
    }
    if let Err(e) = check_framing(&req) {
        let h1 = req.version() < http::Version::HTTP_2;
        let mut call = state.begin(Arc::clone(&conn), Listener::Rest, protocol, "Unknown");
        call.bytes_in = 0;
        let mut resp = finish(&state, call, Outcome::new("invalid", e.message.clone()), e);
        if h1 {
            // The body was not read and its framing is in doubt: never reuse the connection.
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        return resp;
    }
    let route = match route(req.method(), &path) {
        Ok(r) => r,
        Err(e) => {
            let mut call = state.begin(Arc::clone(&conn), Listener::Rest, protocol, "Unknown");
            call.bytes_in = 0;
            return finish(&state, call, Outcome::new("invalid", e.message.clone()), e);
        }
    };
    if matches!(route, Route::Live | Route::Ready) {
        return match state.admit_open(&conn) {
            Ok(()) => health(&state, route == Route::Live).await,
            Err(l) => rate_limited(l).into_response(),
        };
    }
    let method = match route {
        Route::ServerMetadata => "ServerMetadata",
        Route::ModelMetadata { .. } => "ModelMetadata",
        Route::ModelReady { .. } => "ModelReady",
        _ => "ModelInfer",
    };
    let mut call = state.begin(Arc::clone(&conn), Listener::Rest, protocol, method);
    if let Some(id) = State::accept_request_id(
        req.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
    ) {
        call.id = id;
    }
    if req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0)
        > state.config.limits.max_url_bytes
    {
        let e = ApiError::new(StatusCode::URI_TOO_LONG, "request URL too long");
        return finish(&state, call, Outcome::new("invalid", "url too long"), e);
    }
    match &route {
        Route::ModelMetadata { model, version }
        | Route::ModelReady { model, version }
        | Route::Infer { model, version } => {
            call.model = Some((*model).to_owned());
            call.version = Some((*version).to_owned()).filter(|v| !v.is_empty());
            call.op = Some(match route {
                Route::ModelMetadata { .. } => Operation::Metadata,
                Route::ModelReady { .. } => Operation::Ready,
                _ => Operation::Infer,
            });
        }
        _ => {}
    }
    let token = auth::bearer_token(req.headers().get(header::AUTHORIZATION));
    let rule = match state
        .admit(&mut call, token)
        .and_then(|()| state.authorize(&call))
    {
        Ok(rule) => rule,
        Err(stop) => {
            let outcome = stop.outcome();
            return finish(&state, call, outcome, ApiError::from_stop(&stop));
        }
    };
    let timeout = std::time::Duration::from_secs(state.config.limits.request_timeout_secs);
    let result = match tokio::time::timeout(timeout, dispatch(&state, &mut call, route, req)).await
    {
        Ok(r) => r,
        Err(_) => Err((
            Outcome::new("failed", "request timeout"),
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "request took too long"),
        )),
    };
    match result {
        Ok(resp) => {
            call.bytes_out = resp.body().size_hint().exact().unwrap_or(0);
            let status = resp.status().as_u16();
            let id = call.id.clone();
            match state.finish(call, &Outcome::allowed(rule.as_deref()), status, None) {
                Ok(()) => with_request_id(resp, &id),
                Err(()) => audit_unavailable(),
            }
        }
        Err((outcome, e)) => finish(&state, call, outcome, e),
    }
}

/// The size of an HTTP/1.1 request head: request line, headers, blank line.
fn head_len(req: &Request<Incoming>) -> usize {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(1);
    let line = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1\r\n".len();
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2
}

fn with_request_id(mut resp: Response<Full<Bytes>>, id: &str) -> Response<Full<Bytes>> {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn audit_unavailable() -> Response<Full<Bytes>> {
    ApiError::unavailable("audit log unavailable; request refused").into_response()
}

/// Ends a refused call: audit record, then the error answer (or 503 if the record
/// could not be written).
fn finish(state: &State, mut call: Call, outcome: Outcome, e: ApiError) -> Response<Full<Bytes>> {
    let id = call.id.clone();
    let resp = e.into_response();
    call.bytes_out = resp.body().size_hint().exact().unwrap_or(0);
    match state.finish(call, &outcome, resp.status().as_u16(), None) {
        Ok(()) => with_request_id(resp, &id),
        Err(()) => audit_unavailable(),
    }
}

fn rate_limited(l: crate::limits::rate::Limited) -> ApiError {
    ApiError::from_stop(&crate::gate::Stop::RateLimited(l))
}

async fn health(state: &State, live: bool) -> Response<Full<Bytes>> {
    let ok = if live {
        true
    } else {
        // Ready: the backend has its models, and the audit log can be written (a
        // server that would refuse every request for want of an audit log is not ready).
        let backend = state
            .backend
            .clone()
            .server_ready(proto::ServerReadyRequest {})
            .await
            .map(|r| r.into_inner().ready)
            .unwrap_or(false);
        backend
            && (state.audit.healthy() || state.audit.fail_open())
            && !state.draining.load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    if !ok {
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    resp
}

/// Wraps a message for the backend with the verified principal and request id.
pub fn backend_request<T>(
    message: T,
    principal: Option<&Principal>,
    request_id: &str,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    let md = r.metadata_mut();
    if let Some(v) = principal.and_then(|p| MetadataValue::try_from(p.display_name()).ok()) {
        md.insert(wire::PRINCIPAL_HEADER, v);
    }
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert(wire::REQUEST_ID_HEADER, v);
    }
    md.insert(
        wire::PROTOCOL_HEADER,
        MetadataValue::from_static(wire::SOCKET_PROTOCOL_VERSION),
    );
    r
}

fn ok_json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

type Failure = (Outcome, ApiError);

fn backend_failure(status: &tonic::Status) -> Failure {
    let e = ApiError::from_backend(status);
    let decision = match e.status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => "invalid",
        _ => "failed",
    };
    (
        Outcome::new(decision, format!("backend: {:?}", status.code())),
        e,
    )
}

async fn dispatch(
    state: &State,
    call: &mut Call,
    route: Route<'_>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    let mut backend = state.backend.clone();
    let principal = call.principal.clone();
    let p = principal.as_ref();
    match route {
        Route::Live | Route::Ready => unreachable!("answered before authentication"),
        Route::ServerMetadata => Ok(ok_json(&serde_json::json!({
            "name": warden_shared::SERVER_NAME,
            "version": warden_shared::VERSION,
            "extensions": crate::grpc::EXTENSIONS,
        }))),
        Route::ModelMetadata { model, version } => {
            let m = backend
                .model_metadata(backend_request(
                    proto::ModelMetadataRequest {
                        name: model.into(),
                        version: version.into(),
                    },
                    p,
                    &call.id,
                ))
                .await
                .map_err(|s| backend_failure(&s))?
                .into_inner();
            let tensors = |ts: &[proto::model_metadata_response::TensorMetadata]| {
                ts.iter()
                    .map(|t| serde_json::json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
                    .collect::<Vec<_>>()
            };
            Ok(ok_json(&serde_json::json!({
                "name": m.name,
                "versions": m.versions,
                "platform": m.platform,
                "inputs": tensors(&m.inputs),
                "outputs": tensors(&m.outputs),
            })))
        }
        Route::ModelReady { model, version } => {
            let ready = backend
                .model_ready(backend_request(
                    proto::ModelReadyRequest {
                        name: model.into(),
                        version: version.into(),
                    },
                    p,
                    &call.id,
                ))
                .await
                .map_err(|s| backend_failure(&s))?
                .into_inner()
                .ready;
            let mut resp = ok_json(&serde_json::json!({ "name": model, "ready": ready }));
            if !ready {
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok(resp)
        }
        Route::Infer { model, version } => {
            let (model, version) = (model.to_owned(), version.to_owned());
            let header_len = match req.headers().get(INFERENCE_HEADER_CONTENT_LENGTH) {
                None => None,
                Some(v) => Some(parse_header_length(v.as_bytes()).ok_or_else(|| {
                    (
                        Outcome::new("invalid", "bad Inference-Header-Content-Length"),
                        ApiError::bad_request("invalid Inference-Header-Content-Length"),
                    )
                })?),
            };
            let body = read_body(state, call, req).await?;
            let invalid = |m: String| {
                (
                    Outcome::new("invalid", "malformed request"),
                    ApiError::bad_request(m),
                )
            };
            let (json, binary) = split_body(header_len, body).map_err(invalid)?;
            let limits = &state.config.limits;
            let (infer, prefs) = crate::json::parse_infer_request(
                &json,
                binary,
                &model,
                &version,
                limits.max_tensor_elements,
                limits.max_json_depth,
            )
            .map_err(|e| invalid(e.to_string()))?;
            drop(json);
            let resp = backend
                .model_infer(backend_request(infer, p, &call.id))
                .await
                .map_err(|s| backend_failure(&s))?
                .into_inner();
            // The backend answers the version it used; record that one.
            call.version = Some(resp.model_version.clone());
            call.model_digest = crate::gate::digest_of(&resp.parameters);
            let rendered = crate::json::render_infer_response(&resp, &prefs).map_err(|e| {
                tracing::error!(error = %e, "cannot render backend response");
                (
                    Outcome::new("failed", "render"),
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed"),
                )
            })?;
            let mut out = json_response(StatusCode::OK, rendered.body);
            if let Some(n) = rendered.json_len {
                out.headers_mut()
                    .insert(INFERENCE_HEADER_CONTENT_LENGTH, n.into());
                out.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/octet-stream"),
                );
            }
            Ok(out)
        }
    }
}

/// The value of `Inference-Header-Content-Length`: a decimal byte count.
pub fn parse_header_length(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value)
        .ok()?
        .trim()
        .parse::<usize>()
        .ok()
}

/// Splits an infer body into its JSON header and the binary tensor data after it.
pub fn split_body(header_len: Option<usize>, body: Bytes) -> Result<(Bytes, Bytes), String> {
    match header_len {
        None => Ok((body, Bytes::new())),
        Some(n) if n <= body.len() => Ok((body.slice(..n), body.slice(n..))),
        Some(n) => Err(format!(
            "Inference-Header-Content-Length {n} is longer than the {}-byte body",
            body.len()
        )),
    }
}

/// Reads the body under the size cap and the memory quotas: a declared length over
/// the cap or the quotas is refused before a single body byte is read, an undeclared
/// one as soon as it passes the cap, and every chunk must fit the quotas before it is
/// kept.
async fn read_body(
    state: &State,
    call: &mut Call,
    req: Request<Incoming>,
) -> Result<Bytes, Failure> {
    let max = state.config.limits.max_body_bytes;
    let too_large = || {
        (
            Outcome::new("invalid", "body over the size cap"),
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {max} bytes"),
            ),
        )
    };
    let declared = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(len) => Some(
            len.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    (
                        Outcome::new("invalid", "bad Content-Length"),
                        ApiError::bad_request("invalid Content-Length"),
                    )
                })?,
        ),
    };
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    call.reservation = state
        .quotas
        .start(call.principal.as_ref().map(|p| p.display_name()).as_deref());
    let quota_refused = |scope: crate::limits::Scope| {
        state
            .metrics
            .inc("warden_quota_refused_total", &[("scope", scope.as_str())]);
        (
            Outcome::new("quota_exceeded", format!("quota: {}", scope.as_str())),
            ApiError::quota(scope),
        )
    };
    // A declared length is reserved whole, before any body byte is read: concurrent
    // uploads then either get all their bytes or are refused at once, instead of all
    // growing a little and all starving each other half-way (and no bandwidth is spent
    // on a body that could not be kept).
    let mut reserved = declared.map(|d| d as usize).unwrap_or(0);
    if reserved > 0 {
        state
            .quotas
            .grow(&mut call.reservation, reserved)
            .map_err(quota_refused)?;
    }
    let mut body = req.into_body();
    let mut buf =
        bytes::BytesMut::with_capacity(declared.map(|d| d as usize).unwrap_or(0).min(max));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            (
                Outcome::new("invalid", "body read failed"),
                ApiError::bad_request("request body could not be read"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > max {
            return Err(too_large());
        }
        let needed = buf.len() + data.len();
        if needed > reserved {
            state
                .quotas
                .grow(&mut call.reservation, needed - reserved)
                .map_err(quota_refused)?;
            reserved = needed;
        }
        buf.extend_from_slice(&data);
    }
    call.bytes_in = buf.len() as u64;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let g = Method::GET;
        let p = Method::POST;
        assert_eq!(route(&g, "/v2/health/live").unwrap(), Route::Live);
        assert_eq!(route(&g, "/v2").unwrap(), Route::ServerMetadata);
        assert_eq!(
            route(&g, "/v2/models/m").unwrap(),
            Route::ModelMetadata {
                model: "m",
                version: ""
            }
        );
        assert_eq!(
            route(&g, "/v2/models/m/versions/2/ready").unwrap(),
            Route::ModelReady {
                model: "m",
                version: "2"
            }
        );
        assert_eq!(
            route(&p, "/v2/models/m/versions/2/infer").unwrap(),
            Route::Infer {
                model: "m",
                version: "2"
            }
        );
        assert_eq!(
            route(&g, "/v2/models/m/infer").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&g, "/v3/x").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&p, "/v2/models/..%2f/infer").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            route(&p, "/v2/models/m/versions/x/infer")
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            route(&g, "/v2/models/m/extra/ready").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        for bad in [
            "/v2/models/../../etc/passwd/infer",
            "/v2/models/m/./ready",
            "/v2/models/%2e%2e/ready",
            "/v2/models/%2E%2E/ready",
            "/v2/models/a%2Fb/ready",
            "/v2/models/..%5c..%5cetc/ready",
        ] {
            assert_eq!(
                route(&g, bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn framing_checks() {
        let req = |version, uri: &str, headers: &[(&str, &str)]| {
            let mut b = Request::builder().version(version).uri(uri);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        let h11 = http::Version::HTTP_11;
        assert!(check_framing(&req(h11, "/v2", &[])).is_ok());
        assert!(check_framing(&req(h11, "/v2", &[("transfer-encoding", "chunked")])).is_ok());
        assert!(check_framing(&req(h11, "/v2", &[("transfer-encoding", " Chunked ")])).is_ok());
        for te in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked, identity",
        ] {
            assert!(
                check_framing(&req(h11, "/v2", &[("transfer-encoding", te)])).is_err(),
                "{te}"
            );
        }
        assert!(
            check_framing(&req(
                h11,
                "/v2",
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ]
            ))
            .is_err()
        );
        assert!(
            check_framing(&req(
                h11,
                "/v2",
                &[("transfer-encoding", "chunked"), ("content-length", "3")]
            ))
            .is_err()
        );
        assert!(check_framing(&req(h11, "https://evil.example/v2", &[])).is_err());
        // HTTP/2 always carries scheme and authority.
        assert!(check_framing(&req(http::Version::HTTP_2, "https://localhost/v2", &[])).is_ok());
    }
}
