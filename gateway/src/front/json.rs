//! The KServe v2 JSON body codec: JSON tensors in, raw little-endian tensors out (the
//! form the backend takes), and raw results back to JSON.
//!
//! `data` may be flat or nested to any depth up to `limits.max_json_depth`; it is flattened
//! while parsing, without building a generic JSON tree, and each element is checked
//! against the declared datatype's range.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use warden_shared::datatype::{DataType, element_count};
use warden_shared::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use warden_shared::proto::{
    InferParameter, ModelInferRequest, ModelInferResponse, infer_parameter,
};

/// One JSON scalar of a `data` array, as it is read (never stored).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'s> {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    /// A BYTES element.
    Str(&'s str),
}

/// Most entries of a `parameters` object.
pub const MAX_PARAMETERS: usize = 64;
/// Most inputs or requested outputs of one request.
pub const MAX_TENSORS: usize = 1024;
/// Most dimensions of a shape.
pub const MAX_RANK: usize = 64;
/// What one entry of a `parameters` object may hold in memory, for the quota.
const PARAMETER_COST: usize = 96;

/// A JSON array of at most `N` elements: a longer one is refused while it is read,
/// before its excess is allocated.
#[derive(Debug)]
struct Bounded<T, const N: usize>(Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an array of at most {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    if v.len() == N {
                        return Err(de::Error::custom(format!("more than {N} elements")));
                    }
                    v.push(x);
                }
                Ok(Bounded(v))
            }
        }
        d.deserialize_seq(V::<T, N>(std::marker::PhantomData))
    }
}

/// A `parameters` object of at most [`MAX_PARAMETERS`] entries.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, JsonParam>);

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an object of at most {MAX_PARAMETERS} parameters")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut out = HashMap::new();
                while let Some((k, v)) = map.next_entry::<String, JsonParam>()? {
                    if out.len() == MAX_PARAMETERS {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_PARAMETERS} parameters"
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(Params(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Params {
    fn cost(&self) -> usize {
        self.0.keys().map(|k| k.len() + PARAMETER_COST).sum()
    }
}

/// Writes `data` (flat, or nested up to `max_depth`) straight into the raw
/// little-endian form of its datatype: no tree and no element list is built, so the
/// memory a `data` array takes is exactly its raw tensor.
struct EncodeSeed<'a> {
    out: &'a mut BytesMut,
    dtype: DataType,
    depth: usize,
    max_depth: usize,
    /// Elements written so far, and the most the shape allows.
    count: &'a mut usize,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for EncodeSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EncodeSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers, booleans or strings")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::U64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.max_depth {
            return Err(de::Error::custom(format!(
                "data nested deeper than {} levels",
                self.max_depth
            )));
        }
        while seq
            .next_element_seed(EncodeSeed {
                out: self.out,
                dtype: self.dtype,
                depth: self.depth + 1,
                max_depth: self.max_depth,
                count: self.count,
                max: self.max,
            })?
            .is_some()
        {}
        Ok(())
    }
}

impl EncodeSeed<'_> {
    fn push<E: de::Error>(self, s: Scalar<'_>) -> Result<(), E> {
        if self.depth == 0 {
            return Err(E::custom("data must be an array"));
        }
        if *self.count >= self.max {
            return Err(E::custom(format!(
                "data has more elements than the shape's {}",
                self.max
            )));
        }
        put(self.out, self.dtype, s, *self.count).map_err(E::custom)?;
        *self.count += 1;
        Ok(())
    }
}

/// A request or output `parameters` value.
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(untagged)]
pub enum JsonParam {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Deserialize)]
struct JsonInput<'a> {
    name: String,
    shape: Bounded<i64, MAX_RANK>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Params>,
    /// Kept as the body's own bytes until the datatype and shape are known.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct JsonOutputRequest {
    name: String,
    #[serde(default)]
    parameters: Option<Params>,
}

#[derive(Debug, Deserialize)]
struct JsonInferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Params>,
    #[serde(borrow)]
    inputs: Bounded<JsonInput<'a>, MAX_TENSORS>,
    #[serde(default)]
    outputs: Option<Bounded<JsonOutputRequest, MAX_TENSORS>>,
}

/// Why a JSON body was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("request body is not a valid inference request: {0}")]
    Syntax(String),
    #[error("input {input:?}: {message}")]
    Input { input: String, message: String },
    /// The memory the decoded request would take was refused by the quota.
    #[error("{}", .0.message())]
    Refused(crate::refusal::Refusal),
}

fn to_proto_params(p: Option<Params>) -> HashMap<String, InferParameter> {
    p.unwrap_or_default()
        .0
        .into_iter()
        .map(|(k, v)| {
            let choice = match v {
                JsonParam::Bool(b) => infer_parameter::ParameterChoice::BoolParam(b),
                JsonParam::Int(i) => infer_parameter::ParameterChoice::Int64Param(i),
                JsonParam::Float(f) => infer_parameter::ParameterChoice::DoubleParam(f),
                JsonParam::Str(s) => infer_parameter::ParameterChoice::StringParam(s),
            };
            (
                k,
                InferParameter {
                    parameter_choice: Some(choice),
                },
            )
        })
        .collect()
}

