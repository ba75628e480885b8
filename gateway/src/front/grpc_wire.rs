//! gRPC's framing over HTTP/2, shared by the gRPC codecs (KServe with Triton's
//! extensions, health and reflection; TensorFlow Serving): the length-prefixed message,
//! trailers-only refusals with the refusal table's code, and the response body, unary
//! or streamed.

use crate::pipeline::{HealthUpdates, Rendered, Serving};
use crate::refusal::Refusal;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use prost::Message;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Most bytes of a request message that names a model but carries no tensor.
pub const SMALL_MESSAGE_BYTES: usize = 16 << 10;
/// A gRPC response body: at most one message, then the messages of a stream (if
/// any), then trailers.
pub struct GrpcBody {
    data: Option<Bytes>,
    stream: Option<Streamed>,
    trailers: Option<HeaderMap>,
}

/// What a streaming answer's messages come from.
pub enum Streamed {
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
pub fn health(s: Serving) -> warden_shared::health_proto::HealthCheckResponse {
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
pub fn frame<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer of the exact size cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

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
pub fn ok<M: Message>(id: &str, message: &M) -> Rendered<Response<GrpcBody>> {
    streaming(id, Some(frame(message)), None)
}

/// Trailers with a status.
pub fn status_trailers(code: tonic::Code, message: &str) -> HeaderMap {
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
pub fn streaming(
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

/// A gRPC message's length as its 5-byte prefix declares it, prefix included.
pub fn framed_len(first: &[u8]) -> Option<u64> {
    let p: [u8; 4] = first.get(1..5)?.try_into().ok()?;
    Some(5 + u64::from(u32::from_be_bytes(p)))
}

/// The one uncompressed message of a unary call's body.
pub fn unframe(body: Bytes) -> Result<Bytes, Refusal> {
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
pub fn refused(id: &str, refusal: &Refusal) -> Rendered<Response<GrpcBody>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
