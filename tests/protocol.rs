//! The KServe v2 protocol against real clients: tritonclient over HTTPS and gRPC+TLS,
//! a plain generated gRPC stub, and hand-made hostile bodies.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use warden_tests::*;

fn config(dir: &std::path::Path, addn_policy: serde_json::Value) -> Vec<String> {
    let f32 = serde_json::json!({"INFERENCE_PRECISION_HINT": "f32"});
    let config = serde_json::json!({"model_config_list": [
        {"config": {"name": "nsfw", "base_path": model_dir("nsfw"), "plugin_config": f32}},
        {"config": {"name": "blazeface", "base_path": model_dir("blazeface"), "plugin_config": f32}},
        {"config": {"name": "identity", "base_path": model_dir("identity"), "nireq": 2}},
        {"config": {"name": "addn", "base_path": model_dir("addn"), "model_version_policy": addn_policy}},
    ]});
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).expect("config.json");
    vec!["--config-path".into(), path.display().to_string()]
}

#[tokio::test]
async fn real_kserve_clients_work_unchanged() {
    let cfg = TempDir::new("proto");
    let mut server = Server::start(&config(cfg.path(), serde_json::json!({"all": {}})), &[]);
    server.wait_ready().await;
    run_client(
        &root().join(".venv/bin/python"),
        "kserve_clients.py",
        &[
            server.rest_port.to_string(),
            server.grpc_port.to_string(),
            server.certs.join("ca.pem").display().to_string(),
            server.token(claims("client-test", 600)),
            root().join(".models").display().to_string(),
        ],
        &server,
    );
}

async fn addn_versions(policy: serde_json::Value) -> (Vec<String>, Vec<(String, u16)>) {
    let cfg = TempDir::new("policy");
    let mut server = Server::start(&config(cfg.path(), policy), &[]);
    server.wait_ready().await;
    let meta = server
        .call("GET", "/v2/models/addn", Bytes::new())
        .await
        .json();
    let versions = meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut answers = Vec::new();
    for v in ["1", "2"] {
        let body = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}"#;
        let r = server
            .call("POST", &format!("/v2/models/addn/versions/{v}/infer"), body)
            .await;
        answers.push((v.to_owned(), r.status));
        if r.status == 200 {
            let y = floats(&r.json()["outputs"][0]["data"]);
            assert_eq!(
                y,
                vec![v.parse::<f64>().unwrap(); 4],
                "version {v} answered"
            );
        }
    }
    (versions, answers)
}

#[tokio::test]
async fn version_policies_choose_what_is_served() {
    let (v, a) = addn_versions(serde_json::json!({"latest": {"num_versions": 1}})).await;
    assert_eq!(v, ["2"]);
    assert_eq!(a, [("1".into(), 404), ("2".into(), 200)]);
    let (v, a) = addn_versions(serde_json::json!({"specific": {"versions": [1]}})).await;
    assert_eq!(v, ["1"]);
    assert_eq!(a, [("1".into(), 200), ("2".into(), 404)]);
    let (v, a) = addn_versions(serde_json::json!({"all": {}})).await;
    assert_eq!(v, ["2", "1"]);
    assert_eq!(a, [("1".into(), 200), ("2".into(), 200)]);
}

