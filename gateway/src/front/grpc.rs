//! KServe v2 gRPC (`inference.GRPCInferenceService`) over TLS: a codec for the
//! pipeline, speaking gRPC's HTTP/2 framing itself.
//!
//! The front reads the method from the path and the credential and deadline from the
//! metadata, and hands the pipeline a head; the message is read only after the caller
//! is authenticated, walked without allocating to find the model it names and what
//! decoding it would cost (see `protoscan`), and decoded only once that cost has been
//! charged to the caller's quota. No client metadata crosses the socket: the backend
//! gets a fresh request carrying only what the gateway verified.

use crate::front::{protoscan, reflection, tensor, triton};
use crate::peer::ConnInfo;
use crate::pipeline::{
    self, Answer, Charge, Codec, Head, HealthUpdates, Listener, Op, Rendered, Serving, Target,
};
use crate::refusal::Refusal;
use crate::state::State;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use warden_shared::config::LimitsConfig;
use warden_shared::proto;

/// The service's path prefix.
pub const SERVICE: &str = "/inference.GRPCInferenceService/";
/// gRPC's standard health service's path prefix.
pub const HEALTH_SERVICE: &str = "/grpc.health.v1.Health/";
/// Most bytes of a request message that names a model but carries no tensor.
pub const SMALL_MESSAGE_BYTES: usize = 16 << 10;
/// Server extensions advertised in server metadata.
pub const EXTENSIONS: &[&str] = crate::front::rest::EXTENSIONS;

/// A gRPC response body: at most one message, then the messages of a stream (if
/// any), then trailers.
pub struct GrpcBody {
    data: Option<Bytes>,
    stream: Option<Streamed>,
    trailers: Option<HeaderMap>,
}

/// What a streaming answer's messages come from.
enum Streamed {
    /// A health Watch: a message per status change.
    Health(HealthUpdates),
    /// Frames made by a task (reflection), its trailers last.
    Frames(tokio::sync::mpsc::Receiver<http_body::Frame<Bytes>>),
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        match self.stream.as_mut() {
            Some(Streamed::Health(updates)) => match updates.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(s)) => {
                    return Poll::Ready(Some(Ok(http_body::Frame::data(frame(&health(s))))));
                }
                Poll::Ready(None) => self.stream = None,
            },
            Some(Streamed::Frames(frames)) => match frames.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(f)) => {
                    if f.is_trailers() {
                        self.trailers = None;
                        self.stream = None;
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Poll::Ready(None) => self.stream = None,
            },
            None => {}
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.stream.is_none() && self.trailers.is_none()
    }
}

/// A health status as `grpc.health.v1` sends it.
fn health(s: Serving) -> warden_shared::health_proto::HealthCheckResponse {
    use warden_shared::health_proto::health_check_response::ServingStatus;
    warden_shared::health_proto::HealthCheckResponse {
        status: match s {
            Serving::Serving => ServingStatus::Serving,
            Serving::NotServing => ServingStatus::NotServing,
        }
        .into(),
    }
}

/// One length-prefixed, uncompressed message.
fn frame<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer of the exact size cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// Handles one gRPC call. Never fails: every error is a gRPC status.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<GrpcBody> {
    let mut head = head(&state.config.limits, &req);
    // OVMS `--grpc_max_threads`: a bound on gRPC calls handled at once; past it a call
    // is refused at once (as gRPC's own server does), and audited like any refusal.
    let _slot = match &state.grpc_calls {
        Some(sem) => match Arc::clone(sem).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                head.op = Err(Refusal::Overloaded);
                None
            }
        },
        None => None,
    };
    pipeline::serve(&state, &conn, head, req.into_body(), &Grpc)
        .await
        .response
}

fn method(path: &str) -> Result<Op, Refusal> {
    if path == reflection::V1 || path == reflection::V1ALPHA {
        return Ok(Op::Reflection);
    }
    if let Some(m) = path.strip_prefix(HEALTH_SERVICE) {
        return match m {
            "Check" => Ok(Op::Health {
                watch: false,
                model: false,
            }),
            "Watch" => Ok(Op::Health {
                watch: true,
                model: false,
            }),
            _ => Err(Refusal::NoRoute),
        };
    }
    match path.strip_prefix(SERVICE) {
        Some("ServerLive") => Ok(Op::ServerLive),
        Some("ServerReady") => Ok(Op::ServerReady),
        Some("ServerMetadata") => Ok(Op::ServerMetadata),
        Some("ModelMetadata") => Ok(Op::ModelMetadata),
        Some("ModelReady") => Ok(Op::ModelReady),
        Some("ModelInfer") => Ok(Op::ModelInfer),
        Some("ModelConfig") => Ok(Op::ModelConfig),
        Some("ModelStatistics") => Ok(Op::ModelStats),
        Some("RepositoryIndex") => Ok(Op::RepositoryIndex),
        Some("RepositoryModelLoad") => Ok(Op::RepositoryLoad),
        Some("RepositoryModelUnload") => Ok(Op::RepositoryUnload),
        Some("LogSettings") => Ok(Op::LogSettings),
        _ => Err(Refusal::NoRoute),
    }
}

