//! KServe v2 gRPC (`inference.GRPCInferenceService`) for clients, on its own TLS port.
//! Each call is authenticated from its `authorization` metadata, then forwarded to the
//! backend as a fresh request: no client metadata crosses the socket, so nothing a
//! client sends can pose as the gateway's `x-warden-*` fields.

use crate::auth::{self, Principal};
use crate::rest::backend_request;
use crate::state::State;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use warden_shared::proto::grpc_inference_service_server::GrpcInferenceService;
use warden_shared::proto::*;

/// Server extensions advertised in server metadata.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

pub struct GrpcFront {
    pub state: Arc<State>,
}

fn unauthenticated() -> Status {
    Status::unauthenticated("missing or invalid credentials")
}

impl GrpcFront {
    fn authenticate<T>(&self, req: &Request<T>) -> Result<(Principal, String), Status> {
        let value = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = value
            .and_then(auth::bearer_from_str)
            .ok_or_else(unauthenticated)?;
        let principal = self.state.jwt.verify(token).map_err(|e| {
            tracing::info!(reason = %e, "token refused (gRPC)");
            unauthenticated()
        })?;
        Ok((principal, self.state.next_request_id()))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcFront {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self
            .state
            .backend
            .clone()
            .server_ready(ServerReadyRequest {})
            .await
            .map(|r| r.into_inner().ready)
            .unwrap_or(false);
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let (principal, id) = self.authenticate(&req)?;
        let inner = req.into_inner();
        warden_shared::repository::check_model_name(&inner.name)
            .map_err(|_| Status::invalid_argument("invalid model name"))?;
        self.state
            .backend
            .clone()
            .model_ready(backend_request(inner, &principal, &id))
            .await
            .map_err(crate::error::ApiError::grpc_from_backend)
    }

    async fn server_metadata(
        &self,
        req: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.authenticate(&req)?;
        Ok(Response::new(ServerMetadataResponse {
            name: warden_shared::SERVER_NAME.into(),
            version: warden_shared::VERSION.into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let (principal, id) = self.authenticate(&req)?;
        let inner = req.into_inner();
        warden_shared::repository::check_model_name(&inner.name)
            .map_err(|_| Status::invalid_argument("invalid model name"))?;
        self.state
            .backend
            .clone()
            .model_metadata(backend_request(inner, &principal, &id))
            .await
            .map_err(crate::error::ApiError::grpc_from_backend)
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (principal, id) = self.authenticate(&req)?;
        let mut inner = req.into_inner();
        warden_shared::repository::check_model_name(&inner.model_name)
            .map_err(|_| Status::invalid_argument("invalid model name"))?;
        crate::tensor::normalize_grpc_request(
            &mut inner,
            self.state.config.limits.max_tensor_elements,
        )
        .map_err(Status::invalid_argument)?;
        self.state
            .backend
            .clone()
            .model_infer(backend_request(inner, &principal, &id))
            .await
            .map_err(crate::error::ApiError::grpc_from_backend)
    }
}
