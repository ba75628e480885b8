//! A client's gRPC `ModelInferRequest`: prost decoding of arbitrary bytes, then the
//! gateway's normalisation to raw buffers.
#![no_main]

#[path = "common/same_request.rs"]
mod same_request;
use same_request::same_request;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_gateway::front::tensor::{check_raw, normalize_grpc_request};
use warden_shared::datatype::{DataType, element_count};
use warden_shared::proto::ModelInferRequest;

fuzz_target!(|data: &[u8]| {
    // The walk that runs before decoding never panics, and agrees with the decoder on
    // the model it names whenever both accept the message.
    let scanned = warden_gateway::front::protoscan::target(data);
    let _ = warden_gateway::front::protoscan::infer_request_cost(data);
    let Ok(mut req) = ModelInferRequest::decode(data) else {
        return;
    };
    if let Ok((name, version)) = scanned {
        assert_eq!((name, version), (req.model_name.as_str(), req.model_version.as_str()));
    }
    // Re-encoding what was decoded decodes to the same request (not compared with
    // PartialEq: a NaN float is not equal to itself).
    let wire = req.encode_to_vec();
    let again = ModelInferRequest::decode(wire.as_slice()).expect("own encoding");
    same_request(&again, &req);
    if normalize_grpc_request(&mut req, 1 << 16).is_ok() {
        assert_eq!(req.inputs.len(), req.raw_input_contents.len());
        for (input, raw) in req.inputs.iter().zip(&req.raw_input_contents) {
            assert!(input.contents.is_none());
            let dtype: DataType = input.datatype.parse().expect("accepted datatype");
            let count = element_count(&input.shape).expect("accepted shape");
            check_raw(dtype, count, raw).expect("accepted raw buffer");
        }
    }
});
