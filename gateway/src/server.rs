//! The accept loop: TCP → TLS (with a handshake deadline) → HTTP/1.1 or HTTP/2 (by
//! ALPN) → the service. A failing connection is logged and dropped; it never affects
//! another connection or the process.

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Time a client has to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers (HTTP/1.1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 streams one connection may have open at once (Envoy edge guide: 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Accepts one connection's TLS handshake within the deadline.
pub async fn handshake(
    tls: &TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The HTTP connection builder with Warden's protocol limits.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    b
}

/// What the gateway knows about a connection; attached to every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls_version: &'static str,
    pub cipher: String,
    pub alpn: Option<String>,
}

fn conn_info(
    peer: SocketAddr,
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> ConnInfo {
    let conn = tls.get_ref().1;
    ConnInfo {
        peer,
        tls_version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        },
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}

/// Accepts connections on `listener` forever: TLS handshake, then HTTP, with the
/// service `make` builds for each connection.
pub async fn accept_loop<F, S, B>(listener: TcpListener, tls: TlsAcceptor, make: F)
where
    F: Fn(ConnInfo) -> S + Send + Sync + 'static,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(http_builder());
    let make = Arc::new(make);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let builder = Arc::clone(&builder);
        let make = Arc::clone(&make);
        tokio::spawn(async move {
            let Some(stream) = handshake(&tls, stream, peer).await else {
                return;
            };
            let service = make(conn_info(peer, &stream));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves the REST API on `listener`.
pub async fn serve_rest(listener: TcpListener, tls: TlsAcceptor, state: Arc<crate::state::State>) {
    accept_loop(listener, tls, move |conn: ConnInfo| {
        let state = Arc::clone(&state);
        let conn = Arc::new(conn);
        hyper::service::service_fn(move |req| {
            let state = Arc::clone(&state);
            let conn = Arc::clone(&conn);
            async move { Ok::<_, std::convert::Infallible>(crate::rest::handle(state, conn, req).await) }
        })
    })
    .await
}

/// Serves the gRPC API on `listener`.
pub async fn serve_grpc(listener: TcpListener, tls: TlsAcceptor, state: Arc<crate::state::State>) {
    use warden_shared::proto::grpc_inference_service_server::GrpcInferenceServiceServer;
    let max = state.config.limits.max_grpc_message_bytes;
    let grpc = GrpcInferenceServiceServer::new(crate::grpc::GrpcFront { state })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    accept_loop(listener, tls, move |conn: ConnInfo| {
        let grpc = grpc.clone();
        let conn = Arc::new(conn);
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Arc::clone(&conn));
            tower::ServiceExt::oneshot(grpc.clone(), req)
        })
    })
    .await
}