/// How the client wants each output back (binary tensor data extension).
#[derive(Debug, Default, Clone)]
pub struct OutputPrefs {
    /// `parameters.binary_data_output` of the request.
    pub binary_by_default: bool,
    /// `parameters.binary_data` of each requested output.
    pub per_output: HashMap<String, bool>,
}

impl OutputPrefs {
    fn binary(&self, name: &str) -> bool {
        self.per_output
            .get(name)
            .copied()
            .unwrap_or(self.binary_by_default)
    }
}

fn param_bool(p: &Option<Params>, key: &str) -> Option<bool> {
    match p.as_ref()?.0.get(key)? {
        JsonParam::Bool(b) => Some(*b),
        _ => None,
    }
}

/// Memory the parsed request's envelope (everything but tensor data) holds.
fn envelope_cost(r: &JsonInferRequest<'_>) -> usize {
    let params = |p: &Option<Params>| p.as_ref().map_or(0, Params::cost);
    let inputs: usize = r
        .inputs
        .0
        .iter()
        .map(|i| {
            std::mem::size_of::<JsonInput>()
                + i.name.len()
                + i.datatype.len()
                + i.shape.0.len() * 8
                + params(&i.parameters)
        })
        .sum();
    let outputs: usize = r.outputs.as_ref().map_or(0, |o| {
        o.0.iter()
            .map(|o| {
                std::mem::size_of::<JsonOutputRequest>() + o.name.len() + params(&o.parameters)
            })
            .sum()
    });
    inputs + outputs + params(&r.parameters) + r.id.as_ref().map_or(0, String::len)
}

/// Where each input's `data` array is in a KServe body: `(input index, span)` for
/// every `"data": [...]` of an object of the top-level `inputs` array, when the array
/// holds no string (numbers, booleans, nesting). `None` (read it all with serde_json)
/// when there is none or the body is not what it seems. Strings elsewhere are skipped
/// whole, so a `"data"` inside one is not taken for a key. Linear, no recursion, and
/// at most [`MAX_TENSORS`] spans.
fn data_spans(json: &[u8]) -> Option<Vec<(usize, Range<usize>)>> {
    let ws = |p: &mut usize| {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = json.get(*p) {
            *p += 1;
        }
    };
    let mut spans = Vec::new();
    let mut depth = 0usize;
    let mut key_at_1: &[u8] = b"";
    let mut in_inputs = false;
    let mut inputs_seen = 0usize;
    let mut p = 0usize;
    while let Some(&b) = json.get(p) {
        match b {
            b'"' => {
                let start = p + 1;
                let mut q = start;
                let end = loop {
                    let k = q + memchr::memchr2(b'"', b'\\', json.get(q..)?)?;
                    if json[k] == b'"' {
                        break k;
                    }
                    q = k + 2;
                };
                p = end + 1;
                ws(&mut p);
                if json.get(p) != Some(&b':') {
                    continue;
                }
                p += 1;
                let key = &json[start..end];
                if depth == 1 {
                    key_at_1 = key;
                }
                if depth == 3 && in_inputs && key == b"data" {
                    ws(&mut p);
                    if json.get(p) == Some(&b'[') {
                        let end = array_end(json, p)?;
                        if inputs_seen == 0 || spans.len() == MAX_TENSORS {
                            return None;
                        }
                        spans.push((inputs_seen - 1, p..end));
                        p = end;
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth == 2 {
                    in_inputs = b == b'[' && key_at_1 == b"inputs";
                }
                if depth == 3 && in_inputs && b == b'{' {
                    inputs_seen += 1;
                }
                p += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                p += 1;
            }
            _ => p += 1,
        }
    }
    Some(spans)
}

/// One past the `]` closing the array that opens at `at`, if it holds no string.
pub(crate) fn array_end(json: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut p = at;
    loop {
        let k = p + memchr::memchr3(b'[', b']', b'"', json.get(p..)?)?;
        match json[k] {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k + 1);
                }
            }
            _ => return None,
        }
        p = k + 1;
    }
}

/// `json` with each span replaced by `[]`; `size` is the result's length.
fn without_spans(json: &[u8], spans: &[(usize, Range<usize>)], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut from = 0;
    for (_, r) in spans {
        out.extend_from_slice(&json[from..r.start]);
        out.extend_from_slice(b"[]");
        from = r.end;
    }
    out.extend_from_slice(&json[from..]);
    out
}