#[tokio::test]
async fn malformed_bodies_are_400_and_the_server_keeps_serving() {
    let cfg = TempDir::new("bad");
    let mut server = Server::start(&config(cfg.path(), serde_json::json!({"all": {}})), &[]);
    server.wait_ready().await;
    let auth = format!("Bearer {}", server.good_token());
    let infer = "/v2/models/addn/versions/1/infer";
    let json_x = |extra: &str| {
        format!(r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP32",{extra}}}]}}"#)
    };
    // (what, body, Inference-Header-Content-Length)
    let mut cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("wrong datatype", json_x(r#""data":[1,2,3,4]"#).replace("FP32", "INT32").into_bytes(), None),
        ("unknown datatype", json_x(r#""data":[1,2,3,4]"#).replace("FP32", "FLOAT").into_bytes(), None),
        ("short data", json_x(r#""data":[1,2,3]"#).into_bytes(), None),
        ("long data", json_x(r#""data":[1,2,3,4,5]"#).into_bytes(), None),
        ("string in FP32", json_x(r#""data":[1,2,3,"x"]"#).into_bytes(), None),
        ("negative dim", json_x(r#""data":[1,2,3,4]"#).replace("[1,4]", "[-1,-4]").into_bytes(), None),
        ("overflowing shape", json_x(r#""data":[1]"#).replace("[1,4]", "[4294967296,4294967296,4294967296]").into_bytes(), None),
        ("non-JSON", b"not json".to_vec(), None),
        ("empty body", Vec::new(), None),
        ("duplicate inputs", br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.to_vec(), None),
        ("missing inputs", br#"{"inputs":[]}"#.to_vec(), None),
        ("no inputs key", br#"{"id":"x"}"#.to_vec(), None),
        ("data and binary", json_x(r#""data":[1,2,3,4],"parameters":{"binary_data_size":16}"#).into_bytes(), None),
    ];
    let bin_json = json_x(r#""parameters":{"binary_data_size":16}"#);
    let mut with_bin = |what: &'static str, bin: Vec<u8>, header: Option<String>| {
        let mut body = bin_json.clone().into_bytes();
        let n = body.len();
        body.extend(bin);
        cases.push((what, body, Some(header.unwrap_or(n.to_string()))));
    };
    with_bin("binary short", vec![0; 15], None);
    with_bin("binary long", vec![0; 17], None);
    with_bin(
        "header length past body",
        vec![0; 16],
        Some("100000".into()),
    );
    with_bin(
        "header length not a number",
        vec![0; 16],
        Some("12abc".into()),
    );
    with_bin(
        "header length cuts the JSON",
        vec![0; 16],
        Some("10".into()),
    );
    let bytes_json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":9}}]}"#;
    let mut framing = bytes_json.as_bytes().to_vec();
    framing.extend([1, 0, 0, 0, b'a', 9, 0, 0, 0]); // second element claims 9 bytes, has 0
    cases.push((
        "bad BYTES framing",
        framing,
        Some(bytes_json.len().to_string()),
    ));

    for (what, body, header) in cases {
        let mut headers = vec![("authorization", auth.as_str())];
        let h;
        if let Some(v) = &header {
            h = v.clone();
            headers.push(("inference-header-content-length", h.as_str()));
        }
        let r = server
            .request("POST", infer, &headers, Bytes::from(body))
            .await
            .expect("answered");
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.json()["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // And it still answers correctly, with binary input and output.
    let mut body = bin_json.into_bytes();
    let n = body.len();
    for f in [1f32, 2., 3., 4.] {
        body.extend(f.to_le_bytes());
    }
    let hl = n.to_string();
    let r = server
        .request(
            "POST",
            infer,
            &[
                ("authorization", &auth),
                ("inference-header-content-length", &hl),
            ],
            Bytes::from(body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        floats(&r.json()["outputs"][0]["data"]),
        vec![2.0, 3.0, 4.0, 5.0]
    );
}

#[tokio::test]
async fn bf16_round_trips_through_the_binary_extension() {
    // tritonclient has no numpy BF16 type; check Triton's extension by hand.
    let cfg = TempDir::new("bf16");
    let mut server = Server::start(&config(cfg.path(), serde_json::json!({"all": {}})), &[]);
    server.wait_ready().await;
    let values: [u16; 4] = [0x3f80, 0xc000, 0x0001, 0x7f7f]; // 1.0, -2.0, smallest subnormal, large
    // The identity model takes one [n,4] input per datatype; send zeros for the others.
    let types = [
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
        "BF16", "FP32", "FP64",
    ];
    let size = |t: &str| match t {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        _ => 8,
    };
    let inputs: Vec<serde_json::Value> = types
        .iter()
        .map(|t| serde_json::json!({"name": format!("x_{t}"), "shape": [1, 4], "datatype": t, "parameters": {"binary_data_size": 4 * size(t)}}))
        .collect();
    let json = serde_json::json!({"inputs": inputs, "outputs": [{"name": "x_BF16", "parameters": {"binary_data": true}}]}).to_string();
    let mut body = json.as_bytes().to_vec();
    for t in types {
        if t == "BF16" {
            values.iter().for_each(|v| body.extend(v.to_le_bytes()));
        } else {
            body.extend(vec![0u8; 4 * size(t)]);
        }
    }
    let auth = format!("Bearer {}", server.good_token());
    let hl = json.len().to_string();
    let r = server
        .request(
            "POST",
            "/v2/models/identity/infer",
            &[
                ("authorization", &auth),
                ("inference-header-content-length", &hl),
            ],
            Bytes::from(body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let n: usize = r.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&r.body[..n]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    let back: Vec<u16> = r.body[n..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(back, values);
}
