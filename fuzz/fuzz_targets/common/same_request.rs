//! Shared by the targets that decode a `ModelInferRequest` twice.

use prost::Message;
use warden_shared::proto::ModelInferRequest;

/// `a` and `b` say the same thing. Map fields (`parameters`) encode in hash order, which
/// differs between two decoded copies, so the encodings are compared by length and the
/// map-free parts field by field.
pub fn same_request(a: &ModelInferRequest, b: &ModelInferRequest) {
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
