//! KServe v2 REST: routing, authentication of each call, and translation to the
//! backend's gRPC form.

use crate::auth::{self, Principal};
use crate::error::{ApiError, CHALLENGE_INVALID, CHALLENGE_MISSING, json_response};
use crate::server::ConnInfo;
use crate::state::State;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
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

/// Handles one request. Never fails: every error becomes a JSON error response.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let _ = &conn;
    match dispatch(&state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn authenticate(state: &State, req: &Request<Incoming>) -> Result<Principal, ApiError> {
    let Some(token) = auth::bearer_token(req.headers().get(header::AUTHORIZATION)) else {
        return Err(ApiError::unauthenticated(CHALLENGE_MISSING));
    };
    state.jwt.verify(token).map_err(|e| {
        // The reason is for operators; the client learns only that the token failed.
        tracing::info!(reason = %e, "token refused");
        ApiError::unauthenticated(CHALLENGE_INVALID)
    })
}

/// Wraps a message for the backend with the verified principal and request id.
pub fn backend_request<T>(
    message: T,
    principal: &Principal,
    request_id: &str,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    let md = r.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(principal.display_name()) {
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

async fn dispatch(
    state: &State,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let route = route(req.method(), req.uri().path())?;
    let mut backend = state.backend.clone();
    match route {
        Route::Live => return Ok(Response::new(Full::new(Bytes::new()))),
        Route::Ready => {
            let ready = backend
                .server_ready(proto::ServerReadyRequest {})
                .await
                .map(|r| r.into_inner().ready)
                .unwrap_or(false);
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = status;
            return Ok(resp);
        }
        _ => {}
    }
    let principal = authenticate(state, &req)?;
    let request_id = state.next_request_id();
    let span =
        tracing::info_span!("request", id = %request_id, principal = %principal.display_name());
    let _enter = span.enter();
    match route {
        Route::Live | Route::Ready => unreachable!("answered above"),
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
                    &principal,
                    &request_id,
                ))
                .await
                .map_err(|s| ApiError::from_backend(&s))?
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
                    &principal,
                    &request_id,
                ))
                .await
                .map_err(|s| ApiError::from_backend(&s))?
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
                Some(v) => Some(
                    v.to_str()
                        .ok()
                        .and_then(|s| s.trim().parse::<usize>().ok())
                        .ok_or_else(|| {
                            ApiError::bad_request("invalid Inference-Header-Content-Length")
                        })?,
                ),
            };
            let body = read_body(state, req).await?;
            let (json, binary) = match header_len {
                None => (body, Bytes::new()),
                Some(n) if n <= body.len() => (body.slice(..n), body.slice(n..)),
                Some(n) => {
                    return Err(ApiError::bad_request(format!(
                        "Inference-Header-Content-Length {n} is longer than the {}-byte body",
                        body.len()
                    )));
                }
            };
            let max = state.config.limits.max_tensor_elements;
            let (infer, prefs) =
                crate::json::parse_infer_request(&json, binary, &model, &version, max)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            drop(json);
            let resp = backend
                .model_infer(backend_request(infer, &principal, &request_id))
                .await
                .map_err(|s| ApiError::from_backend(&s))?
                .into_inner();
            let rendered = crate::json::render_infer_response(&resp, &prefs).map_err(|e| {
                tracing::error!(error = %e, "cannot render backend response");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed")
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

/// Reads the body under the cap: a declared length over it is refused before a single
/// body byte is read, and an undeclared one is cut off as soon as it passes it.
async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let max = state.config.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {max} bytes"),
        )
    };
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?;
        if len > max as u64 {
            return Err(too_large());
        }
    }
    let collected = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::bad_request("request body could not be read")
            }
        })?;
    Ok(collected.to_bytes())
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
    }
}
