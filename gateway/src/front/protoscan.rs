//! A read-only walk over a protobuf message's wire bytes, before it is decoded.
//!
//! Protobuf decoding amplifies: a two-byte empty `inputs` entry becomes a struct of a
//! few hundred bytes, a one-byte packed varint an eight-byte `i64`. So the gRPC front
//! never decodes a message it has not walked first: the walk allocates nothing, finds
//! the model and version the message names (for authorization before decoding), counts
//! what decoding will allocate (charged to the caller's quota before decoding), and
//! refuses messages with more tensors, dimensions or parameters than any model takes.

use warden_shared::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use warden_shared::proto::{InferParameter, InferTensorContents};

/// Most inputs, or requested outputs, of one request.
pub const MAX_TENSORS: usize = crate::front::json::MAX_TENSORS;
/// Most dimensions of one shape.
pub const MAX_RANK: usize = crate::front::json::MAX_RANK;
/// Most entries of one `parameters` map.
pub const MAX_PARAMETERS: usize = crate::front::json::MAX_PARAMETERS;

/// Why a message was refused by the walk.
pub type ScanError = String;

#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Fixed32,
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ScanError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| "truncated varint".to_string())?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| "field runs past the end of the message".to_string())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, ScanError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((number, value)))
    }
}

fn utf8(b: &[u8]) -> Result<&str, ScanError> {
    std::str::from_utf8(b).map_err(|_| "a string field is not UTF-8".to_string())
}

/// Elements of a packed repeated field of `width` bytes each (0: varints).
fn packed_count(b: &[u8], width: usize) -> Result<usize, ScanError> {
    if width == 0 {
        return Ok(b.iter().filter(|&&x| x & 0x80 == 0).count());
    }
    if !b.len().is_multiple_of(width) {
        return Err("packed field is not a whole number of elements".into());
    }
    Ok(b.len() / width)
}

/// The model name and version fields (1 and 2) of a request message: every request of
/// the KServe v2 service that names a model puts them there.
pub fn target(message: &[u8]) -> Result<(&str, &str), ScanError> {
    let mut r = Reader::new(message);
    let (mut name, mut version) = ("", "");
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Value::Bytes(b)) => name = utf8(b)?,
            (2, Value::Bytes(b)) => version = utf8(b)?,
            (1 | 2, _) => return Err("model name and version must be strings".into()),
            _ => {}
        }
    }
    Ok((name, version))
}

/// A `map<string, InferParameter>` entry.
fn parameter_cost(entry: &[u8]) -> Result<usize, ScanError> {
    let mut r = Reader::new(entry);
    let mut cost = std::mem::size_of::<(String, InferParameter)>() + 16;
    while let Some((_, v)) = r.field()? {
        if let Value::Bytes(b) = v {
            cost += b.len();
        }
    }
    Ok(cost)
}

/// Bytes a `repeated` field of `count` elements of `size` takes once decoded (a vector
/// may hold up to twice what it uses while it grows).
fn repeated(count: usize, size: usize) -> usize {
    count.saturating_mul(size).saturating_mul(2)
}

fn contents_cost(b: &[u8]) -> Result<usize, ScanError> {
    let mut r = Reader::new(b);
    let mut cost = std::mem::size_of::<InferTensorContents>();
    while let Some((n, v)) = r.field()? {
        // (element size once decoded, wire width when packed; 0 = varint)
        let (size, width) = match n {
            1 => (1, 0),
            2 | 4 => (4, 0),
            3 | 5 => (8, 0),
            6 => (4, 4),
            7 => (8, 8),
            8 => {
                if let Value::Bytes(b) = v {
                    cost = cost.saturating_add(repeated(1, 24) + b.len());
                }
                continue;
            }
            _ => continue,
        };
        let count = match v {
            Value::Bytes(b) => packed_count(b, width)?,
            _ => 1,
        };
        // Decoded once by protobuf and once more into the raw tensor.
        cost = cost.saturating_add(repeated(count, size) + count * size);
    }
    Ok(cost)
}

