//! REST over HTTPS (HTTP/1.1 and HTTP/2): KServe v2 (`/v2/...`) and the TensorFlow
//! Serving API (`/v1/...`), a codec for the pipeline. It turns a request's method, path
//! and headers into a [`Head`], reads nothing of the body itself (the pipeline does,
//! after authentication), decodes JSON and binary tensor bodies (TFS JSON: see
//! `tfs_json`) when the pipeline asks, and renders answers and refusals as JSON (both
//! APIs refuse with `{"error": "..."}`).

use crate::front::json::{self, JsonError, OutputPrefs};
use crate::front::tfs_json::{self, Format, PredictError};
use crate::front::triton;
use crate::peer::ConnInfo;
use crate::pipeline::{self, Answer, Api, Charge, Codec, Head, Listener, Op, Rendered, Target};
use crate::refusal::Refusal;
use crate::state::State;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;
use warden_shared::config::LimitsConfig;
use warden_shared::proto;

/// The binary tensor data extension's header: the JSON part's length.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Server extensions advertised in server metadata (Triton's names; `model_repository`:
/// the index, with load and unload refused, see docs/configuration.md).
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "model_repository",
    "logging",
];

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Live,
    Ready,
    ServerMetadata,
    ModelMetadata {
        model: &'a str,
        version: &'a str,
    },
    ModelReady {
        model: &'a str,
        version: &'a str,
    },
    Infer {
        model: &'a str,
        version: &'a str,
    },
    /// Triton's extensions (`front::triton`).
    Triton(triton::Route<'a>),
}

fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, Refusal> {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    // Dot segments are never resolved (a model folder is not a path); refuse them, and
    // their percent-encoded spellings, rather than answer 404.
    if segs.iter().any(|s| {
        let l = s.to_ascii_lowercase();
        l == "." || l == ".." || l.contains("%2e") || l.contains("%2f") || l.contains("%5c")
    }) {
        return Err(Refusal::BadName("invalid request path"));
    }
    if let Some(t) = triton::route(&segs) {
        if !t.methods.contains(method) {
            return Err(Refusal::MethodNotAllowed);
        }
        return Ok(Route::Triton(t));
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
        // The TensorFlow Serving API: status, metadata, `:predict`.
        ["v1", "models", last] if last.ends_with(":predict") => {
            let model = &last[..last.len() - ":predict".len()];
            (Route::Infer { model, version: "" }, Method::POST)
        }
        ["v1", "models", model, "versions", last] if last.ends_with(":predict") => {
            let version = &last[..last.len() - ":predict".len()];
            (Route::Infer { model, version }, Method::POST)
        }
        ["v1", "models", model] => (Route::ModelReady { model, version: "" }, Method::GET),
        ["v1", "models", model, "versions", version] => {
            (Route::ModelReady { model, version }, Method::GET)
        }
        ["v1", "models", model, "metadata"] => {
            (Route::ModelMetadata { model, version: "" }, Method::GET)
        }
        ["v1", "models", model, "versions", version, "metadata"] => {
            (Route::ModelMetadata { model, version }, Method::GET)
        }
        _ => return Err(Refusal::NoRoute),
    };
    if *method != wanted {
        return Err(Refusal::MethodNotAllowed);
    }
    Ok(r)
}

