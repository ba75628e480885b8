//! The foundation's end-to-end checks: a real `warden serve` (gateway + sandboxed
//! backend) serving real models over real TLS, answered like OpenVINO's own Python API.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use std::path::PathBuf;
use warden_tests::*;

/// Both demo models, f32 so results can be compared exactly enough with the reference.
fn two_model_config(dir: &std::path::Path) -> Vec<String> {
    let config = serde_json::json!({"model_config_list": [
        {"config": {"name": "nsfw", "base_path": model_dir("nsfw"),
                    "plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}}},
        {"config": {"name": "blazeface", "base_path": model_dir("blazeface"),
                    "plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}}}
    ]});
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).expect("config.json");
    vec!["--config-path".into(), path.display().to_string()]
}

/// A ready server with one model (from `.models/<dir>`, served as `name`), f32 so its
/// results can be compared with the reference.
async fn f32_server(dir: &str, name: &str) -> Server {
    let mut s = Server::start(
        &[
            "--model-path".into(),
            model_dir(dir).display().to_string(),
            "--model-name".into(),
            name.into(),
        ],
        &["--plugin-config", r#"{"INFERENCE_PRECISION_HINT":"f32"}"#],
    );
    s.wait_ready().await;
    s
}

async fn nsfw_server() -> Server {
    f32_server("nsfw", "nsfw").await
}

/// Tolerance against the in-process reference: both run f32 on the same CPU plugin;
/// only the JSON round trip of inputs (6 decimals, written once, read by both) and
/// output printing differ.
const TOLERANCE: f64 = 1e-5;

#[tokio::test]
async fn real_models_match_the_independent_reference() {
    let models = TempDir::new("cfg");
    let mut server = Server::start(&two_model_config(models.path()), &[]);
    server.wait_ready().await;
    for (model, file, image) in [
        ("nsfw", "nsfw/1/model.onnx", "coffee.png"),
        ("blazeface", "blazeface/1/model.tflite", "astronaut.png"),
    ] {
        let req: PathBuf = server.dir.path().join(format!("{model}.json"));
        example_request(model, image, &req).expect("request file");
        let reply = server
            .call(
                "POST",
                &format!("/v2/models/{model}/infer"),
                std::fs::read(&req).unwrap(),
            )
            .await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let got = reply.json();
        assert_eq!(got["model_name"], model);
        assert_eq!(got["model_version"], "1");
        assert_eq!(got["id"], format!("example-{model}"));
        let expected = reference(&root().join(".models").join(file), &req).expect("reference runs");
        let outputs = got["outputs"].as_array().expect("outputs");
        assert_eq!(
            outputs.len(),
            expected["outputs"].as_object().unwrap().len()
        );
        for out in outputs {
            let name = out["name"].as_str().unwrap();
            let want = &expected["outputs"][name];
            assert_eq!(out["shape"], want["shape"], "{model}/{name} shape");
            assert_eq!(out["datatype"], "FP32");
            let diff = max_abs_diff(&floats(&out["data"]), &floats(&want["data"]));
            assert!(
                diff <= TOLERANCE,
                "{model}/{name}: max |diff| {diff} > {TOLERANCE}"
            );
        }
        // Sanity on meaning, not just agreement: coffee is safe for work; astronaut has a face.
        if model == "nsfw" {
            let p = floats(&outputs[0]["data"]);
            assert!(p[0] > 0.9, "coffee.png should be SFW, got {p:?}");
        }
    }
    // Selecting one output returns only it.
    let req = server.dir.path().join("blazeface.json");
    let mut body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&req).unwrap()).unwrap();
    body["outputs"] = serde_json::json!([{"name": "classificators"}]);
    let reply = server
        .call(
            "POST",
            "/v2/models/blazeface/versions/1/infer",
            body.to_string(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let outs = reply.json()["outputs"].as_array().unwrap().clone();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0]["name"], "classificators");
    assert_eq!(outs[0]["shape"], serde_json::json!([1, 896, 1]));
}

/// An int8-quantized model with int64 inputs of dynamic shape (all-MiniLM-L6-v2, int8
/// weights): the quantized kernels run inside the sandbox's allow-list too
/// (scripts/syscalls.sh traces this test), and answer like OpenVINO's own Python API.
#[tokio::test]
async fn an_int8_model_with_dynamic_int64_inputs_matches_the_reference() {
    let server = f32_server("minilm_int8", "minilm").await;
    // "[CLS] hello world [SEP]" and a longer second call: the shape is chosen per request.
    for ids in [
        vec![101i64, 7592, 2088, 102],
        vec![101, 1996, 4248, 2829, 4419, 14523, 102],
    ] {
        let n = ids.len();
        let tensor = |name: &str, data: Vec<i64>| serde_json::json!({"name": name, "shape": [1, n], "datatype": "INT64", "data": data});
        let body = serde_json::json!({"inputs": [
            tensor("input_ids", ids.clone()),
            tensor("attention_mask", vec![1; n]),
            tensor("token_type_ids", vec![0; n]),
        ]});
        let req = server.dir.path().join("minilm.json");
        std::fs::write(&req, body.to_string()).unwrap();
        let reply = server
            .call("POST", "/v2/models/minilm/infer", body.to_string())
            .await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let got = reply.json();
        let out = &got["outputs"][0];
        assert_eq!(out["name"], "last_hidden_state");
        assert_eq!(out["shape"], serde_json::json!([1, n, 384]));
        let expected = reference(&model_dir("minilm_int8").join("1/model.onnx"), &req)
            .expect("reference runs");
        let want = &expected["outputs"]["last_hidden_state"];
        assert_eq!(out["shape"], want["shape"]);
        let diff = max_abs_diff(&floats(&out["data"]), &floats(&want["data"]));
        assert!(diff <= TOLERANCE, "minilm: max |diff| {diff} > {TOLERANCE}");
    }
}

#[tokio::test]
async fn metadata_and_health_endpoints() {
    let server = nsfw_server().await;
    let none: &[(&str, &str)] = &[];
    // Liveness and readiness are open; everything else needs a token.
    assert_eq!(
        server
            .request("GET", "/v2/health/live", none, Bytes::new())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        server
            .request("GET", "/v2/health/ready", none, Bytes::new())
            .await
            .unwrap()
            .status,
        200
    );
    let meta = server.call("GET", "/v2", Bytes::new()).await;
    assert_eq!(meta.status, 200);
    assert_eq!(meta.json()["name"], "warden");
    let m = server.call("GET", "/v2/models/nsfw", Bytes::new()).await;
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["name"], "nsfw");
    assert_eq!(m["versions"], serde_json::json!(["1"]));
    assert_eq!(m["platform"], "OpenVINO");
    // The ONNX input's own name, not a name OpenVINO added while compiling.
    assert_eq!(
        m["inputs"][0],
        serde_json::json!({"name": "input_0", "datatype": "FP32", "shape": [-1, 224, 224, 3]})
    );
    assert_eq!(m["outputs"][0]["shape"], serde_json::json!([-1, 2]));
    let ready = server
        .call("GET", "/v2/models/nsfw/versions/1/ready", Bytes::new())
        .await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(
        server
            .call("GET", "/v2/models/nsfw/versions/7/ready", Bytes::new())
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn every_bad_credential_is_a_401_and_the_server_keeps_serving() {
    let server = nsfw_server().await;
    let other = TempDir::new("other-key");
    let other_certs = make_certs(other.path());
    let mut bad: Vec<(&str, String)> = vec![
        ("other key", sign(&other_certs.join("jwt.key"), claims("alice", 600))),
        ("expired", server.token(serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now() - 7200, "exp": now() - 3600}))),
        ("wrong issuer", server.token(serde_json::json!({"sub": "alice", "iss": "https://evil.test", "aud": AUDIENCE, "exp": now() + 600}))),
        ("wrong audience", server.token(serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": "other", "exp": now() + 600}))),
        ("no exp", server.token(serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE}))),
        ("not yet valid", server.token(serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "nbf": now() + 3600, "exp": now() + 7200}))),
        ("garbage", "not.a.token".into()),
    ];
    // alg:none: a header and claims with an empty signature.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    bad.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&claims("alice", 600).to_string())
        ),
    ));
    let path = "/v2/models/nsfw";
    let none: &[(&str, &str)] = &[];
    let missing = server
        .request("GET", path, none, Bytes::new())
        .await
        .unwrap();
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.headers["www-authenticate"],
        "Bearer realm=\"warden\""
    );
    for (what, token) in &bad {
        let auth = format!("Bearer {token}");
        let r = server
            .request("GET", path, &[("authorization", &auth)], Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(
            r.headers["www-authenticate"], "Bearer realm=\"warden\", error=\"invalid_token\"",
            "{what}"
        );
        // The client is not told which check failed.
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "missing or invalid credentials"}),
            "{what}"
        );
    }
    // A token in the URL is not a credential.
    let r = server
        .request(
            "GET",
            &format!("{path}?access_token={}", server.good_token()),
            none,
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        server.call("GET", path, Bytes::new()).await.status,
        200,
        "a good token still works"
    );
}

