//! The socket protocol is KServe's gRPC messages: whatever the gateway encodes, the
//! backend decodes to the same message (and the other way for responses).

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use std::collections::HashMap;
use warden_shared::proto::infer_parameter::ParameterChoice;
use warden_shared::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use warden_shared::proto::model_infer_response::InferOutputTensor;
use warden_shared::proto::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
};

fn param() -> impl Strategy<Value = InferParameter> {
    prop_oneof![
        any::<bool>().prop_map(ParameterChoice::BoolParam),
        any::<i64>().prop_map(ParameterChoice::Int64Param),
        any::<u64>().prop_map(ParameterChoice::Uint64Param),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(ParameterChoice::DoubleParam),
        ".{0,16}".prop_map(ParameterChoice::StringParam),
    ]
    .prop_map(|c| InferParameter {
        parameter_choice: Some(c),
    })
}

fn params() -> impl Strategy<Value = HashMap<String, InferParameter>> {
    proptest::collection::hash_map(".{0,8}", param(), 0..3)
}

fn contents() -> impl Strategy<Value = InferTensorContents> {
    (
        proptest::collection::vec(any::<bool>(), 0..8),
        proptest::collection::vec(any::<i32>(), 0..8),
        proptest::collection::vec(any::<i64>(), 0..8),
        proptest::collection::vec(any::<u32>(), 0..8),
        proptest::collection::vec(any::<u64>(), 0..8),
        proptest::collection::vec(any::<f32>().prop_filter("not NaN", |f| !f.is_nan()), 0..8),
        proptest::collection::vec(any::<f64>().prop_filter("not NaN", |f| !f.is_nan()), 0..8),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4),
    )
        .prop_map(|(b, i, i64s, u, u64s, f, d, by)| InferTensorContents {
            bool_contents: b,
            int_contents: i,
            int64_contents: i64s,
            uint_contents: u,
            uint64_contents: u64s,
            fp32_contents: f,
            fp64_contents: d,
            bytes_contents: by,
        })
}

fn input() -> impl Strategy<Value = InferInputTensor> {
    (
        ".{0,12}",
        "[A-Z0-9]{0,6}",
        proptest::collection::vec(any::<i64>(), 0..5),
        params(),
        proptest::option::of(contents()),
    )
        .prop_map(
            |(name, datatype, shape, parameters, contents)| InferInputTensor {
                name,
                datatype,
                shape,
                parameters,
                contents,
            },
        )
}

fn request() -> impl Strategy<Value = ModelInferRequest> {
    (
        ".{0,12}",
        "[0-9]{0,3}",
        ".{0,12}",
        params(),
        proptest::collection::vec(input(), 0..4),
        proptest::collection::vec(
            (".{0,8}", params())
                .prop_map(|(name, parameters)| InferRequestedOutputTensor { name, parameters }),
            0..3,
        ),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
    )
        .prop_map(
            |(model_name, model_version, id, parameters, inputs, outputs, raw)| ModelInferRequest {
                model_name,
                model_version,
                id,
                parameters,
                inputs,
                outputs,
                raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
            },
        )
}

proptest! {
    #[test]
    fn infer_request_round_trip(req in request()) {
        let wire = req.encode_to_vec();
        prop_assert_eq!(wire.len(), req.encoded_len());
        let back = ModelInferRequest::decode(wire.as_slice()).unwrap();
        prop_assert_eq!(&back, &req);
        // Decoding from a non-contiguous buffer (as HTTP/2 frames arrive) is the same.
        let (a, b) = wire.split_at(wire.len() / 2);
        let chained = bytes::Buf::chain(a, b);
        prop_assert_eq!(ModelInferRequest::decode(chained).unwrap(), req);
    }

    #[test]
    fn infer_response_round_trip(
        model_name in ".{0,12}",
        id in ".{0,12}",
        parameters in params(),
        outputs in proptest::collection::vec((".{0,8}", "[A-Z0-9]{0,6}", proptest::collection::vec(any::<i64>(), 0..4), proptest::collection::vec(any::<u8>(), 0..64)), 0..4),
    ) {
        let resp = ModelInferResponse {
            model_name,
            model_version: "1".into(),
            id,
            parameters,
            outputs: outputs.iter().map(|(name, datatype, shape, _)| InferOutputTensor {
                name: name.clone(),
                datatype: datatype.clone(),
                shape: shape.clone(),
                parameters: HashMap::new(),
                contents: None,
            }).collect(),
            raw_output_contents: outputs.into_iter().map(|(_, _, _, raw)| Bytes::from(raw)).collect(),
        };
        let back = ModelInferResponse::decode(resp.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(back, resp);
    }
}
