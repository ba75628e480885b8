//! The TensorFlow Serving gRPC API (`tensorflow.serving.PredictionService`: `Predict`,
//! `GetModelMetadata`; `tensorflow.serving.ModelService`: `GetModelStatus`) as a codec
//! for the pipeline, on the gRPC listener beside KServe and framed by the same front.
//!
//! Every request names its model in `model_spec` (field 1): the pipeline authorizes it
//! from a walk of the message (`protoscan::tfs_target`) before anything is decoded, and
//! a `PredictRequest` is decoded only once what decoding allocates
//! (`protoscan::predict_request_cost`) is charged to the caller's quota. Predict becomes
//! a KServe `ModelInferRequest` for the backend, which validates it against the model;
//! `output_filter` becomes its requested outputs.

use crate::front::grpc_wire::{self as grpc, GrpcBody, SMALL_MESSAGE_BYTES};
use crate::front::{protoscan, tfs};
use crate::pipeline::{Answer, Charge, Codec, Op, Rendered, Target};
use crate::refusal::Refusal;
use bytes::Bytes;
use http::Response;
use prost::Message;
use warden_shared::config::LimitsConfig;
use warden_shared::proto::{self, model_infer_request as infer};
use warden_shared::tensorflow::serving::{
    Any, GetModelMetadataResponse, Int64Value, ModelSpec, PredictRequest, PredictResponse,
    model_spec::VersionChoice,
};

/// The TFS methods served, by gRPC path.
pub fn method(path: &str) -> Result<Op, Refusal> {
    match path {
        "/tensorflow.serving.PredictionService/Predict" => Ok(Op::ModelInfer),
        "/tensorflow.serving.PredictionService/GetModelMetadata" => Ok(Op::ModelMetadata),
        "/tensorflow.serving.ModelService/GetModelStatus" => Ok(Op::ModelReady),
        _ => Err(Refusal::NoRoute),
    }
}

/// The TFS gRPC codec (stateless: everything it needs is in the message).
pub struct TfsGrpc;

/// A `ModelSpec` naming a model and version number (0: none).
fn model_spec(model: &str, version: &str) -> ModelSpec {
    ModelSpec {
        name: model.to_owned(),
        version_choice: version
            .parse()
            .ok()
            .map(|value| VersionChoice::Version(Int64Value { value })),
        signature_name: tfs::SIGNATURE.into(),
    }
}

/// The backend's request for a decoded `PredictRequest`: every input as a raw buffer,
/// sizes checked against shapes.
pub fn infer_request(
    target: &Target,
    predict: PredictRequest,
    max_elements: usize,
) -> Result<proto::ModelInferRequest, String> {
    let mut inputs = Vec::with_capacity(predict.inputs.len());
    let mut raw = Vec::with_capacity(predict.inputs.len());
    if predict.inputs.is_empty() {
        return Err("the request has no inputs".into());
    }
    for (name, t) in predict.inputs {
        let shown: String = name.chars().take(64).collect();
        let (dtype, shape, bytes) =
            tfs::tensor_to_raw(&t, max_elements).map_err(|e| format!("input {shown:?}: {e}"))?;
        inputs.push(infer::InferInputTensor {
            name,
            datatype: dtype.as_str().into(),
            shape,
            parameters: Default::default(),
            contents: None,
        });
        raw.push(bytes);
    }
    Ok(proto::ModelInferRequest {
        model_name: target.model.clone(),
        model_version: target.version.clone(),
        id: String::new(),
        parameters: Default::default(),
        inputs,
        outputs: predict
            .output_filter
            .into_iter()
            .map(|name| infer::InferRequestedOutputTensor {
                name,
                parameters: Default::default(),
            })
            .collect(),
        raw_input_contents: raw,
    })
}

/// The backend's answer as a `PredictResponse`: outputs keyed by name.
pub fn predict_response(resp: &proto::ModelInferResponse) -> Result<PredictResponse, String> {
    if resp.outputs.len() != resp.raw_output_contents.len() {
        return Err("backend answered with mismatched outputs".into());
    }
    let mut outputs = std::collections::HashMap::with_capacity(resp.outputs.len());
    for (o, raw) in resp.outputs.iter().zip(&resp.raw_output_contents) {
        let dtype = o.datatype.parse().map_err(|e| format!("{e}"))?;
        outputs.insert(o.name.clone(), tfs::raw_to_tensor(dtype, &o.shape, raw)?);
    }
    Ok(PredictResponse {
        model_spec: Some(model_spec(&resp.model_name, &resp.model_version)),
        outputs,
    })
}