#[tokio::test]
async fn malformed_requests_get_clear_errors_and_the_server_keeps_serving() {
    let server = nsfw_server().await;
    let good_input = |shape: serde_json::Value, n: usize, dt: &str| {
        serde_json::json!({"inputs": [{"name": "input_0", "shape": shape, "datatype": dt, "data": vec![0.0; n]}]}).to_string()
    };
    let cases: Vec<(&str, &str, String, u16)> = vec![
        (
            "unknown model",
            "/v2/models/nope/infer",
            good_input(serde_json::json!([1, 224, 224, 3]), 150528, "FP32"),
            404,
        ),
        (
            "unknown version",
            "/v2/models/nsfw/versions/9/infer",
            good_input(serde_json::json!([1, 224, 224, 3]), 150528, "FP32"),
            404,
        ),
        (
            "wrong shape",
            "/v2/models/nsfw/infer",
            good_input(serde_json::json!([1, 225, 224, 3]), 151200, "FP32"),
            400,
        ),
        (
            "wrong rank",
            "/v2/models/nsfw/infer",
            good_input(serde_json::json!([224, 224, 3]), 150528, "FP32"),
            400,
        ),
        (
            "wrong datatype",
            "/v2/models/nsfw/infer",
            good_input(serde_json::json!([1, 224, 224, 3]), 150528, "INT32"),
            400,
        ),
        (
            "short data",
            "/v2/models/nsfw/infer",
            good_input(serde_json::json!([1, 224, 224, 3]), 10, "FP32"),
            400,
        ),
        (
            "unknown input",
            "/v2/models/nsfw/infer",
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#.into(),
            400,
        ),
        (
            "missing input",
            "/v2/models/nsfw/infer",
            r#"{"inputs":[]}"#.into(),
            400,
        ),
        ("not JSON", "/v2/models/nsfw/infer", "{{{".into(), 400),
        (
            "bad model name",
            "/v2/models/..%2Fetc/infer",
            "{}".into(),
            400,
        ),
    ];
    for (what, path, body, status) in cases {
        let r = server.call("POST", path, body).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(!msg.is_empty(), "{what}: error message");
        assert!(
            !msg.contains("/tmp") && !msg.contains(".models"),
            "{what}: leaks a path: {msg}"
        );
    }
    // A batch of two (the dynamic dimension) is accepted.
    let r = server
        .call(
            "POST",
            "/v2/models/nsfw/infer",
            good_input(serde_json::json!([2, 224, 224, 3]), 301056, "FP32"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outputs"][0]["shape"], serde_json::json!([2, 2]));
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let mut server = Server::start(
        &[
            "--model-path".into(),
            model_dir("nsfw").display().to_string(),
            "--model-name".into(),
            "nsfw".into(),
        ],
        &["--max-body-bytes", "1000"],
    );
    server.wait_ready().await;
    let r = server
        .call("POST", "/v2/models/nsfw/infer", vec![b' '; 1001])
        .await;
    assert_eq!(r.status, 413);
    let r = server
        .call("POST", "/v2/models/nsfw/infer", vec![b' '; 1000])
        .await;
    assert_eq!(r.status, 400, "just under the cap is read and parsed");
}

#[tokio::test]
async fn the_processes_run_without_privilege() {
    if !require_root("dropping to uid 5000") {
        return;
    }
    let server = nsfw_server().await;
    let backend = proc_status(server.child_pid("backend"));
    for key in ["Uid", "Gid"] {
        assert!(
            backend[key].split_whitespace().all(|id| id == "5000"),
            "backend {key}: {}",
            backend[key]
        );
    }
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(backend[key], "0000000000000000", "backend {key}");
    }
    assert_eq!(backend["NoNewPrivs"], "1");
    assert_eq!(backend["Seccomp"], "2");
    let gateway = proc_status(server.child_pid("gateway"));
    assert!(
        gateway["Uid"].split_whitespace().all(|id| id == "5001"),
        "gateway Uid: {}",
        gateway["Uid"]
    );
    assert_eq!(gateway["CapEff"], "0000000000000000");
    assert_eq!(gateway["CapBnd"], "0000000000000000");
    assert_eq!(gateway["NoNewPrivs"], "1");
    // The socket directory: owned by the backend, group of the gateway, closed to others.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(server.dir.path().join("sock")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (5000, 5001, 0o2750));
    let sock = std::fs::metadata(server.dir.path().join("sock/backend.sock")).unwrap();
    assert_eq!(sock.mode() & 0o777, 0o660);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = nsfw_server().await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.rest_port))
        .await
        .unwrap();
    s.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // At most a TLS alert record, then the connection is closed.
    assert!(buf.is_empty() || buf[0] == 0x15, "unexpected bytes {buf:?}");
}

