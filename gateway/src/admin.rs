//! The admin listener: Prometheus metrics in text format, plain HTTP, bound to
//! loopback by default. With `gateway.admin_token` set, it requires that bearer token
//! (compared in constant time).

use crate::state::State;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, token: Option<String>) {
    let token = Arc::new(token);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let state = Arc::clone(&state);
        let token = Arc::clone(&token);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    let token = Arc::clone(&token);
                    async move {
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        if let Some(want) = token.as_deref() {
                            let got = crate::auth::bearer_token(
                                req.headers().get(http::header::AUTHORIZATION),
                            )
                            .unwrap_or("");
                            if !constant_time_eq(got.as_bytes(), want.as_bytes()) {
                                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                                return Ok::<_, std::convert::Infallible>(resp);
                            }
                        }
                        match req.uri().path() {
                            // OVMS `--metrics_enable false`: no metrics at all.
                            "/metrics" if state.config.metrics.enabled => {
                                state
                                    .metrics
                                    .add("warden_audit_write_failures_total", &[], 0);
                                state.metrics.set_gauge(
                                    "warden_audit_healthy",
                                    &[],
                                    i64::from(state.audit.healthy()),
                                );
                                *resp.body_mut() = Full::new(Bytes::from(
                                    state
                                        .metrics
                                        .render_only(|n| state.config.metrics.exports(n)),
                                ));
                                resp.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                                );
                            }
                            _ => *resp.status_mut() = StatusCode::NOT_FOUND,
                        }
                        Ok(resp)
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
