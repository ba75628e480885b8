//! A client's gRPC `ModelInferRequest`: prost decoding of arbitrary bytes, then the
//! gateway's normalisation to raw buffers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_gateway::tensor::{check_raw, normalize_grpc_request};
use warden_shared::datatype::{DataType, element_count};
use warden_shared::proto::ModelInferRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(mut req) = ModelInferRequest::decode(data) else {
        return;
    };
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

/// `a` and `b` say the same thing. Map fields (`parameters`) encode in hash order, which
/// differs between two decoded copies, so the encodings are compared by length and the
/// map-free parts field by field.
fn same_request(a: &ModelInferRequest, b: &ModelInferRequest) {
    assert_eq!(a.encode_to_vec().len(), b.encode_to_vec().len());
    assert_eq!(
        (&a.model_name, &a.model_version, &a.id),
        (&b.model_name, &b.model_version, &b.id)
    );
    assert_eq!(a.raw_input_contents, b.raw_input_contents);
    let key = |r: &ModelInferRequest| {
        r.inputs
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.datatype.clone(),
                    i.shape.clone(),
                    i.parameters.len(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(a), key(b));
    assert_eq!(
        a.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        b.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>()
    );
    assert_eq!(a.parameters.len(), b.parameters.len());
}