fn input_cost(b: &[u8]) -> Result<usize, ScanError> {
    let mut r = Reader::new(b);
    let mut cost = repeated(1, std::mem::size_of::<InferInputTensor>());
    let (mut rank, mut params) = (0usize, 0usize);
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1 | 2, Value::Bytes(s)) => cost += s.len(),
            (3, Value::Bytes(p)) => rank += packed_count(p, 0)?,
            (3, Value::Varint(_)) => rank += 1,
            (4, Value::Bytes(e)) => {
                params += 1;
                cost = cost.saturating_add(parameter_cost(e)?);
            }
            (5, Value::Bytes(c)) => cost = cost.saturating_add(contents_cost(c)?),
            _ => {}
        }
    }
    if rank > MAX_RANK {
        return Err(format!("a shape has more than {MAX_RANK} dimensions"));
    }
    if params > MAX_PARAMETERS {
        return Err(format!("more than {MAX_PARAMETERS} parameters"));
    }
    Ok(cost + repeated(rank, 8))
}

fn output_cost(b: &[u8]) -> Result<usize, ScanError> {
    let mut r = Reader::new(b);
    let mut cost = repeated(1, std::mem::size_of::<InferRequestedOutputTensor>());
    let mut params = 0usize;
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Value::Bytes(s)) => cost += s.len(),
            (2, Value::Bytes(e)) => {
                params += 1;
                cost = cost.saturating_add(parameter_cost(e)?);
            }
            _ => {}
        }
    }
    if params > MAX_PARAMETERS {
        return Err(format!("more than {MAX_PARAMETERS} parameters"));
    }
    Ok(cost)
}

/// Bytes that decoding a `ModelInferRequest` (and turning its typed contents into raw
/// tensors) will allocate beyond the message itself: an upper bound, computed without
/// allocating. Refuses messages over the tensor, rank and parameter bounds.
pub fn infer_request_cost(message: &[u8]) -> Result<usize, ScanError> {
    let mut r = Reader::new(message);
    let (mut inputs, mut outputs, mut params) = (0usize, 0usize, 0usize);
    let mut cost = 0usize;
    while let Some((n, v)) = r.field()? {
        let add = match (n, v) {
            (1..=3, Value::Bytes(s)) => s.len(),
            (4, Value::Bytes(e)) => {
                params += 1;
                parameter_cost(e)?
            }
            (5, Value::Bytes(b)) => {
                inputs += 1;
                input_cost(b)?
            }
            (6, Value::Bytes(b)) => {
                outputs += 1;
                output_cost(b)?
            }
            // Raw contents are slices of the message itself (`bytes` fields decode
            // without a copy); each costs its handle.
            (7, Value::Bytes(_)) => repeated(1, std::mem::size_of::<bytes::Bytes>()),
            _ => 0,
        };
        cost = cost.saturating_add(add);
    }
    if inputs > MAX_TENSORS || outputs > MAX_TENSORS {
        return Err(format!("more than {MAX_TENSORS} inputs or outputs"));
    }
    if params > MAX_PARAMETERS {
        return Err(format!("more than {MAX_PARAMETERS} parameters"));
    }
    Ok(cost)
}

