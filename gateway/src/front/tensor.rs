//! Tensor bytes: checking raw buffers against their declared shape, BYTES framing
//! (each element a 4-byte little-endian length, then its bytes), and turning gRPC's
//! typed `contents` into the raw form the backend takes.

use bytes::{BufMut, Bytes, BytesMut};
use warden_shared::datatype::{DataType, element_count};
use warden_shared::proto::{InferTensorContents, ModelInferRequest};

/// Splits a BYTES buffer into its elements, refusing a truncated or overlong frame.
pub fn split_bytes_elements(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err("BYTES element has a truncated length prefix".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(format!(
                "BYTES element claims {len} bytes but only {} remain",
                tail.len()
            ));
        }
        let (item, after) = tail.split_at(len);
        out.push(item);
        rest = after;
    }
    Ok(out)
}

/// Checks that `raw` holds exactly `count` elements of `dtype`.
pub fn check_raw(dtype: DataType, count: usize, raw: &[u8]) -> Result<(), String> {
    match dtype.element_size() {
        Some(size) => {
            let want = count.checked_mul(size).ok_or("tensor size overflows")?;
            if raw.len() != want {
                return Err(format!(
                    "{count} {dtype} elements need {want} bytes, got {}",
                    raw.len()
                ));
            }
        }
        None => {
            let n = split_bytes_elements(raw)?.len();
            if n != count {
                return Err(format!(
                    "BYTES buffer holds {n} elements, shape needs {count}"
                ));
            }
        }
    }
    Ok(())
}

fn narrow<T: TryFrom<i64>>(v: impl Into<i64>, dtype: DataType, i: usize) -> Result<T, String> {
    T::try_from(v.into()).map_err(|_| format!("element {i} is out of range for {dtype}"))
}

/// Encodes gRPC typed contents as the raw little-endian form.
pub fn contents_to_raw(
    dtype: DataType,
    c: &InferTensorContents,
    count: usize,
) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(count * dtype.element_size().unwrap_or(8));
    let n = match dtype {
        DataType::Bool => {
            c.bool_contents.iter().for_each(|&b| out.put_u8(b.into()));
            c.bool_contents.len()
        }
        DataType::I8 | DataType::I16 | DataType::I32 => {
            for (i, &v) in c.int_contents.iter().enumerate() {
                match dtype {
                    DataType::I8 => out.put_i8(narrow(v, dtype, i)?),
                    DataType::I16 => out.put_i16_le(narrow(v, dtype, i)?),
                    _ => out.put_i32_le(v),
                }
            }
            c.int_contents.len()
        }
        DataType::I64 => {
            c.int64_contents.iter().for_each(|&v| out.put_i64_le(v));
            c.int64_contents.len()
        }
        DataType::U8 | DataType::U16 | DataType::U32 => {
            for (i, &v) in c.uint_contents.iter().enumerate() {
                match dtype {
                    DataType::U8 => out.put_u8(narrow(v, dtype, i)?),
                    DataType::U16 => out.put_u16_le(narrow(v, dtype, i)?),
                    _ => out.put_u32_le(v),
                }
            }
            c.uint_contents.len()
        }
        DataType::U64 => {
            c.uint64_contents.iter().for_each(|&v| out.put_u64_le(v));
            c.uint64_contents.len()
        }
        DataType::F32 => {
            c.fp32_contents.iter().for_each(|&v| out.put_f32_le(v));
            c.fp32_contents.len()
        }
        DataType::F64 => {
            c.fp64_contents.iter().for_each(|&v| out.put_f64_le(v));
            c.fp64_contents.len()
        }
        DataType::Bytes => {
            for (i, b) in c.bytes_contents.iter().enumerate() {
                out.put_u32_le(
                    u32::try_from(b.len()).map_err(|_| format!("element {i} is too long"))?,
                );
                out.put_slice(b);
            }
            c.bytes_contents.len()
        }
        DataType::F16 | DataType::Bf16 => {
            return Err(format!(
                "{dtype} has no typed contents field; send it in raw_input_contents"
            ));
        }
    };
    if n != count {
        return Err(format!("shape holds {count} elements but contents has {n}"));
    }
    Ok(out.freeze())
}

