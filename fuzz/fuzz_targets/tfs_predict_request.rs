//! A client's TensorFlow Serving gRPC `PredictRequest`: the walk that runs before
//! decoding (model spec, cost), prost decoding of arbitrary bytes, the `TensorProto`
//! conversion to raw tensors (typed fields and `tensor_content`), and the answer's
//! conversion back to `TensorProto`s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_gateway::front::protoscan::{predict_request_cost, tfs_target};
use warden_gateway::front::tensor::check_raw;
use warden_gateway::front::tfs_grpc::{infer_request, predict_response};
use warden_gateway::pipeline::Target;
use warden_shared::datatype::{DataType, element_count};
use warden_shared::proto::{ModelInferResponse, model_infer_response::InferOutputTensor};
use warden_shared::tensorflow::serving::{PredictRequest, model_spec::VersionChoice};

fuzz_target!(|data: &[u8]| {
    // The walk never panics, and agrees with the decoder on the model and version it
    // names whenever both accept the message.
    let scanned = tfs_target(data);
    let cost = predict_request_cost(data);
    let Ok(req) = PredictRequest::decode(data) else {
        return;
    };
    if let Ok((name, version)) = &scanned {
        let spec = req.model_spec.clone().unwrap_or_default();
        assert_eq!(*name, spec.name.as_str());
        let decoded = match spec.version_choice {
            Some(VersionChoice::Version(v)) if v.value != 0 => v.value.to_string(),
            _ => String::new(),
        };
        assert_eq!(*version, decoded);
    }
    let Ok(_) = cost else {
        return;
    };
    let target = Target {
        model: "m".into(),
        version: String::new(),
    };
    let Ok(infer) = infer_request(&target, req, 1 << 16) else {
        return;
    };
    assert_eq!(infer.inputs.len(), infer.raw_input_contents.len());
    for (input, raw) in infer.inputs.iter().zip(&infer.raw_input_contents) {
        let dtype: DataType = input.datatype.parse().expect("accepted datatype");
        let count = element_count(&input.shape).expect("accepted shape");
        check_raw(dtype, count, raw).expect("accepted raw buffer");
    }
    // Echo the inputs back as outputs: every accepted tensor renders.
    let resp = ModelInferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        outputs: infer
            .inputs
            .iter()
            .map(|i| InferOutputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_output_contents: infer.raw_input_contents.clone(),
        ..Default::default()
    };
    predict_response(&resp).expect("accepted tensors render");
});