/// `grpc-timeout`: up to eight digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn head(limits: &LimitsConfig, req: &Request<Incoming>) -> Head {
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let op = (|| {
        let _ = limits;
        if req.method() != http::Method::POST {
            return Err(Refusal::MethodNotAllowed);
        }
        if !text("content-type").is_some_and(|c| c.starts_with("application/grpc")) {
            return Err(Refusal::Unsupported(
                "content-type must be application/grpc",
            ));
        }
        method(req.uri().path())
    })();
    Head {
        listener: Listener::Grpc,
        protocol: "gRPC",
        op,
        target: None,
        token: text("authorization")
            .and_then(crate::auth::bearer_from_str)
            .map(str::to_owned),
        client_request_id: pipeline::client_request_id(text("x-request-id")),
        deadline: text("grpc-timeout").and_then(parse_timeout),
        declared_len: None,
    }
}

/// The gRPC codec (stateless: everything it needs is in the message).
struct Grpc;

/// Percent-encodes a status message (gRPC over HTTP/2, `grpc-message`).
fn percent_encode(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn grpc_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
}

fn ok<M: Message>(id: &str, message: &M) -> Rendered<Response<GrpcBody>> {
    streaming(id, Some(frame(message)), None)
}

/// Trailers with a status.
fn status_trailers(code: tonic::Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code as i32));
    if !message.is_empty()
        && let Ok(v) = HeaderValue::from_str(&percent_encode(message))
    {
        trailers.insert("grpc-message", v);
    }
    trailers
}

/// A first message (if any), then the messages of a stream (if any), then OK.
fn streaming(
    id: &str,
    data: Option<Bytes>,
    stream: Option<Streamed>,
) -> Rendered<Response<GrpcBody>> {
    let len = data.as_ref().map_or(0, |d| d.len().saturating_sub(5));
    let mut resp = Response::new(GrpcBody {
        data,
        stream,
        trailers: Some(status_trailers(tonic::Code::Ok, "")),
    });
    grpc_headers(resp.headers_mut());
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    Rendered {
        response: resp,
        status: 200,
        grpc_code: Some(0),
        bytes_out: len as u64,
    }
}

impl Codec for Grpc {
    type Shape = ();
    type Response = Response<GrpcBody>;

    fn has_body(&self, op: Op) -> bool {
        // A reflection stream's messages are answered as they arrive, by this front.
        !matches!(op, Op::ServerLive | Op::ServerReady | Op::Reflection)
    }

    fn body_cap(&self, limits: &LimitsConfig, op: Op) -> usize {
        5 + match op {
            Op::ModelInfer => limits.max_grpc_message_bytes,
            _ => SMALL_MESSAGE_BYTES,
        }
    }

    fn framed_len(&self, first: &[u8]) -> Option<u64> {
        let p: [u8; 4] = first.get(1..5)?.try_into().ok()?;
        Some(5 + u64::from(u32::from_be_bytes(p)))
    }

