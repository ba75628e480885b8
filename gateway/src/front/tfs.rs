//! The TensorFlow Serving API's data, in the pipeline's terms: `TensorProto` to and
//! from the raw tensors the backend takes, TensorFlow's `DataType` to and from KServe
//! datatypes, and model metadata and status in TFS's shapes (as OVMS answers them).
//! Shared by the TFS gRPC codec and the TFS REST codec; it decides nothing.

use crate::front::tensor;
use bytes::{BufMut, Bytes, BytesMut};
use warden_shared::datatype::{DataType, element_count};
use warden_shared::proto::ModelMetadataResponse;
use warden_shared::proto::model_metadata_response::TensorMetadata;
use warden_shared::tensorflow::serving::{
    GetModelStatusResponse, ModelVersionStatus, SignatureDefMap, StatusProto,
    model_version_status::State,
};
use warden_shared::tensorflow::{
    DataType as TfType, SignatureDef, TensorInfo, TensorProto, TensorShapeProto,
    tensor_shape_proto::Dim,
};

/// The one signature a model has here, as OVMS names it.
pub const SIGNATURE: &str = "serving_default";
/// The `method_name` of that signature.
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";
/// The metadata field a `GetModelMetadata` answer carries.
pub const SIGNATURE_DEF_FIELD: &str = "signature_def";
/// The `Any` type URL of that field's value.
pub const SIGNATURE_DEF_MAP_URL: &str = "type.googleapis.com/tensorflow.serving.SignatureDefMap";
/// `StatusProto.error_message` of an available version (as OVMS writes it).
pub const OK_MESSAGE: &str = "OK";

/// TensorFlow's datatype for a KServe datatype.
pub fn tf_type(dtype: DataType) -> TfType {
    match dtype {
        DataType::Bool => TfType::DtBool,
        DataType::U8 => TfType::DtUint8,
        DataType::U16 => TfType::DtUint16,
        DataType::U32 => TfType::DtUint32,
        DataType::U64 => TfType::DtUint64,
        DataType::I8 => TfType::DtInt8,
        DataType::I16 => TfType::DtInt16,
        DataType::I32 => TfType::DtInt32,
        DataType::I64 => TfType::DtInt64,
        DataType::F16 => TfType::DtHalf,
        DataType::Bf16 => TfType::DtBfloat16,
        DataType::F32 => TfType::DtFloat,
        DataType::F64 => TfType::DtDouble,
        DataType::Bytes => TfType::DtString,
    }
}

/// The KServe datatype of a TensorFlow datatype number, if a model here can take it.
pub fn kserve_type(dtype: i32) -> Result<DataType, String> {
    let tf = TfType::try_from(dtype).map_err(|_| format!("unknown dtype {dtype}"))?;
    DataType::ALL
        .into_iter()
        .find(|d| tf_type(*d) == tf)
        .ok_or_else(|| format!("dtype {} is not supported", tf.as_str_name()))
}

