//! What the REST codecs cost on a BlazeFace-sized request and response (input
//! 1x128x128x3 FP32 = 49,152 floats, outputs 1x896x16 + 1x896x1 FP32), against the
//! REST binary path and a plain copy of the same tensor bytes.
//!
//! Timing: `cargo run -p warden-gateway --example codec_cost [iterations]` prints ns
//! per call of each stage (best of five rounds; shared machines are noisy).
//! Instructions, which noise does not move: run one stage once under callgrind and
//! count only inside it:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --toggle-collect='codec_cost::measured' target/.../examples/codec_cost --once json_decode
//! ```
//!
//! The JSON bodies are what clients send: `bench/bench.py`'s (flat `data`, six
//! decimals, as `round(float(x), 6)`), and numpy's `tolist()` spelling (nested, every
//! float32 as its shortest float64 repr, 17 digits or so).

use bytes::Bytes;
use std::hint::black_box;
use std::time::Instant;
use warden_gateway::front::json::{OutputPrefs, parse_infer_request, render_infer_response};
use warden_gateway::front::tfs_json::{self, Bounds, Format};
use warden_shared::proto::model_infer_response::InferOutputTensor;
use warden_shared::proto::model_metadata_response::TensorMetadata;
use warden_shared::proto::{ModelInferResponse, ModelMetadataResponse};

const INPUT: [usize; 4] = [1, 128, 128, 3];
const OUTPUTS: [(&str, [usize; 3]); 2] = [
    ("regressors", [1, 896, 16]),
    ("classificators", [1, 896, 1]),
];

