//! Connections: TCP accept with connection limits (total and per IP) and an overload
//! pause, TLS with a handshake deadline, then HTTP/1.1 or HTTP/2 by ALPN with Warden's
//! protocol limits, and an idle timeout. A failing connection is logged and dropped; it
//! never affects another connection or the process.

use crate::metrics;
use crate::peer::{Activity, ConnInfo};
use crate::state::State;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warden_shared::config::LimitsConfig;

/// Most bytes read and thrown away while a connection closes.
const LINGER_BYTES: usize = 256 << 10;
/// Most time a closing connection lingers.
const LINGER_TIME: Duration = Duration::from_secs(1);

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A connection's stream that closes the way a server must when its peer may still be
/// sending (RFC 9113 §6.8, RFC 9112 §9.6): once hyper lets go of it, the TLS session is
/// closed and the write side shut, then what the peer still sends is read and thrown
/// away for a short, bounded while. Closed at once instead, a socket with unread bytes
/// sends a TCP reset, which can make the peer's kernel drop a GOAWAY or an error answer
/// before the peer reads it. The connection's slot (per-IP and total limits) is held
/// until the lingering ends, so lingering sockets count like open ones.
struct Lingering<G: Send + 'static> {
    stream: Option<Tls>,
    guard: Option<G>,
}

impl<G: Send + 'static> Lingering<G> {
    fn stream(&mut self) -> std::io::Result<&mut Tls> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl<G: Send + 'static> Drop for Lingering<G> {
    fn drop(&mut self) {
        let (Some(mut stream), guard) = (self.stream.take(), self.guard.take()) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _guard = guard;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                let _ = stream.shutdown().await;
                let (mut tcp, _) = stream.into_inner();
                let mut buf = vec![0u8; 16 << 10];
                let mut seen = 0;
                while seen < LINGER_BYTES {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen += n,
                    }
                }
            })
            .await;
        });
    }
}

impl<G: Send + Unpin + 'static> tokio::io::AsyncRead for Lingering<G> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.stream()?).poll_read(cx, buf)
    }
}

impl<G: Send + Unpin + 'static> tokio::io::AsyncWrite for Lingering<G> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(self.stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(self.stream()?).poll_shutdown(cx)
    }
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
        client_cert: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| crate::auth::mtls::identity(der)),
        activity: Activity::new(),
    }
}