/// Brings a client's gRPC request to the form the backend takes: every input as a raw
/// buffer, sizes checked against shapes. Mixing typed contents and raw buffers is
/// refused, as the protocol says.
pub fn normalize_grpc_request(
    req: &mut ModelInferRequest,
    max_elements: usize,
) -> Result<(), String> {
    let use_raw = !req.raw_input_contents.is_empty();
    if use_raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(format!(
            "{} inputs but {} raw_input_contents",
            req.inputs.len(),
            req.raw_input_contents.len()
        ));
    }
    let mut raw = Vec::with_capacity(req.inputs.len());
    for (i, input) in req.inputs.iter_mut().enumerate() {
        let name: String = input.name.chars().take(64).collect();
        let err = |m: String| format!("input {name:?}: {m}");
        let dtype: DataType = input.datatype.parse().map_err(|e| err(format!("{e}")))?;
        let count = element_count(&input.shape).map_err(|e| err(e.to_string()))?;
        if count > max_elements {
            return Err(err(format!("more than {max_elements} elements")));
        }
        let contents = input.contents.take();
        let bytes = if use_raw {
            if contents.is_some() {
                return Err(err(
                    "has contents although raw_input_contents is used".into()
                ));
            }
            std::mem::take(&mut req.raw_input_contents[i])
        } else {
            let c = contents.ok_or_else(|| err("has no contents".into()))?;
            contents_to_raw(dtype, &c, count).map_err(err)?
        };
        check_raw(dtype, count, &bytes).map_err(err)?;
        raw.push(bytes);
    }
    req.raw_input_contents = raw;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_shared::proto::model_infer_request::InferInputTensor;

    #[test]
    fn bytes_framing() {
        assert_eq!(
            split_bytes_elements(&[1, 0, 0, 0, b'x', 0, 0, 0, 0]).unwrap(),
            vec![&b"x"[..], &b""[..]]
        );
        assert!(split_bytes_elements(&[5, 0, 0, 0, b'x']).is_err());
        assert!(split_bytes_elements(&[1, 0]).is_err());
        assert!(split_bytes_elements(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(check_raw(DataType::Bytes, 2, &[0, 0, 0, 0, 0, 0, 0, 0]).is_ok());
        assert!(check_raw(DataType::Bytes, 3, &[0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    fn input(dt: &str, shape: Vec<i64>, contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: dt.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    #[test]
    fn typed_contents_become_raw() {
        let mut req = ModelInferRequest {
            inputs: vec![input(
                "INT16",
                vec![2],
                Some(InferTensorContents {
                    int_contents: vec![-2, 300],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        normalize_grpc_request(&mut req, 100).unwrap();
        assert_eq!(
            req.raw_input_contents[0].as_ref(),
            &[0xfe, 0xff, 0x2c, 0x01]
        );
        let mut over = ModelInferRequest {
            inputs: vec![input(
                "INT8",
                vec![1],
                Some(InferTensorContents {
                    int_contents: vec![200],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        assert!(normalize_grpc_request(&mut over, 100).is_err());
        let mut short = ModelInferRequest {
            inputs: vec![input(
                "FP32",
                vec![3],
                Some(InferTensorContents {
                    fp32_contents: vec![1.0],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        assert!(normalize_grpc_request(&mut short, 100).is_err());
        let mut raw_wrong = ModelInferRequest {
            inputs: vec![input("FP32", vec![3], None)],
            raw_input_contents: vec![Bytes::from_static(&[0; 8])],
            ..Default::default()
        };
        assert!(normalize_grpc_request(&mut raw_wrong, 100).is_err());
        let mut huge = ModelInferRequest {
            inputs: vec![input("FP32", vec![1 << 40, 1 << 40], None)],
            ..Default::default()
        };
        assert!(
            normalize_grpc_request(&mut huge, usize::MAX).is_err(),
            "overflowing shape"
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any list of elements framed with 4-byte lengths splits back into that list.
        #[test]
        fn bytes_framing_round_trip(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
            let mut raw = Vec::new();
            for it in &items {
                raw.extend_from_slice(&(it.len() as u32).to_le_bytes());
                raw.extend_from_slice(it);
            }
            let split = split_bytes_elements(&raw).unwrap();
            prop_assert_eq!(split.iter().map(|s| s.to_vec()).collect::<Vec<_>>(), items.clone());
            prop_assert!(check_raw(DataType::Bytes, items.len(), &raw).is_ok());
            // Cutting the buffer anywhere inside the last frame is refused.
            if let Some(last) = items.last() {
                let cut = raw.len() - 1 - (last.len() + 3) / 2;
                prop_assert!(split_bytes_elements(&raw[..cut]).is_err());
            }
        }

        /// gRPC typed BYTES contents and the raw framing agree.
        #[test]
        fn typed_bytes_contents_frame_the_same(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 0..16)) {
            let c = InferTensorContents {
                bytes_contents: items.clone(),
                ..Default::default()
            };
            let raw = contents_to_raw(DataType::Bytes, &c, items.len()).unwrap();
            let split = split_bytes_elements(&raw).unwrap();
            prop_assert_eq!(split.iter().map(|s| s.to_vec()).collect::<Vec<_>>(), items);
        }
    }
}