/// Parses a JSON infer request into the socket form, with every tensor as raw bytes.
/// `binary` is the part of the body after the JSON header (binary tensor data
/// extension); inputs with `parameters.binary_data_size` take their bytes from it, in
/// order, and every byte of it must be used.
///
/// Memory: the envelope is bounded (tensors, parameters and dimensions are counted as
/// they are read) and `charge` is told its size once read; each `data` array stays the
/// body's own bytes until `charge` has accepted the exact size of its raw tensor, which
/// is then written in place. So what decoding holds beyond the body is what was charged.
pub fn parse_infer_request(
    json: &[u8],
    binary: Bytes,
    model_name: &str,
    model_version: &str,
    max_elements: usize,
    max_depth: usize,
    charge: &mut dyn FnMut(usize) -> Result<(), crate::refusal::Refusal>,
) -> Result<(ModelInferRequest, OutputPrefs), JsonError> {
    // serde_json reads the envelope; the big `data` arrays are lifted out first, so
    // that only the scanner reads them (once, straight into their tensors).
    let mut spans = data_spans(json).unwrap_or_default();
    let size = json.len() - spans.iter().map(|(_, r)| r.len() - 2).sum::<usize>();
    // The lifted envelope is a copy, charged to the quota: worth it when the arrays are
    // most of the body, as in any real request. A body that is mostly something else
    // (padding, long strings around a small tensor) is read as it is, without a copy.
    if size > json.len() / 2 {
        spans.clear();
    }
    let lifted;
    let envelope = if spans.is_empty() {
        json
    } else {
        charge(size).map_err(JsonError::Refused)?;
        lifted = without_spans(json, &spans, size);
        &lifted[..]
    };
    let mut spans = spans.into_iter().peekable();
    let parsed: JsonInferRequest<'_> =
        serde_json::from_slice(envelope).map_err(|e| JsonError::Syntax(e.to_string()))?;
    charge(envelope_cost(&parsed)).map_err(JsonError::Refused)?;
    let mut inputs = Vec::with_capacity(parsed.inputs.0.len());
    let mut raw = Vec::with_capacity(parsed.inputs.0.len());
    let mut offset = 0usize;
    for (index, input) in parsed.inputs.0.into_iter().enumerate() {
        let data = match spans.next_if(|(i, _)| *i == index) {
            // Lifted: the data's own text, ASCII (no string was in it).
            Some((_, r)) => Some(
                std::str::from_utf8(&json[r])
                    .map_err(|_| JsonError::Syntax("data is not valid JSON".into()))?,
            ),
            None => input.data.map(RawValue::get),
        };
        let err = |message: String| JsonError::Input {
            input: input.name.chars().take(64).collect(),
            message,
        };
        let datatype: DataType = input.datatype.parse().map_err(|e| err(format!("{e}")))?;
        let shape = input.shape.0;
        let count = element_count(&shape).map_err(|e| err(e.to_string()))?;
        if count > max_elements {
            return Err(err(format!(
                "shape {shape:?} has more than {max_elements} elements"
            )));
        }
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.0.get("binary_data_size"))
        {
            None => None,
            Some(JsonParam::Int(n)) if *n >= 0 => Some(*n as usize),
            Some(_) => return Err(err("binary_data_size must be a non-negative integer".into())),
        };
        let bytes = match (binary_size, data) {
            (Some(_), Some(_)) => return Err(err("has both data and binary_data_size".into())),
            (None, None) => return Err(err("has neither data nor binary_data_size".into())),
            (Some(size), None) => {
                let end = offset
                    .checked_add(size)
                    .filter(|&e| e <= binary.len())
                    .ok_or_else(|| {
                        err(format!(
                            "binary_data_size {size} runs past the {} binary bytes sent",
                            binary.len()
                        ))
                    })?;
                let chunk = binary.slice(offset..end);
                offset = end;
                crate::front::tensor::check_raw(datatype, count, &chunk).map_err(err)?;
                chunk
            }
            (None, Some(data)) => {
                // BYTES: a 4-byte length per element plus its text, which is never
                // longer than its JSON spelling.
                let size = match datatype.element_size() {
                    Some(size) => count * size,
                    None => count * 4 + data.len(),
                };
                charge(size).map_err(JsonError::Refused)?;
                let written;
                let out = if datatype.element_size().is_some() {
                    // Numbers: the hand-written scanner, straight into the raw tensor.
                    let mut out = Vec::with_capacity(size);
                    written = crate::front::jsondata::read_numeric(
                        data.as_bytes(),
                        datatype,
                        max_depth,
                        count,
                        &mut out,
                    )
                    .map_err(err)?;
                    Bytes::from(out)
                } else {
                    // Strings, with JSON's escapes: serde_json's reader.
                    let mut out = BytesMut::with_capacity(size);
                    let mut n = 0usize;
                    let mut de = serde_json::Deserializer::from_str(data);
                    EncodeSeed {
                        out: &mut out,
                        dtype: datatype,
                        depth: 0,
                        max_depth,
                        count: &mut n,
                        max: count,
                    }
                    .deserialize(&mut de)
                    .map_err(|e| err(e.to_string()))?;
                    written = n;
                    out.freeze()
                };
                if written != count {
                    return Err(err(format!(
                        "shape {shape:?} holds {count} elements but data has {written}"
                    )));
                }
                out
            }
        };
        raw.push(bytes);
        inputs.push(InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape,
            parameters: to_proto_params(input.parameters.map(|mut p| {
                p.0.remove("binary_data_size");
                p
            })),
            contents: None,
        });
    }
    if offset != binary.len() {
        return Err(JsonError::Syntax(format!(
            "{} binary bytes sent but inputs use {offset}",
            binary.len()
        )));
    }
    let mut prefs = OutputPrefs {
        binary_by_default: param_bool(&parsed.parameters, "binary_data_output").unwrap_or(false),
        per_output: HashMap::new(),
    };
    let mut outputs = Vec::new();
    for o in parsed.outputs.map(|o| o.0).unwrap_or_default() {
        if let Some(b) = param_bool(&o.parameters, "binary_data") {
            prefs.per_output.insert(o.name.clone(), b);
        }
        outputs.push(InferRequestedOutputTensor {
            name: o.name,
            parameters: HashMap::new(),
        });
    }
    let mut parameters = parsed.parameters;
    if let Some(p) = parameters.as_mut() {
        p.0.remove("binary_data_output");
    }
    Ok((
        ModelInferRequest {
            model_name: model_name.to_owned(),
            model_version: model_version.to_owned(),
            id: parsed.id.unwrap_or_default(),
            parameters: to_proto_params(parameters),
            inputs,
            outputs,
            raw_input_contents: raw,
        },
        prefs,
    ))
}

