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

use crate::front::grpc_wire::{
    GrpcBody, SMALL_MESSAGE_BYTES, Streamed, frame, framed_len, health, ok, refused,
    status_trailers, streaming, unframe,
};
use crate::front::tfs_grpc::TfsGrpc;
use crate::front::{protoscan, reflection, tensor, triton};
use crate::peer::ConnInfo;
use crate::pipeline::{self, Answer, Api, Charge, Codec, Head, Listener, Op, Rendered, Target};
use crate::refusal::Refusal;
use crate::state::State;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use warden_shared::config::LimitsConfig;
use warden_shared::proto;

/// The KServe service's path prefix.
pub const SERVICE: &str = "/inference.GRPCInferenceService/";
/// gRPC's standard health service's path prefix.
pub const HEALTH_SERVICE: &str = "/grpc.health.v1.Health/";
/// The path prefix of the TensorFlow Serving services.
pub const TFS_PACKAGE: &str = "/tensorflow.serving.";
/// Server extensions advertised in server metadata.
pub const EXTENSIONS: &[&str] = crate::front::rest::EXTENSIONS;

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

pub(crate) fn head(limits: &LimitsConfig, req: &Request<Incoming>) -> Head {
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
pub(crate) struct Grpc;

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
        framed_len(first)
    }

    fn message(&self, body: Bytes) -> Result<Bytes, Refusal> {
        unframe(body)
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
        refused(id, refusal)
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
}