fn shape_proto(shape: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: shape
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// A tensor's shape, refusing an unknown rank (a request's tensors are concrete).
pub fn shape_of(t: &TensorProto) -> Result<Vec<i64>, String> {
    let s = t.tensor_shape.as_ref().ok_or("tensor_shape is missing")?;
    if s.unknown_rank {
        return Err("tensor_shape has an unknown rank".into());
    }
    Ok(s.dim.iter().map(|d| d.size).collect())
}

/// A request tensor as the backend takes it: datatype, shape and raw little-endian
/// bytes (BYTES length-framed). `tensor_content` is used as is (no copy); otherwise the
/// typed field of the dtype must hold exactly the shape's element count.
pub fn tensor_to_raw(
    t: &TensorProto,
    max_elements: usize,
) -> Result<(DataType, Vec<i64>, Bytes), String> {
    let dtype = kserve_type(t.dtype)?;
    let shape = shape_of(t)?;
    let count = element_count(&shape).map_err(|e| e.to_string())?;
    if count > max_elements {
        return Err(format!("more than {max_elements} elements"));
    }
    let raw = if !t.tensor_content.is_empty() {
        if dtype == DataType::Bytes {
            return Err("DT_STRING values go in string_val, not tensor_content".into());
        }
        t.tensor_content.clone()
    } else {
        typed_to_raw(dtype, t, count)?
    };
    tensor::check_raw(dtype, count, &raw)?;
    Ok((dtype, shape, raw))
}

fn narrow<T: TryFrom<i64>>(v: impl Into<i64>, dtype: DataType, i: usize) -> Result<T, String> {
    T::try_from(v.into()).map_err(|_| format!("element {i} is out of range for {dtype}"))
}

/// The typed field of `dtype` (TensorFlow's rule: which field holds which types) as
/// raw bytes.
fn typed_to_raw(dtype: DataType, t: &TensorProto, count: usize) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(count.saturating_mul(dtype.element_size().unwrap_or(8)));
    let n = match dtype {
        DataType::F32 => {
            t.float_val.iter().for_each(|&v| out.put_f32_le(v));
            t.float_val.len()
        }
        DataType::F64 => {
            t.double_val.iter().for_each(|&v| out.put_f64_le(v));
            t.double_val.len()
        }
        DataType::I8 | DataType::I16 | DataType::I32 | DataType::U8 | DataType::U16 => {
            for (i, &v) in t.int_val.iter().enumerate() {
                match dtype {
                    DataType::I8 => out.put_i8(narrow(v, dtype, i)?),
                    DataType::I16 => out.put_i16_le(narrow(v, dtype, i)?),
                    DataType::U8 => out.put_u8(narrow(v, dtype, i)?),
                    DataType::U16 => out.put_u16_le(narrow(v, dtype, i)?),
                    _ => out.put_i32_le(v),
                }
            }
            t.int_val.len()
        }
        DataType::I64 => {
            t.int64_val.iter().for_each(|&v| out.put_i64_le(v));
            t.int64_val.len()
        }
        DataType::U32 => {
            t.uint32_val.iter().for_each(|&v| out.put_u32_le(v));
            t.uint32_val.len()
        }
        DataType::U64 => {
            t.uint64_val.iter().for_each(|&v| out.put_u64_le(v));
            t.uint64_val.len()
        }
        DataType::Bool => {
            t.bool_val.iter().for_each(|&v| out.put_u8(v.into()));
            t.bool_val.len()
        }
        DataType::F16 | DataType::Bf16 => {
            for (i, &v) in t.half_val.iter().enumerate() {
                let bits: u16 =
                    u16::try_from(v).map_err(|_| format!("half_val element {i} is not 16 bits"))?;
                out.put_u16_le(bits);
            }
            t.half_val.len()
        }
        DataType::Bytes => {
            for (i, s) in t.string_val.iter().enumerate() {
                out.put_u32_le(
                    u32::try_from(s.len()).map_err(|_| format!("element {i} is too long"))?,
                );
                out.put_slice(s);
            }
            t.string_val.len()
        }
    };
    if n != count {
        return Err(format!(
            "shape holds {count} elements but the {} values field has {n}",
            tf_type(dtype).as_str_name()
        ));
    }
    Ok(out.freeze())
}

/// A backend output as a `TensorProto`: numbers in `tensor_content` (no copy), strings
/// in `string_val`.
pub fn raw_to_tensor(dtype: DataType, shape: &[i64], raw: &Bytes) -> Result<TensorProto, String> {
    let mut t = TensorProto {
        dtype: tf_type(dtype) as i32,
        tensor_shape: Some(shape_proto(shape)),
        ..Default::default()
    };
    if dtype == DataType::Bytes {
        t.string_val = tensor::split_bytes_elements(raw)?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
    } else {
        t.tensor_content = raw.clone();
    }
    Ok(t)
}

fn tensor_info(t: &TensorMetadata) -> TensorInfo {
    TensorInfo {
        name: t.name.clone(),
        // A datatype the backend reports is always one of ours.
        dtype: t.datatype.parse().map_or(TfType::DtInvalid, tf_type) as i32,
        tensor_shape: Some(shape_proto(&t.shape)),
    }
}

/// The model's one signature, `serving_default`, keyed by tensor name.
pub fn signature_def_map(m: &ModelMetadataResponse) -> SignatureDefMap {
    let map = |ts: &[TensorMetadata]| {
        ts.iter()
            .map(|t| (t.name.clone(), tensor_info(t)))
            .collect()
    };
    SignatureDefMap {
        signature_def: [(
            SIGNATURE.to_owned(),
            SignatureDef {
                inputs: map(&m.inputs),
                outputs: map(&m.outputs),
                method_name: PREDICT_METHOD.into(),
            },
        )]
        .into(),
    }
}

