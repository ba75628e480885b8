//! The one request pipeline, seen from outside: the same refusal is the same decision
//! through every front (KServe REST JSON, REST binary and gRPC; TensorFlow Serving
//! REST and gRPC), with the status and code of the refusal table and one audit record; and a stranger, or a principal without the
//! right, cannot make the gateway do work, hold memory or grow its state.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use warden_shared::proto;
use warden_shared::tensorflow::{self as tf, serving as tfs};
use warden_tests::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const MAX_BODY: usize = MIB;
const QUOTA_PER_PRINCIPAL: usize = 256 * KIB;

const ADD: &str = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

const POLICY: &str = r#"
[[rule]]
name = "users"
subjects = ["alice", "flood-*"]
models = ["addn"]
operations = ["infer", "metadata", "ready"]

[[rule]]
name = "metadata only"
subjects = ["bob"]
models = ["addn"]
operations = ["metadata"]

[[rule]]
name = "another model"
subjects = ["carol"]
models = ["identity"]
operations = ["infer"]

[[rule]]
name = "version 1 only"
subjects = ["dave"]
models = ["addn"]
versions = [1]
operations = ["infer"]

[[rule]]
name = "every model"
subjects = ["eve"]
models = ["*"]
operations = ["infer"]

[[rate]]
subject = "flood-*"
rps = 1
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A server with the policy above, small caps and quota, and an audit log.
fn start(tag: &str, extra_limits: &str) -> (Server, PathBuf, TempDir) {
    let tmp = TempDir::new(tag);
    let policy = write(tmp.path(), "authz.toml", POLICY);
    // The test's own limits, then any of `extra_limits` (which win).
    let base = format!(
        "max_body_bytes = {MAX_BODY}\nmax_grpc_message_bytes = {MAX_BODY}\nquota_per_principal_bytes = {QUOTA_PER_PRINCIPAL}\n"
    );
    let overridden = |line: &&str| {
        let key = line.split('=').next().unwrap_or("").trim();
        !extra_limits
            .lines()
            .any(|l| l.split('=').next().unwrap_or("").trim() == key)
    };
    let limits: Vec<&str> = base.lines().filter(overridden).collect();
    let cfg = write(
        tmp.path(),
        "warden.toml",
        &format!("[limits]\n{}\n{extra_limits}", limits.join("\n")),
    );
    let audit = audit_dir(tmp.path()).join("audit.log");
    let server = Server::start(
        &[
            "--model-path".into(),
            model_dir("addn").display().to_string(),
            "--model-name".into(),
            "addn".into(),
        ],
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--authz-policy",
            policy.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    (server, audit, tmp)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Front {
    RestJson,
    RestBinary,
    Grpc,
    /// TensorFlow Serving REST (`:predict`, columnar, named input).
    TfsRest,
    /// TensorFlow Serving gRPC (`PredictionService/Predict`, `tensor_content`).
    TfsGrpc,
}

impl Front {
    const ALL: [Front; 5] = [
        Front::RestJson,
        Front::RestBinary,
        Front::Grpc,
        Front::TfsRest,
        Front::TfsGrpc,
    ];

    fn grpc(self) -> bool {
        matches!(self, Front::Grpc | Front::TfsGrpc)
    }
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Good,
    Malformed,
    /// Well-formed, with values of another datatype than the model's input (TFS JSON,
    /// which carries no datatype: values the input's datatype cannot hold).
    WrongType,
    /// A well-formed request padded (JSON whitespace, binary bytes, protobuf unknown
    /// field) to this many bytes.
    Size(usize),
}

/// The infer request each front sends for `body`.
fn infer_body(
    front: Front,
    model: &str,
    version: &str,
    body: Body,
) -> (Bytes, Vec<(String, String)>) {
    let floats: Vec<u8> = [1f32, 2., 3., 4.]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    match front {
        Front::RestJson => {
            let b = match body {
                Body::Good => ADD.as_bytes().to_vec(),
                Body::WrongType => ADD.replace("FP32", "INT32").into_bytes(),
                Body::Malformed => br#"{"inputs":[{"name":"x","shape":[1,4],"#.to_vec(),
                Body::Size(n) => {
                    let mut b = ADD.as_bytes().to_vec();
                    b.resize(n, b' ');
                    b
                }
            };
            (Bytes::from(b), vec![])
        }
        Front::RestBinary => {
            let json = br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#;
            let wrong = String::from_utf8_lossy(json).replace("FP32", "INT32");
            let json: &[u8] = if let Body::WrongType = body {
                wrong.as_bytes()
            } else {
                json
            };
            let mut b = json.to_vec();
            let json_len = match body {
                // The header says the JSON part is longer than the body.
                Body::Malformed => b.len() + 100,
                _ => b.len(),
            };
            b.extend_from_slice(&floats);
            if let Body::Size(n) = body {
                // Padding inside the JSON part, before the binary tail.
                let mut j = json.to_vec();
                j.resize(n - floats.len(), b' ');
                let len = j.len();
                j.extend_from_slice(&floats);
                return (
                    Bytes::from(j),
                    vec![("inference-header-content-length".into(), len.to_string())],
                );
            }
            (
                Bytes::from(b),
                vec![(
                    "inference-header-content-length".into(),
                    json_len.to_string(),
                )],
            )
        }
        Front::Grpc => {
            let mut req = proto::ModelInferRequest {
                model_name: model.into(),
                model_version: version.into(),
                inputs: vec![proto::model_infer_request::InferInputTensor {
                    name: "x".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 4],
                    ..Default::default()
                }],
                raw_input_contents: vec![Bytes::from(floats)],
                ..Default::default()
            };
            if let Body::WrongType = body {
                req.inputs[0].datatype = "INT32".into();
            }
            let mut wire = req.encode_to_vec();
            match body {
                Body::Good | Body::WrongType => {}
                // Model and version first, then a field that runs past the end.
                Body::Malformed => {
                    req.inputs.clear();
                    req.raw_input_contents.clear();
                    wire = req.encode_to_vec();
                    wire.extend_from_slice(&[0x2a, 0xff, 0x01, 0x00]);
                }
                Body::Size(n) => pad_unknown_field(&mut wire, n),
            }
            (Bytes::from(wire), vec![])
        }
        Front::TfsRest => {
            let good = r#"{"inputs": {"x": [[1, 2, 3, 4]]}}"#;
            let b = match body {
                Body::Good => good.as_bytes().to_vec(),
                Body::WrongType => br#"{"inputs": {"x": [["a", "b", "c", "d"]]}}"#.to_vec(),
                Body::Malformed => br#"{"inputs": {"x": [[1, 2"#.to_vec(),
                Body::Size(n) => {
                    let mut b = good.as_bytes().to_vec();
                    b.resize(n, b' ');
                    b
                }
            };
            (Bytes::from(b), vec![])
        }
        Front::TfsGrpc => {
            let dtype = match body {
                Body::WrongType => tf::DataType::DtInt32,
                _ => tf::DataType::DtFloat,
            };
            let tensor = tf::TensorProto {
                dtype: dtype as i32,
                tensor_shape: Some(tf::TensorShapeProto {
                    dim: [1, 4]
                        .iter()
                        .map(|&size| tf::tensor_shape_proto::Dim {
                            size,
                            name: String::new(),
                        })
                        .collect(),
                    unknown_rank: false,
                }),
                tensor_content: Bytes::from(floats),
                ..Default::default()
            };
            let spec = tfs::ModelSpec {
                name: model.into(),
                version_choice: version.parse().ok().map(|value| {
                    tfs::model_spec::VersionChoice::Version(tfs::Int64Value { value })
                }),
                signature_name: String::new(),
            };
            let mut req = tfs::PredictRequest {
                model_spec: Some(spec),
                inputs: [("x".to_owned(), tensor)].into(),
                output_filter: vec![],
            };
            let mut wire = req.encode_to_vec();
            match body {
                Body::Good | Body::WrongType => {}
                // The model spec, then an inputs entry that runs past the end.
                Body::Malformed => {
                    req.inputs.clear();
                    wire = req.encode_to_vec();
                    wire.extend_from_slice(&[0x12, 0xff, 0x01, 0x00]);
                }
                Body::Size(n) => pad_unknown_field(&mut wire, n),
            }
            (Bytes::from(wire), vec![])
        }
    }
}

/// Pads a protobuf message to `n` bytes with an unknown length-delimited field (15).
fn pad_unknown_field(wire: &mut Vec<u8>, n: usize) {
    let pad = n - wire.len() - 4;
    wire.push(0x7a);
    let mut len = pad;
    while len >= 0x80 {
        wire.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    wire.push(len as u8);
    wire.resize(n, 0);
}

/// The outcome of one call: HTTP status (REST), gRPC code (gRPC), Warden's request id.
#[derive(Debug)]
struct Seen {
    status: Option<u16>,
    code: Option<i32>,
    id: String,
    body: String,
}

async fn infer(
    server: &Server,
    front: Front,
    token: Option<&str>,
    model: &str,
    version: &str,
    body: Body,
) -> Seen {
    let ca = server.certs.join("ca.pem");
    let (bytes, mut headers) = infer_body(front, model, version, body);
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match front {
        Front::RestJson | Front::RestBinary | Front::TfsRest => {
            let path = match (front, version.is_empty()) {
                (Front::TfsRest, true) => format!("/v1/models/{model}:predict"),
                (Front::TfsRest, false) => format!("/v1/models/{model}/versions/{version}:predict"),
                (_, true) => format!("/v2/models/{model}/infer"),
                (_, false) => format!("/v2/models/{model}/versions/{version}/infer"),
            };
            let r = https_request(server.rest_port, &ca, "POST", &path, &h, bytes)
                .await
                .unwrap();
            Seen {
                status: Some(r.status),
                code: None,
                id: header(&r.headers),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            }
        }
        Front::Grpc | Front::TfsGrpc => {
            let path = if front == Front::Grpc {
                "/inference.GRPCInferenceService/ModelInfer"
            } else {
                "/tensorflow.serving.PredictionService/Predict"
            };
            let mut c = H2::connect(server.grpc_port, &ca).await.unwrap();
            let r = c.grpc_raw(path, &h, grpc_frame(&bytes)).await.unwrap();
            Seen {
                status: None,
                code: Some(r.code),
                id: header(&r.headers),
                body: r.message,
            }
        }
    }
}

fn header(h: &http::HeaderMap) -> String {
    h.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

struct Case {
    name: &'static str,
    who: Option<&'static str>,
    model: &'static str,
    version: &'static str,
    body: Body,
    status: u16,
    code: i32,
    decision: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_is_the_same_decision_through_every_front() {
    let (mut server, audit, _tmp) = start("pipeline-table", "");
    server.wait_ready().await;
    let bad = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    let cases = [
        Case {
            name: "served",
            who: Some("alice"),
            model: "addn",
            version: "",
            body: Body::Good,
            status: 200,
            code: 0,
            decision: "allowed",
        },
        Case {
            name: "no token",
            who: None,
            model: "addn",
            version: "",
            body: Body::Good,
            status: 401,
            code: 16,
            decision: "denied",
        },
        Case {
            name: "bad token",
            who: Some("!bad"),
            model: "addn",
            version: "",
            body: Body::Good,
            status: 401,
            code: 16,
            decision: "denied",
        },
        Case {
            name: "wrong model",
            who: Some("carol"),
            model: "addn",
            version: "",
            body: Body::Good,
            status: 403,
            code: 7,
            decision: "denied",
        },
        Case {
            name: "wrong version",
            who: Some("dave"),
            model: "addn",
            version: "2",
            body: Body::Good,
            status: 403,
            code: 7,
            decision: "denied",
        },
        Case {
            name: "wrong operation",
            who: Some("bob"),
            model: "addn",
            version: "",
            body: Body::Good,
            status: 403,
            code: 7,
            decision: "denied",
        },
        Case {
            name: "oversized",
            who: Some("alice"),
            model: "addn",
            version: "",
            body: Body::Size(MAX_BODY + 10 * KIB),
            status: 413,
            code: 8,
            decision: "invalid",
        },
        Case {
            name: "over quota",
            who: Some("alice"),
            model: "addn",
            version: "",
            body: Body::Size(QUOTA_PER_PRINCIPAL + 10 * KIB),
            status: 429,
            code: 8,
            decision: "quota_exceeded",
        },
        Case {
            name: "malformed",
            who: Some("alice"),
            model: "addn",
            version: "",
            body: Body::Malformed,
            status: 400,
            code: 3,
            decision: "invalid",
        },
        Case {
            name: "datatype mismatch",
            who: Some("alice"),
            model: "addn",
            version: "",
            body: Body::WrongType,
            status: 400,
            code: 3,
            decision: "invalid",
        },
        Case {
            name: "unknown model",
            who: Some("eve"),
            model: "nosuch",
            version: "",
            body: Body::Good,
            status: 404,
            code: 5,
            decision: "invalid",
        },
        Case {
            name: "unknown version",
            who: Some("alice"),
            model: "addn",
            version: "7",
            body: Body::Good,
            status: 404,
            code: 5,
            decision: "invalid",
        },
        Case {
            name: "version not served",
            who: Some("alice"),
            model: "addn",
            version: "1",
            body: Body::Good,
            status: 404,
            code: 5,
            decision: "invalid",
        },
    ];
    for front in Front::ALL {
        for c in &cases {
            let token = match c.who {
                None => None,
                Some("!bad") => Some(bad.to_string()),
                Some(sub) => Some(server.token(claims(sub, 600))),
            };
            let seen = infer(&server, front, token.as_deref(), c.model, c.version, c.body).await;
            let what = format!("{front:?} / {}: {seen:?}", c.name);
            if front.grpc() {
                assert_eq!(seen.code, Some(c.code), "{what}");
            } else {
                assert_eq!(seen.status, Some(c.status), "{what}");
                // Both REST APIs refuse in the `{"error": "..."}` shape.
                if c.status != 200 {
                    let e: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
                    assert!(e["error"].is_string(), "{what}");
                }
            }
            assert!(!seen.id.is_empty(), "{what}: no x-request-id");
            let r =
                audit_record(&audit, &seen.id).unwrap_or_else(|| panic!("{what}: no audit record"));
            assert_eq!(r["decision"], c.decision, "{what}: {r}");
            assert_eq!(
                r["status"], c.status,
                "{what}: the same status in the record: {r}"
            );
            if front.grpc() {
                assert_eq!(r["grpc_code"], c.code, "{what}: {r}");
            }
            if c.decision == "allowed" {
                assert!(seen.body.contains("\"outputs\"") || front.grpc(), "{what}");
            } else {
                // Nothing a client named and the repository lacks is written down.
                assert_ne!(r["model"], "nosuch", "{what}: {r}");
                assert_ne!(r["version"], "7", "{what}: {r}");
            }
        }
        // Over rate: the flood principal's burst is 2 calls.
        let flood = server.token(claims(&format!("flood-{front:?}"), 600));
        let mut last = None;
        for _ in 0..3 {
            last = Some(infer(&server, front, Some(&flood), "addn", "", Body::Good).await);
        }
        let seen = last.unwrap();
        if front.grpc() {
            assert_eq!(seen.code, Some(8), "{front:?} over rate: {seen:?}");
        } else {
            assert_eq!(seen.status, Some(429), "{front:?} over rate: {seen:?}");
        }
        let r = audit_record(&audit, &seen.id).unwrap();
        assert_eq!(r["decision"], "rate_limited", "{r}");
        assert_eq!(r["status"], 429, "{r}");
    }

    // Draining: both fronts report not ready at once, on connections made before.
    let ca = server.certs.join("ca.pem");
    let mut rest = H2::connect(server.rest_port, &ca).await.unwrap();
    let mut grpc = H2::connect(server.grpc_port, &ca).await.unwrap();
    let r = rest
        .request("GET", "/v2/health/ready", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"ready": true}))
    );
    let g = grpc.grpc("ServerReady", &[], &[]).await.unwrap();
    assert!(g.decode::<proto::ServerReadyResponse>().ready);
    let mut rest = H2::connect(server.rest_port, &ca).await.unwrap();
    let mut grpc = H2::connect(server.grpc_port, &ca).await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = rest
        .request("GET", "/v2/health/ready", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()),
        (503, serde_json::json!({"ready": false})),
        "REST while draining"
    );
    let g = grpc.grpc("ServerReady", &[], &[]).await.unwrap();
    assert_eq!(g.code, 0);
    assert!(
        !g.decode::<proto::ServerReadyResponse>().ready,
        "gRPC while draining"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_authorization_and_metadata_go_through_the_same_pipeline() {
    let (mut server, audit, _tmp) = start("pipeline-grpc", "");
    server.wait_ready().await;
    let ca = server.certs.join("ca.pem");
    let mut c = H2::connect(server.grpc_port, &ca).await.unwrap();
    let meta = proto::ModelMetadataRequest {
        name: "addn".into(),
        version: String::new(),
    }
    .encode_to_vec();
    for (who, code) in [("alice", 0), ("bob", 0), ("carol", 7), ("dave", 7)] {
        let auth = format!("Bearer {}", server.token(claims(who, 600)));
        let r = c
            .grpc("ModelMetadata", &[("authorization", &auth)], &meta)
            .await
            .unwrap();
        assert_eq!(r.code, code, "{who}: {r:?}");
        if code == 0 {
            let m: proto::ModelMetadataResponse = r.decode();
            assert_eq!(m.name, "addn");
            assert_eq!(m.versions, vec!["2".to_string()]);
        }
        let rec = audit_record(&audit, &header(&r.headers)).unwrap();
        assert_eq!(rec["operation"], "metadata");
        assert_eq!(rec["principal"], who);
    }
    // Server metadata needs a credential; unknown methods are UNIMPLEMENTED.
    let r = c.grpc("ServerMetadata", &[], &[]).await.unwrap();
    assert_eq!(r.code, 16);
    let auth = format!("Bearer {}", server.good_token());
    let r = c
        .grpc("ModelStreamInfer", &[("authorization", &auth)], &[])
        .await
        .unwrap();
    assert_eq!(r.code, 12);
    // A compressed message is refused, not decoded.
    let mut framed = grpc_frame(&meta).to_vec();
    framed[0] = 1;
    let r = c
        .grpc_raw(
            "/inference.GRPCInferenceService/ModelMetadata",
            &[("authorization", &auth), ("grpc-encoding", "gzip")],
            Bytes::from(framed),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 12, "{r:?}");
    // The client's deadline is the call's deadline: a frozen backend answers
    // DEADLINE_EXCEEDED within it, not after the server's 30 s.
    let backend = server.child_pid("backend");
    let pid = nix::unistd::Pid::from_raw(backend as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let (body, _) = infer_body(Front::Grpc, "addn", "", Body::Good);
    let t = Instant::now();
    let r = c
        .grpc(
            "ModelInfer",
            &[("authorization", &auth), ("grpc-timeout", "500m")],
            &body,
        )
        .await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let r = r.unwrap();
    assert_eq!(r.code, 4, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let rec = audit_record(&audit, &header(&r.headers)).unwrap();
    assert_eq!(rec["decision"], "failed");
}

#[tokio::test]
async fn tfs_metadata_and_status_go_through_the_same_pipeline() {
    let (mut server, audit, _tmp) = start("pipeline-tfs", "");
    server.wait_ready().await;
    let ca = server.certs.join("ca.pem");
    let mut c = H2::connect(server.grpc_port, &ca).await.unwrap();
    let spec = |name: &str| tfs::ModelSpec {
        name: name.into(),
        ..Default::default()
    };
    let meta = tfs::GetModelMetadataRequest {
        model_spec: Some(spec("addn")),
        metadata_field: vec!["signature_def".into()],
    }
    .encode_to_vec();
    let status = tfs::GetModelStatusRequest {
        model_spec: Some(spec("addn")),
    }
    .encode_to_vec();
    // (who, gRPC code and HTTP status for metadata, then for status): the policy's
    // `metadata` and `ready` operations, as for KServe.
    for (who, meta_code, meta_status, status_code, status_status) in [
        (Some("alice"), 0, 200, 0, 200),
        (Some("bob"), 0, 200, 7, 403),
        (Some("carol"), 7, 403, 7, 403),
        (None, 16, 401, 16, 401),
    ] {
        let auth = who.map(|w| format!("Bearer {}", server.token(claims(w, 600))));
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = c
            .grpc_raw(
                "/tensorflow.serving.PredictionService/GetModelMetadata",
                &h,
                grpc_frame(&meta),
            )
            .await
            .unwrap();
        assert_eq!(r.code, meta_code, "{who:?} metadata: {r:?}");
        if meta_code == 0 {
            let m: tfs::GetModelMetadataResponse = r.decode();
            let sigs =
                tfs::SignatureDefMap::decode(&m.metadata["signature_def"].value[..]).unwrap();
            let x = &sigs.signature_def["serving_default"].inputs["x"];
            assert_eq!(x.dtype, tf::DataType::DtFloat as i32);
        }
        let rec = audit_record(&audit, &header(&r.headers)).unwrap();
        assert_eq!(rec["operation"], "metadata", "{rec}");
        let r = c
            .grpc_raw(
                "/tensorflow.serving.ModelService/GetModelStatus",
                &h,
                grpc_frame(&status),
            )
            .await
            .unwrap();
        assert_eq!(r.code, status_code, "{who:?} status: {r:?}");
        if status_code == 0 {
            let s: tfs::GetModelStatusResponse = r.decode();
            assert_eq!(s.model_version_status.len(), 1);
            assert_eq!(s.model_version_status[0].version, 2);
        }
        let rec = audit_record(&audit, &header(&r.headers)).unwrap();
        assert_eq!(rec["operation"], "ready", "{rec}");
        for (path, want) in [
            ("/v1/models/addn/metadata", meta_status),
            ("/v1/models/addn", status_status),
        ] {
            let r = https_request(server.rest_port, &ca, "GET", path, &h, Bytes::new())
                .await
                .unwrap();
            assert_eq!(r.status, want, "{who:?} {path}");
            if want != 200 {
                assert!(r.json()["error"].is_string(), "{who:?} {path}");
            }
            let rec = audit_record(&audit, &header(&r.headers)).unwrap();
            assert_eq!(rec["status"], want, "{rec}");
        }
    }
    // A model the caller has no right on is 403 whether it exists or not; a version
    // label is refused; a method TFS has and Warden does not serve is UNIMPLEMENTED.
    let auth = format!("Bearer {}", server.good_token());
    let h = [("authorization", auth.as_str())];
    let unknown = tfs::GetModelStatusRequest {
        model_spec: Some(spec("nosuch")),
    }
    .encode_to_vec();
    let r = c
        .grpc_raw(
            "/tensorflow.serving.ModelService/GetModelStatus",
            &h,
            grpc_frame(&unknown),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 7, "{r:?}");
    let mut labelled = spec("addn");
    labelled.version_choice = Some(tfs::model_spec::VersionChoice::VersionLabel(
        "stable".into(),
    ));
    let label = tfs::GetModelStatusRequest {
        model_spec: Some(labelled),
    }
    .encode_to_vec();
    let r = c
        .grpc_raw(
            "/tensorflow.serving.ModelService/GetModelStatus",
            &h,
            grpc_frame(&label),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 3, "{r:?}");
    let r = c
        .grpc_raw(
            "/tensorflow.serving.PredictionService/Classify",
            &h,
            grpc_frame(&meta),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 12, "{r:?}");
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid)
        .get("VmRSS")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's resident memory until stopped; the peak, in KiB.
fn peak_sampler(pid: u32) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut max = 0;
        for _ in 0..6000 {
            if s.load(Ordering::Relaxed) {
                break;
            }
            max = max.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max
    });
    (stop, task)
}

/// A well-behaved gRPC client inferring until stopped; every answer must be right.
fn good_client(
    server: &Server,
) -> (
    Arc<AtomicBool>,
    tokio::task::JoinHandle<(usize, Vec<String>)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let (port, ca, token) = (
        server.grpc_port,
        server.certs.join("ca.pem"),
        server.good_token(),
    );
    let task = tokio::spawn(async move {
        let auth = format!("Bearer {token}");
        let (body, _) = infer_body(Front::Grpc, "addn", "", Body::Good);
        let (mut ok, mut bad) = (0, Vec::new());
        let mut c = H2::connect(port, &ca).await.unwrap();
        for _ in 0..2000 {
            if s.load(Ordering::Relaxed) {
                break;
            }
            match c
                .grpc("ModelInfer", &[("authorization", &auth)], &body)
                .await
            {
                Ok(r) if r.code == 0 => {
                    let resp: proto::ModelInferResponse = r.decode();
                    let y: Vec<f32> = resp.raw_output_contents[0]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    if y == [3., 4., 5., 6.] {
                        ok += 1
                    } else {
                        bad.push(format!("{y:?}"))
                    }
                }
                Ok(r) => bad.push(format!("{} {}", r.code, r.message)),
                Err(e) => bad.push(format!("{e:#}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok, bad)
    });
    (stop, task)
}

async fn finish_good(
    good: (
        Arc<AtomicBool>,
        tokio::task::JoinHandle<(usize, Vec<String>)>,
    ),
    case: &str,
) {
    good.0.store(true, Ordering::Relaxed);
    let (ok, bad) = good.1.await.unwrap();
    assert!(
        bad.is_empty(),
        "{case}: the good client saw failures: {bad:?}"
    );
    assert!(
        ok >= 3,
        "{case}: the good client was served only {ok} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_grpc_messages_are_neither_read_nor_decoded() {
    // The gRPC cap is 64 MiB here, so nothing but authentication stands between a
    // stranger's 4 MiB messages and the gateway's memory.
    let (mut server, _audit, _tmp) = start(
        "pipeline-unauth",
        "max_grpc_message_bytes = 67108864\nquota_bytes = 1073741824\nquota_per_principal_bytes = 1073741824\nrate_per_ip_unauthenticated_rps = 100000\n",
    );
    server.wait_ready().await;
    let gw = server.child_pid("gateway");
    let base = rss_kib(gw);
    let (stop, peak) = peak_sampler(gw);
    let good = good_client(&server);
    // A message whose every input is an empty tensor: two bytes each on the wire,
    // hundreds once decoded (protobuf amplification).
    let amplifying = proto::ModelInferRequest {
        model_name: "addn".into(),
        inputs: vec![Default::default(); 2 * 1024 * 1024],
        ..Default::default()
    }
    .encode_to_vec();
    assert!(amplifying.len() >= 4 * MIB);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (port, ca, body) = (
            server.grpc_port,
            server.certs.join("ca.pem"),
            amplifying.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            while Instant::now() < deadline && refused < 40 {
                let Ok(mut c) = H2::connect(port, &ca).await else {
                    continue;
                };
                if let Ok(r) = c.grpc("ModelInfer", &[], &body).await {
                    assert_eq!(r.code, 16, "{r:?}");
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    finish_good(good, "unauthenticated 4 MiB gRPC flood").await;
    stop.store(true, Ordering::Relaxed);
    let peak = peak.await.unwrap();
    eprintln!(
        "unauthenticated flood: {refused} refused; gateway RSS base {base} KiB, peak {peak} KiB"
    );
    assert!(refused >= 8, "the flood ran: {refused}");
    // Four 4 MiB messages held at once would be 16 MiB; decoded, gigabytes.
    assert!(
        peak < base + 32 * 1024,
        "gateway grew from {base} to {peak} KiB under unauthenticated messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_names_and_versions_do_not_grow_audit_records_or_metrics() {
    let (mut server, audit, _tmp) = start("pipeline-names", "");
    server.wait_ready().await;
    let ca = server.certs.join("ca.pem");
    let metrics = || plain_get(server.admin_port, "/metrics");
    let before = metrics().await.unwrap().len();
    let audit_before = std::fs::metadata(&audit).unwrap().len();
    let eve = format!("Bearer {}", server.token(claims("eve", 600)));
    let alice = format!("Bearer {}", server.token(claims("alice", 600)));
    let mut c = H2::connect(server.grpc_port, &ca).await.unwrap();
    const N: usize = 60;
    for i in 0..N {
        // gRPC: a long random version for a model the caller may use.
        let version: String = format!("{i}{}", "9".repeat(900));
        let (body, _) = infer_body(Front::Grpc, "addn", &version, Body::Good);
        let r = c
            .grpc("ModelInfer", &[("authorization", &alice)], &body)
            .await
            .unwrap();
        assert_eq!(r.code, 3, "{r:?}");
        let digits = format!("{}", 10_000_000 + i);
        let (body, _) = infer_body(Front::Grpc, "addn", &digits, Body::Good);
        let r = c
            .grpc("ModelInfer", &[("authorization", &alice)], &body)
            .await
            .unwrap();
        assert_eq!(r.code, 5, "{r:?}");
        // REST: random model names, allowed by a rule for every model.
        let name = format!("m{i}-{}", "x".repeat(100));
        let r = https_request(
            server.rest_port,
            &ca,
            "POST",
            &format!("/v2/models/{name}/infer"),
            &[("authorization", &eve)],
            Bytes::from_static(ADD.as_bytes()),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 404);
        // And without a credential at all.
        let r = https_request(
            server.rest_port,
            &ca,
            "POST",
            &format!("/v2/models/{name}/infer"),
            &[],
            Bytes::from_static(ADD.as_bytes()),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401);
    }
    let after = metrics().await.unwrap();
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains("xxxxxxxxxx") && !text.contains("99999999999"),
        "a made-up name reached the audit log"
    );
    assert!(
        !after.contains("xxxxxxxxxx") && !after.contains("10000001"),
        "a made-up name reached a metric label"
    );
    let per_record = (text.len() as u64 - audit_before) / (4 * N as u64);
    eprintln!(
        "made-up names: /metrics {before} -> {} bytes; audit {per_record} bytes per record",
        after.len()
    );
    assert!(
        per_record < 1024,
        "audit records are not bounded: {per_record} bytes each"
    );
    // New fixed label sets only (refusal reasons, auth failures), never one per name.
    assert!(
        after.len() < before + 8 * 1024,
        "/metrics grew from {before} to {}",
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_principal_without_the_right_cannot_spend_a_models_rate() {
    let (mut server, _audit, _tmp) = start(
        "pipeline-model-rate",
        "rate_per_model_rps = 2\nrate_burst_seconds = 2\n",
    );
    server.wait_ready().await;
    let carol = server.token(claims("carol", 600));
    let alice = server.token(claims("alice", 600));
    for front in [Front::RestJson, Front::Grpc] {
        for _ in 0..20 {
            let s = infer(&server, front, Some(&carol), "addn", "", Body::Good).await;
            assert!(s.status == Some(403) || s.code == Some(7), "{s:?}");
        }
    }
    // The model's whole budget is still there for its rightful caller.
    for front in [Front::RestJson, Front::RestBinary, Front::Grpc] {
        let s = infer(&server, front, Some(&alice), "addn", "", Body::Good).await;
        assert!(
            s.status == Some(200) || s.code == Some(0),
            "{front:?}: {s:?}"
        );
    }
}

/// A JSON infer body of `n` FP32 zeros, two bytes each on the wire.
fn zeros_json(n: usize) -> Bytes {
    let mut body = format!(r#"{{"inputs":[{{"name":"x","shape":[{n}],"datatype":"FP32","data":["#)
        .into_bytes();
    for i in 0..n {
        body.extend_from_slice(if i + 1 == n { b"0" } else { b"0," });
    }
    body.extend_from_slice(b"]}]}");
    Bytes::from(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_bodies_are_charged_for_what_they_decode_to() {
    // Every principal may hold 64 MiB, the server 128 MiB; the body cap is not the
    // limit here.
    let (mut server, _audit, _tmp) = start(
        "pipeline-json",
        "max_body_bytes = 67108864\nmax_tensor_elements = 100000000\nquota_bytes = 134217728\nquota_per_principal_bytes = 67108864\n",
    );
    server.wait_ready().await;
    let gw = server.child_pid("gateway");
    let base = rss_kib(gw);
    let (stop, peak) = peak_sampler(gw);
    // 12 M one-digit floats: 24 MiB on the wire, 48 MiB as an FP32 tensor, 48 MiB more
    // encoded for the socket. That is over the principal's quota although the wire
    // alone is far under it.
    let n = 12 * 1024 * 1024;
    let body = zeros_json(n);
    let ca = server.certs.join("ca.pem");
    let alice = format!("Bearer {}", server.token(claims("alice", 600)));
    let r = https_request(
        server.rest_port,
        &ca,
        "POST",
        "/v2/models/addn/infer",
        &[("authorization", &alice)],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status,
        429,
        "wire + decoded tensor is over the quota: {}",
        String::from_utf8_lossy(&r.body)
    );
    // Half the elements: 12 MiB wire + 24 MiB tensor + 24 MiB encoded fit; the backend
    // then refuses the shape (addn takes [1,4]), after the gateway decoded and sent it
    // within its quota.
    let half = n / 2;
    let small = zeros_json(half);
    let wire = small.len();
    let r = https_request(
        server.rest_port,
        &ca,
        "POST",
        "/v2/models/addn/infer",
        &[("authorization", &alice)],
        small,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    stop.store(true, Ordering::Relaxed);
    let peak = peak.await.unwrap();
    let charged = wire + 2 * half * 4;
    let grown = (peak.saturating_sub(base) * 1024) as usize;
    eprintln!(
        "JSON accounting: charged {} KiB (wire + tensor), gateway grew {} KiB: ratio {:.2}",
        charged / 1024,
        grown / 1024,
        grown as f64 / charged as f64
    );
    // What the gateway really held is what the quota counted (plus allocator slack),
    // where the old decoder held ~15x the wire size.
    assert!(
        grown < charged * 2,
        "grew {grown} bytes for {charged} charged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_read_refusals_sent_before_their_upload_ends() {
    let (mut server, _audit, _tmp) = start("pipeline-early", "");
    server.wait_ready().await;
    // Three times the body cap, under the bound the gateway discards to let a client
    // finish its upload (pipeline::REFUSAL_DISCARD_BYTES).
    let size = 3 * MAX_BODY;
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(root().join(".venv/bin/python"))
            .arg(root().join("tests/clients/early_answers.py"))
            .args([
                server.rest_port.to_string(),
                server.grpc_port.to_string(),
                server.certs.join("ca.pem").display().to_string(),
                server.good_token(),
                size.to_string(),
            ])
            .output(),
    )
    .await
    .expect("the clients finish")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("early answers: {seen:#}");
    let expect = |case: &str, want: &str| {
        let got = seen[case].as_str().unwrap_or_default();
        assert!(got.starts_with(want), "{case}: got {got:?}, want {want:?}");
    };
    for (label, status, grpc) in [
        ("unauthenticated", "401", "StatusCode.UNAUTHENTICATED"),
        ("oversized", "413", "StatusCode.RESOURCE_EXHAUSTED"),
    ] {
        expect(
            &format!("curl http1.1 {label}"),
            &format!("{status} exit 0"),
        );
        expect(&format!("curl http2 {label}"), &format!("{status} exit 0"));
        expect(&format!("httpx 1.1 {label}"), &format!("{status} HTTP/1.1"));
        expect(&format!("httpx 2 {label}"), &format!("{status} HTTP/2"));
        expect(&format!("tritonclient http {label}"), status);
        expect(&format!("tritonclient grpc {label}"), grpc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_calls_at_once_are_bounded_like_ovms_grpc_max_threads() {
    let (mut server, audit, _tmp) = start("pipeline-grpc-calls", "grpc_max_concurrent_calls = 1\n");
    server.wait_ready().await;
    let ca = server.certs.join("ca.pem");
    let auth = format!("Bearer {}", server.good_token());
    let (body, _) = infer_body(Front::Grpc, "addn", "", Body::Good);
    // One call held in the frozen backend takes the only slot.
    let pid = nix::unistd::Pid::from_raw(server.child_pid("backend") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let held = {
        let (port, ca, auth, body) = (server.grpc_port, ca.clone(), auth.clone(), body.clone());
        tokio::spawn(async move {
            let mut c = H2::connect(port, &ca).await.unwrap();
            c.grpc(
                "ModelInfer",
                &[("authorization", &auth), ("grpc-timeout", "3S")],
                &body,
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = H2::connect(server.grpc_port, &ca).await.unwrap();
    // (Without the bound it would wait in the frozen backend: DEADLINE_EXCEEDED.)
    let r = c
        .grpc(
            "ModelInfer",
            &[("authorization", &auth), ("grpc-timeout", "2S")],
            &body,
        )
        .await
        .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(r.code, 8, "the second call at once: {r:?}");
    let rec = audit_record(&audit, &header(&r.headers)).unwrap();
    assert_eq!(rec["decision"], "rate_limited", "{rec}");
    let _ = held.await.unwrap();
    // The slot is free again.
    let r = c
        .grpc("ModelInfer", &[("authorization", &auth)], &body)
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
}