/// Counts a connection out of `State::open_connections` however its task ends.
struct OpenConn(Arc<State>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a connection opened just before a stop may take to send its request.
const STOP_GRACE_FOR_NEW: Duration = Duration::from_secs(2);

/// How long a connection being shut down for idleness may take to close by itself.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Open connections, in total and per IP; a slot is released when its guard drops.
#[derive(Default)]
pub struct ConnLimits {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    fn acquire(self: &Arc<Self>, ip: IpAddr, c: &LimitsConfig) -> Result<ConnSlot, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= c.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("total");
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= c.max_connections_per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("per_ip");
        }
        *n += 1;
        Ok(ConnSlot {
            limits: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The HTTP connection builder with Warden's protocol limits.
/// `grpc` selects the gRPC listener's HTTP/2 stream limit (OVMS
/// `grpc.max_concurrent_streams`).
pub fn http_builder(c: &LimitsConfig, grpc: bool) -> auto::Builder<TokioExecutor> {
    let streams = if grpc {
        c.grpc_h2_streams()
    } else {
        c.h2_max_concurrent_streams
    };
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(c.header_read_timeout_secs))
        .max_headers(c.max_headers)
        .max_buf_size(c.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .initial_stream_window_size(c.h2_stream_window_bytes)
        .initial_connection_window_size(c.h2_connection_window_bytes)
        .max_header_list_size(c.max_header_bytes as u32)
        .max_pending_accept_reset_streams(c.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(c.h2_max_local_error_reset_streams)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts connections on `listener` forever: limits, TLS handshake, then HTTP with
/// the service `make` builds for each connection.
pub async fn accept_loop<F, S, B>(
    listener: TcpListener,
    grpc_tls: bool,
    state: Arc<State>,
    name: &'static str,
    make: F,
) where
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
    let limits_cfg = state.config.limits.clone();
    let builder = Arc::new(http_builder(&limits_cfg, grpc_tls));
    let make = Arc::new(make);
    let conns = Arc::new(ConnLimits::default());
    let handshake_timeout = Duration::from_secs(limits_cfg.tls_handshake_timeout_secs);
    let idle = Duration::from_secs(limits_cfg.idle_timeout_secs);
    // hyper's HTTP/1 header timeout only starts once the protocol has been sniffed
    // from the first bytes, and HTTP/2 has none: a client that completes TLS and then
    // sends nothing (or an HTTP/2 preface and no request) would hold its slot until the
    // idle timeout. The first request must arrive within the header read timeout.
    let first_request = Duration::from_secs(limits_cfg.header_read_timeout_secs).min(idle);
    loop {
        // Overload: when the request-bytes quota is nearly spent, stop taking new
        // connections (they wait in the kernel's backlog) until it recovers.
        while state.quotas.usage_percent() >= limits_cfg.overload_accept_pause_percent {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match conns.acquire(peer.ip(), &limits_cfg) {
            Ok(s) => s,
            Err(why) => {
                state.metrics.inc(metrics::CONNECTIONS_REFUSED, [why]);
                tracing::debug!(%peer, why, "connection refused by limit");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The configuration in force now: a reload changes it for new handshakes only.
        let tls = TlsAcceptor::from(state.tls(grpc_tls));
        let builder = Arc::clone(&builder);
        let make = Arc::clone(&make);
        let state = Arc::clone(&state);
        let open = state.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
        state.connections_high.fetch_max(open, Ordering::AcqRel);
        tokio::spawn(async move {
            // Counted from accept, handshake included, so a stopping gateway waits for it.
            let _open = OpenConn(Arc::clone(&state));
            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                Ok(Ok(s)) => {
                    state.metrics.inc(metrics::TLS_HANDSHAKES, ["ok"]);
                    s
                }
                Ok(Err(e)) => {
                    state.metrics.inc(metrics::TLS_HANDSHAKES, ["failed"]);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    state.metrics.inc(metrics::TLS_HANDSHAKES, ["timeout"]);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let info = conn_info(peer, &stream);
            let activity = Arc::clone(&info.activity);
            let service = make(info);
            state.metrics.gauge_add(metrics::CONNECTIONS, [name], 1);
            let stream = Lingering {
                stream: Some(stream),
                guard: Some(slot),
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut shutdown = state.shutdown.subscribe();
            let mut stopping: Option<Instant> = (*shutdown.borrow()).then(Instant::now);
            let born = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            // Set once a graceful shutdown has begun: the connection is dropped if it
            // is still open (and idle) this long after, whatever the client does (an
            // HTTP/2 client that never answers the GOAWAY's PING would keep it).
            let mut closing: Option<Instant> = None;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.changed(), if stopping.is_none() => stopping = Some(Instant::now()),
                    _ = tick.tick() => {
                        if let Some(since) = closing {
                            if since.elapsed() >= CLOSE_GRACE && activity.idle_for().is_some() {
                                tracing::debug!(%peer, "dropping connection after its grace period");
                                break;
                            }
                        } else if let Some(since) = stopping {
                            // Stopping: what a connection has started is finished; it
                            // closes once idle after at least one request (a client that
                            // connected just before the stop still gets its request
                            // served), or after a short grace if it never sends one.
                            if activity.idle_for().is_some()
                                && (activity.served() > 0 || since.elapsed() >= STOP_GRACE_FOR_NEW)
                            {
                                conn.as_mut().graceful_shutdown();
                                closing = Some(Instant::now());
                            }
                        } else if !activity.started() && born.elapsed() >= first_request {
                            tracing::debug!(%peer, "closing connection with no request in time");
                            state.metrics.inc(metrics::CONNECTIONS_TIMED_OUT, ["first_request"]);
                            conn.as_mut().graceful_shutdown();
                            closing = Some(Instant::now());
                        } else if activity.idle_for().is_some_and(|d| d >= idle) {
                            tracing::debug!(%peer, "closing idle connection");
                            conn.as_mut().graceful_shutdown();
                            closing = Some(Instant::now());
                        }
                    }
                }
            }
            state.metrics.gauge_add(metrics::CONNECTIONS, [name], -1);
        });
    }
}

/// Serves the REST API on `listener`.
pub async fn serve_rest(listener: TcpListener, state: Arc<State>) {
    let st = Arc::clone(&state);
    accept_loop(listener, false, state, "rest", move |conn: ConnInfo| {
        let state = Arc::clone(&st);
        let conn = Arc::new(conn);
        hyper::service::service_fn(move |req| {
            let state = Arc::clone(&state);
            let conn = Arc::clone(&conn);
            async move {
                Ok::<_, std::convert::Infallible>(
                    crate::front::rest::handle(state, conn, req).await,
                )
            }
        })
    })
    .await
}

/// Serves the gRPC API on `listener`.
pub async fn serve_grpc(listener: TcpListener, state: Arc<State>) {
    let st = Arc::clone(&state);
    accept_loop(listener, true, state, "grpc", move |conn: ConnInfo| {
        let state = Arc::clone(&st);
        let conn = Arc::new(conn);
        hyper::service::service_fn(move |req| {
            let state = Arc::clone(&state);
            let conn = Arc::clone(&conn);
            async move {
                Ok::<_, std::convert::Infallible>(
                    crate::front::grpc::handle(state, conn, req).await,
                )
            }
        })
    })
    .await
}