/// Status of the versions served: every one listed is loaded (the backend serves only
/// loaded versions), so AVAILABLE with status OK, as OVMS answers.
pub fn model_status(versions: &[u64], ready: bool) -> GetModelStatusResponse {
    let state = if ready {
        State::Available
    } else {
        State::Unknown
    };
    GetModelStatusResponse {
        model_version_status: versions
            .iter()
            .map(|&v| ModelVersionStatus {
                version: v as i64,
                state: state as i32,
                status: Some(StatusProto {
                    error_code: 0,
                    error_message: OK_MESSAGE.into(),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: TfType, shape: &[i64]) -> TensorProto {
        TensorProto {
            dtype: dtype as i32,
            tensor_shape: Some(shape_proto(shape)),
            ..Default::default()
        }
    }

    #[test]
    fn every_kserve_datatype_round_trips_through_tensorflow_types() {
        for d in DataType::ALL {
            assert_eq!(kserve_type(tf_type(d) as i32).unwrap(), d);
        }
        assert!(kserve_type(TfType::DtComplex64 as i32).is_err());
        assert!(kserve_type(TfType::DtInvalid as i32).is_err());
        assert!(kserve_type(99).is_err());
    }

    #[test]
    fn typed_fields_and_tensor_content_give_the_same_raw_tensor() {
        let mut typed = tensor(TfType::DtFloat, &[1, 2]);
        typed.float_val = vec![1.5, -2.0];
        let mut content = tensor(TfType::DtFloat, &[1, 2]);
        content.tensor_content = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<u8>>()
            .into();
        let a = tensor_to_raw(&typed, 100).unwrap();
        let b = tensor_to_raw(&content, 100).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0, DataType::F32);
        assert_eq!(a.1, vec![1, 2]);
        let mut small = tensor(TfType::DtInt8, &[2]);
        small.int_val = vec![-1, 5];
        assert_eq!(tensor_to_raw(&small, 100).unwrap().2.as_ref(), &[0xff, 5]);
        let mut strings = tensor(TfType::DtString, &[2]);
        strings.string_val = vec![b"ab".to_vec(), vec![]];
        assert_eq!(
            tensor_to_raw(&strings, 100).unwrap().2.as_ref(),
            &[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
        );
        let mut half = tensor(TfType::DtHalf, &[1]);
        half.half_val = vec![0x3c00];
        assert_eq!(tensor_to_raw(&half, 100).unwrap().2.as_ref(), &[0x00, 0x3c]);
    }

    #[test]
    fn tensors_that_do_not_fit_their_shape_are_refused() {
        let mut short = tensor(TfType::DtFloat, &[3]);
        short.float_val = vec![1.0];
        assert!(tensor_to_raw(&short, 100).is_err());
        let mut wrong_field = tensor(TfType::DtFloat, &[1]);
        wrong_field.int_val = vec![1];
        assert!(tensor_to_raw(&wrong_field, 100).is_err());
        let mut over = tensor(TfType::DtUint8, &[1]);
        over.int_val = vec![256];
        assert!(tensor_to_raw(&over, 100).is_err());
        let mut content = tensor(TfType::DtInt32, &[2]);
        content.tensor_content = Bytes::from_static(&[0; 7]);
        assert!(tensor_to_raw(&content, 100).is_err());
        let mut negative = tensor(TfType::DtFloat, &[-1]);
        negative.float_val = vec![1.0];
        assert!(tensor_to_raw(&negative, 100).is_err());
        let mut unknown = tensor(TfType::DtFloat, &[1]);
        unknown.tensor_shape.as_mut().unwrap().unknown_rank = true;
        assert!(tensor_to_raw(&unknown, 100).is_err());
        let no_shape = TensorProto {
            dtype: TfType::DtFloat as i32,
            ..Default::default()
        };
        assert!(tensor_to_raw(&no_shape, 100).is_err());
        let mut big = tensor(TfType::DtFloat, &[1000]);
        big.float_val = vec![0.0; 1000];
        assert!(tensor_to_raw(&big, 999).is_err());
        let mut string_content = tensor(TfType::DtString, &[1]);
        string_content.tensor_content = Bytes::from_static(&[0, 0, 0, 0]);
        assert!(tensor_to_raw(&string_content, 100).is_err());
    }

    #[test]
    fn outputs_become_tensor_content_or_string_val() {
        let raw = Bytes::from_static(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let t = raw_to_tensor(DataType::I32, &[2], &raw).unwrap();
        assert_eq!(t.tensor_content, raw);
        assert_eq!(t.dtype, TfType::DtInt32 as i32);
        let back = tensor_to_raw(&t, 10).unwrap();
        assert_eq!(back.2, raw);
        let s = raw_to_tensor(
            DataType::Bytes,
            &[1],
            &Bytes::from_static(&[1, 0, 0, 0, b'x']),
        )
        .unwrap();
        assert_eq!(s.string_val, vec![b"x".to_vec()]);
    }

    #[test]
    fn metadata_is_one_serving_default_signature() {
        let m = ModelMetadataResponse {
            name: "m".into(),
            versions: vec!["2".into(), "1".into()],
            platform: "x".into(),
            inputs: vec![TensorMetadata {
                name: "in".into(),
                datatype: "FP32".into(),
                shape: vec![1, -1],
            }],
            outputs: vec![TensorMetadata {
                name: "out".into(),
                datatype: "INT64".into(),
                shape: vec![1],
            }],
        };
        let s = signature_def_map(&m);
        let sig = &s.signature_def[SIGNATURE];
        assert_eq!(sig.method_name, PREDICT_METHOD);
        assert_eq!(sig.inputs["in"].dtype, TfType::DtFloat as i32);
        let dims: Vec<i64> = sig.inputs["in"]
            .tensor_shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.size)
            .collect();
        assert_eq!(dims, vec![1, -1]);
        assert_eq!(sig.outputs["out"].dtype, TfType::DtInt64 as i32);
        let st = model_status(&[1, 2], true);
        assert_eq!(st.model_version_status.len(), 2);
        assert_eq!(st.model_version_status[0].state, State::Available as i32);
    }
}