impl Codec for TfsGrpc {
    type Shape = ();
    type Response = Response<GrpcBody>;

    fn has_body(&self, _: Op) -> bool {
        // Every TFS method carries a request message.
        true
    }

    fn body_cap(&self, limits: &LimitsConfig, op: Op) -> usize {
        5 + match op {
            Op::ModelInfer => limits.max_grpc_message_bytes,
            _ => SMALL_MESSAGE_BYTES,
        }
    }

    fn framed_len(&self, first: &[u8]) -> Option<u64> {
        grpc::framed_len(first)
    }

    fn message(&self, body: Bytes) -> Result<Bytes, Refusal> {
        grpc::unframe(body)
    }

    fn target(&self, _: Op, message: &[u8]) -> Result<Target, Refusal> {
        let (model, version) = protoscan::tfs_target(message).map_err(Refusal::Malformed)?;
        Ok(Target {
            model: model.to_owned(),
            version,
        })
    }

    fn decode_infer(
        &self,
        target: &Target,
        message: Bytes,
        limits: &LimitsConfig,
        _: Option<&proto::ModelMetadataResponse>,
        charge: &mut Charge<'_>,
    ) -> Result<(proto::ModelInferRequest, ()), Refusal> {
        let cost = protoscan::predict_request_cost(&message).map_err(Refusal::Malformed)?;
        charge(cost)?;
        let predict = PredictRequest::decode(message)
            .map_err(|e| Refusal::Malformed(format!("invalid PredictRequest: {e}")))?;
        let req = infer_request(target, predict, limits.max_tensor_elements)
            .map_err(Refusal::Malformed)?;
        Ok((req, ()))
    }

    fn render(
        &self,
        id: &str,
        answer: Answer<()>,
    ) -> Result<Rendered<Response<GrpcBody>>, Refusal> {
        Ok(match answer {
            Answer::ModelMetadata { meta, version } => {
                let signatures = tfs::signature_def_map(&meta);
                let any = Any {
                    type_url: tfs::SIGNATURE_DEF_MAP_URL.into(),
                    value: signatures.encode_to_vec(),
                };
                grpc::ok(
                    id,
                    &GetModelMetadataResponse {
                        model_spec: Some(model_spec(&meta.name, &version)),
                        metadata: [(tfs::SIGNATURE_DEF_FIELD.to_owned(), any)].into(),
                    },
                )
            }
            Answer::ModelReady {
                ready, versions, ..
            } => grpc::ok(id, &tfs::model_status(&versions, ready)),
            Answer::Infer(resp, ()) => grpc::ok(
                id,
                &predict_response(&resp).map_err(|e| {
                    tracing::error!(error = %e, "cannot render backend response");
                    Refusal::Internal
                })?,
            ),
            // No TFS method asks for these.
            Answer::Live
            | Answer::Ready(_)
            | Answer::ServerMetadata
            | Answer::ModelConfig(_)
            | Answer::ModelStats(_)
            | Answer::RepositoryIndex(_)
            | Answer::LogSettings(_)
            | Answer::Health(_)
            | Answer::HealthWatch(..)
            | Answer::Stream(_) => {
                return Err(Refusal::NoRoute);
            }
        })
    }

