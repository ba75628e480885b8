//! The socket protocol, structured: requests built with `arbitrary` (valid protobuf by
//! construction, so the fuzzer explores the validators rather than the wire format),
//! encoded as the gateway does, decoded as the backend does, then validated.
#![no_main]

#[path = "common/same_request.rs"]
mod same_request;
use same_request::same_request;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_backend::validate::{Port, check_input};
use warden_gateway::front::tensor::normalize_grpc_request;
use warden_shared::datatype::DataType;
use warden_shared::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use warden_shared::proto::{InferTensorContents, ModelInferRequest};

const DATATYPES: [&str; 15] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "BF16", "FP32", "FP64", "BYTES", "FP8",
];

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    datatype: u8,
    shape: Vec<i64>,
    raw: Option<Vec<u8>>,
    ints: Vec<i32>,
    uints: Vec<u32>,
    int64s: Vec<i64>,
    fp32s: Vec<f32>,
    bools: Vec<bool>,
    bytes: Vec<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
struct Request {
    id: String,
    inputs: Vec<Input>,
    outputs: Vec<String>,
    /// The model's inputs: datatype index, shape, dynamic rank.
    model: Vec<(u8, Vec<i64>, bool)>,
    max_elements: u16,
}

fuzz_target!(|r: Request| {
    let mut req = ModelInferRequest {
        model_name: "m".into(),
        model_version: String::new(),
        id: r.id,
        parameters: Default::default(),
        inputs: Vec::new(),
        outputs: r
            .outputs
            .into_iter()
            .map(|name| InferRequestedOutputTensor {
                name,
                parameters: Default::default(),
            })
            .collect(),
        raw_input_contents: Vec::new(),
    };
    let any_raw = r.inputs.iter().any(|i| i.raw.is_some());
    for i in r.inputs {
        let contents = (!any_raw).then(|| InferTensorContents {
            bool_contents: i.bools,
            int_contents: i.ints,
            int64_contents: i.int64s,
            uint_contents: i.uints,
            fp32_contents: i.fp32s,
            bytes_contents: i.bytes,
            ..Default::default()
        });
        if any_raw {
            req.raw_input_contents
                .push(Bytes::from(i.raw.unwrap_or_default()));
        }
        req.inputs.push(InferInputTensor {
            name: i.name,
            datatype: DATATYPES[i.datatype as usize % DATATYPES.len()].into(),
            shape: i.shape,
            parameters: Default::default(),
            contents,
        });
    }
    // Gateway side: normalise, then put it on the wire.
    let max = usize::from(r.max_elements);
    if normalize_grpc_request(&mut req, max).is_err() {
        return;
    }
    let wire = req.encode_to_vec();
    // Backend side: decode and validate against the model.
    let got = ModelInferRequest::decode(wire.as_slice()).expect("gateway's own encoding");
    same_request(&got, &req);
    let dtypes: Vec<DataType> = r
        .model
        .iter()
        .filter_map(|(d, _, _)| DATATYPES[*d as usize % DATATYPES.len()].parse().ok())
        .collect();
    for (k, (input, raw)) in got.inputs.iter().zip(&got.raw_input_contents).enumerate() {
        let Some((datatype, (_, shape, dynamic_rank))) = dtypes.get(k).zip(r.model.get(k)) else {
            break;
        };
        let port = Port {
            name: "in",
            datatype: *datatype,
            shape,
            dynamic_rank: *dynamic_rank,
        };
        if check_input(port, input, raw.len(), max).is_ok() {
            assert_eq!(input.datatype, datatype.as_str());
            assert!(input.shape.iter().all(|&d| d >= 0));
        }
    }
});
