//! The TensorFlow Serving REST predict body (row `instances` and columnar `inputs`,
//! named or not, `{"b64": ...}` strings) against a model of one or several inputs;
//! accepted requests must be JSON, be honestly charged and render back in their format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_gateway::front::tensor::check_raw;
use warden_gateway::front::tfs_json::{Bounds, parse_predict, render_predict};
use warden_shared::datatype::{DataType, element_count};
use warden_shared::proto::model_metadata_response::TensorMetadata;
use warden_shared::proto::{ModelInferResponse, ModelMetadataResponse, model_infer_response};

fn meta(inputs: &[(&str, &str)]) -> ModelMetadataResponse {
    ModelMetadataResponse {
        name: "m".into(),
        versions: vec!["1".into()],
        platform: "fuzz".into(),
        inputs: inputs
            .iter()
            .map(|(n, d)| TensorMetadata {
                name: (*n).into(),
                datatype: (*d).into(),
                shape: vec![-1],
            })
            .collect(),
        outputs: vec![],
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: which model (one FP32 input, one BYTES input, or several of
    // different datatypes); the rest is the body.
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let model = match mode % 3 {
        0 => meta(&[("x", "FP32")]),
        1 => meta(&[("s", "BYTES")]),
        _ => meta(&[("x", "INT8"), ("y", "BOOL"), ("z", "FP16"), ("s", "BYTES")]),
    };
    let bounds = Bounds {
        max_elements: 1 << 12,
        max_depth: 16,
    };
    let mut charged = 0usize;
    let mut charge = |n: usize| {
        charged += n;
        Ok(())
    };
    let Ok((req, format)) = parse_predict(body, &model, "m", "", bounds, &mut charge) else {
        return;
    };
    // The top level is found without reading the values; every value is read by a
    // checking reader afterwards, so nothing but JSON is accepted.
    serde_json::from_slice::<&serde_json::value::RawValue>(body).expect("an accepted body is JSON");
    let raw: usize = req.raw_input_contents.iter().map(|r| r.len()).sum();
    assert!(charged >= raw, "charged {charged} for {raw} raw bytes");
    assert_eq!(req.inputs.len(), req.raw_input_contents.len());
    for (input, raw) in req.inputs.iter().zip(&req.raw_input_contents) {
        let dtype: DataType = input.datatype.parse().expect("accepted datatype");
        let count = element_count(&input.shape).expect("accepted shape");
        assert!(count <= bounds.max_elements);
        check_raw(dtype, count, raw).expect("accepted raw buffer");
    }
    let resp = ModelInferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        outputs: req
            .inputs
            .iter()
            .map(|i| model_infer_response::InferOutputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_output_contents: req.raw_input_contents.clone(),
        ..Default::default()
    };
    let rendered = render_predict(&resp, format);
    if let Ok(body) = rendered {
        serde_json::from_slice::<serde_json::Value>(&body).expect("rendered JSON parses");
    }
});