fn as_i128(s: Scalar<'_>) -> Option<i128> {
    match s {
        Scalar::I64(v) => Some(v.into()),
        Scalar::U64(v) => Some(v.into()),
        Scalar::F64(f) if f.fract() == 0.0 && f.is_finite() => Some(f as i128),
        Scalar::Bool(b) => Some(b.into()),
        Scalar::F64(_) | Scalar::Str(_) => None,
    }
}

fn as_f64(s: Scalar<'_>) -> Option<f64> {
    match s {
        Scalar::I64(v) => Some(v as f64),
        Scalar::U64(v) => Some(v as f64),
        Scalar::F64(f) => Some(f),
        Scalar::Bool(_) | Scalar::Str(_) => None,
    }
}

/// Appends element `i`, checked against `dtype`'s range, in its raw little-endian form.
pub(crate) fn put(
    out: &mut impl BufMut,
    dtype: DataType,
    s: Scalar<'_>,
    i: usize,
) -> Result<(), String> {
    macro_rules! int {
        ($t:ty, $put:ident) => {{
            let v = as_i128(s)
                .and_then(|v| <$t>::try_from(v).ok())
                .ok_or_else(|| format!("element {i} is not a valid {}", dtype))?;
            out.$put(v);
        }};
    }
    match dtype {
        DataType::Bytes => {
            let Scalar::Str(s) = s else {
                return Err(format!("element {i} of a BYTES tensor is not a string"));
            };
            let len = u32::try_from(s.len()).map_err(|_| format!("element {i} is too long"))?;
            out.put_u32_le(len);
            out.put_slice(s.as_bytes());
        }
        DataType::Bool => {
            let v = match s {
                Scalar::Bool(b) => b,
                Scalar::I64(0) | Scalar::U64(0) => false,
                Scalar::I64(1) | Scalar::U64(1) => true,
                _ => return Err(format!("element {i} is not a BOOL")),
            };
            out.put_u8(v.into());
        }
        DataType::U8 => int!(u8, put_u8),
        DataType::I8 => int!(i8, put_i8),
        DataType::U16 => int!(u16, put_u16_le),
        DataType::I16 => int!(i16, put_i16_le),
        DataType::U32 => int!(u32, put_u32_le),
        DataType::I32 => int!(i32, put_i32_le),
        DataType::U64 => int!(u64, put_u64_le),
        DataType::I64 => int!(i64, put_i64_le),
        DataType::F16 | DataType::Bf16 | DataType::F32 | DataType::F64 => {
            let v = as_f64(s).ok_or_else(|| format!("element {i} is not a number"))?;
            // A finite number that rounds to infinity is out of the datatype's range
            // (as in the `data` scanner).
            let check = |finite: bool| {
                finite
                    .then_some(())
                    .ok_or_else(|| format!("element {i} is out of range for {dtype}"))
            };
            match dtype {
                DataType::F16 => {
                    let h = half::f16::from_f64(v);
                    check(h.is_finite())?;
                    out.put_u16_le(h.to_bits());
                }
                DataType::Bf16 => {
                    let h = half::bf16::from_f64(v);
                    check(h.is_finite())?;
                    out.put_u16_le(h.to_bits());
                }
                DataType::F32 => {
                    check((v as f32).is_finite())?;
                    out.put_f32_le(v as f32);
                }
                _ => {
                    check(v.is_finite())?;
                    out.put_f64_le(v);
                }
            }
        }
    }
    Ok(())
}

