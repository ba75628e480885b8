//! The REST infer body: `Inference-Header-Content-Length` (its header value and the
//! split of the body it drives), the JSON header, and the binary tensor tail; accepted
//! requests go through the socket encoding and the response renderer.
#![no_main]

#[path = "common/same_request.rs"]
mod same_request;
use same_request::same_request;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_gateway::front::json::{OutputPrefs, parse_infer_request, render_infer_response};
use warden_gateway::front::rest::{parse_header_length, split_body};
use warden_shared::proto::{ModelInferRequest, ModelInferResponse, model_infer_response};

fuzz_target!(|data: &[u8]| {
    // First byte: 0 = plain JSON body; otherwise the next line (up to '\n') is the
    // Inference-Header-Content-Length value and the rest is the body.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = if mode & 1 == 0 {
        (None, rest)
    } else {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (Some(rest), &[][..]),
        }
    };
    let header_len = match header {
        None => None,
        Some(h) => match parse_header_length(h) {
            Some(n) => Some(n),
            None => return,
        },
    };
    let Ok((json, binary)) = split_body(header_len, Bytes::copy_from_slice(body)) else {
        return;
    };
    let max_elements = if mode & 2 == 0 { 1 << 16 } else { 16 };
    let binary_len = binary.len();
    let mut charged = 0usize;
    let mut charge = |n: usize| {
        charged += n;
        Ok(())
    };
    let Ok((req, prefs)) =
        parse_infer_request(&json, binary, "m", "1", max_elements, 32, &mut charge)
    else {
        return;
    };
    // Honest accounting: every raw tensor not sliced from the binary tail was charged.
    let raw: usize = req.raw_input_contents.iter().map(|r| r.len()).sum();
    assert!(charged + binary_len >= raw, "charged {charged} for {raw} raw bytes");
    // Invariants of an accepted request.
    assert_eq!(req.inputs.len(), req.raw_input_contents.len());
    for (input, raw) in req.inputs.iter().zip(&req.raw_input_contents) {
        let dtype: warden_shared::datatype::DataType =
            input.datatype.parse().expect("accepted datatype");
        let count = warden_shared::datatype::element_count(&input.shape).expect("accepted shape");
        assert!(count <= max_elements);
        warden_gateway::front::tensor::check_raw(dtype, count, raw).expect("accepted raw buffer");
    }
    // What the gateway sends on the socket decodes to the same request.
    let wire = req.encode_to_vec();
    let back = ModelInferRequest::decode(wire.as_slice()).expect("own encoding");
    same_request(&back, &req);
    // Echo the inputs back as outputs through the renderer (JSON and binary).
    let resp = ModelInferResponse {
        model_name: req.model_name.clone(),
        model_version: req.model_version.clone(),
        id: req.id.clone(),
        parameters: Default::default(),
        outputs: req
            .inputs
            .iter()
            .map(|i| model_infer_response::InferOutputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                parameters: Default::default(),
                contents: None,
            })
            .collect(),
        raw_output_contents: req.raw_input_contents.clone(),
    };
    let _ = render_infer_response(&resp, &prefs);
    let _ = render_infer_response(
        &resp,
        &OutputPrefs {
            binary_by_default: true,
            ..Default::default()
        },
    );
});
