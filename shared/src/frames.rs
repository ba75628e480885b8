//! The hot call on the socket, `ModelInfer`, in length-prefixed frames.
//!
//! Every other call between gateway and backend is KServe gRPC over HTTP/2 (see
//! [`crate::wire`]). An inference crosses the socket once per client request, and
//! HTTP/2 with gRPC on top cost more instructions per request than the rest of the
//! backend's path besides OpenVINO (headers, HPACK, stream state, flow control, a task
//! per stream). Here a request is one write and its answer one read.
//!
//! A connection starts with [`MAGIC`] from the gateway; the backend tells it from the
//! HTTP/2 preface by its first byte ([`open`]). Then, one call at a time:
//!
//! ```text
//! frame   = u32 length (little-endian) ‖ payload           (length ≤ MAX_SOCKET_MESSAGE_BYTES)
//! call    = u8 CALL_INFER ‖ u16 len ‖ principal ‖ u16 len ‖ request id ‖ ModelInferRequest
//! answer  = u8 0 ‖ u64 wait µs ‖ u64 inference µs ‖ ModelInferResponse
//!         | u8 gRPC code (1..=16) ‖ UTF-8 message
//! ```
//!
//! The principal and request id are the gateway's own verified values (the same that
//! travel as `x-warden-*` metadata on the gRPC calls); nothing of the client's reaches
//! them. A connection answers calls in order and never holds two at once, so the
//! gateway keeps a pool of them. If the gateway closes a connection while its call is
//! still running (its client went away or its deadline passed), the backend drops the
//! call, as it would a reset HTTP/2 stream.

use crate::proto::{ModelInferRequest, ModelInferResponse};
use crate::wire::MAX_SOCKET_MESSAGE_BYTES;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tonic::{Code, Status};

/// The first bytes the gateway writes on a framed connection. Bumped with any
/// incompatible change, so an old backend closes a connection it cannot read.
pub const MAGIC: &[u8; 8] = b"WARDENF1";
/// The one call kind: a KServe `ModelInfer`.
pub const CALL_INFER: u8 = 1;
/// Longest principal or request id a call carries (both are the gateway's own).
pub const MAX_NAME_BYTES: usize = u16::MAX as usize;

/// One inference, as the backend receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `sub@issuer` or a certificate identity; empty when the listener needs none.
    pub principal: String,
    pub request_id: String,
    pub request: ModelInferRequest,
}

/// A successful inference, with what the backend measured of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub response: ModelInferResponse,
    /// Waiting for a free infer request (OVMS `ovms_wait_for_infer_req_time_us`).
    pub wait_us: u64,
    /// OpenVINO's inference call (OVMS `ovms_inference_time_us`).
    pub inference_us: u64,
}

/// What serves framed calls: the backend, or a test's stand-in for it.
pub trait Infer: Send + Sync + 'static {
    fn infer(&self, call: Call) -> impl Future<Output = Result<Answer, Status>> + Send;
}

/// Appends `call` as one frame to `out` (which may already hold [`MAGIC`]). `None`
/// when a name is longer than [`MAX_NAME_BYTES`] or the frame longer than the socket
/// carries.
pub fn encode_call(
    out: &mut Vec<u8>,
    principal: &str,
    request_id: &str,
    request: &ModelInferRequest,
) -> Option<()> {
    encode_call_within(
        out,
        principal,
        request_id,
        request,
        MAX_SOCKET_MESSAGE_BYTES,
    )
}

/// [`encode_call`] with a frame of at most `max` bytes.
fn encode_call_within(
    out: &mut Vec<u8>,
    principal: &str,
    request_id: &str,
    request: &ModelInferRequest,
    max: usize,
) -> Option<()> {
    let names = [principal.as_bytes(), request_id.as_bytes()];
    if names.iter().any(|n| n.len() > MAX_NAME_BYTES) {
        return None;
    }
    let len = 1 + 2 + names[0].len() + 2 + names[1].len() + request.encoded_len();
    if len > max {
        return None;
    }
    out.reserve(4 + len);
    out.put_u32_le(len as u32);
    out.put_u8(CALL_INFER);
    for n in names {
        out.put_u16_le(n.len() as u16);
        out.put_slice(n);
    }
    request.encode_raw(out);
    Some(())
}

/// Reads a call's payload (the frame without its length). The request's raw tensors
/// stay slices of `payload`.
pub fn decode_call(mut payload: Bytes) -> Result<Call, Malformed> {
    if payload.try_get_u8().map_err(|_| Malformed("empty frame"))? != CALL_INFER {
        return Err(Malformed("unknown call kind"));
    }
    let principal = name(&mut payload)?;
    let request_id = name(&mut payload)?;
    let request = ModelInferRequest::decode(payload).map_err(|_| Malformed("bad request"))?;
    Ok(Call {
        principal,
        request_id,
        request,
    })
}

fn name(payload: &mut Bytes) -> Result<String, Malformed> {
    let len = usize::from(
        payload
            .try_get_u16_le()
            .map_err(|_| Malformed("short name"))?,
    );
    if payload.len() < len {
        return Err(Malformed("short name"));
    }
    String::from_utf8(payload.split_to(len).to_vec()).map_err(|_| Malformed("name not UTF-8"))
}

/// Appends `result` as one frame to `out`. An answer longer than the socket carries
/// is sent as RESOURCE_EXHAUSTED instead.
pub fn encode_answer(out: &mut Vec<u8>, result: &Result<Answer, Status>) {
    encode_answer_within(out, result, MAX_SOCKET_MESSAGE_BYTES)
}