    fn message(&self, body: Bytes) -> Result<Bytes, Refusal> {
        if body.len() < 5 {
            return Err(Refusal::Malformed(
                "a unary call carries one message".into(),
            ));
        }
        if body[0] != 0 {
            return Err(Refusal::Unsupported(
                "compressed messages are not accepted (grpc-accept-encoding: identity)",
            ));
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if len != body.len() - 5 {
            return Err(Refusal::Malformed(
                "a unary call carries one message".into(),
            ));
        }
        Ok(body.slice(5..))
    }

    fn target(&self, op: Op, message: &[u8]) -> Result<Target, Refusal> {
        match op {
            Op::Health { .. } => {
                let m = warden_shared::health_proto::HealthCheckRequest::decode(message)
                    .map_err(|e| Refusal::Malformed(format!("invalid HealthCheckRequest: {e}")))?;
                Ok(Target {
                    model: m.service,
                    version: String::new(),
                })
            }
            Op::RepositoryLoad | Op::RepositoryUnload => Ok(Target {
                model: triton::grpc_load_target(message)?,
                version: String::new(),
            }),
            _ => {
                let (model, version) = protoscan::target(message).map_err(Refusal::Malformed)?;
                Ok(Target {
                    model: model.to_owned(),
                    version: version.to_owned(),
                })
            }
        }
    }

    fn options(&self, op: Op, message: &[u8]) -> Result<pipeline::Options, Refusal> {
        triton::grpc_options(op, message)
    }

    fn decode_infer(
        &self,
        _: &Target,
        message: Bytes,
        limits: &LimitsConfig,
        charge: &mut Charge<'_>,
    ) -> Result<(proto::ModelInferRequest, ()), Refusal> {
        let cost = protoscan::infer_request_cost(&message).map_err(Refusal::Malformed)?;
        charge(cost)?;
        let mut req = proto::ModelInferRequest::decode(message)
            .map_err(|e| Refusal::Malformed(format!("invalid ModelInferRequest: {e}")))?;
        tensor::normalize_grpc_request(&mut req, limits.max_tensor_elements)
            .map_err(Refusal::Malformed)?;
        Ok((req, ()))
    }

    fn render(
        &self,
        id: &str,
        answer: Answer<()>,
    ) -> Result<Rendered<Response<GrpcBody>>, Refusal> {
        Ok(match answer {
            Answer::Live => ok(id, &proto::ServerLiveResponse { live: true }),
            Answer::Ready(ready) => ok(id, &proto::ServerReadyResponse { ready }),
            Answer::ServerMetadata => ok(
                id,
                &proto::ServerMetadataResponse {
                    name: warden_shared::SERVER_NAME.into(),
                    version: warden_shared::VERSION.into(),
                    extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
                },
            ),
            Answer::ModelMetadata(m) => ok(id, &m),
            Answer::ModelReady { ready, .. } => ok(id, &proto::ModelReadyResponse { ready }),
            Answer::Infer(resp, ()) => ok(id, &resp),
            Answer::ModelConfig(c) => ok(id, &proto::ModelConfigResponse { config: Some(c) }),
            Answer::ModelStats(s) => ok(id, &triton::stats_message(&s)),
            Answer::RepositoryIndex(i) => ok(id, &i),
            Answer::LogSettings(l) => ok(id, &triton::log_message(&l)),
            Answer::Health(s) => ok(id, &health(s)),
            Answer::HealthWatch(s, updates) => {
                streaming(id, Some(frame(&health(s))), Some(Streamed::Health(updates)))
            }
            Answer::Stream(s) => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(async move {
                    let trailers = match reflection::serve(s.body, s.deadline, &tx).await {
                        Ok(()) => status_trailers(tonic::Code::Ok, ""),
                        Err((code, message)) => status_trailers(code, message),
                    };
                    let _ = tx.send(http_body::Frame::trailers(trailers)).await;
                });
                streaming(id, None, Some(Streamed::Frames(rx)))
            }
        })
    }

    fn refuse(&self, id: &str, refusal: &Refusal) -> Rendered<Response<GrpcBody>> {
        // Trailers-only: the status travels in the response head.
        let code = refusal.grpc_code();
        let mut resp = Response::new(GrpcBody {
            data: None,
            stream: None,
            trailers: None,
        });
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        grpc_headers(h);
        h.insert("grpc-status", HeaderValue::from(code as i32));
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&refusal.message())) {
            h.insert("grpc-message", v);
        }
        if let Some(v) = refusal
            .retry_after()
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            h.insert("retry-after", v);
        }
        if let Ok(v) = HeaderValue::from_str(id) {
            h.insert("x-request-id", v);
        }
        Rendered {
            response: resp,
            status: refusal.http_status().as_u16(),
            grpc_code: Some(code as i32),
            bytes_out: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_timeouts() {
        assert_eq!(
            method("/inference.GRPCInferenceService/ModelInfer"),
            Ok(Op::ModelInfer)
        );
        assert_eq!(
            method("/inference.GRPCInferenceService/ModelStreamInfer"),
            Err(Refusal::NoRoute)
        );
        assert_eq!(
            method("/grpc.health.v1.Health/Check"),
            Ok(Op::Health {
                watch: false,
                model: false
            })
        );
        assert_eq!(method("/grpc.health.v1.Health/List"), Err(Refusal::NoRoute));
        assert_eq!(
            method("/inference.GRPCInferenceService/ModelStatistics"),
            Ok(Op::ModelStats)
        );
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_uncompressed_message_per_call() {
        let frame = |flag: u8, len: u32, body: &[u8]| {
            let mut b = vec![flag];
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(body);
            Bytes::from(b)
        };
        assert_eq!(
            Grpc.message(frame(0, 2, b"ab")).unwrap(),
            Bytes::from_static(b"ab")
        );
        assert!(matches!(
            Grpc.message(frame(1, 2, b"ab")),
            Err(Refusal::Unsupported(_))
        ));
        assert!(Grpc.message(frame(0, 3, b"ab")).is_err(), "short");
        assert!(Grpc.message(frame(0, 1, b"ab")).is_err(), "two messages");
        assert!(Grpc.message(Bytes::from_static(&[0, 0])).is_err());
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%\n"), "a b%25%0A");
    }
}
