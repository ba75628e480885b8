//! The TensorFlow Serving REST API's JSON, as OVMS implements it: the row
//! (`{"instances": [...]}`) and columnar (`{"inputs": ...}`) predict formats, with
//! named inputs and `{"b64": "..."}` binary strings; answers as `{"predictions": ...}`
//! and `{"outputs": ...}`; model status and metadata as TFS prints them.
//!
//! TFS JSON carries no datatypes: each input takes the datatype the model's metadata
//! gives it. Numeric inputs are read with no JSON tree: the body's structure is read in
//! place (each value's text) and each numeric array straight into its raw tensor, charged
//! first at a bound on its elements. String inputs and scalars go through a tree,
//! charged first at [`TREE_COST_PER_BYTE`] per byte of their text (a bound on what a
//! tree takes per byte of JSON).

use crate::front::json::{self, Scalar};
use crate::front::jsondata;
use crate::front::tensor;
use crate::refusal::Refusal;
use base64::Engine;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use warden_shared::datatype::DataType;
use warden_shared::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use warden_shared::proto::model_metadata_response::TensorMetadata;
use warden_shared::proto::{ModelInferRequest, ModelInferResponse, ModelMetadataResponse};

/// Most bytes a parsed JSON tree takes per byte of its text (a one-element array
/// `[1],` is four bytes of text and about two hundred of tree).
pub const TREE_COST_PER_BYTE: usize = 64;

/// Which predict format a request used; the answer uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `instances`: one entry per batch item; answered as `predictions`.
    Row,
    /// `inputs`: one tensor per input; answered as `outputs`.
    Columnar,
}

/// Why a predict body was refused: a client error, or the quota.
#[derive(Debug)]
pub enum PredictError {
    Invalid(String),
    Refused(Refusal),
}

impl From<String> for PredictError {
    fn from(s: String) -> Self {
        PredictError::Invalid(s)
    }
}

/// A `{"b64": "..."}` binary string, if `v` is one.
fn b64(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("b64"),
        _ => None,
    }
}

/// The shape of a nested JSON array, following first elements (a binary string is a
/// scalar). Regularity is checked while writing.
fn shape_of(v: &Value, max_depth: usize) -> Result<Vec<i64>, String> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(a) = cur {
        if shape.len() >= max_depth {
            return Err(format!("data nested deeper than {max_depth} levels"));
        }
        shape.push(a.len() as i64);
        match a.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    Ok(shape)
}

/// A raw tensor being written; its buffer is charged to the quota before it grows.
struct Writer<'c, 'q> {
    dtype: DataType,
    out: Vec<u8>,
    count: usize,
    max: usize,
    /// Bytes charged for `out` so far: its capacity, at least.
    charged: usize,
    charge: &'c mut (dyn FnMut(usize) -> Result<(), Refusal> + Send + 'q),
}

impl Writer<'_, '_> {
    /// Writes `v`, which must have `shape` exactly.
    fn write(&mut self, v: &Value, shape: &[i64]) -> Result<(), PredictError> {
        match (v, shape.split_first()) {
            (Value::Array(a), Some((&n, rest))) => {
                if a.len() as i64 != n {
                    return Err(irregular());
                }
                a.iter().try_for_each(|x| self.write(x, rest))
            }
            (Value::Array(_), None) | (_, Some(_)) => Err(irregular()),
            (scalar, None) => self.scalar(scalar),
        }
    }

    /// Makes room for `extra` more bytes, charging the growth first (geometric, so
    /// the charges are few).
    fn reserve(&mut self, extra: usize) -> Result<(), PredictError> {
        let need = self.out.len().saturating_add(extra);
        if need > self.charged {
            let target = need.max(self.charged.saturating_mul(2)).max(64 << 10);
            (self.charge)(target - self.charged).map_err(PredictError::Refused)?;
            self.charged = target;
            self.out.reserve_exact(target - self.out.len());
        }
        Ok(())
    }

    fn scalar(&mut self, v: &Value) -> Result<(), PredictError> {
        if self.count >= self.max {
            return Err(format!("more than {} elements", self.max).into());
        }
        let i = self.count;
        match (v, b64(v)) {
            (_, Some(Value::String(text))) => {
                if self.dtype != DataType::Bytes {
                    return Err(format!(
                        "element {i}: binary ({{\"b64\": ...}}) values are taken only by string inputs, this one is {}",
                        self.dtype
                    )
                    .into());
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| format!("element {i}: b64 is not valid base64"))?;
                let len =
                    u32::try_from(bytes.len()).map_err(|_| format!("element {i} is too long"))?;
                self.reserve(4 + bytes.len())?;
                self.out.extend_from_slice(&len.to_le_bytes());
                self.out.extend_from_slice(&bytes);
            }
            (_, Some(_)) => return Err(format!("element {i}: b64 must be a string").into()),
            (Value::Bool(b), _) => {
                self.reserve(8)?;
                json::put(&mut self.out, self.dtype, Scalar::Bool(*b), i)?
            }
            (Value::Number(n), _) => {
                let s = if let Some(x) = n.as_i64() {
                    Scalar::I64(x)
                } else if let Some(x) = n.as_u64() {
                    Scalar::U64(x)
                } else {
                    Scalar::F64(n.as_f64().unwrap_or(f64::NAN))
                };
                self.reserve(8)?;
                json::put(&mut self.out, self.dtype, s, i)?
            }
            (Value::String(s), _) => {
                self.reserve(4 + s.len())?;
                json::put(&mut self.out, self.dtype, Scalar::Str(s), i)?
            }
            _ => return Err(format!("element {i} is not a number, boolean or string").into()),
        }
        self.count += 1;
        Ok(())
    }
}