#[tokio::test]
async fn curl_over_https_with_a_token() {
    let server = nsfw_server().await;
    let req = server.dir.path().join("req.json");
    example_request("nsfw", "coffee.png", &req).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(server.certs.join("ca.pem"))
        .args([
            "-H",
            &format!("Authorization: Bearer {}", server.good_token()),
        ])
        .arg("--data-binary")
        .arg(format!("@{}", req.display()))
        .arg(format!(
            "https://localhost:{}/v2/models/nsfw/infer",
            server.rest_port
        ))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["outputs"][0]["data"][0].as_f64().unwrap() > 0.9);
    // HTTP/2 too, as curl negotiates it by ALPN.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
        ])
        .arg(server.certs.join("ca.pem"))
        .arg(format!(
            "https://localhost:{}/v2/health/live",
            server.rest_port
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");
}

#[test]
fn a_missing_runtime_is_a_one_line_error() {
    let dir = TempDir::new("noruntime");
    let certs = make_certs(dir.path());
    let out = std::process::Command::new(warden_bin())
        .arg("backend")
        .args(["--model-path", "/nonexistent", "--model-name", "m"])
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server.key"))
        .arg("--jwt-key")
        .arg(certs.join("jwt.pub.pem"))
        .args(["--jwt-issuer", "i", "--jwt-audience", "a"])
        .arg("--socket-dir")
        .arg(dir.path().join("s"))
        .arg("--openvino-dir")
        .arg(dir.path().join("no-runtime-here"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/fetch-runtime.sh"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn check_reports_what_it_would_serve_and_refuses_bad_configs() {
    let dir = TempDir::new("check");
    let certs = make_certs(dir.path());
    let toml = format!(
        "[tls]\ncert = \"{c}/server.pem\"\nkey = \"{c}/server.key\"\n[auth]\njwt_key = \"{c}/jwt.pub.pem\"\njwt_issuer = \"i\"\njwt_audience = \"a\"\n[models]\nmodel_path = \"{m}\"\nmodel_name = \"nsfw\"\n",
        c = certs.display(),
        m = model_dir("nsfw").display()
    );
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, toml).unwrap();
    let out = std::process::Command::new(warden_bin())
        .arg("check")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("nsfw") && text.contains("version 1") && text.contains("configuration OK"),
        "{text}"
    );
    // What each process's sandbox will be, with the kernel's Landlock ABI as reported
    // by the kernel itself.
    let kernel_abi = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|l| l.contains("landlock"))
        .unwrap_or(true);
    assert!(
        text.contains("Landlock ABI 6 required, kernel offers "),
        "{text}"
    );
    if kernel_abi {
        assert!(!text.contains("kernel offers none"), "{text}");
    }
    for (role, model) in [("gateway", None), ("backend", Some(model_dir("nsfw")))] {
        let section = text.split(&format!("  {role}: ")).nth(1).unwrap_or("");
        assert!(section.contains("rlimits: core 0"), "{role}: {text}");
        assert!(section.contains("seccomp: allow-list of"), "{role}: {text}");
        if let Some(m) = model {
            assert!(section.contains(&m.display().to_string()), "{text}");
        }
    }
    // A flag overrides the file; a typo in the file is refused.
    let out = std::process::Command::new(warden_bin())
        .arg("check")
        .arg("--config")
        .arg(&file)
        .args(["--model-name", "bad/name"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::write(&file, "[gateway]\nrest_prot = 1\n").unwrap();
    let out = std::process::Command::new(warden_bin())
        .arg("check")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rest_prot"));
}

#[tokio::test]
async fn gateway_and_backend_as_separate_non_root_users() {
    // The two-container layout: each side started on its own, already unprivileged
    // (as Kubernetes' runAsUser does), sharing only the socket folder.
    if !require_root("starting the two sides as uids 5000 and 5001") {
        return;
    }
    use std::os::unix::fs::{PermissionsExt, chown};
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("split");
    let certs = make_certs(dir.path());
    chown(certs.join("server.key"), Some(5001), Some(5001)).unwrap();
    let sock = dir.path().join("sock");
    std::fs::create_dir(&sock).unwrap();
    chown(&sock, Some(5000), Some(5001)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o2750)).unwrap();
    let toml = dir.path().join("warden.toml");
    std::fs::write(&toml, "[backend]\ngateway_uid = 5001\n").unwrap();
    let port = free_port();
    let audit = audit_dir(dir.path()).join("audit.log");
    let args = |role: &str| {
        let mut c = std::process::Command::new(warden_bin());
        c.arg(role)
            .arg("--config")
            .arg(&toml)
            .args([
                "--model-path",
                &model_dir("addn").display().to_string(),
                "--model-name",
                "addn",
            ])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--rest-port",
                &port.to_string(),
                "--grpc-port",
                "0",
                "--admin-port",
                "0",
            ])
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server.key"))
            .arg("--jwt-key")
            .arg(certs.join("jwt.pub.pem"))
            .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
            .arg("--socket-dir")
            .arg(&sock)
            .arg("--openvino-dir")
            .arg(runtime_dir())
            .arg("--audit-log")
            .arg(&audit)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let mut backend = args("backend").uid(5000).gid(5000).spawn().unwrap();
    let mut gateway = args("gateway").uid(5001).gid(5001).spawn().unwrap();
    let ca = certs.join("ca.pem");
    let token = sign(&certs.join("jwt.key"), claims("alice", 600));
    let auth = format!("Bearer {token}");
    let body = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reply = loop {
        if let Ok(r) = https_request(
            port,
            &ca,
            "POST",
            "/v2/models/addn/infer",
            &[("authorization", &auth)],
            Bytes::from(body),
        )
        .await
            && r.status == 200
        {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never served");
        assert!(
            backend.try_wait().unwrap().is_none() && gateway.try_wait().unwrap().is_none(),
            "a side exited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        floats(&reply.json()["outputs"][0]["data"]),
        vec![3.0, 4.0, 5.0, 6.0]
    );
    // A third uid cannot get in: not even into the socket folder.
    let intruder = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            &format!("exec 3<>/dev/null; ls {} >/dev/null 2>&1", sock.display()),
        ])
        .uid(4242)
        .gid(4242)
        .status()
        .unwrap();
    assert!(!intruder.success(), "uid 4242 could list the socket folder");
    // Root passes the folder's permissions, but the backend checks the peer's uid
    // (SO_PEERCRED) and hangs up on anyone but the gateway.
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(sock.join("backend.sock")).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut buf = [0u8; 64];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "the backend answered a peer that is not the gateway"
        );
    }
    // Each side stops on SIGTERM from inside its sandbox (the signal handler's wake-up
    // must be on the seccomp allow-list); a side that ignores it is a failure, not a hang.
    for (name, c) in [("gateway", &mut gateway), ("backend", &mut backend)] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert!(
            status.is_some_and(|s| s.success()),
            "the {name} did not stop cleanly on SIGTERM: {status:?}"
        );
    }
}