    fn refuse(&self, id: &str, refusal: &Refusal) -> Rendered<Response<GrpcBody>> {
        grpc::refused(id, refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_shared::tensorflow::{DataType as TfType, TensorProto, TensorShapeProto};

    #[test]
    fn tfs_grpc_has_no_triton_options_and_its_tensors_carry_their_types() {
        assert_eq!(TfsGrpc.options(Op::LogSettings, b""), Err(Refusal::NoRoute));
        assert_eq!(
            TfsGrpc.options(Op::RepositoryIndex, b""),
            Err(Refusal::NoRoute)
        );
        assert!(!TfsGrpc.needs_metadata());
    }

    #[test]
    fn methods() {
        assert_eq!(
            method("/tensorflow.serving.PredictionService/Predict"),
            Ok(Op::ModelInfer)
        );
        assert_eq!(
            method("/tensorflow.serving.ModelService/GetModelStatus"),
            Ok(Op::ModelReady)
        );
        assert_eq!(
            method("/tensorflow.serving.PredictionService/Classify"),
            Err(Refusal::NoRoute)
        );
        assert_eq!(
            method("/tensorflow.serving.ModelService/HandleReloadConfigRequest"),
            Err(Refusal::NoRoute)
        );
    }

    fn predict(version: Option<i64>) -> PredictRequest {
        let t = TensorProto {
            dtype: TfType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![warden_shared::tensorflow::tensor_shape_proto::Dim {
                    size: 2,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            float_val: vec![1.0, 2.0],
            ..Default::default()
        };
        PredictRequest {
            model_spec: Some(ModelSpec {
                name: "m".into(),
                version_choice: version.map(|value| VersionChoice::Version(Int64Value { value })),
                signature_name: String::new(),
            }),
            inputs: [("x".to_owned(), t)].into(),
            output_filter: vec!["y".into()],
        }
    }

    #[test]
    fn the_target_is_read_before_decoding() {
        let t = |m: &PredictRequest| TfsGrpc.target(Op::ModelInfer, &m.encode_to_vec());
        assert_eq!(
            t(&predict(Some(3))).unwrap(),
            Target {
                model: "m".into(),
                version: "3".into()
            }
        );
        assert_eq!(t(&predict(None)).unwrap().version, "");
        assert_eq!(t(&predict(Some(0))).unwrap().version, "", "0 is the latest");
        assert_eq!(t(&predict(Some(-2))).unwrap().version, "-2");
        let mut labelled = predict(None);
        labelled.model_spec.as_mut().unwrap().version_choice =
            Some(VersionChoice::VersionLabel("stable".into()));
        assert!(t(&labelled).is_err());
        assert!(TfsGrpc.target(Op::ModelInfer, &[0x0a, 0x05, 0x0a]).is_err());
        // A model_spec sent twice merges, as the decoder merges it: the walk names
        // what decoding would.
        let mut twice = predict(Some(5)).encode_to_vec();
        let second = ModelSpec {
            name: "n".into(),
            ..Default::default()
        };
        twice.push(0x0a);
        twice.push(second.encoded_len() as u8);
        twice.extend(second.encode_to_vec());
        let decoded = PredictRequest::decode(&twice[..])
            .unwrap()
            .model_spec
            .unwrap();
        assert_eq!(decoded.name, "n");
        assert_eq!(
            decoded.version_choice,
            Some(VersionChoice::Version(Int64Value { value: 5 }))
        );
        assert_eq!(
            t(&PredictRequest::decode(&twice[..]).unwrap()).unwrap(),
            TfsGrpc.target(Op::ModelInfer, &twice).unwrap()
        );
        assert_eq!(
            TfsGrpc.target(Op::ModelInfer, &twice).unwrap(),
            Target {
                model: "n".into(),
                version: "5".into()
            }
        );
    }

    #[test]
    fn predict_becomes_a_backend_request_and_back() {
        let wire = predict(Some(1)).encode_to_vec();
        let cost = protoscan::predict_request_cost(&wire).unwrap();
        assert!(cost > 0);
        let target = Target {
            model: "m".into(),
            version: "1".into(),
        };
        let req = infer_request(&target, PredictRequest::decode(&wire[..]).unwrap(), 100).unwrap();
        assert_eq!(req.model_name, "m");
        assert_eq!(req.inputs[0].datatype, "FP32");
        assert_eq!(req.inputs[0].shape, vec![2]);
        assert_eq!(req.raw_input_contents[0].len(), 8);
        assert_eq!(req.outputs[0].name, "y");
        let resp = proto::ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: vec![proto::model_infer_response::InferOutputTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![2],
                ..Default::default()
            }],
            raw_output_contents: req.raw_input_contents.clone(),
            ..Default::default()
        };
        let p = predict_response(&resp).unwrap();
        assert_eq!(p.outputs["y"].tensor_content, req.raw_input_contents[0]);
        assert_eq!(
            p.model_spec.unwrap().version_choice,
            Some(VersionChoice::Version(Int64Value { value: 1 }))
        );
    }

    #[test]
    fn counts_over_the_bounds_are_refused_before_decoding() {
        let mut many = predict(None);
        for i in 0..=protoscan::MAX_TENSORS {
            many.inputs.insert(format!("x{i}"), TensorProto::default());
        }
        assert!(protoscan::predict_request_cost(&many.encode_to_vec()).is_err());
        let mut deep = predict(None);
        deep.inputs.get_mut("x").unwrap().tensor_shape = Some(TensorShapeProto {
            dim: vec![Default::default(); protoscan::MAX_RANK + 1],
            unknown_rank: false,
        });
        assert!(protoscan::predict_request_cost(&deep.encode_to_vec()).is_err());
        // Packed one-byte varints that decode to eight-byte integers are counted.
        let mut wide = predict(None);
        wide.inputs.get_mut("x").unwrap().int64_val = vec![0; 100_000];
        let wire = wide.encode_to_vec();
        assert!(protoscan::predict_request_cost(&wire).unwrap() >= 100_000 * 8 * 2);
    }
}