/// Refuses HTTP/1 requests whose framing or target another HTTP implementation could
/// read differently (request smuggling), before routing. hyper already refuses
/// conflicting Content-Lengths, a Transfer-Encoding whose last coding is not chunked,
/// obs-fold and bad header names; this adds what it lets through.
fn check_framing<B>(req: &Request<B>) -> Result<(), Refusal> {
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

fn framing_error(message: &'static str) -> Refusal {
    Refusal::Framing(message)
}

/// Handles one request: builds its head, runs the pipeline, returns the answer. Never
/// fails: every error is a JSON error response.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let h1 = req.version() < http::Version::HTTP_2;
    let (head, codec) = head(&state.config.limits, &req);
    let served = pipeline::serve(&state, &conn, head, req.into_body(), &codec).await;
    let mut response = served.response;
    if h1 && served.body_unfinished {
        // The refused body was not read to its end: the connection cannot carry
        // another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What the head of a request says, without reading its body.
pub(crate) fn head(limits: &LimitsConfig, req: &Request<Incoming>) -> (Head, Rest) {
    let protocol = match req.version() {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let api = if req.uri().path().starts_with("/v1/") {
        Api::Tfs
    } else {
        Api::KServe
    };
    let mut codec = Rest {
        header_len: None,
        h1: req.version() < http::Version::HTTP_2,
        api,
    };
    let op = (|| {
        // HTTP/1.1: hyper bounds the head only by its read buffer, which can hold more
        // than the cap; measure the head as sent. HTTP/2 heads are bounded by
        // SETTINGS_MAX_HEADER_LIST_SIZE before they get here.
        if req.version() <= http::Version::HTTP_11 && head_len(req) > limits.max_header_bytes {
            return Err(Refusal::HeadersTooLarge);
        }
        check_framing(req)?;
        let route = route(req.method(), req.uri().path())?;
        if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > limits.max_url_bytes {
            return Err(Refusal::UrlTooLong);
        }
        if let Some(v) = headers
            .get(INFERENCE_HEADER_CONTENT_LENGTH)
            .filter(|_| api == Api::KServe)
        {
            codec.header_len = Some(parse_header_length(v.as_bytes()).ok_or(
                Refusal::Malformed("invalid Inference-Header-Content-Length".into()),
            )?);
        }
        Ok(route)
    })();
    let declared_len = match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or(Refusal::Malformed("invalid Content-Length".into())),
    };
    let (op, target) = match (op, declared_len.clone()) {
        (Ok(route), Ok(_)) => (Ok(route.op()), route.target()),
        (Err(r), _) | (_, Err(r)) => (Err(r), None),
    };
    let head = Head {
        listener: Listener::Rest,
        api,
        protocol,
        op,
        target,
        token: crate::auth::bearer_token(headers.get(header::AUTHORIZATION)).map(str::to_owned),
        client_request_id: pipeline::client_request_id(text("x-request-id")),
        deadline: None,
        declared_len: declared_len.ok().flatten(),
    };
    (head, codec)
}

impl Route<'_> {
    fn op(&self) -> Op {
        match self {
            Route::Live => Op::ServerLive,
            Route::Ready => Op::ServerReady,
            Route::ServerMetadata => Op::ServerMetadata,
            Route::ModelMetadata { .. } => Op::ModelMetadata,
            Route::ModelReady { .. } => Op::ModelReady,
            Route::Infer { .. } => Op::ModelInfer,
            Route::Triton(t) => t.op,
        }
    }

    fn target(&self) -> Option<Target> {
        match self {
            Route::ModelMetadata { model, version }
            | Route::ModelReady { model, version }
            | Route::Infer { model, version } => Some(Target {
                model: (*model).to_owned(),
                version: (*version).to_owned(),
            }),
            Route::Triton(t) if !matches!(t.op.scope(), pipeline::Scope::ServerWide(_)) => {
                Some(Target {
                    model: t.model.to_owned(),
                    version: t.version.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// The REST codec of one request.
pub(crate) struct Rest {
    /// `Inference-Header-Content-Length`: the JSON part of a binary body.
    header_len: Option<usize>,
    h1: bool,
    api: Api,
}

/// What a REST front keeps from an inference request to shape its answer.
#[derive(Debug)]
pub enum Shape {
    /// Which outputs go back as binary tensor data.
    KServe(OutputPrefs),
    /// The predict format the request used.
    Tfs(Format),
}

fn json_body(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_value(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    json_body(status, serde_json::to_vec(value).unwrap_or_default())
}

fn with_request_id(mut resp: Response<Full<Bytes>>, id: &str) -> Response<Full<Bytes>> {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn rendered(resp: Response<Full<Bytes>>, id: &str) -> Rendered<Response<Full<Bytes>>> {
    use http_body::Body as _;
    let status = resp.status().as_u16();
    let bytes_out = resp.body().size_hint().exact().unwrap_or(0);
    Rendered {
        response: with_request_id(resp, id),
        status,
        grpc_code: None,
        bytes_out,
    }
}

impl Codec for Rest {
    type Shape = Shape;
    type Response = Response<Full<Bytes>>;

    fn has_body(&self, op: Op) -> bool {
        matches!(op, Op::ModelInfer | Op::RepositoryIndex | Op::LogSettings)
    }

    fn body_cap(&self, limits: &LimitsConfig, op: Op) -> usize {
        match op {
            Op::ModelInfer => limits.max_body_bytes,
            _ => triton::MAX_BODY_BYTES,
        }
    }

    fn options(&self, op: Op, message: &[u8]) -> Result<pipeline::Options, Refusal> {
        triton::json_options(op, message)
    }

    fn message(&self, body: Bytes) -> Result<Bytes, Refusal> {
        Ok(body)
    }

    fn target(&self, _: Op, _: &[u8]) -> Result<Target, Refusal> {
        // Every REST route that names a model does so in its path.
        Err(Refusal::Internal)
    }

    fn needs_metadata(&self) -> bool {
        // TFS JSON tensors take their datatypes from the model's inputs.
        self.api == Api::Tfs
    }

    fn decode_infer(
        &self,
        target: &Target,
        message: Bytes,
        limits: &LimitsConfig,
        metadata: Option<&proto::ModelMetadataResponse>,
        charge: &mut Charge<'_>,
    ) -> Result<(proto::ModelInferRequest, Shape), Refusal> {
        if self.api == Api::Tfs {
            let meta = metadata.ok_or(Refusal::Internal)?;
            let bounds = tfs_json::Bounds {
                max_elements: limits.max_tensor_elements,
                max_depth: limits.max_json_depth,
            };
            return tfs_json::parse_predict(
                &message,
                meta,
                &target.model,
                &target.version,
                bounds,
                charge,
            )
            .map(|(r, f)| (r, Shape::Tfs(f)))
            .map_err(|e| match e {
                PredictError::Invalid(m) => Refusal::Malformed(m),
                PredictError::Refused(r) => r,
            });
        }
        let (json, binary) = split_body(self.header_len, message).map_err(Refusal::Malformed)?;
        json::parse_infer_request(
            &json,
            binary,
            &target.model,
            &target.version,
            limits.max_tensor_elements,
            limits.max_json_depth,
            charge,
        )
        .map(|(r, p)| (r, Shape::KServe(p)))
        .map_err(|e| match e {
            JsonError::Refused(r) => r,
            e => Refusal::Malformed(e.to_string()),
        })
    }

    fn render(
        &self,
        id: &str,
        answer: Answer<Shape>,
    ) -> Result<Rendered<Response<Full<Bytes>>>, Refusal> {
        let resp = match answer {
            Answer::ModelMetadata { meta, version } if self.api == Api::Tfs => {
                json_value(StatusCode::OK, &tfs_json::metadata_json(&meta, &version))
            }
            Answer::ModelReady {
                ready, versions, ..
            } if self.api == Api::Tfs => {
                json_value(StatusCode::OK, &tfs_json::status_json(&versions, ready))
            }
            Answer::Infer(resp, Shape::Tfs(format)) => {
                let body = tfs_json::render_predict(&resp, format).map_err(|e| {
                    tracing::error!(error = %e, "cannot render backend response");
                    Refusal::Internal
                })?;
                json_body(StatusCode::OK, body)
            }
            Answer::Live => json_value(StatusCode::OK, &serde_json::json!({"live": true})),
            Answer::Ready(ready) => json_value(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &serde_json::json!({ "ready": ready }),
            ),
            Answer::ServerMetadata => json_value(
                StatusCode::OK,
                &serde_json::json!({
                    "name": warden_shared::SERVER_NAME,
                    "version": warden_shared::VERSION,
                    "extensions": EXTENSIONS,
                }),
            ),
            Answer::ModelMetadata { meta: m, .. } => {
                let tensors = |ts: &[proto::model_metadata_response::TensorMetadata]| {
                    ts.iter()
                        .map(|t| serde_json::json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
                        .collect::<Vec<_>>()
                };
                json_value(
                    StatusCode::OK,
                    &serde_json::json!({
                        "name": m.name,
                        "versions": m.versions,
                        "platform": m.platform,
                        "inputs": tensors(&m.inputs),
                        "outputs": tensors(&m.outputs),
                    }),
                )
            }
            Answer::ModelReady { model, ready, .. } => json_value(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &serde_json::json!({ "name": model, "ready": ready }),
            ),
            Answer::ModelConfig(c) => json_value(StatusCode::OK, &triton::config_json(&c)),
            Answer::ModelStats(s) => json_value(StatusCode::OK, &triton::stats_json(&s)),
            Answer::RepositoryIndex(i) => json_value(StatusCode::OK, &triton::index_json(&i)),
            Answer::LogSettings(l) => json_value(StatusCode::OK, &triton::log_json(&l)),
            // gRPC only: no REST route asks for them.
            Answer::Health(_) | Answer::HealthWatch(..) | Answer::Stream(_) => {
                return Err(Refusal::NoRoute);
            }
            Answer::Infer(resp, Shape::KServe(prefs)) => {
                let r = json::render_infer_response(&resp, &prefs).map_err(|e| {
                    tracing::error!(error = %e, "cannot render backend response");
                    Refusal::Internal
                })?;
                let mut out = json_body(StatusCode::OK, r.body);
                if let Some(n) = r.json_len {
                    out.headers_mut()
                        .insert(INFERENCE_HEADER_CONTENT_LENGTH, n.into());
                    out.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                }
                out
            }
        };
        Ok(rendered(resp, id))
    }

    fn refuse(&self, id: &str, refusal: &Refusal) -> Rendered<Response<Full<Bytes>>> {
        let mut resp = json_value(
            refusal.http_status(),
            &serde_json::json!({ "error": refusal.message() }),
        );
        let h = resp.headers_mut();
        if let Some(c) = refusal.challenge() {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Some(v) = refusal
            .retry_after()
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        if self.h1 && matches!(refusal, Refusal::Framing(_)) {
            // The body was not read and its framing is in doubt: never reuse the
            // connection.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        rendered(resp, id)
    }
}

/// The size of an HTTP/1.1 request head: request line, headers, blank line.
fn head_len<B>(req: &Request<B>) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rest_body_has_no_length_prefix_and_tfs_json_needs_the_models_types() {
        for api in [Api::KServe, Api::Tfs] {
            let rest = Rest {
                header_len: None,
                h1: false,
                api,
            };
            // Bytes a gRPC frame would start with are a REST body's own bytes.
            assert_eq!(rest.framed_len(&[0, 0, 0, 0, 16]), None);
            assert_eq!(rest.needs_metadata(), api == Api::Tfs);
        }
    }

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
            route(&g, "/v2/models/m/infer").unwrap_err().http_status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&g, "/v3/x").unwrap_err().http_status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&p, "/v2/models/..%2f/infer")
                .unwrap_err()
                .http_status(),
            StatusCode::BAD_REQUEST
        );
        // The TensorFlow Serving routes.
        assert_eq!(
            route(&g, "/v1/models/m").unwrap(),
            Route::ModelReady {
                model: "m",
                version: ""
            }
        );
        assert_eq!(
            route(&g, "/v1/models/m/versions/3/metadata").unwrap(),
            Route::ModelMetadata {
                model: "m",
                version: "3"
            }
        );
        assert_eq!(
            route(&p, "/v1/models/m/versions/3:predict").unwrap(),
            Route::Infer {
                model: "m",
                version: "3"
            }
        );
        assert_eq!(
            route(&p, "/v1/models/m:predict").unwrap(),
            Route::Infer {
                model: "m",
                version: ""
            }
        );
        assert_eq!(
            route(&g, "/v1/models/m:predict").unwrap_err().http_status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&p, "/v1/models/m:classify")
                .unwrap_err()
                .http_status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Names and versions are checked by the pipeline, after authentication.
        assert!(route(&p, "/v2/models/m/versions/x/infer").is_ok());
        assert_eq!(
            route(&g, "/v2/models/m/extra/ready")
                .unwrap_err()
                .http_status(),
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
                route(&g, bad).unwrap_err().http_status(),
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