fn irregular() -> PredictError {
    PredictError::Invalid("the data is not a regular (rectangular) array".into())
}

/// The datatype an input takes, from the model's metadata.
fn input_type(meta: &ModelMetadataResponse, name: &str) -> Result<DataType, String> {
    let t = meta.inputs.iter().find(|t| t.name == name).ok_or_else(|| {
        format!(
            "the model has no input {:?}",
            name.chars().take(64).collect::<String>()
        )
    })?;
    t.datatype.parse().map_err(|e| format!("{e}"))
}

/// The model's only input, for unnamed data.
fn only_input(meta: &ModelMetadataResponse) -> Result<&TensorMetadata, String> {
    match meta.inputs.as_slice() {
        [one] => Ok(one),
        _ => Err(format!(
            "the model has {} inputs: name them",
            meta.inputs.len()
        )),
    }
}

/// Limits a parse works under.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_elements: usize,
    pub max_depth: usize,
}

/// One input of a predict body, as the body spells it.
struct Input<'a> {
    name: String,
    dtype: DataType,
    /// Its value's text; for [`Layout::Stacked`], its value's text in each instance.
    values: Vec<&'a str>,
    layout: Layout,
}

/// How an input's values make its tensor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The value is the tensor (columnar format).
    Whole,
    /// The value is the list of instances of the only input (row format): the list is
    /// the batch dimension, each instance nests as deep as a whole tensor may.
    Instances,
    /// One value per instance, stacked on a new first dimension (row format, named).
    Stacked,
}

/// The keys of a JSON object, each with its value's text; `None` if `v` is not an
/// object (or is a `{"b64": ...}` binary string, a scalar).
fn object(v: &str) -> Option<BTreeMap<String, &str>> {
    if !v.starts_with('{') {
        return None;
    }
    let m: BTreeMap<String, &RawValue> = serde_json::from_str(v).ok()?;
    (!(m.len() == 1 && m.contains_key("b64")))
        .then(|| m.into_iter().map(|(k, v)| (k, v.get())).collect())
}

/// Parses a TFS predict body into the backend's request, with no JSON tree for
/// numeric inputs: the body's structure is read in place, and each numeric array
/// straight into its raw tensor (charged first at a bound: every element takes at
/// least one character and a separator). String inputs, scalars, and any input the
/// fast reader refuses (for the reference reader's message) go through a tree,
/// charged first at [`TREE_COST_PER_BYTE`] per byte of its text.
///
/// The top-level keys are found without reading their values ([`envelope`]); each
/// value is then read, and so checked, by the reader of its kind. A body that is
/// refused and is not valid JSON gets the JSON error, as if it had been read whole
/// first.
pub fn parse_predict(
    body: &[u8],
    meta: &ModelMetadataResponse,
    model: &str,
    version: &str,
    bounds: Bounds,
    charge: &mut (dyn FnMut(usize) -> Result<(), Refusal> + Send + '_),
) -> Result<(ModelInferRequest, Format), PredictError> {
    let Some(top) = envelope(body) else {
        return predict(
            reference_envelope(body)?,
            meta,
            model,
            version,
            bounds,
            charge,
        );
    };
    predict(top, meta, model, version, bounds, charge).map_err(|e| match reference_envelope(body) {
        Err(invalid) => invalid,
        Ok(_) => e,
    })
}

/// The top-level keys of a body and their values' text, read by serde_json (which
/// checks every value).
fn reference_envelope(body: &[u8]) -> Result<BTreeMap<String, &str>, PredictError> {
    let top: BTreeMap<String, &RawValue> = serde_json::from_slice(body).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            "the request must be a JSON object".to_string()
        } else {
            format!("request body is not valid JSON: {e}")
        }
    })?;
    Ok(top.into_iter().map(|(k, v)| (k, v.get())).collect())
}

/// The top-level keys of a JSON object and their values' text, found without reading
/// the values: a string is skipped to its closing quote, an array or object to the
/// bracket that closes it (a numeric array by `memchr`, as the KServe reader does). The
/// values are not checked here; each is read by a checking reader afterwards. `None`:
/// not a plain object this finder takes (not UTF-8, an escaped or repeated key, not an
/// object, anything after it); the reference reader then decides.
fn envelope(body: &[u8]) -> Option<BTreeMap<String, &str>> {
    let text = std::str::from_utf8(body).ok()?;
    let ws = |mut p: usize| {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = body.get(p) {
            p += 1;
        }
        p
    };
    let mut top = BTreeMap::new();
    let mut p = ws(0);
    if body.get(p) != Some(&b'{') {
        return None;
    }
    p = ws(p + 1);
    if body.get(p) == Some(&b'}') {
        return (ws(p + 1) == body.len()).then_some(top);
    }
    loop {
        if body.get(p) != Some(&b'"') {
            return None;
        }
        let end = string_end(body, p)?;
        let key = &text[p + 1..end - 1];
        if key.contains('\\') {
            return None;
        }
        p = ws(end);
        if body.get(p) != Some(&b':') {
            return None;
        }
        p = ws(p + 1);
        let value_end = value_end(body, p)?;
        if top.insert(key.to_owned(), &text[p..value_end]).is_some() {
            return None;
        }
        p = ws(value_end);
        match body.get(p)? {
            b',' => p = ws(p + 1),
            b'}' => return (ws(p + 1) == body.len()).then_some(top),
            _ => return None,
        }
    }
}