/// The backend's response `parameters` (such as `model_digest`) as JSON values.
fn from_proto_params(
    p: &HashMap<String, InferParameter>,
) -> serde_json::Map<String, serde_json::Value> {
    use infer_parameter::ParameterChoice as C;
    p.iter()
        .filter_map(|(k, v)| {
            let value = match v.parameter_choice.as_ref()? {
                C::BoolParam(b) => serde_json::Value::from(*b),
                C::Int64Param(i) => serde_json::Value::from(*i),
                C::Uint64Param(u) => serde_json::Value::from(*u),
                C::DoubleParam(d) => serde_json::Value::from(*d),
                C::StringParam(s) => serde_json::Value::from(s.as_str()),
            };
            Some((k.clone(), value))
        })
        .collect()
}

/// Appends `v` as JSON (strings escaped as serde_json escapes them).
pub(crate) fn json_text<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), String> {
    serde_json::to_writer(out, v).map_err(|e| e.to_string())
}

/// A rendered response: the body, and the JSON header's length when binary outputs
/// follow it (`Inference-Header-Content-Length`).
#[derive(Debug)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// Renders the backend's answer as a KServe v2 response, JSON or JSON + binary.
pub fn render_infer_response(
    resp: &ModelInferResponse,
    prefs: &OutputPrefs,
) -> Result<Rendered, String> {
    if resp.outputs.len() != resp.raw_output_contents.len() {
        return Err("backend answered with mismatched outputs".into());
    }
    // Written by hand, in the order and spelling serde's derive gave: only `data`
    // arrays are big, and they are written straight from the raw tensors.
    let mut body = Vec::with_capacity(
        256 + resp
            .raw_output_contents
            .iter()
            .map(|r| r.len() * 4)
            .sum::<usize>(),
    );
    let mut tail: Vec<&[u8]> = Vec::new();
    body.extend_from_slice(b"{\"model_name\":");
    json_text(&mut body, resp.model_name.as_str())?;
    body.extend_from_slice(b",\"model_version\":");
    json_text(&mut body, resp.model_version.as_str())?;
    if !resp.id.is_empty() {
        body.extend_from_slice(b",\"id\":");
        json_text(&mut body, resp.id.as_str())?;
    }
    let parameters = from_proto_params(&resp.parameters);
    if !parameters.is_empty() {
        body.extend_from_slice(b",\"parameters\":");
        json_text(&mut body, &parameters)?;
    }
    body.extend_from_slice(b",\"outputs\":[");
    for (k, (o, raw)) in resp
        .outputs
        .iter()
        .zip(&resp.raw_output_contents)
        .enumerate()
    {
        let dtype: DataType = o.datatype.parse().map_err(|e| format!("{e}"))?;
        if k > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"name\":");
        json_text(&mut body, o.name.as_str())?;
        body.extend_from_slice(b",\"datatype\":");
        json_text(&mut body, o.datatype.as_str())?;
        body.extend_from_slice(b",\"shape\":");
        json_text(&mut body, o.shape.as_slice())?;
        if prefs.binary(&o.name) {
            body.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            body.extend_from_slice(itoa::Buffer::new().format(raw.len()).as_bytes());
            body.push(b'}');
            tail.push(raw);
        } else {
            body.extend_from_slice(b",\"data\":");
            crate::front::jsondata::write_array(&mut body, dtype, raw)?;
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    if tail.is_empty() {
        return Ok(Rendered {
            body,
            json_len: None,
        });
    }
    let json_len = body.len();
    body.reserve(tail.iter().map(|t| t.len()).sum());
    for t in tail {
        body.extend_from_slice(t);
    }
    Ok(Rendered {
        body,
        json_len: Some(json_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_charge(_: usize) -> Result<(), crate::refusal::Refusal> {
        Ok(())
    }

    fn req(body: &str) -> Result<ModelInferRequest, JsonError> {
        parse_infer_request(
            body.as_bytes(),
            Bytes::new(),
            "m",
            "",
            1 << 20,
            32,
            &mut no_charge,
        )
        .map(|(r, _)| r)
    }

    #[test]
    fn nested_and_flat_data_encode_the_same() {
        let flat =
            req(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}]}"#)
                .unwrap();
        let nested = req(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[3,4]]}]}"#,
        )
        .unwrap();
        assert_eq!(flat.raw_input_contents, nested.raw_input_contents);
        let expect: Vec<u8> = [1f32, 2.5, 3., 4.]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        assert_eq!(flat.raw_input_contents[0].as_ref(), &expect[..]);
    }

    #[test]
    fn data_is_found_wherever_it_is() {
        let int8 = |body: &str, bin: &[u8]| {
            parse_infer_request(
                body.as_bytes(),
                Bytes::copy_from_slice(bin),
                "m",
                "",
                100,
                32,
                &mut no_charge,
            )
            .map(|(r, _)| {
                r.raw_input_contents
                    .iter()
                    .map(|b| b.to_vec())
                    .collect::<Vec<_>>()
            })
        };
        // Before its datatype; "data" inside strings; an escaped key; nested rows.
        let body = r#"{"id":"\"data\":[9]","inputs":[{"data":[[1],[2]],"name":"x","shape":[2,1],"datatype":"INT8","parameters":{"note":"\"data\": [5]"}},
                       {"name":"y","shape":[1],"datatype":"INT8","d\u0061ta":[4]}],"outputs":[{"name":"data"}]}"#;
        assert_eq!(int8(body, &[]).unwrap(), vec![vec![1, 2], vec![4]]);
        // Inputs without data do not shift the others.
        let body = r#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":1}},
                                 {"name":"b","shape":[1],"datatype":"INT8","data":[6]}]}"#;
        assert_eq!(int8(body, &[9]).unwrap(), vec![vec![9], vec![6]]);
        // Strings in one data array: all read by serde_json, the same.
        let body = r#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":[3]},
                                 {"name":"s","shape":[1],"datatype":"BYTES","data":["]"]}]}"#;
        assert_eq!(
            int8(body, &[]).unwrap(),
            vec![vec![3], vec![1, 0, 0, 0, b']']]
        );
        for bad in [
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[1],"data":[2]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[1 2]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[1]]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[1]}}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[1],"parameters":{"binary_data_size":1}}]}"#,
        ] {
            assert!(int8(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_are_checked() {
        assert!(
            req(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[256]}]}"#)
                .is_err()
        );
        assert!(
            req(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[-129]}]}"#)
                .is_err()
        );
        assert!(
            req(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]}"#)
                .is_err()
        );
        assert!(req(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[-9223372036854775808]}]}"#).is_ok());
        assert!(
            req(r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[1]}]}"#).is_err()
        );
        assert!(
            req(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP33","data":[1]}]}"#).is_err()
        );
        assert!(
            req(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":1}]}"#).is_err()
        );
    }

    #[test]
    fn depth_and_count_are_bounded() {
        let deep = format!(
            r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(req(&deep).is_err());
        let many = format!(
            r#"{{"inputs":[{{"name":"x","shape":[11],"datatype":"FP32","data":[{}]}}]}}"#,
            ["1"; 11].join(",")
        );
        assert!(
            parse_infer_request(
                many.as_bytes(),
                Bytes::new(),
                "m",
                "",
                10,
                32,
                &mut no_charge
            )
            .is_err()
        );
        assert!(
            parse_infer_request(
                many.as_bytes(),
                Bytes::new(),
                "m",
                "",
                11,
                32,
                &mut no_charge
            )
            .is_ok()
        );
    }

    #[test]
    fn response_round_trip() {
        let raw: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let resp = ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: "abc".into(),
            parameters: Default::default(),
            outputs: vec![
                warden_shared::proto::model_infer_response::InferOutputTensor {
                    name: "y".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 2],
                    parameters: Default::default(),
                    contents: None,
                },
            ],
            raw_output_contents: vec![Bytes::from(raw)],
        };
        let r = render_infer_response(&resp, &OutputPrefs::default()).unwrap();
        assert_eq!(r.json_len, None);
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json["id"], "abc");
        assert!(
            json.get("parameters").is_none(),
            "no empty parameters object"
        );
        let mut with_digest = resp.clone();
        with_digest.parameters.insert(
            "model_digest".into(),
            InferParameter {
                parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(
                    "sha256:ab".into(),
                )),
            },
        );
        let r2 = render_infer_response(&with_digest, &OutputPrefs::default()).unwrap();
        let json2: serde_json::Value = serde_json::from_slice(&r2.body).unwrap();
        assert_eq!(json2["parameters"]["model_digest"], "sha256:ab");
        assert_eq!(json["outputs"][0]["data"], serde_json::json!([0.5, -1.0]));
        let prefs = OutputPrefs {
            binary_by_default: true,
            per_output: HashMap::new(),
        };
        let r = render_infer_response(&resp, &prefs).unwrap();
        let n = r.json_len.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(json["outputs"][0].get("data").is_none());
        assert_eq!(&r.body[n..], &resp.raw_output_contents[0][..]);
    }

    #[test]
    fn only_bodies_made_mostly_of_their_arrays_are_copied_around_them() {
        let charged = |body: &[u8]| {
            let mut total = 0;
            let (r, _) = parse_infer_request(body, Bytes::new(), "m", "", 1 << 20, 32, &mut |n| {
                total += n;
                Ok(())
            })
            .unwrap();
            assert_eq!(r.raw_input_contents[0].len(), 16);
            total
        };
        let small = br#"{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        // Padded to 100 kB around a 4-element tensor: read in place, nothing like the
        // body's size charged again (the quota would refuse a body just under it).
        let mut padded = small.to_vec();
        padded.resize(100_000, b' ');
        assert!(charged(&padded) < 2_000, "charged {}", charged(&padded));
        // An array that is most of the body: the envelope is lifted, and its copy charged.
        let data = vec!["0.5"; 10_000].join(",");
        let big = format!(
            r#"{{"inputs":[{{"name":"x","shape":[10000],"datatype":"FP32","data":[{data}]}}]}}"#
        );
        let mut total = 0;
        parse_infer_request(
            big.as_bytes(),
            Bytes::new(),
            "m",
            "",
            1 << 20,
            32,
            &mut |n| {
                total += n;
                Ok(())
            },
        )
        .unwrap();
        assert!(total >= 40_000, "the tensor's bytes at least: {total}");
    }

    #[test]
    fn binary_inputs_are_sliced_in_order_and_must_use_every_byte() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
                                  {"name":"b","shape":[1],"datatype":"UINT8","parameters":{"binary_data_size":1}}]}"#;
        let bin = Bytes::from(vec![0u8, 0, 128, 63, 0, 0, 0, 64, 9]);
        let (r, _) =
            parse_infer_request(json, bin.clone(), "m", "", 100, 32, &mut no_charge).unwrap();
        assert_eq!(r.raw_input_contents[0].as_ref(), &bin[..8]);
        assert_eq!(r.raw_input_contents[1].as_ref(), &[9]);
        assert!(
            r.inputs[0].parameters.is_empty(),
            "binary_data_size is consumed, not forwarded"
        );
        let mut longer = bin.to_vec();
        longer.push(1);
        assert!(
            parse_infer_request(json, Bytes::from(longer), "m", "", 100, 32, &mut no_charge)
                .is_err(),
            "trailing bytes"
        );
        assert!(
            parse_infer_request(json, bin.slice(..8), "m", "", 100, 32, &mut no_charge).is_err(),
            "short"
        );
        let wrong = br#"{"inputs":[{"name":"a","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        assert!(
            parse_infer_request(wrong, bin.slice(..8), "m", "", 100, 32, &mut no_charge).is_err(),
            "size vs shape"
        );
    }

    #[test]
    fn fp64_values_are_exact() {
        // Found by the FP64 round-trip property: serde_json's default float parser was
        // one ULP off for this value (fixed with its `float_roundtrip` feature).
        for v in [
            4.096948294495101e-251f64,
            0.1,
            1.7976931348623157e308,
            5e-324,
        ] {
            let r = req(&format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP64","data":[{v:e}]}}]}}"#
            ))
            .unwrap();
            assert_eq!(r.raw_input_contents[0].as_ref(), &v.to_le_bytes(), "{v:e}");
        }
    }

    #[test]
    fn bytes_tensors_use_length_prefixes() {
        let r = req(r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["ab",""]}]}"#)
            .unwrap();
        assert_eq!(
            r.raw_input_contents[0].as_ref(),
            &[2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
        );
        assert!(
            req(r#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","data":[1]}]}"#).is_err()
        );
    }
}

