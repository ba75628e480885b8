//! KServe v2 gRPC (`inference.GRPCInferenceService`) for clients, on its own TLS port.
//! Each call passes the same gate as REST (authentication from its `authorization`
//! metadata, rate limits, authorization, quota, audit), then goes to the backend as a
//! fresh request: no client metadata crosses the socket, so nothing a client sends can
//! pose as the gateway's `x-warden-*` fields.

use crate::authz::Operation;
use crate::error::ApiError;
use crate::gate::{Call, Listener, Outcome};
use crate::rest::backend_request;
use crate::server::ConnInfo;
use crate::state::State;
use prost::Message as _;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};
use warden_shared::proto::grpc_inference_service_server::GrpcInferenceService;
use warden_shared::proto::*;

/// Server extensions advertised in server metadata.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

pub struct GrpcFront {
    pub state: Arc<State>,
}

/// The HTTP status an audit record shows for a gRPC code.
fn http_equivalent(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

impl GrpcFront {
    /// Starts a call and runs the gate. `model` is (name, version) for model calls.
    fn open<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        model: Option<(&str, &str, Operation)>,
    ) -> Result<(Call, Option<String>), Status> {
        let state = &self.state;
        let conn = req
            .extensions()
            .get::<Arc<ConnInfo>>()
            .cloned()
            .ok_or_else(|| Status::internal("connection information missing"))?;
        let mut call = state.begin(conn, Listener::Grpc, "gRPC".into(), method);
        if let Some(id) = State::accept_request_id(
            req.metadata()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        ) {
            call.id = id;
        }
        if let Some((name, version, op)) = model {
            if warden_shared::repository::check_model_name(name).is_err() {
                let s = Status::invalid_argument("invalid model name");
                return Err(self.close(call, Outcome::new("invalid", "invalid model name"), s));
            }
            call.model = Some(name.to_owned());
            call.version = Some(version.to_owned()).filter(|v| !v.is_empty());
            call.op = Some(op);
        }
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer_from_str);
        match state
            .admit(&mut call, token)
            .and_then(|()| state.authorize(&call))
        {
            Ok(rule) => Ok((call, rule)),
            Err(stop) => {
                let outcome = stop.outcome();
                Err(self.close(call, outcome, ApiError::grpc_from_stop(&stop)))
            }
        }
    }

    /// Ends a call with an error status (after its audit record).
    fn close(&self, call: Call, outcome: Outcome, status: Status) -> Status {
        match self.state.finish(
            call,
            &outcome,
            http_equivalent(status.code()),
            Some(status.code() as i32),
        ) {
            Ok(()) => status,
            Err(()) => Status::unavailable("audit log unavailable; request refused"),
        }
    }

    /// Ends a call with the backend's result.
    fn complete<T: prost::Message>(
        &self,
        call: Call,
        rule: Option<String>,
        result: Result<Response<T>, Status>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok(resp) => {
                let mut call = call;
                call.bytes_out = resp.get_ref().encoded_len() as u64;
                match self
                    .state
                    .finish(call, &Outcome::allowed(rule.as_deref()), 200, Some(0))
                {
                    Ok(()) => Ok(resp),
                    Err(()) => Err(Status::unavailable(
                        "audit log unavailable; request refused",
                    )),
                }
            }
            Err(backend) => {
                let status = ApiError::grpc_from_backend(backend);
                let decision = if matches!(status.code(), Code::InvalidArgument | Code::NotFound) {
                    "invalid"
                } else {
                    "failed"
                };
                let reason = format!("backend: {:?}", status.code());
                Err(self.close(call, Outcome::new(decision, reason), status))
            }
        }
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcFront {
    async fn server_live(
        &self,
        req: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        if let Some(conn) = req.extensions().get::<Arc<ConnInfo>>() {
            self.state
                .admit_open(conn)
                .map_err(|l| ApiError::grpc_from_stop(&crate::gate::Stop::RateLimited(l)))?;
        }
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        req: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        if let Some(conn) = req.extensions().get::<Arc<ConnInfo>>() {
            self.state
                .admit_open(conn)
                .map_err(|l| ApiError::grpc_from_stop(&crate::gate::Stop::RateLimited(l)))?;
        }
        let backend = self
            .state
            .backend
            .clone()
            .server_ready(ServerReadyRequest {})
            .await
            .map(|r| r.into_inner().ready)
            .unwrap_or(false);
        let audit = self.state.audit.healthy() || self.state.audit.fail_open();
        Ok(Response::new(ServerReadyResponse {
            ready: backend && audit,
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let (name, version) = (req.get_ref().name.clone(), req.get_ref().version.clone());
        let (mut call, rule) = self.open(
            &req,
            "ModelReady",
            Some((&name, &version, Operation::Ready)),
        )?;
        call.bytes_in = req.get_ref().encoded_len() as u64;
        let r = self
            .state
            .backend
            .clone()
            .model_ready(backend_request(
                req.into_inner(),
                call.principal.as_ref(),
                &call.id,
            ))
            .await;
        self.complete(call, rule, r)
    }

    async fn server_metadata(
        &self,
        req: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let (call, rule) = self.open(&req, "ServerMetadata", None)?;
        let resp = Response::new(ServerMetadataResponse {
            name: warden_shared::SERVER_NAME.into(),
            version: warden_shared::VERSION.into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        });
        self.complete(call, rule, Ok(resp))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let (name, version) = (req.get_ref().name.clone(), req.get_ref().version.clone());
        let (mut call, rule) = self.open(
            &req,
            "ModelMetadata",
            Some((&name, &version, Operation::Metadata)),
        )?;
        call.bytes_in = req.get_ref().encoded_len() as u64;
        let r = self
            .state
            .backend
            .clone()
            .model_metadata(backend_request(
                req.into_inner(),
                call.principal.as_ref(),
                &call.id,
            ))
            .await;
        self.complete(call, rule, r)
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (name, version) = (
            req.get_ref().model_name.clone(),
            req.get_ref().model_version.clone(),
        );
        let (mut call, rule) = self.open(
            &req,
            "ModelInfer",
            Some((&name, &version, Operation::Infer)),
        )?;
        let size = req.get_ref().encoded_len();
        call.bytes_in = size as u64;
        // The message is already decoded (bounded by the gRPC message cap); it still
        // counts against the quotas while it is in flight.
        call.reservation = self
            .state
            .quotas
            .start(call.principal.as_ref().map(|p| p.display_name()).as_deref());
        if let Err(scope) = self.state.quotas.grow(&mut call.reservation, size) {
            self.state
                .metrics
                .inc("warden_quota_refused_total", &[("scope", scope.as_str())]);
            let mut s = Status::resource_exhausted("too many request bytes in flight; retry later");
            s.metadata_mut().insert(
                "retry-after",
                tonic::metadata::MetadataValue::from_static("1"),
            );
            return Err(self.close(
                call,
                Outcome::new("quota_exceeded", format!("quota: {}", scope.as_str())),
                s,
            ));
        }
        let mut inner = req.into_inner();
        if let Err(e) = crate::tensor::normalize_grpc_request(
            &mut inner,
            self.state.config.limits.max_tensor_elements,
        ) {
            return Err(self.close(
                call,
                Outcome::new("invalid", "malformed request"),
                Status::invalid_argument(e),
            ));
        }
        let r = self
            .state
            .backend
            .clone()
            .model_infer(backend_request(inner, call.principal.as_ref(), &call.id))
            .await;
        if let Ok(resp) = &r {
            call.version = Some(resp.get_ref().model_version.clone());
            call.model_digest = crate::gate::digest_of(&resp.get_ref().parameters);
        }
        self.complete(call, rule, r)
    }
}