/// [`encode_answer`] with a frame of at most `max` bytes.
fn encode_answer_within(out: &mut Vec<u8>, result: &Result<Answer, Status>, max: usize) {
    let status = match result {
        Ok(a) => {
            let len = 1 + 8 + 8 + a.response.encoded_len();
            if len <= max {
                out.reserve(4 + len);
                out.put_u32_le(len as u32);
                out.put_u8(0);
                out.put_u64_le(a.wait_us);
                out.put_u64_le(a.inference_us);
                a.response.encode_raw(out);
                return;
            }
            &Status::resource_exhausted("the answer is larger than the socket carries")
        }
        Err(s) => s,
    };
    // A code outside 1..=16 (there is none today) is sent as UNKNOWN, never as 0.
    let code = match status.code() as i32 {
        c @ 1..=16 => c as u8,
        _ => Code::Unknown as u8,
    };
    let message = status.message();
    let message = &message.as_bytes()[..message.floor_char_boundary(MAX_NAME_BYTES)];
    out.put_u32_le(1 + message.len() as u32);
    out.put_u8(code);
    out.put_slice(message);
}

/// Reads an answer's payload. The response's raw tensors stay slices of `payload`.
pub fn decode_answer(mut payload: Bytes) -> Result<Result<Answer, Status>, Malformed> {
    match payload.try_get_u8().map_err(|_| Malformed("empty frame"))? {
        0 => {
            let wait_us = payload
                .try_get_u64_le()
                .map_err(|_| Malformed("short answer"))?;
            let inference_us = (payload.try_get_u64_le()).map_err(|_| Malformed("short answer"))?;
            let response =
                ModelInferResponse::decode(payload).map_err(|_| Malformed("bad response"))?;
            Ok(Ok(Answer {
                response,
                wait_us,
                inference_us,
            }))
        }
        code @ 1..=16 => {
            let message = String::from_utf8_lossy(&payload).into_owned();
            Ok(Err(Status::new(Code::from(i32::from(code)), message)))
        }
        _ => Err(Malformed("unknown answer code")),
    }
}

/// A frame the other end should not have sent; the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

impl From<Malformed> for io::Error {
    fn from(m: Malformed) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, m)
    }
}

/// Reads one frame's payload, keeping what follows it in `buf`. `None` at a clean end
/// of stream (between frames); a length over `max` is refused before anything is
/// allocated for it.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<Option<Bytes>> {
    while buf.len() < 4 {
        buf.reserve(4096);
        if r.read_buf(buf).await? == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(Malformed("frame longer than the socket carries").into());
    }
    buf.reserve((4 + len).saturating_sub(buf.len()));
    while buf.len() < 4 + len {
        if r.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// What a backend connection turned out to be from its first byte.
pub enum Opened<S> {
    /// [`MAGIC`] read whole: serve it with [`serve`].
    Frames(S),
    /// Anything else (the HTTP/2 preface): for the gRPC server, first byte replayed.
    Grpc(Replayed<S>),
}

/// Reads a new connection's first byte to tell framed calls from gRPC.
pub async fn open<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<Opened<S>> {
    let first = stream.read_u8().await?;
    if first != MAGIC[0] {
        return Ok(Opened::Grpc(Replayed {
            first: Some(first),
            inner: stream,
        }));
    }
    let mut rest = [0u8; MAGIC.len() - 1];
    stream.read_exact(&mut rest).await?;
    if rest != MAGIC[1..] {
        return Err(Malformed("unknown protocol version").into());
    }
    Ok(Opened::Frames(stream))
}

/// Serves a new connection: framed calls here, anything else (HTTP/2) handed to the
/// gRPC server reading `grpc`.
pub async fn route<S, T>(
    stream: S,
    grpc: &tokio::sync::mpsc::Sender<io::Result<Replayed<S>>>,
    service: Arc<T>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Infer,
{
    match open(stream).await? {
        Opened::Frames(stream) => serve(stream, service).await,
        Opened::Grpc(stream) => {
            // A server that stopped takes no more connections; this one just closes.
            let _ = grpc.send(Ok(stream)).await;
            Ok(())
        }
    }
}

/// Serves framed calls on `stream` one at a time until the gateway closes it. A
/// malformed frame ends the connection with an error; so does a byte sent while a call
/// runs (the gateway sends one call at a time). The gateway closing the connection
/// while a call runs drops that call.
pub async fn serve<S, T>(mut stream: S, service: Arc<T>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Infer,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while let Some(payload) = read_frame(&mut stream, &mut buf, MAX_SOCKET_MESSAGE_BYTES).await? {
        if !buf.is_empty() {
            return Err(Malformed("a call sent while another runs").into());
        }
        let call = decode_call(payload)?;
        let result = {
            let infer = service.infer(call);
            tokio::pin!(infer);
            buf.reserve(1);
            tokio::select! {
                biased;
                result = &mut infer => result,
                read = stream.read_buf(&mut buf) => {
                    return match read? {
                        0 => Ok(()),
                        _ => Err(Malformed("a call sent while another runs").into()),
                    };
                }
            }
        };
        out.clear();
        encode_answer(&mut out, &result);
        stream.write_all(&out).await?;
        // A large answer's buffer is not kept for the connection's idle life.
        if out.capacity() > 1 << 20 {
            out = Vec::new();
        }
    }
    Ok(())
}

/// A stream whose first byte was read to route it, and is given back on the first
/// read.
pub struct Replayed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(b) = self.first
            && out.remaining() > 0
        {
            out.put_slice(&[b]);
            self.first = None;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Replayed<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
