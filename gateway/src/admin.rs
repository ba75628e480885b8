//! The admin listener: Prometheus metrics in text format, plain HTTP, bound to
//! loopback by default. A scrape also asks the backend for the gauges only it knows. With `gateway.admin_token` set, it requires that bearer token
//! (compared in constant time).

use crate::metrics;
use crate::state::State;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use warden_shared::backend_proto::{GaugesRequest, gauges_response};

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a scrape waits for the backend's gauges; past it, the last values stay.
const BACKEND_GAUGES_TIMEOUT: Duration = Duration::from_secs(1);

/// Brings the gauges read at scrape time up to date: the audit log's health, the
/// quota in use, and what only the backend sees (streams, the infer request pool,
/// its restarts); the request series of every version it serves start at 0.
async fn refresh(state: &State) {
    let m = &state.metrics;
    m.add(metrics::AUDIT_WRITE_FAILURES, [], 0);
    m.add(metrics::BACKEND_UNAVAILABLE, [], 0);
    m.add(metrics::BACKEND_RESTARTS, [], 0);
    m.set(metrics::AUDIT_HEALTHY, [], i64::from(state.audit.healthy()));
    m.raise_to(metrics::AUDIT_WRITES, [], state.audit.writes());
    if let Some(bytes) = state.quotas.global_in_flight_bytes() {
        m.set(metrics::QUOTA_IN_FLIGHT_BYTES, [], bytes as i64);
    }
    let answer = tokio::time::timeout(
        BACKEND_GAUGES_TIMEOUT,
        state.backend_gauges.clone().read(GaugesRequest {}),
    )
    .await;
    let Ok(Ok(answer)) = answer else {
        return;
    };
    let g = answer.into_inner();
    for v in &g.versions {
        state.zero_model_series(&v.name, &v.version.to_string());
    }
    m.raise_to(metrics::BACKEND_RESTARTS, [], g.restarts);
    let series = |value: fn(&gauges_response::ModelVersion) -> u32| {
        g.versions
            .iter()
            .map(move |v| ([v.name.clone(), v.version.to_string()], i64::from(value(v))))
    };
    m.replace(metrics::STREAMS, series(|v| v.streams));
    m.replace(
        metrics::INFER_REQ_QUEUE_SIZE,
        series(|v| v.infer_req_queue_size),
    );
    m.replace(metrics::INFER_REQ_ACTIVE, series(|v| v.infer_req_active));
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
                                refresh(&state).await;
                                *resp.body_mut() = Full::new(Bytes::from(
                                    state
                                        .metrics
                                        .render(|f| state.config.metrics.exports(f.name)),
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