/// The model a TensorFlow Serving request names: its `model_spec` (field 1 of every
/// TFS request), `ModelSpec { name = 1, oneof { version = 2 (Int64Value { value = 1 }),
/// version_label = 4 } }`, read with protobuf's merge rules (a repeated message field
/// merges, the last scalar and the last oneof member win), so the walk names what the
/// decoder would. Version 0 or none is "the latest"; a negative one is returned as
/// written, for the pipeline to refuse; a version label is refused (none is served).
pub fn tfs_target(message: &[u8]) -> Result<(&str, String), ScanError> {
    #[derive(PartialEq)]
    enum Choice {
        None,
        Version(i64),
        Label,
    }
    let (mut name, mut choice) = ("", Choice::None);
    let mut r = Reader::new(message);
    while let Some((n, v)) = r.field()? {
        let spec = match (n, v) {
            (1, Value::Bytes(b)) => b,
            (1, _) => return Err("model_spec must be a message".into()),
            _ => continue,
        };
        let mut s = Reader::new(spec);
        while let Some((n, v)) = s.field()? {
            match (n, v) {
                (1, Value::Bytes(b)) => name = utf8(b)?,
                (2, Value::Bytes(b)) => {
                    let before = match choice {
                        Choice::Version(x) => x,
                        _ => 0,
                    };
                    choice = Choice::Version(int64_value(b, before)?);
                }
                (4, Value::Bytes(_)) => choice = Choice::Label,
                (1 | 2 | 4, _) => return Err("model_spec fields have the wrong wire type".into()),
                _ => {}
            }
        }
    }
    let version = match choice {
        Choice::Label => {
            return Err("model_spec.version_label is not supported: name a version".into());
        }
        Choice::None | Choice::Version(0) => String::new(),
        Choice::Version(v) => v.to_string(),
    };
    Ok((name, version))
}

/// `google.protobuf.Int64Value { int64 value = 1 }`, merged into `before`.
fn int64_value(b: &[u8], before: i64) -> Result<i64, ScanError> {
    let mut r = Reader::new(b);
    let mut value = before;
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            // int64 on the wire: the varint's 64 bits, two's complement.
            (1, Value::Varint(x)) => value = x as i64,
            (1, _) => return Err("model_spec.version must be an integer".into()),
            _ => {}
        }
    }
    Ok(value)
}

/// A `TensorProto`'s decoded cost: its typed values (decoded, then copied once more
/// into the raw tensor), its dimensions; `tensor_content` is a slice of the message.
fn tensor_proto_cost(b: &[u8]) -> Result<usize, ScanError> {
    use warden_shared::tensorflow::TensorProto;
    let mut r = Reader::new(b);
    let mut cost = std::mem::size_of::<TensorProto>();
    let mut rank = 0usize;
    while let Some((n, v)) = r.field()? {
        // (element size once decoded, wire width when packed; 0 = varint)
        let (size, width) = match n {
            2 => {
                if let Value::Bytes(shape) = v {
                    let mut s = Reader::new(shape);
                    while let Some((dn, dv)) = s.field()? {
                        if let (2, Value::Bytes(dim)) = (dn, dv) {
                            rank += 1;
                            cost = cost.saturating_add(
                                repeated(
                                    1,
                                    std::mem::size_of::<
                                        warden_shared::tensorflow::tensor_shape_proto::Dim,
                                    >(),
                                ) + dim.len(),
                            );
                        }
                    }
                }
                continue;
            }
            8 => {
                if let Value::Bytes(s) = v {
                    cost = cost.saturating_add(repeated(1, 24) + 2 * s.len() + 4);
                }
                continue;
            }
            5 | 9 => (4, 4),
            6 | 12 => (8, 8),
            7 | 13 | 16 => (4, 0),
            10 | 17 => (8, 0),
            11 => (1, 0),
            _ => continue,
        };
        let count = match v {
            Value::Bytes(b) => packed_count(b, width)?,
            _ => 1,
        };
        // Decoded by protobuf, then written into the raw tensor (at most 8 bytes each).
        cost = cost.saturating_add(repeated(count, size).saturating_add(count.saturating_mul(8)));
    }
    if rank > MAX_RANK {
        return Err(format!("a shape has more than {MAX_RANK} dimensions"));
    }
    Ok(cost)
}

