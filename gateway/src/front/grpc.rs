//! gRPC over TLS, speaking gRPC's HTTP/2 framing itself: KServe v2
//! (`inference.GRPCInferenceService`, this module's codec) and the TensorFlow Serving
//! API (`tensorflow.serving.*`, the codec in `tfs_grpc`), each a codec for the pipeline.
//!
//! The front reads the method from the path and the credential and deadline from the
//! metadata, and hands the pipeline a head; the message is read only after the caller
//! is authenticated, walked without allocating to find the model it names and what
//! decoding it would cost (see `protoscan`), and decoded only once that cost has been
//! charged to the caller's quota. No client metadata crosses the socket: the backend
//! gets a fresh request carrying only what the gateway verified.

use crate::front::tfs_grpc::TfsGrpc;
use crate::front::{protoscan, tensor};
use crate::peer::ConnInfo;
use crate::pipeline::{self, Answer, Api, Charge, Codec, Head, Listener, Op, Rendered, Target};
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

/// The KServe service's path prefix.
pub const SERVICE: &str = "/inference.GRPCInferenceService/";
/// The path prefix of the TensorFlow Serving services.
pub const TFS_PACKAGE: &str = "/tensorflow.serving.";
/// Most bytes of a request message that names a model but carries no tensor.
pub const SMALL_MESSAGE_BYTES: usize = 16 << 10;
/// Server extensions advertised in server metadata.
pub const EXTENSIONS: &[&str] = crate::front::rest::EXTENSIONS;

/// A unary gRPC response body: at most one message, then trailers.
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
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
    if req.uri().path().starts_with(TFS_PACKAGE) {
        pipeline::serve(&state, &conn, head, req.into_body(), &TfsGrpc)
            .await
            .response
    } else {
        pipeline::serve(&state, &conn, head, req.into_body(), &Grpc)
            .await
            .response
    }
}

fn method(path: &str) -> Result<Op, Refusal> {
    if path.starts_with(TFS_PACKAGE) {
        return crate::front::tfs_grpc::method(path);
    }
    match path.strip_prefix(SERVICE) {
        Some("ServerLive") => Ok(Op::ServerLive),
        Some("ServerReady") => Ok(Op::ServerReady),
        Some("ServerMetadata") => Ok(Op::ServerMetadata),
        Some("ModelMetadata") => Ok(Op::ModelMetadata),
        Some("ModelReady") => Ok(Op::ModelReady),
        Some("ModelInfer") => Ok(Op::ModelInfer),
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
        api: if req.uri().path().starts_with(TFS_PACKAGE) {
            Api::Tfs
        } else {
            Api::KServe
        },
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

/// A successful unary answer carrying `message`.
pub(crate) fn ok<M: Message>(id: &str, message: &M) -> Rendered<Response<GrpcBody>> {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer of the exact size cannot fail.
    let _ = message.encode(&mut buf);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut resp = Response::new(GrpcBody {
        data: Some(buf.freeze()),
        trailers: Some(trailers),
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
        !op.is_health()
    }

    fn body_cap(&self, limits: &LimitsConfig, op: Op) -> usize {
        5 + match op {
            Op::ModelInfer => limits.max_grpc_message_bytes,
            _ => SMALL_MESSAGE_BYTES,
        }
    }

    fn framed_len(&self, first: &[u8]) -> Option<u64> {
        framed_len(first)
    }

    fn message(&self, body: Bytes) -> Result<Bytes, Refusal> {
        unframe(body)
    }

    fn target(&self, _: Op, message: &[u8]) -> Result<Target, Refusal> {
        let (model, version) = protoscan::target(message).map_err(Refusal::Malformed)?;
        Ok(Target {
            model: model.to_owned(),
            version: version.to_owned(),
        })
    }

    fn decode_infer(
        &self,
        _: &Target,
        message: Bytes,
        limits: &LimitsConfig,
        _: Option<&proto::ModelMetadataResponse>,
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
            Answer::ModelMetadata { meta, .. } => ok(id, &meta),
            Answer::ModelReady { ready, .. } => ok(id, &proto::ModelReadyResponse { ready }),
            Answer::Infer(resp, ()) => ok(id, &resp),
        })
    }

    fn refuse(&self, id: &str, refusal: &Refusal) -> Rendered<Response<GrpcBody>> {
        refused(id, refusal)
    }
}

/// A gRPC message's length as its 5-byte prefix declares it, prefix included.
pub(crate) fn framed_len(first: &[u8]) -> Option<u64> {
    let p: [u8; 4] = first.get(1..5)?.try_into().ok()?;
    Some(5 + u64::from(u32::from_be_bytes(p)))
}

/// The one uncompressed message of a unary call's body.
pub(crate) fn unframe(body: Bytes) -> Result<Bytes, Refusal> {
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

/// A refusal as a trailers-only gRPC answer, with the code from the refusal table.
pub(crate) fn refused(id: &str, refusal: &Refusal) -> Rendered<Response<GrpcBody>> {
    // Trailers-only: the status travels in the response head.
    let code = refusal.grpc_code();
    let mut resp = Response::new(GrpcBody {
        data: None,
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
            Err(Refusal::NoRoute)
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
            unframe(frame(0, 2, b"ab")).unwrap(),
            Bytes::from_static(b"ab")
        );
        assert!(matches!(
            unframe(frame(1, 2, b"ab")),
            Err(Refusal::Unsupported(_))
        ));
        assert!(unframe(frame(0, 3, b"ab")).is_err(), "short");
        assert!(unframe(frame(0, 1, b"ab")).is_err(), "two messages");
        assert!(unframe(Bytes::from_static(&[0, 0])).is_err());
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%\n"), "a b%25%0A");
    }
}
