//! The KServe v2 gRPC service the backend offers on its Unix socket.

use crate::model::ModelVersion;
use crate::validate;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use warden_shared::backend_proto::backend_gauges_server::BackendGauges;
use warden_shared::backend_proto::{GaugesRequest, GaugesResponse, gauges_response};
use warden_shared::proto::grpc_inference_service_server::GrpcInferenceService;
use warden_shared::proto::model_infer_response::InferOutputTensor;
use warden_shared::proto::model_metadata_response::TensorMetadata;
use warden_shared::proto::*;
use warden_shared::{frames, wire};

/// The platform reported in model metadata (as OVMS does).
pub const PLATFORM: &str = "OpenVINO";
/// The inference response parameter carrying the verified model digest
/// (`sha256:<hex>`, OMS manifest subject); absent for unsigned models.
pub const MODEL_DIGEST_PARAMETER: &str = "model_digest";

/// Every model the backend serves, by name then version.
#[derive(Default)]
pub struct Registry {
    pub models: BTreeMap<String, BTreeMap<u64, Arc<ModelVersion>>>,
    /// Models that are configured but could not be loaded, with the reason.
    pub failed: BTreeMap<String, String>,
    /// The folder state of each version that failed, so an unchanged one is not retried.
    pub failed_stamps: BTreeMap<(String, u64), crate::model::FolderStamp>,
}

impl Registry {
    /// True when the two registries serve different model versions or failures.
    pub fn differs_from(&self, other: &Registry) -> bool {
        let served = |r: &Registry| -> Vec<(String, u64, usize)> {
            r.models
                .iter()
                .flat_map(|(n, vs)| {
                    vs.iter()
                        .map(move |(v, m)| (n.clone(), *v, Arc::as_ptr(m) as usize))
                })
                .collect()
        };
        served(self) != served(other) || self.failed != other.failed
    }

