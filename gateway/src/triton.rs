//! Triton's model configuration, as Warden can state it truthfully: built from the
//! model's metadata (names, data types, shapes), never from a `config.pbtxt`, which
//! Warden does not read. `max_batch_size` is 0 (Triton's "no batching dimension"): the
//! dims are the model's whole shape, with -1 for each dynamic dimension, so a client
//! sends exactly the shape the model takes.

use warden_shared::proto::{
    self, DataType, ModelInput, ModelOutput, model_metadata_response::TensorMetadata,
};

/// The backend name reported (the platform is the metadata's, as OVMS reports it).
pub const BACKEND: &str = "openvino";

/// A KServe datatype as Triton's `DataType`.
pub fn data_type(kserve: &str) -> DataType {
    match kserve {
        "BOOL" => DataType::TypeBool,
        "UINT8" => DataType::TypeUint8,
        "UINT16" => DataType::TypeUint16,
        "UINT32" => DataType::TypeUint32,
        "UINT64" => DataType::TypeUint64,
        "INT8" => DataType::TypeInt8,
        "INT16" => DataType::TypeInt16,
        "INT32" => DataType::TypeInt32,
        "INT64" => DataType::TypeInt64,
        "FP16" => DataType::TypeFp16,
        "FP32" => DataType::TypeFp32,
        "FP64" => DataType::TypeFp64,
        "BYTES" => DataType::TypeString,
        "BF16" => DataType::TypeBf16,
        _ => DataType::TypeInvalid,
    }
}

/// The model configuration of a model, from its metadata.
pub fn model_config(m: proto::ModelMetadataResponse) -> proto::ModelConfig {
    let input = |t: TensorMetadata| ModelInput {
        data_type: data_type(&t.datatype).into(),
        name: t.name,
        dims: t.shape,
    };
    let output = |t: TensorMetadata| ModelOutput {
        data_type: data_type(&t.datatype).into(),
        name: t.name,
        dims: t.shape,
    };
    proto::ModelConfig {
        name: m.name,
        platform: m.platform,
        backend: BACKEND.into(),
        max_batch_size: 0,
        input: m.inputs.into_iter().map(input).collect(),
        output: m.outputs.into_iter().map(output).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_metadata() {
        let t = |n: &str, d: &str, s: &[i64]| TensorMetadata {
            name: n.into(),
            datatype: d.into(),
            shape: s.to_vec(),
        };
        let c = model_config(proto::ModelMetadataResponse {
            name: "m".into(),
            versions: vec!["1".into()],
            platform: "OpenVINO".into(),
            inputs: vec![t("x", "FP32", &[1, 3, -1])],
            outputs: vec![t("y", "INT64", &[1])],
        });
        assert_eq!(c.max_batch_size, 0);
        assert_eq!(c.platform, "OpenVINO");
        assert_eq!(c.input[0].data_type(), DataType::TypeFp32);
        assert_eq!(c.input[0].dims, vec![1, 3, -1]);
        assert_eq!(c.output[0].data_type(), DataType::TypeInt64);
        assert_eq!(data_type("BYTES"), DataType::TypeString);
        assert_eq!(data_type("nope"), DataType::TypeInvalid);
    }
}