/// One past the closing quote of the string that opens at `at`.
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut q = at + 1;
    loop {
        let k = q + memchr::memchr2(b'"', b'\\', json.get(q..)?)?;
        if json[k] == b'"' {
            return Some(k + 1);
        }
        q = k + 2;
    }
}

/// One past the end of the value that starts at `at`, found without reading it.
fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match *json.get(at)? {
        b'"' => string_end(json, at),
        b'[' => json::array_end(json, at).or_else(|| nesting_end(json, at)),
        b'{' => nesting_end(json, at),
        _ => {
            let len = (json[at..].iter())
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(json.len() - at);
            (len > 0).then_some(at + len)
        }
    }
}

/// One past the bracket that closes the array or object opening at `at`, strings
/// skipped whole (brackets of either kind count alike: their pairing is checked by
/// the reader of the value).
fn nesting_end(json: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut p = at;
    loop {
        match *json.get(p)? {
            b'"' => {
                p = string_end(json, p)?;
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(p + 1);
                }
            }
            _ => {}
        }
        p += 1;
    }
}

/// [`parse_predict`] from the body's top-level keys.
fn predict(
    top: BTreeMap<String, &str>,
    meta: &ModelMetadataResponse,
    model: &str,
    version: &str,
    bounds: Bounds,
    charge: &mut (dyn FnMut(usize) -> Result<(), Refusal> + Send + '_),
) -> Result<(ModelInferRequest, Format), PredictError> {
    for key in top.keys() {
        if !matches!(key.as_str(), "instances" | "inputs" | "signature_name") {
            return Err(
                format!("unknown key {:?}", key.chars().take(64).collect::<String>()).into(),
            );
        }
    }
    if let Some(sig) = top.get("signature_name")
        && serde_json::from_str::<String>(sig).ok().as_deref() != Some(crate::front::tfs::SIGNATURE)
    {
        return Err(format!("the only signature is {:?}", crate::front::tfs::SIGNATURE).into());
    }
    let mut tensors: Vec<Input<'_>> = Vec::new();
    let format = match (top.get("instances"), top.get("inputs")) {
        (Some(_), Some(_)) => {
            return Err("a request has either instances or inputs, not both"
                .to_string()
                .into());
        }
        (None, None) => {
            return Err("the request has neither instances nor inputs"
                .to_string()
                .into());
        }
        (Some(instances), None) => {
            // The list is split into its items only when they are objects (named
            // inputs); a list of tensors is read whole, in one pass, below.
            let Some(rest) = instances.strip_prefix('[') else {
                return Err("instances must be a list".to_string().into());
            };
            let rest = rest.trim_start_matches([' ', '\t', '\n', '\r']);
            if rest.starts_with(']') {
                return Err("instances is empty".to_string().into());
            }
            let items: Vec<&str> = if rest.starts_with('{') {
                serde_json::from_str::<Vec<&RawValue>>(instances)
                    .map_err(|e| format!("instances: {e}"))?
                    .into_iter()
                    .map(RawValue::get)
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(first) = items.first().and_then(|first| object(first)) {
                let named = items.iter().map(|it| object(it)).collect::<Vec<_>>();
                for name in first.keys() {
                    let values = named
                        .iter()
                        .map(|m| {
                            m.as_ref()
                                .and_then(|m| m.get(name).copied())
                                .ok_or_else(|| format!("every instance must name input {name:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    tensors.push(Input {
                        name: name.clone(),
                        dtype: input_type(meta, name)?,
                        values,
                        layout: Layout::Stacked,
                    });
                }
                if named
                    .iter()
                    .any(|m| m.as_ref().is_none_or(|m| m.len() != first.len()))
                {
                    return Err("every instance must name the same inputs"
                        .to_string()
                        .into());
                }
            } else {
                // The instances of the only input are its tensor: their list is its
                // first dimension.
                let input = only_input(meta)?;
                tensors.push(Input {
                    name: input.name.clone(),
                    dtype: input.datatype.parse().map_err(|e| format!("{e}"))?,
                    values: vec![instances],
                    layout: Layout::Instances,
                });
            }
            Format::Row
        }
        (None, Some(inputs)) => {
            if let Some(m) = object(inputs) {
                if m.is_empty() {
                    return Err("inputs is empty".to_string().into());
                }
                for (name, v) in m {
                    let dtype = input_type(meta, &name)?;
                    tensors.push(Input {
                        name,
                        dtype,
                        values: vec![v],
                        layout: Layout::Whole,
                    });
                }
            } else {
                let input = only_input(meta)?;
                tensors.push(Input {
                    name: input.name.clone(),
                    dtype: input.datatype.parse().map_err(|e| format!("{e}"))?,
                    values: vec![inputs],
                    layout: Layout::Whole,
                });
            }
            Format::Columnar
        }
    };
    if tensors.len() > json::MAX_TENSORS {
        return Err(format!("more than {} inputs", json::MAX_TENSORS).into());
    }
    let mut inputs = Vec::with_capacity(tensors.len());
    let mut raw = Vec::with_capacity(tensors.len());
    for t in tensors {
        let shown: String = t.name.chars().take(64).collect();
        // What the fast reader charged is counted in the tree's charge: its buffer is
        // gone by then, so a refused input costs the larger of the two, not both.
        let mut charged = 0usize;
        let fast = read_fast(&t, bounds, &mut |n| {
            charged = charged.saturating_add(n);
            charge(n)
        })?;
        let (shape, bytes) = match fast {
            Some(read) => read,
            None => read_tree(&t, bounds, charged, charge),
        }
        .map_err(|e| match e {
            PredictError::Invalid(m) => PredictError::Invalid(format!("input {shown:?}: {m}")),
            r => r,
        })?;
        inputs.push(InferInputTensor {
            name: t.name,
            datatype: t.dtype.as_str().into(),
            shape,
            parameters: Default::default(),
            contents: None,
        });
        raw.push(Bytes::from(bytes));
    }
    Ok((
        ModelInferRequest {
            model_name: model.to_owned(),
            model_version: version.to_owned(),
            id: String::new(),
            parameters: Default::default(),
            inputs,
            outputs: Vec::<InferRequestedOutputTensor>::new(),
            raw_input_contents: raw,
        },
        format,
    ))
}

/// A shape and its raw tensor, or why the input was refused.
type Read = Result<(Vec<i64>, Vec<u8>), PredictError>;

/// Reads a numeric input's arrays straight into its tensor. `Ok(None)`: not an input
/// this reader takes (strings, scalars), or one it refuses; the tree reader then
/// decides, with its message.
fn read_fast(
    t: &Input<'_>,
    bounds: Bounds,
    charge: &mut (dyn FnMut(usize) -> Result<(), Refusal> + Send + '_),
) -> Result<Option<Read>, PredictError> {
    let Some(size) = t.dtype.element_size() else {
        return Ok(None);
    };
    if !t.values.iter().all(|v| v.starts_with('[')) {
        return Ok(None);
    }
    let text: usize = t.values.iter().map(|v| v.len()).sum();
    let most = bounds.max_elements.min(text / 2 + 1);
    charge(most.saturating_mul(size)).map_err(PredictError::Refused)?;
    let mut out = Vec::with_capacity(most * size);
    let mut count = 0;
    let mut item: Option<Vec<i64>> = None;
    let depth = bounds.max_depth + usize::from(t.layout == Layout::Instances);
    for v in &t.values {
        let max = bounds.max_elements - count;
        let Ok((n, shape)) =
            jsondata::read_numeric_shaped(v.as_bytes(), t.dtype, depth, max, &mut out)
        else {
            return Ok(None);
        };
        count += n;
        match &item {
            None => item = Some(shape),
            Some(first) if *first == shape => {}
            Some(_) => return Ok(Some(Err(irregular()))),
        }
    }
    let item = item.unwrap_or_default();
    let shape = if t.layout == Layout::Stacked {
        std::iter::once(t.values.len() as i64).chain(item).collect()
    } else {
        item
    };
    out.shrink_to_fit();
    Ok(Some(Ok((shape, out))))
}

/// Reads an input through a JSON tree: strings, `{"b64": ...}`, scalars. `charged`:
/// what was charged for this input already (by the fast reader that refused it).
fn read_tree(
    t: &Input<'_>,
    bounds: Bounds,
    charged: usize,
    charge: &mut (dyn FnMut(usize) -> Result<(), Refusal> + Send + '_),
) -> Read {
    let text: usize = t.values.iter().map(|v| v.len()).sum();
    charge(
        text.saturating_mul(TREE_COST_PER_BYTE)
            .saturating_sub(charged),
    )
    .map_err(PredictError::Refused)?;
    let trees = t
        .values
        .iter()
        .map(|v| serde_json::from_str::<Value>(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid JSON: {e}"))?;
    // The items of a batch (the instances, named or not), or else the one tensor.
    let items: Vec<&Value> = match (t.layout, trees.as_slice()) {
        (Layout::Instances, [Value::Array(items)]) => items.iter().collect(),
        _ => trees.iter().collect(),
    };
    let Some(first) = items.first() else {
        return Err("instances is empty".to_string().into());
    };
    let item_shape = shape_of(first, bounds.max_depth)?;
    let shape = if t.layout != Layout::Whole {
        std::iter::once(items.len() as i64)
            .chain(item_shape.iter().copied())
            .collect()
    } else {
        item_shape.clone()
    };
    let mut w = Writer {
        dtype: t.dtype,
        out: Vec::new(),
        count: 0,
        max: bounds.max_elements,
        charged: 0,
        charge: &mut *charge,
    };
    for v in items {
        w.write(v, &item_shape)?;
    }
    Ok((shape, w.out))
}

/// One output tensor, for rendering: its datatype, shape and elements.
struct Out<'a> {
    dtype: DataType,
    dims: Vec<usize>,
    raw: &'a [u8],
    /// BYTES elements.
    items: Vec<&'a [u8]>,
}

impl<'a> Out<'a> {
    fn new(dtype: DataType, shape: &[i64], raw: &'a [u8]) -> Result<Out<'a>, String> {
        let dims = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| "negative output dimension".to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let count = warden_shared::datatype::element_count(shape).map_err(|e| e.to_string())?;
        let items = if dtype == DataType::Bytes {
            tensor::split_bytes_elements(raw)?
        } else {
            Vec::new()
        };
        tensor::check_raw(dtype, count, raw)?;
        Ok(Out {
            dtype,
            dims,
            raw,
            items,
        })
    }
}

impl Out<'_> {
    /// Appends the part from element `start` with dimensions `dims`, as nested JSON.
    fn write(&self, out: &mut Vec<u8>, dims: &[usize], start: usize) -> Result<(), String> {
        let Some((&n, rest)) = dims.split_first() else {
            return self.write_element(out, start);
        };
        let stride: usize = rest.iter().product();
        out.push(b'[');
        for k in 0..n {
            if k > 0 {
                out.push(b',');
            }
            self.write(out, rest, start + k * stride)?;
        }
        out.push(b']');
        Ok(())
    }

    fn write_element(&self, out: &mut Vec<u8>, i: usize) -> Result<(), String> {
        let short = || "output too short".to_string();
        if let Some(size) = self.dtype.element_size() {
            let bytes = self.raw.get(i * size..(i + 1) * size).ok_or_else(short)?;
            jsondata::write_element(out, self.dtype, bytes);
            return Ok(());
        }
        let item = self.items.get(i).ok_or_else(short)?;
        match std::str::from_utf8(item) {
            Ok(text) => json::json_text(out, text),
            Err(_) => {
                out.extend_from_slice(b"{\"b64\":");
                json::json_text(out, &base64::engine::general_purpose::STANDARD.encode(item))?;
                out.push(b'}');
                Ok(())
            }
        }
    }
}

/// Appends `value(out, o)` for every output: the value itself for one output, else an
/// object by name.
fn write_outputs(
    out: &mut Vec<u8>,
    outs: &[(&str, Out<'_>)],
    value: impl Fn(&mut Vec<u8>, &Out<'_>) -> Result<(), String>,
) -> Result<(), String> {
    if let [(_, o)] = outs {
        return value(out, o);
    }
    out.push(b'{');
    for (k, (name, o)) in outs.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        json::json_text(out, name)?;
        out.push(b':');
        value(out, o)?;
    }
    out.push(b'}');
    Ok(())
}

/// Renders the backend's answer in the request's format: written straight from the
/// raw tensors, as the KServe renderer does.
pub fn render_predict(resp: &ModelInferResponse, format: Format) -> Result<Vec<u8>, String> {
    if resp.outputs.len() != resp.raw_output_contents.len() {
        return Err("backend answered with mismatched outputs".into());
    }
    let mut outs = Vec::with_capacity(resp.outputs.len());
    for (o, raw) in resp.outputs.iter().zip(&resp.raw_output_contents) {
        let dtype: DataType = o.datatype.parse().map_err(|e| format!("{e}"))?;
        outs.push((o.name.as_str(), Out::new(dtype, &o.shape, raw)?));
    }
    let size: usize = resp.raw_output_contents.iter().map(|r| r.len() * 4).sum();
    let mut body = Vec::with_capacity(64 + size);
    // Outputs in a stable order (the model's).
    match format {
        Format::Columnar => {
            body.extend_from_slice(b"{\"outputs\":");
            write_outputs(&mut body, &outs, |out, o| o.write(out, &o.dims, 0))?;
        }
        Format::Row => {
            let batch = outs
                .first()
                .and_then(|(_, o)| o.dims.first().copied())
                .unwrap_or(0);
            if outs.iter().any(|(_, o)| o.dims.first() != Some(&batch)) {
                return Err("outputs do not share a batch dimension".into());
            }
            body.extend_from_slice(b"{\"predictions\":[");
            for b in 0..batch {
                if b > 0 {
                    body.push(b',');
                }
                write_outputs(&mut body, &outs, |out, o| {
                    let item: usize = o.dims[1..].iter().product();
                    o.write(out, &o.dims[1..], item * b)
                })?;
            }
            body.push(b']');
        }
    }
    body.push(b'}');
    Ok(body)
}

/// Model status as TFS prints it (`GET /v1/models/{m}`).
pub fn status_json(versions: &[u64], ready: bool) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|v| {
            json!({
                "version": v.to_string(),
                "state": if ready { "AVAILABLE" } else { "UNKNOWN" },
                "status": {"error_code": "OK", "error_message": crate::front::tfs::OK_MESSAGE},
            })
        })
        .collect();
    json!({ "model_version_status": list })
}

/// Model metadata as TFS prints it (`GET /v1/models/{m}/metadata`).
pub fn metadata_json(meta: &ModelMetadataResponse, version: &str) -> Value {
    use crate::front::tfs;
    let tensors = |ts: &[TensorMetadata]| -> Map<String, Value> {
        ts.iter()
            .map(|t| {
                let dtype = t
                    .datatype
                    .parse::<DataType>()
                    .map(|d| tfs::tf_type(d).as_str_name())
                    .unwrap_or("DT_INVALID");
                let dims: Vec<Value> = t
                    .shape
                    .iter()
                    .map(|d| json!({"size": d.to_string(), "name": ""}))
                    .collect();
                (
                    t.name.clone(),
                    json!({
                        "dtype": dtype,
                        "tensor_shape": {"dim": dims, "unknown_rank": false},
                        "name": t.name,
                    }),
                )
            })
            .collect()
    };
    json!({
        "model_spec": {"name": meta.name, "signature_name": "", "version": version},
        "metadata": {"signature_def": {
            "@type": tfs::SIGNATURE_DEF_MAP_URL,
            "signature_def": {tfs::SIGNATURE: {
                "inputs": tensors(&meta.inputs),
                "outputs": tensors(&meta.outputs),
                "method_name": tfs::PREDICT_METHOD,
            }},
        }},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_shared::proto::model_infer_response::InferOutputTensor;

    fn meta(inputs: &[(&str, &str)]) -> ModelMetadataResponse {
        ModelMetadataResponse {
            name: "m".into(),
            versions: vec!["1".into()],
            platform: "x".into(),
            inputs: inputs
                .iter()
                .map(|(n, d)| TensorMetadata {
                    name: (*n).into(),
                    datatype: (*d).into(),
                    shape: vec![-1, 2],
                })
                .collect(),
            outputs: vec![],
        }
    }

    const BOUNDS: Bounds = Bounds {
        max_elements: 1000,
        max_depth: 8,
    };

    fn parse(
        body: &str,
        m: &ModelMetadataResponse,
    ) -> Result<(ModelInferRequest, Format), PredictError> {
        parse_predict(body.as_bytes(), m, "m", "", BOUNDS, &mut |_| Ok(()))
    }

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Bodies whose top level is tricky to find without reading it: strings holding
    /// brackets and quotes, escapes, repeated and escaped keys, scalars, whitespace,
    /// and bodies that are not JSON at all, or only nearly.
    const ENVELOPES: &[&str] = &[
        r#"{"instances": [[1, 2], [3, 4]]}"#,
        " { \"inputs\" :\n{\"x\": [1.5e3, -2]} , \"signature_name\":\"serving_default\" }\t",
        r#"{"instances": [{"x": "a]\"b", "y": [1, 2]}]}"#,
        r#"{"instances": [{"x": "{[", "y": [1, 2]}], "signature_name": "x"}"#,
        r#"{"inputs": "str\"ing"}"#,
        r#"{"inputs": 1}"#,
        r#"{"inputs": -1.5e-3}"#,
        r#"{"inputs": true}"#,
        r#"{"inputs": null}"#,
        r#"{"inputs": {"x": [1, 2], "y": {"b64": "AA=="}}}"#,
        r#"{}"#,
        r#"{"inp\u0075ts": [1, 2]}"#,
        r#"{"inputs": [1, 2], "inputs": [3, 4]}"#,
        r#"{"inputs": [1, 2]} x"#,
        r#"{"inputs": [1, 2],}"#,
        r#"{"inputs" [1, 2]}"#,
        r#"{"inputs": [1, 2]"#,
        r#"{"inputs": [1, 2"#,
        r#"{"inputs": "abc"#,
        r#"[1, 2]"#,
        r#""inputs""#,
        r#"{"inputs": [1, "]"]}"#,
        r#"{"inputs": [1 2]}"#,
        r#"{"inputs": [1}"#,
        r#"{"inputs": {"x": [1, 2}]}"#,
        r#"{"inputs": 01}"#,
        r#"{"inputs": +1}"#,
        r#"{"inputs": tru}"#,
        r#"{"inputs": [1, 2], "signature_name": "serving_default\x"}"#,
        "{\"inputs\":\u{a0}[1, 2]}",
        "{\"inputs\": [1, 2], \"x\u{1}\": 1}",
        "{\"inputs\": \"a\u{1}b\"}",
        "",
        "   ",
        "{",
        "}",
        // Found by fuzzing: an object closed by brackets (the array finder must not
        // be given an object).
        "{\"instances\": \n\n\n   {   , 4]]}",
        r#"{"instances": [1, 2]]]}"#,
        r#"{"instances": {"x": [1, 2]]}}"#,
    ];

    /// [`parse_predict`] with the top level read by serde_json only.
    fn parse_reference(
        body: &str,
        m: &ModelMetadataResponse,
    ) -> Result<(ModelInferRequest, Format), PredictError> {
        predict(
            reference_envelope(body.as_bytes())?,
            m,
            "m",
            "",
            BOUNDS,
            &mut |_| Ok(()),
        )
    }

    #[test]
    fn the_top_level_is_found_as_serde_json_finds_it_and_answered_alike() {
        let m = meta(&[("x", "FP32"), ("y", "FP32")]);
        let one = meta(&[("x", "FP32")]);
        for body in ENVELOPES {
            let reference = reference_envelope(body.as_bytes()).ok();
            if let (Some(found), Some(reference)) = (envelope(body.as_bytes()), &reference) {
                assert_eq!(&found, reference, "{body}");
            }
            for md in [&m, &one] {
                assert_eq!(
                    format!("{:?}", parse(body, md)),
                    format!("{:?}", parse_reference(body, md)),
                    "{body}"
                );
            }
        }
        // The finder takes the plain bodies itself (not only through the reference).
        for body in &ENVELOPES[..10] {
            assert!(envelope(body.as_bytes()).is_some(), "{body}");
        }
    }

    #[test]
    fn row_and_columnar_give_the_same_tensor() {
        let m = meta(&[("x", "FP32")]);
        let (row, f) = parse(r#"{"instances": [[1, 2], [3, 4.5]]}"#, &m).unwrap();
        assert_eq!(f, Format::Row);
        let (col, f) = parse(r#"{"inputs": [[1, 2], [3, 4.5]]}"#, &m).unwrap();
        assert_eq!(f, Format::Columnar);
        let (named_row, _) =
            parse(r#"{"instances": [{"x": [1, 2]}, {"x": [3, 4.5]}]}"#, &m).unwrap();
        let (named_col, _) = parse(r#"{"inputs": {"x": [[1, 2], [3, 4.5]]}}"#, &m).unwrap();
        for r in [&row, &col, &named_row, &named_col] {
            assert_eq!(r.inputs[0].shape, vec![2, 2]);
            assert_eq!(r.inputs[0].datatype, "FP32");
            assert_eq!(f32s(&r.raw_input_contents[0]), vec![1.0, 2.0, 3.0, 4.5]);
        }
        // Out of FP32's range: refused, as in KServe JSON, not stored as infinity.
        assert!(parse(r#"{"instances": [[1e39, 2]]}"#, &m).is_err());
    }

    #[test]
    fn binary_strings_go_to_string_inputs_only() {
        let m = meta(&[("s", "BYTES")]);
        let (r, _) = parse(r#"{"instances": [{"b64": "aGk="}, "yo"]}"#, &m).unwrap();
        assert_eq!(r.inputs[0].shape, vec![2]);
        assert_eq!(
            r.raw_input_contents[0].as_ref(),
            b"\x02\0\0\0hi\x02\0\0\0yo"
        );
        let f = meta(&[("x", "FP32")]);
        let Err(PredictError::Invalid(e)) = parse(r#"{"instances": [{"b64": "aGk="}]}"#, &f) else {
            panic!("b64 for a float input");
        };
        assert!(e.contains("string inputs"), "{e}");
        assert!(parse(r#"{"instances": [{"b64": "!!"}]}"#, &m).is_err());
    }

    #[test]
    fn bad_bodies_are_refused() {
        let m = meta(&[("x", "FP32")]);
        let two = meta(&[("x", "FP32"), ("y", "INT64")]);
        for (body, md) in [
            ("[]", &m),
            ("{}", &m),
            (r#"{"instances": [], "inputs": []}"#, &m),
            (r#"{"instances": []}"#, &m),
            (r#"{"instances": {"x": 1}}"#, &m),
            (r#"{"instances": [[1, 2], [3]]}"#, &m),
            (r#"{"instances": [[1, 2], 3]}"#, &m),
            (r#"{"inputs": [[1, [2]]]}"#, &m),
            (r#"{"inputs": ["a"]}"#, &m),
            (r#"{"inputs": {"z": [1]}}"#, &m),
            (r#"{"inputs": [1, 2]}"#, &two),
            (r#"{"instances": [{"x": [1]}, {"y": [1]}]}"#, &two),
            (r#"{"inputs": [1], "signature_name": "other"}"#, &m),
            (r#"{"inputs": [1], "extra": 1}"#, &m),
            (r#"{"inputs": [[[[[[[[[[1]]]]]]]]]]}"#, &m),
        ] {
            assert!(parse(body, md).is_err(), "{body}");
        }
        let many = format!(r#"{{"inputs": [{}]}}"#, vec!["1"; 1001].join(","));
        assert!(parse(&many, &m).is_err());
    }

    /// Numeric inputs are charged at their bound (every element at least one character
    /// and a separator) before they are read; string inputs at the tree's cost.
    #[test]
    fn inputs_are_charged_before_they_are_read() {
        for (body, m, want) in [
            (
                r#"{"inputs": [1, 2, 3]}"#,
                meta(&[("x", "FP32")]),
                (9 / 2 + 1) * 4,
            ),
            (
                r#"{"inputs": ["ab"]}"#,
                meta(&[("s", "BYTES")]),
                6 * TREE_COST_PER_BYTE,
            ),
        ] {
            let mut asked = Vec::new();
            let r = parse_predict(body.as_bytes(), &m, "m", "", BOUNDS, &mut |n| {
                asked.push(n);
                Err(Refusal::Quota(crate::limits::Scope::Principal))
            });
            assert!(matches!(r, Err(PredictError::Refused(_))), "{body}");
            assert_eq!(asked, vec![want], "{body}");
        }
    }

    #[test]
    fn an_input_the_fast_reader_refuses_is_charged_once_at_the_tree_cost() {
        // `true` is not an FP32: the fast reader charges its bound, gives up, and the
        // tree reader gives the message. The two charges for the input add up to the
        // tree's cost (a budget of exactly that is not refused half way).
        let value = "[1, 2, true, 4]";
        let body = format!(r#"{{"inputs": {value}}}"#);
        let mut asked = Vec::new();
        let r = parse_predict(
            body.as_bytes(),
            &meta(&[("x", "FP32")]),
            "m",
            "",
            BOUNDS,
            &mut |n| {
                asked.push(n);
                Ok(())
            },
        );
        assert!(matches!(r, Err(PredictError::Invalid(_))));
        assert_eq!(
            asked[0],
            (value.len() / 2 + 1) * 4,
            "the fast reader's bound"
        );
        // Then the tree (what follows is the tensor's own buffer, charged as it grows).
        assert_eq!(asked[0] + asked[1], value.len() * TREE_COST_PER_BYTE);
    }

    /// The fast reader and the tree reader make the same tensor of every layout and
    /// shape (the tree reader is the reference: it is what every refusal falls back to).
    #[test]
    fn the_fast_reader_gives_what_the_tree_reader_gives() {
        let cases = [
            (Layout::Whole, vec!["[[1, 2.5], [-3, 4e-2]]"]),
            (Layout::Whole, vec!["[]"]),
            (Layout::Whole, vec!["[[], []]"]),
            (Layout::Whole, vec!["[[[1], [2]], [[3], [4]], [[5], [6]]]"]),
            (Layout::Instances, vec!["[1, 2, 3]"]),
            (Layout::Instances, vec!["[[1, 2], [3, 4], [5, 6]]"]),
            (Layout::Stacked, vec!["[1, 2]", "[3, 4]", "[5, 6]"]),
            (Layout::Stacked, vec!["[[1]]", "[[2]]"]),
        ];
        // One FP32 input whose values are `raws`, laid out as `layout`.
        fn input(raws: &[Box<RawValue>], layout: Layout) -> Input<'_> {
            Input {
                name: "x".into(),
                dtype: DataType::F32,
                values: raws.iter().map(|r| r.get()).collect(),
                layout,
            }
        }
        fn raws(texts: &[&str]) -> Vec<Box<RawValue>> {
            texts
                .iter()
                .map(|t| RawValue::from_string((*t).into()).unwrap())
                .collect()
        }
        for (layout, texts) in cases {
            let raws = raws(&texts);
            let t = input(&raws, layout);
            let fast = read_fast(&t, BOUNDS, &mut |_| Ok(()))
                .unwrap()
                .unwrap()
                .ok()
                .unwrap();
            let tree = read_tree(&t, BOUNDS, 0, &mut |_| Ok(())).ok().unwrap();
            assert_eq!(fast, tree, "{texts:?}");
        }
        // Instances of different shapes: refused by both.
        let raws = raws(&["[1, 2]", "[3]"]);
        let t = input(&raws, Layout::Stacked);
        assert!(matches!(
            read_fast(&t, BOUNDS, &mut |_| Ok(())),
            Ok(Some(Err(_)))
        ));
        assert!(read_tree(&t, BOUNDS, 0, &mut |_| Ok(())).is_err());
    }

    fn response(outputs: &[(&str, &[i64], Vec<f32>)]) -> ModelInferResponse {
        ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: outputs
                .iter()
                .map(|(n, s, _)| InferOutputTensor {
                    name: (*n).into(),
                    datatype: "FP32".into(),
                    shape: s.to_vec(),
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: outputs
                .iter()
                .map(|(_, _, d)| {
                    d.iter()
                        .flat_map(|f| f.to_le_bytes())
                        .collect::<Vec<u8>>()
                        .into()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn answers_take_the_request_format() {
        let one = response(&[("y", &[2, 2], vec![1.0, 2.0, 3.0, 4.0])]);
        let v = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).unwrap();
        assert_eq!(
            v(render_predict(&one, Format::Row).unwrap()),
            json!({"predictions": [[1.0, 2.0], [3.0, 4.0]]})
        );
        assert_eq!(
            v(render_predict(&one, Format::Columnar).unwrap()),
            json!({"outputs": [[1.0, 2.0], [3.0, 4.0]]})
        );
        let two = response(&[("a", &[2], vec![1.0, 2.0]), ("b", &[2, 1], vec![3.0, 4.0])]);
        assert_eq!(
            v(render_predict(&two, Format::Row).unwrap()),
            json!({"predictions": [{"a": 1.0, "b": [3.0]}, {"a": 2.0, "b": [4.0]}]})
        );
        assert_eq!(
            v(render_predict(&two, Format::Columnar).unwrap()),
            json!({"outputs": {"a": [1.0, 2.0], "b": [[3.0], [4.0]]}})
        );
        let scalar = response(&[("s", &[], vec![7.0])]);
        assert_eq!(
            v(render_predict(&scalar, Format::Columnar).unwrap()),
            json!({"outputs": 7.0})
        );
        assert!(render_predict(&scalar, Format::Row).is_err());
    }

    #[test]
    fn status_and_metadata_shapes() {
        let s = status_json(&[1], true);
        assert_eq!(s["model_version_status"][0]["state"], "AVAILABLE");
        assert_eq!(s["model_version_status"][0]["version"], "1");
        let mut m = meta(&[("x", "FP32")]);
        m.outputs = m.inputs.clone();
        let md = metadata_json(&m, "1");
        let sig = &md["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(sig["inputs"]["x"]["dtype"], "DT_FLOAT");
        assert_eq!(sig["inputs"]["x"]["tensor_shape"]["dim"][0]["size"], "-1");
        assert_eq!(md["model_spec"]["version"], "1");
    }
}