#[tokio::test]
async fn a_hostile_model_repository_is_refused_without_harming_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let repo = TempDir::new("hostile");
    let dir = |p: &str| {
        let d = repo.path().join(p);
        std::fs::create_dir_all(&d).unwrap();
        let mut a = d.as_path();
        while a != repo.path() {
            std::fs::set_permissions(a, std::fs::Permissions::from_mode(0o755)).unwrap();
            a = a.parent().unwrap();
        }
        d
    };
    // Random bytes named model.onnx.
    let garbage = dir("garbage/1");
    std::fs::write(
        garbage.join("model.onnx"),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    // A model file that is a symlink to a host file.
    let linked = dir("linked/1");
    std::os::unix::fs::symlink("/etc/passwd", linked.join("model.onnx")).unwrap();
    // An IR whose weights claim far more bytes than the .bin holds.
    let huge = dir("huge/1");
    std::fs::write(
        huge.join("model.xml"),
        r#"<?xml version="1.0"?>
<net name="huge" version="11">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1"><data shape="1" element_type="f32"/><output><port id="0" precision="FP32"><dim>1</dim></port></output></layer>
    <layer id="1" name="w" type="Const" version="opset1"><data element_type="f32" shape="1000000000,1000" offset="0" size="4000000000000"/><output><port id="0" precision="FP32"><dim>1000000000</dim><dim>1000</dim></port></output></layer>
    <layer id="2" name="y" type="Result" version="opset1"><input><port id="0" precision="FP32"><dim>1</dim></port></input></layer>
  </layers>
  <edges><edge from-layer="0" from-port="0" to-layer="2" to-port="0"/></edges>
</net>"#,
    )
    .unwrap();
    std::fs::write(huge.join("model.bin"), [0u8; 16]).unwrap();
    // A version folder that is itself a symlink out of the repository.
    dir("escape");
    std::os::unix::fs::symlink("/etc", repo.path().join("escape/1")).unwrap();
    let config = serde_json::json!({"model_config_list": [
        {"config": {"name": "addn", "base_path": model_dir("addn")}},
        {"config": {"name": "garbage", "base_path": repo.path().join("garbage")}},
        {"config": {"name": "linked", "base_path": repo.path().join("linked")}},
        {"config": {"name": "huge", "base_path": repo.path().join("huge")}},
        {"config": {"name": "escape", "base_path": repo.path().join("escape")}},
    ]});
    let cfg = repo.path().join("config.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let server = Server::start(&["--config-path".into(), cfg.display().to_string()], &[]);
    // The good model serves; the server-wide readiness reports the refused ones.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,1,1,1]}]}"#;
    loop {
        let r = server
            .request(
                "POST",
                "/v2/models/addn/infer",
                &[("authorization", &format!("Bearer {}", server.good_token()))],
                Bytes::from(body),
            )
            .await;
        if let Ok(r) = r
            && r.status == 200
        {
            assert_eq!(floats(&r.json()["outputs"][0]["data"]), vec![3.0; 4]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "addn never served:\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for name in ["garbage", "linked", "huge", "escape"] {
        let r = server
            .call("GET", &format!("/v2/models/{name}/ready"), Bytes::new())
            .await;
        assert_eq!(
            r.status,
            404,
            "{name} must not be served: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let none: &[(&str, &str)] = &[];
    assert_eq!(
        server
            .request("GET", "/v2/health/ready", none, Bytes::new())
            .await
            .unwrap()
            .status,
        503
    );
    let log = server.log_text();
    for name in ["garbage", "linked", "huge", "escape"] {
        assert!(
            log.contains(&format!("model={name}")),
            "{name}: no refusal logged:\n{log}"
        );
    }
    assert!(
        log.contains("symlink"),
        "the symlinks are named as the reason"
    );
    // The backend is still the first one: nothing crashed it.
    assert_eq!(
        server
            .children()
            .iter()
            .filter(|(_, r)| r == "backend")
            .count(),
        1
    );
    let r = server.call("POST", "/v2/models/addn/infer", body).await;
    assert_eq!(r.status, 200);
}