/// Round trips for every datatype: JSON values are encoded to the raw form the backend
/// takes, and rendering that raw form as JSON gives back the same values.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn no_charge(_: usize) -> Result<(), crate::refusal::Refusal> {
        Ok(())
    }
    use warden_shared::proto::model_infer_response::InferOutputTensor;

    /// JSON body -> raw -> JSON response; returns the request's raw buffer and the
    /// response's `data` array.
    fn round_trip(dtype: &str, data: serde_json::Value) -> (Bytes, Vec<serde_json::Value>) {
        let n = data.as_array().map_or(0, Vec::len);
        let body = serde_json::json!({"inputs": [{"name": "x", "shape": [n], "datatype": dtype, "data": data}]});
        let (req, _) = parse_infer_request(
            &serde_json::to_vec(&body).unwrap(),
            Bytes::new(),
            "m",
            "",
            1 << 20,
            32,
            &mut no_charge,
        )
        .unwrap_or_else(|e| panic!("{dtype} {body}: {e}"));
        let raw = req.raw_input_contents[0].clone();
        let resp = ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            parameters: Default::default(),
            outputs: vec![InferOutputTensor {
                name: "x".into(),
                datatype: dtype.into(),
                shape: vec![n as i64],
                parameters: Default::default(),
                contents: None,
            }],
            raw_output_contents: vec![raw.clone()],
        };
        let r = render_infer_response(&resp, &OutputPrefs::default()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let out = v["outputs"][0]["data"].as_array().unwrap().clone();
        assert_eq!(out.len(), n);
        (raw, out)
    }

    macro_rules! int_round_trip {
        ($name:ident, $t:ty, $dtype:literal) => {
            proptest! {
                #[test]
                fn $name(values in proptest::collection::vec(any::<$t>(), 0..64)) {
                    let (raw, out) = round_trip($dtype, serde_json::json!(values));
                    let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                    prop_assert_eq!(raw.as_ref(), &le[..]);
                    let back: Vec<$t> = out.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
                    prop_assert_eq!(back, values);
                }
            }
        };
    }
    int_round_trip!(uint8, u8, "UINT8");
    int_round_trip!(uint16, u16, "UINT16");
    int_round_trip!(uint32, u32, "UINT32");
    int_round_trip!(uint64, u64, "UINT64");
    int_round_trip!(int8, i8, "INT8");
    int_round_trip!(int16, i16, "INT16");
    int_round_trip!(int32, i32, "INT32");
    int_round_trip!(int64, i64, "INT64");

    proptest! {
        #[test]
        fn bool_round_trip(values in proptest::collection::vec(any::<bool>(), 0..64)) {
            let (raw, out) = round_trip("BOOL", serde_json::json!(values));
            prop_assert_eq!(raw.iter().map(|&b| b == 1).collect::<Vec<_>>(), values.clone());
            prop_assert_eq!(out.iter().map(|v| v.as_bool().unwrap()).collect::<Vec<_>>(), values);
        }

        #[test]
        fn fp32_round_trip(values in proptest::collection::vec(any::<f32>().prop_filter("finite", |f| f.is_finite()), 0..64)) {
            let (raw, out) = round_trip("FP32", serde_json::json!(values));
            let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            prop_assert_eq!(raw.as_ref(), &le[..]);
            for (v, o) in values.iter().zip(&out) {
                prop_assert_eq!((o.as_f64().unwrap() as f32).to_bits(), v.to_bits());
            }
        }

        #[test]
        fn fp64_round_trip(values in proptest::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 0..64)) {
            let (raw, out) = round_trip("FP64", serde_json::json!(values));
            let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            prop_assert_eq!(raw.as_ref(), &le[..]);
            for (v, o) in values.iter().zip(&out) {
                prop_assert_eq!(o.as_f64().unwrap().to_bits(), v.to_bits());
            }
        }

        #[test]
        fn fp16_round_trip(bits in proptest::collection::vec(any::<u16>(), 0..64)) {
            let values: Vec<half::f16> = bits.iter().map(|&b| half::f16::from_bits(b)).filter(|f| f.is_finite()).collect();
            let json: Vec<f32> = values.iter().map(|f| f.to_f32()).collect();
            let (raw, out) = round_trip("FP16", serde_json::json!(json));
            let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            prop_assert_eq!(raw.as_ref(), &le[..]);
            for (v, o) in values.iter().zip(&out) {
                prop_assert_eq!(half::f16::from_f64(o.as_f64().unwrap()).to_bits(), v.to_bits());
            }
        }

        #[test]
        fn bf16_round_trip(bits in proptest::collection::vec(any::<u16>(), 0..64)) {
            let values: Vec<half::bf16> = bits.iter().map(|&b| half::bf16::from_bits(b)).filter(|f| f.is_finite()).collect();
            let json: Vec<f32> = values.iter().map(|f| f.to_f32()).collect();
            let (raw, out) = round_trip("BF16", serde_json::json!(json));
            let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            prop_assert_eq!(raw.as_ref(), &le[..]);
            for (v, o) in values.iter().zip(&out) {
                prop_assert_eq!(half::bf16::from_f64(o.as_f64().unwrap()).to_bits(), v.to_bits());
            }
        }

        #[test]
        fn bytes_round_trip(values in proptest::collection::vec(".{0,40}", 0..16)) {
            let (raw, out) = round_trip("BYTES", serde_json::json!(values));
            let items = crate::front::tensor::split_bytes_elements(&raw).unwrap();
            prop_assert_eq!(items.len(), values.len());
            for ((item, v), o) in items.iter().zip(&values).zip(&out) {
                prop_assert_eq!(*item, v.as_bytes());
                prop_assert_eq!(o.as_str().unwrap(), v.as_str());
            }
        }

        /// Binary tensor data: any raw buffer of the right length goes through untouched
        /// and comes back byte for byte in a binary response.
        #[test]
        fn binary_round_trip(which in 0usize..13, n in 0usize..32, seed in any::<u64>()) {
            let dtypes = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32", "FP64"];
            let dtype = dtypes[which];
            let size = dtype.parse::<DataType>().unwrap().element_size().unwrap();
            let mut x = seed;
            let raw: Vec<u8> = (0..n * size).map(|_| { x = x.wrapping_mul(6364136223846793005).wrapping_add(1); (x >> 56) as u8 }).collect();
            let json = serde_json::json!({"inputs": [{"name": "x", "shape": [n], "datatype": dtype, "parameters": {"binary_data_size": raw.len()}}],
                                          "parameters": {"binary_data_output": true}});
            let (req, prefs) = parse_infer_request(&serde_json::to_vec(&json).unwrap(), Bytes::from(raw.clone()), "m", "", 1 << 20, 32, &mut no_charge).unwrap();
            prop_assert_eq!(req.raw_input_contents[0].as_ref(), &raw[..]);
            let resp = ModelInferResponse {
                outputs: vec![InferOutputTensor { name: "x".into(), datatype: dtype.into(), shape: vec![n as i64], parameters: Default::default(), contents: None }],
                raw_output_contents: req.raw_input_contents.clone(),
                ..Default::default()
            };
            let r = render_infer_response(&resp, &prefs).unwrap();
            let at = r.json_len.unwrap();
            prop_assert_eq!(&r.body[at..], &raw[..]);
        }
    }
}