    /// `name: [versions]` for the log.
    pub fn summary(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|(n, vs)| format!("{n}: {:?}", vs.keys().collect::<Vec<_>>()))
            .collect()
    }

    /// The version a request names, or the highest one when it names none.
    pub fn find(&self, name: &str, version: &str) -> Result<&Arc<ModelVersion>, Status> {
        let versions = self
            .models
            .get(name)
            .ok_or_else(|| Status::not_found(format!("model {:?} is not served", clip(name))))?;
        if version.is_empty() {
            return versions
                .values()
                .next_back()
                .ok_or_else(|| Status::not_found(format!("model {name:?} has no version loaded")));
        }
        let v: u64 = version.parse().map_err(|_| {
            Status::not_found(format!("model {name:?} has no version {:?}", clip(version)))
        })?;
        versions
            .get(&v)
            .ok_or_else(|| Status::not_found(format!("model {name:?} has no version {v}")))
    }

    pub fn all_ready(&self) -> bool {
        self.failed.is_empty() && !self.models.is_empty()
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The service: a registry plus the limits that apply to each request.
pub struct Backend {
    /// The registry in force; replaced whole when the repository changes.
    pub registry: Arc<std::sync::RwLock<Arc<Registry>>>,
    pub max_tensor_elements: usize,
}

impl Backend {
    fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry.read().unwrap_or_else(|e| e.into_inner()))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Backend {
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
        Ok(Response::new(ServerReadyResponse {
            ready: self.registry().all_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let req = req.into_inner();
        self.registry().find(&req.name, &req.version)?;
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: warden_shared::SERVER_NAME.into(),
            version: warden_shared::VERSION.into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let req = req.into_inner();
        let registry = self.registry();
        let model = registry.find(&req.name, &req.version)?;
        let versions = registry.models[&model.name]
            .keys()
            .rev()
            .map(u64::to_string)
            .collect();
        let meta = |t: &crate::model::TensorInfo| TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().into(),
            shape: if t.dynamic_rank {
                vec![-1]
            } else {
                t.shape.clone()
            },
        };
        Ok(Response::new(ModelMetadataResponse {
            name: model.name.clone(),
            versions,
            platform: PLATFORM.into(),
            inputs: model.inputs.iter().map(meta).collect(),
            outputs: model.outputs.iter().map(meta).collect(),
        }))
    }

    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        use repository_index_response::ModelIndex;
        let registry = self.registry();
        let mut models: Vec<ModelIndex> = registry
            .models
            .iter()
            .flat_map(|(name, versions)| {
                versions.keys().map(move |v| ModelIndex {
                    name: name.clone(),
                    version: v.to_string(),
                    state: "READY".into(),
                    reason: String::new(),
                })
            })
            .collect();
        // A configured model that failed to load is still a name the repository has;
        // its reason stays in the backend's log.
        models.extend(registry.failed.keys().map(|name| ModelIndex {
            name: name.clone(),
            version: String::new(),
            state: "UNAVAILABLE".into(),
            reason: String::new(),
        }));
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request_id = req
            .metadata()
            .get(warden_shared::wire::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let answer = self.answer(&request_id, req.into_inner()).await?;
        // The gateway turns these into OVMS's two backend histograms; it renders its
        // answers from the message alone, so no backend metadata reaches a client.
        let mut response = Response::new(answer.response);
        let md = response.metadata_mut();
        md.insert(wire::WAIT_US_HEADER, answer.wait_us.into());
        md.insert(wire::INFERENCE_US_HEADER, answer.inference_us.into());
        Ok(response)
    }
}

/// `ModelInfer` as the gateway sends it: in frames, on a connection of its own.
impl frames::Infer for Backend {
    async fn infer(&self, call: frames::Call) -> Result<frames::Answer, Status> {
        self.answer(&call.request_id, call.request).await
    }
}

impl Backend {
    /// One inference, whichever way it came.
    async fn answer(
        &self,
        request_id: &str,
        mut req: ModelInferRequest,
    ) -> Result<frames::Answer, Status> {
        let model = Arc::clone(self.registry().find(&req.model_name, &req.model_version)?);
        let prepared = validate::prepare(&model, &mut req, self.max_tensor_elements)?;
        let (outputs, timing) = model.infer(prepared.inputs, prepared.outputs).await.map_err(|e| {
            if matches!(e, crate::model::InferError::Busy) {
                // Fail fast: the gateway answers 503 / UNAVAILABLE with Retry-After.
                tracing::debug!(request_id, model = %model.name, version = model.version, "inference queue full");
                return Status::unavailable("model busy: inference queue full");
            }
            // The client gets a plain message; OpenVINO's own text stays in our log.
            tracing::error!(request_id, model = %model.name, version = model.version, error = %e, "inference failed");
            Status::internal("inference failed")
        })?;
        let mut response = ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version.to_string(),
            id: req.id,
            // KServe's model metadata has no free-form field, so the digest of what
            // answered travels with every inference instead.
            parameters: model
                .digest
                .iter()
                .map(|d| {
                    (
                        MODEL_DIGEST_PARAMETER.to_owned(),
                        InferParameter {
                            parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(
                                d.clone(),
                            )),
                        },
                    )
                })
                .collect(),
            outputs: Vec::with_capacity(outputs.len()),
            raw_output_contents: Vec::with_capacity(outputs.len()),
        };
        for out in outputs {
            response.outputs.push(InferOutputTensor {
                name: out.name,
                datatype: out.datatype.as_str().into(),
                shape: out.shape,
                parameters: Default::default(),
                contents: None,
            });
            response.raw_output_contents.push(out.data);
        }
        Ok(frames::Answer {
            response,
            wait_us: timing.wait_us,
            inference_us: timing.inference_us,
        })
    }
}

/// The backend's gauges service: what only the backend sees of each served version.
pub struct Gauges {
    pub registry: Arc<std::sync::RwLock<Arc<Registry>>>,
    /// Restarts before this process, as the supervisor counted them.
    pub restarts: u64,
}

#[tonic::async_trait]
impl BackendGauges for Gauges {
    async fn read(&self, _: Request<GaugesRequest>) -> Result<Response<GaugesResponse>, Status> {
        let registry = Arc::clone(&self.registry.read().unwrap_or_else(|e| e.into_inner()));
        let versions = registry
            .models
            .values()
            .flat_map(|versions| versions.values())
            .map(|m| gauges_response::ModelVersion {
                name: m.name.clone(),
                version: m.version,
                streams: m.streams,
                infer_req_queue_size: m.nireq as u32,
                infer_req_active: m.active() as u32,
            })
            .collect();
        Ok(Response::new(GaugesResponse {
            versions,
            restarts: self.restarts,
        }))
    }
}