/// Bytes that decoding a TFS `PredictRequest` and turning it into the backend's
/// request will allocate beyond the message itself: an upper bound, computed without
/// allocating. Refuses messages over the tensor and rank bounds.
pub fn predict_request_cost(message: &[u8]) -> Result<usize, ScanError> {
    use warden_shared::tensorflow::TensorProto;
    let mut r = Reader::new(message);
    let (mut inputs, mut outputs) = (0usize, 0usize);
    let mut cost = 0usize;
    while let Some((n, v)) = r.field()? {
        let add = match (n, v) {
            (1, Value::Bytes(s)) => s.len(),
            (2, Value::Bytes(entry)) => {
                inputs += 1;
                let mut e = Reader::new(entry);
                // The map entry, then the backend request's input and raw buffer.
                let mut c = repeated(1, std::mem::size_of::<(String, TensorProto)>())
                    + repeated(1, std::mem::size_of::<InferInputTensor>())
                    + repeated(1, std::mem::size_of::<bytes::Bytes>());
                while let Some((en, ev)) = e.field()? {
                    match (en, ev) {
                        (1, Value::Bytes(k)) => c += 2 * k.len(),
                        (2, Value::Bytes(t)) => c = c.saturating_add(2 * tensor_proto_cost(t)?),
                        _ => {}
                    }
                }
                c
            }
            (3, Value::Bytes(s)) => {
                outputs += 1;
                repeated(1, 24)
                    + repeated(1, std::mem::size_of::<InferRequestedOutputTensor>())
                    + 2 * s.len()
            }
            _ => 0,
        };
        cost = cost.saturating_add(add);
    }
    if inputs > MAX_TENSORS || outputs > MAX_TENSORS {
        return Err(format!("more than {MAX_TENSORS} inputs or outputs"));
    }
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use warden_shared::proto::ModelInferRequest;
    use warden_shared::proto::model_infer_request::InferInputTensor;

    fn input(n: usize) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: "INT64".into(),
            shape: vec![n as i64],
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                int64_contents: vec![0; n],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_target_is_read_without_decoding() {
        let m = ModelInferRequest {
            model_name: "resnet".into(),
            model_version: "3".into(),
            inputs: vec![input(4)],
            ..Default::default()
        };
        assert_eq!(target(&m.encode_to_vec()).unwrap(), ("resnet", "3"));
        assert!(target(&[0x0a, 0x05, b'a']).is_err(), "truncated");
        assert!(target(&[0x0a, 0x01, 0xff]).is_err(), "not UTF-8");
        assert!(target(&[0x08, 0x01]).is_err(), "a varint where a string is");
    }

    #[test]
    fn the_cost_bounds_what_decoding_allocates() {
        // One-byte varints that decode to eight-byte integers, twice (contents, then raw).
        let m = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![input(100_000)],
            ..Default::default()
        };
        let wire = m.encode_to_vec();
        let cost = infer_request_cost(&wire).unwrap();
        assert!(wire.len() < 110_000);
        assert!(cost >= 100_000 * 8 * 2, "{cost}");
        // Many empty inputs: two bytes each on the wire, a struct each once decoded.
        let many = ModelInferRequest {
            inputs: vec![InferInputTensor::default(); 1000],
            ..Default::default()
        };
        let wire = many.encode_to_vec();
        assert_eq!(wire.len(), 2000);
        let cost = infer_request_cost(&wire).unwrap();
        assert!(
            cost >= 1000 * std::mem::size_of::<InferInputTensor>(),
            "{cost}"
        );
    }

    fn cost_with(contents: InferTensorContents) -> usize {
        let m = ModelInferRequest {
            inputs: vec![InferInputTensor {
                contents: Some(contents),
                ..Default::default()
            }],
            ..Default::default()
        };
        infer_request_cost(&m.encode_to_vec()).unwrap()
    }

    #[test]
    fn each_typed_content_is_charged_for_its_decoded_vector_and_raw_copy() {
        let n = 1000;
        let empty = cost_with(InferTensorContents::default());
        let c = InferTensorContents::default;
        for (what, contents, size) in [
            (
                "bool",
                InferTensorContents {
                    bool_contents: vec![true; n],
                    ..c()
                },
                1,
            ),
            (
                "int",
                InferTensorContents {
                    int_contents: vec![-1; n],
                    ..c()
                },
                4,
            ),
            (
                "int64",
                InferTensorContents {
                    int64_contents: vec![-1; n],
                    ..c()
                },
                8,
            ),
            (
                "uint",
                InferTensorContents {
                    uint_contents: vec![u32::MAX; n],
                    ..c()
                },
                4,
            ),
            (
                "uint64",
                InferTensorContents {
                    uint64_contents: vec![u64::MAX; n],
                    ..c()
                },
                8,
            ),
            (
                "fp32",
                InferTensorContents {
                    fp32_contents: vec![1.5; n],
                    ..c()
                },
                4,
            ),
            (
                "fp64",
                InferTensorContents {
                    fp64_contents: vec![1.5; n],
                    ..c()
                },
                8,
            ),
        ] {
            // Decoded by protobuf into a vector that may hold twice what it uses while
            // it grows, then copied once into the raw tensor.
            assert_eq!(cost_with(contents) - empty, 3 * n * size, "{what}");
        }
        // A string element: its handle (twice, for the vector) and its bytes.
        let strings = InferTensorContents {
            bytes_contents: vec![vec![b'x'; 100]; 10],
            ..c()
        };
        assert_eq!(cost_with(strings) - empty, 10 * (2 * 24 + 100));
    }

    #[test]
    fn each_parameter_is_charged_for_its_entry_and_its_bytes() {
        use warden_shared::proto::infer_parameter::ParameterChoice;
        let value = InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam("v".repeat(100))),
        };
        let with = |k: usize| {
            let m = ModelInferRequest {
                parameters: (0..k).map(|i| (format!("key{i}"), value.clone())).collect(),
                ..Default::default()
            };
            infer_request_cost(&m.encode_to_vec()).unwrap()
        };
        let entry = std::mem::size_of::<(String, InferParameter)>() + 16;
        let one = entry + "key0".len() + value.encoded_len();
        assert_eq!(with(1) - with(0), one);
        assert_eq!(with(3) - with(0), 3 * one);
    }

    fn params(k: usize) -> std::collections::HashMap<String, InferParameter> {
        (0..k)
            .map(|i| (format!("p{i:02}"), InferParameter::default()))
            .collect()
    }

    /// One `parameters` entry named `pNN` (3 bytes) with an empty value, as the walk
    /// charges it.
    const PARAM: usize = std::mem::size_of::<(String, InferParameter)>() + 16 + 3;

    #[test]
    fn each_input_and_output_is_charged_for_its_names_shape_and_parameters() {
        let request = |inputs, outputs| ModelInferRequest {
            inputs,
            outputs,
            ..Default::default()
        };
        let cost = |m: &ModelInferRequest| infer_request_cost(&m.encode_to_vec());
        let tensor = repeated(1, std::mem::size_of::<InferInputTensor>());
        let bare = InferInputTensor::default();
        assert_eq!(cost(&request(vec![bare.clone()], vec![])).unwrap(), tensor);
        let named = InferInputTensor {
            name: "abc".into(),
            datatype: "FP32".into(),
            shape: vec![1; MAX_RANK],
            parameters: params(MAX_PARAMETERS),
            contents: None,
        };
        assert_eq!(
            cost(&request(vec![named.clone()], vec![])).unwrap(),
            tensor + 3 + 4 + repeated(MAX_RANK, 8) + MAX_PARAMETERS * PARAM
        );
        // A shape written unpacked (one varint field per dimension) counts the same.
        let unpacked_dims: Vec<u8> = [0x18, 0x01].repeat(2);
        let mut wire = vec![0x2a, unpacked_dims.len() as u8];
        wire.extend(&unpacked_dims);
        assert_eq!(infer_request_cost(&wire).unwrap(), tensor + repeated(2, 8));
        // One dimension or one parameter more is refused.
        let deep = InferInputTensor {
            shape: vec![1; MAX_RANK + 1],
            ..bare.clone()
        };
        assert!(cost(&request(vec![deep], vec![])).is_err());
        let mut wide = named.clone();
        wide.parameters = params(MAX_PARAMETERS + 1);
        assert!(cost(&request(vec![wide], vec![])).is_err());

        let out = repeated(1, std::mem::size_of::<InferRequestedOutputTensor>());
        let output = |name: &str, k| InferRequestedOutputTensor {
            name: name.into(),
            parameters: params(k),
        };
        assert_eq!(
            cost(&request(vec![], vec![output("scores", MAX_PARAMETERS)])).unwrap(),
            out + 6 + MAX_PARAMETERS * PARAM
        );
        assert!(cost(&request(vec![], vec![output("s", MAX_PARAMETERS + 1)])).is_err());
    }

    #[test]
    fn each_typed_tfs_value_is_charged_for_its_decoded_vector_and_raw_copy() {
        use warden_shared::tensorflow::serving::PredictRequest;
        use warden_shared::tensorflow::{TensorProto, TensorShapeProto, tensor_shape_proto::Dim};
        let cost = |t: TensorProto| {
            let m = PredictRequest {
                inputs: [("x".to_owned(), t)].into(),
                ..Default::default()
            };
            predict_request_cost(&m.encode_to_vec()).unwrap()
        };
        // (A tensor with every field at its default is not even written: give it a type.)
        let t = || TensorProto {
            dtype: 1,
            ..Default::default()
        };
        let empty = cost(t());
        let n = 1000;
        for (what, tensor, size) in [
            (
                "half",
                TensorProto {
                    half_val: vec![-1; n],
                    ..t()
                },
                4,
            ),
            (
                "float",
                TensorProto {
                    float_val: vec![1.5; n],
                    ..t()
                },
                4,
            ),
            (
                "double",
                TensorProto {
                    double_val: vec![1.5; n],
                    ..t()
                },
                8,
            ),
            (
                "int",
                TensorProto {
                    int_val: vec![-1; n],
                    ..t()
                },
                4,
            ),
            (
                "scomplex",
                TensorProto {
                    scomplex_val: vec![1.5; n],
                    ..t()
                },
                4,
            ),
            (
                "int64",
                TensorProto {
                    int64_val: vec![-1; n],
                    ..t()
                },
                8,
            ),
            (
                "bool",
                TensorProto {
                    bool_val: vec![true; n],
                    ..t()
                },
                1,
            ),
            (
                "dcomplex",
                TensorProto {
                    dcomplex_val: vec![1.5; n],
                    ..t()
                },
                8,
            ),
            (
                "uint32",
                TensorProto {
                    uint32_val: vec![u32::MAX; n],
                    ..t()
                },
                4,
            ),
            (
                "uint64",
                TensorProto {
                    uint64_val: vec![u64::MAX; n],
                    ..t()
                },
                8,
            ),
        ] {
            // Decoded by protobuf into a vector that may hold twice what it uses, then
            // written into the raw tensor at up to 8 bytes each; the whole tensor is
            // counted twice (the map entry's, and the backend request's).
            assert_eq!(cost(tensor) - empty, 2 * (2 * n * size + 8 * n), "{what}");
        }
        let strings = TensorProto {
            string_val: vec![vec![b'x'; 100]; 10],
            ..t()
        };
        assert_eq!(cost(strings) - empty, 2 * 10 * (2 * 24 + 2 * 100 + 4));
        let dim = Dim {
            size: 7,
            name: "batch".into(),
        };
        let shaped = TensorProto {
            tensor_shape: Some(TensorShapeProto {
                dim: vec![dim.clone(); MAX_RANK],
                unknown_rank: false,
            }),
            ..t()
        };
        let per_dim = repeated(1, std::mem::size_of::<Dim>()) + dim.encoded_len();
        assert_eq!(cost(shaped) - empty, 2 * MAX_RANK * per_dim);
    }

    #[test]
    fn a_predict_request_is_charged_for_its_names_and_outputs() {
        use warden_shared::tensorflow::TensorProto;
        use warden_shared::tensorflow::serving::{ModelSpec, PredictRequest};
        let cost = |m: PredictRequest| predict_request_cost(&m.encode_to_vec()).unwrap();
        assert_eq!(cost(PredictRequest::default()), 0);
        let spec = ModelSpec {
            name: "resnet".into(),
            ..Default::default()
        };
        let named = PredictRequest {
            model_spec: Some(spec.clone()),
            ..Default::default()
        };
        assert_eq!(cost(named), spec.encoded_len());
        let entry = repeated(1, std::mem::size_of::<(String, TensorProto)>())
            + repeated(1, std::mem::size_of::<InferInputTensor>())
            + repeated(1, std::mem::size_of::<bytes::Bytes>());
        let tensor = 2 * std::mem::size_of::<TensorProto>();
        let typed = TensorProto {
            dtype: 1,
            ..Default::default()
        };
        let one_input = PredictRequest {
            inputs: [("images".to_owned(), typed)].into(),
            ..Default::default()
        };
        assert_eq!(cost(one_input), entry + 2 * "images".len() + tensor);
        let output =
            repeated(1, 24) + repeated(1, std::mem::size_of::<InferRequestedOutputTensor>());
        let filtered = PredictRequest {
            output_filter: vec!["scores".into(), "boxes".into()],
            ..Default::default()
        };
        assert_eq!(
            cost(filtered),
            2 * output + 2 * ("scores".len() + "boxes".len())
        );
        // As many inputs and outputs as the bound allows, and not one more.
        let wide = |k: usize| PredictRequest {
            inputs: (0..k)
                .map(|i| (format!("x{i}"), TensorProto::default()))
                .collect(),
            output_filter: (0..k).map(|i| format!("y{i}")).collect(),
            ..Default::default()
        };
        assert!(predict_request_cost(&wide(MAX_TENSORS).encode_to_vec()).is_ok());
        let over_inputs = PredictRequest {
            output_filter: vec![],
            ..wide(MAX_TENSORS + 1)
        };
        assert!(predict_request_cost(&over_inputs.encode_to_vec()).is_err());
        let over_outputs = PredictRequest {
            inputs: Default::default(),
            ..wide(MAX_TENSORS + 1)
        };
        assert!(predict_request_cost(&over_outputs.encode_to_vec()).is_err());
    }

    #[test]
    fn a_request_is_charged_for_its_names_and_raw_contents() {
        let cost = |m: ModelInferRequest| infer_request_cost(&m.encode_to_vec()).unwrap();
        assert_eq!(cost(ModelInferRequest::default()), 0);
        let named = ModelInferRequest {
            model_name: "resnet".into(),
            model_version: "12".into(),
            id: "req-1".into(),
            ..Default::default()
        };
        assert_eq!(cost(named), 6 + 2 + 5);
        // Raw contents are slices of the message: each costs its handle only.
        let raw = ModelInferRequest {
            raw_input_contents: vec![vec![0; 4096].into(), vec![0; 16].into()],
            ..Default::default()
        };
        assert_eq!(
            cost(raw),
            2 * repeated(1, std::mem::size_of::<bytes::Bytes>())
        );
    }

    /// A length-delimited field.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_tfs_model_spec_is_read_as_the_decoder_merges_it() {
        use warden_shared::tensorflow::serving::{PredictRequest, model_spec::VersionChoice};
        let name = field(1, b"resnet");
        let version = |v: u8| field(2, &[0x08, v]);
        // Two model_spec fields merge: the second's empty Int64Value keeps the first's 5.
        let mut wire = field(1, &[name.clone(), version(5)].concat());
        wire.extend(field(1, &field(2, &[])));
        let decoded = PredictRequest::decode(&wire[..])
            .unwrap()
            .model_spec
            .unwrap();
        let Some(VersionChoice::Version(v)) = decoded.version_choice else {
            panic!("the decoder kept no version");
        };
        assert_eq!(v.value, 5);
        assert_eq!(tfs_target(&wire).unwrap(), ("resnet", "5".to_string()));
        // Refused: a label (none is served), a model_spec or member of the wrong wire
        // type, a version that is not an integer.
        let label = field(1, &[name.clone(), field(4, b"stable")].concat());
        assert!(tfs_target(&label).unwrap_err().contains("version_label"));
        assert_eq!(
            tfs_target(&[0x08, 0x01]).unwrap_err(),
            "model_spec must be a message"
        );
        let varint_version = field(1, &[0x10, 0x05]);
        assert_eq!(
            tfs_target(&varint_version).unwrap_err(),
            "model_spec fields have the wrong wire type"
        );
        let text_version = field(1, &field(2, &field(1, b"5")));
        assert_eq!(
            tfs_target(&text_version).unwrap_err(),
            "model_spec.version must be an integer"
        );
    }

    #[test]
    fn a_varint_takes_its_tenth_byte_only_for_the_64th_bit() {
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(Reader::new(&max).varint().unwrap(), u64::MAX);
        // A zero tenth byte is a long but valid spelling.
        let mut long = vec![0xff; 9];
        long.push(0x00);
        assert_eq!(Reader::new(&long).varint().unwrap(), u64::MAX >> 1);
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            Reader::new(&over).varint().unwrap_err(),
            "varint overflows 64 bits"
        );
    }

    #[test]
    fn packed_fields_count_their_elements() {
        assert_eq!(packed_count(&[0u8; 12], 4).unwrap(), 3);
        assert_eq!(packed_count(&[0u8; 16], 8).unwrap(), 2);
        assert_eq!(packed_count(&[0x80, 0x01, 0x05], 0).unwrap(), 2);
        assert!(packed_count(&[0u8; 6], 4).is_err());
    }

    #[test]
    fn counts_over_the_bounds_are_refused() {
        let many = ModelInferRequest {
            inputs: vec![InferInputTensor::default(); MAX_TENSORS + 1],
            ..Default::default()
        };
        assert!(infer_request_cost(&many.encode_to_vec()).is_err());
        let deep = ModelInferRequest {
            inputs: vec![InferInputTensor {
                shape: vec![1; MAX_RANK + 1],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(infer_request_cost(&deep.encode_to_vec()).is_err());
        // At each bound a request passes; one more is refused.
        let wide = |tensors: usize, parameters: usize| {
            let m = ModelInferRequest {
                inputs: vec![InferInputTensor::default(); tensors],
                outputs: vec![InferRequestedOutputTensor::default(); tensors],
                parameters: params(parameters),
                ..Default::default()
            };
            infer_request_cost(&m.encode_to_vec())
        };
        assert!(wide(MAX_TENSORS, MAX_PARAMETERS).is_ok());
        assert_eq!(
            wide(MAX_TENSORS, MAX_PARAMETERS + 1).unwrap_err(),
            format!("more than {MAX_PARAMETERS} parameters")
        );
        let outputs = ModelInferRequest {
            outputs: vec![InferRequestedOutputTensor::default(); MAX_TENSORS + 1],
            ..Default::default()
        };
        assert_eq!(
            infer_request_cost(&outputs.encode_to_vec()).unwrap_err(),
            format!("more than {MAX_TENSORS} inputs or outputs")
        );
    }

    #[test]
    fn malformed_wire_is_refused_not_panicked_on() {
        for bad in [
            &[0xff][..],
            &[0x2a, 0x80][..],
            &[0x2a, 0x05, 0x00][..],
            &[0x0b][..],
            &[0x00, 0x00][..],
            &[
                0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ][..],
        ] {
            assert!(infer_request_cost(bad).is_err(), "{bad:?}");
        }
    }
}