/// Deterministic values in [-1, 1], as a normalised image.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// `data` as bench.py writes it: flat, six decimals.
fn flat6(v: &[f32]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|&f| {
            let s = format!("{:.6}", f as f64);
            let s = s.trim_end_matches('0').trim_end_matches('.');
            if s.is_empty() || s == "-" {
                "0.0".into()
            } else {
                s.to_string()
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// `data` as numpy's `tolist()` gives it to `json.dumps`: nested, full repr.
fn nested_repr(v: &[f32], dims: &[usize]) -> String {
    match dims.split_first() {
        None => format!("{:?}", v[0] as f64),
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            let parts: Vec<String> = (0..n)
                .map(|i| nested_repr(&v[i * stride..(i + 1) * stride], rest))
                .collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

fn request(data: &str) -> Vec<u8> {
    format!(
        r#"{{"inputs": [{{"name": "input", "shape": {INPUT:?}, "datatype": "FP32", "data": {data}}}]}}"#
    )
    .into_bytes()
}

fn binary_header(len: usize) -> Vec<u8> {
    format!(
        r#"{{"inputs":[{{"name":"input","shape":{INPUT:?},"datatype":"FP32","parameters":{{"binary_data_size":{len}}}}}],"parameters":{{"binary_data_output":true}}}}"#
    )
    .into_bytes()
}

fn response() -> ModelInferResponse {
    let (outputs, raw) = OUTPUTS
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            (
                InferOutputTensor {
                    name: (*name).into(),
                    datatype: "FP32".into(),
                    shape: shape.iter().map(|&d| d as i64).collect(),
                    ..Default::default()
                },
                Bytes::from(le(&values(n, 7 + i as u64))),
            )
        })
        .unzip();
    ModelInferResponse {
        model_name: "blazeface".into(),
        model_version: "1".into(),
        outputs,
        raw_output_contents: raw,
        ..Default::default()
    }
}

fn tfs_meta() -> ModelMetadataResponse {
    ModelMetadataResponse {
        name: "blazeface".into(),
        inputs: vec![TensorMetadata {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: INPUT.iter().map(|&d| d as i64).collect(),
        }],
        ..Default::default()
    }
}

/// Everything a stage needs, built before anything is measured.
struct Fixture {
    json_flat: Vec<u8>,
    json_nested: Vec<u8>,
    tfs_body: Vec<u8>,
    bin_header: Vec<u8>,
    bin_tail: Bytes,
    response: ModelInferResponse,
    tfs_meta: ModelMetadataResponse,
    copy_src: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let n: usize = INPUT.iter().product();
        let v = values(n, 1);
        let raw = le(&v);
        let response = response();
        let mut copy_src = raw.clone();
        for r in &response.raw_output_contents {
            copy_src.extend_from_slice(r);
        }
        Fixture {
            json_flat: request(&flat6(&v)),
            json_nested: request(&nested_repr(&v, &INPUT)),
            tfs_body: format!(r#"{{"instances": {}}}"#, nested_repr(&v, &INPUT)).into_bytes(),
            bin_header: binary_header(raw.len()),
            bin_tail: Bytes::from(raw),
            response,
            tfs_meta: tfs_meta(),
            copy_src,
        }
    }
}

fn ok(_: usize) -> Result<(), warden_gateway::refusal::Refusal> {
    Ok(())
}

const STAGES: [&str; 8] = [
    "json_decode",
    "json_decode_nested",
    "json_encode",
    "tfs_decode",
    "tfs_encode",
    "binary_decode",
    "binary_encode",
    "memcpy",
];

/// Runs one stage once; the only function callgrind counts in (`--toggle-collect`).
/// Returns what the stage produced: the raw tensor a decoder wrote, the body an
/// encoder rendered.
#[inline(never)]
fn measured(f: &Fixture, stage: &str) -> Bytes {
    let max = 1 << 24;
    match stage {
        "json_decode" | "json_decode_nested" => {
            let body = if stage == "json_decode" {
                &f.json_flat
            } else {
                &f.json_nested
            };
            let (r, _) = parse_infer_request(body, Bytes::new(), "m", "1", max, 32, &mut ok)
                .expect("decodes");
            r.raw_input_contents[0].clone()
        }
        "json_encode" => render_infer_response(&f.response, &OutputPrefs::default())
            .expect("renders")
            .body
            .into(),
        "tfs_decode" => {
            let bounds = Bounds {
                max_elements: max,
                max_depth: 32,
            };
            let (r, _) =
                tfs_json::parse_predict(&f.tfs_body, &f.tfs_meta, "m", "1", bounds, &mut ok)
                    .expect("decodes");
            r.raw_input_contents[0].clone()
        }
        "tfs_encode" => tfs_json::render_predict(&f.response, Format::Row)
            .expect("renders")
            .into(),
        "binary_decode" => {
            let (r, _) = parse_infer_request(
                &f.bin_header,
                f.bin_tail.clone(),
                "m",
                "1",
                max,
                32,
                &mut ok,
            )
            .expect("decodes");
            r.raw_input_contents[0].clone()
        }
        "binary_encode" => {
            let prefs = OutputPrefs {
                binary_by_default: true,
                ..Default::default()
            };
            render_infer_response(&f.response, &prefs)
                .expect("renders")
                .body
                .into()
        }
        "memcpy" => black_box(f.copy_src.to_vec()).into(),
        other => panic!("no stage {other:?}; stages: {STAGES:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let f = Fixture::new();
    if let [flag, stage] = args.as_slice()
        && flag == "--once"
    {
        // The output's length and FNV-1a hash, to see that a change kept it.
        let out = measured(&f, black_box(stage));
        let hash = out.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        println!("{stage}: {} bytes, fnv1a {hash:016x}", out.len());
        return;
    }
    let iters: u32 = args.first().map_or(20, |a| a.parse().expect("iterations"));
    println!(
        "bodies: JSON flat {} B, JSON nested {} B, TFS {} B, binary {} B; copy {} B",
        f.json_flat.len(),
        f.json_nested.len(),
        f.tfs_body.len(),
        f.bin_header.len() + f.bin_tail.len(),
        f.copy_src.len()
    );
    for stage in STAGES {
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(measured(&f, black_box(stage)));
                }
                t.elapsed().as_nanos() / u128::from(iters)
            })
            .min()
            .unwrap_or_default();
        println!("{stage:>20}: {best:>10} ns");
    }
}
