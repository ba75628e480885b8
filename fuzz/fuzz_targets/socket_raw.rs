//! The gateway <-> backend socket protocol (KServe gRPC messages over HTTP/2 on a Unix
//! socket), raw bytes: what the backend decodes (`ModelInferRequest`) and validates,
//! and what the gateway decodes (`ModelInferResponse`) and renders back to clients.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_backend::validate::{Port, check_input, check_shape};
use warden_gateway::front::json::{OutputPrefs, render_infer_response};
use warden_shared::datatype::DataType;
use warden_shared::proto::{ModelInferRequest, ModelInferResponse};

/// A model like the demo ones: one static and one dynamic-rank input.
const PORTS: [(&str, DataType, &[i64], bool); 2] = [
    ("image", DataType::F32, &[1, 3, -1, -1], false),
    ("ids", DataType::I64, &[], true),
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        let Ok(req) = ModelInferRequest::decode(bytes) else {
            return;
        };
        for (i, input) in req.inputs.iter().enumerate() {
            let (name, datatype, shape, dynamic_rank) = PORTS[i % PORTS.len()];
            let _ = check_shape(name, shape, dynamic_rank, &input.shape);
            let len = req.raw_input_contents.get(i).map_or(0, |r| r.len());
            let port = Port {
                name,
                datatype,
                shape,
                dynamic_rank,
            };
            if check_input(port, input, len, 1 << 20).is_ok() {
                let size = warden_shared::datatype::byte_size(datatype, &input.shape)
                    .expect("accepted shape")
                    .expect("fixed-size datatype");
                assert_eq!(size, len);
            }
        }
    } else {
        let Ok(resp) = ModelInferResponse::decode(bytes) else {
            return;
        };
        let _ = render_infer_response(&resp, &OutputPrefs::default());
        let binary = OutputPrefs {
            binary_by_default: true,
            ..Default::default()
        };
        if let Ok(r) = render_infer_response(&resp, &binary)
            && let Some(n) = r.json_len
        {
            assert!(n <= r.body.len());
        }
    }
});
