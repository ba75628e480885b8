//! What the KServe / Triton / gRPC ecosystem's own clients and tools expect beyond the
//! KServe v2 core, against the real server: Triton's extensions (model configuration,
//! statistics, repository, log settings) through tritonclient and perf_analyzer,
//! `grpc.health.v1` through gRPC's own health client, the KServe Python SDK; and the
//! refusals of the new calls, the same decision through REST and gRPC, each audited.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use std::path::PathBuf;
use std::process::Command;
use warden_shared::{health_proto, proto};
use warden_tests::*;

const POLICY: &str = r#"
[[rule]]
name = "users"
subjects = ["alice"]
models = ["addn", "nsfw"]
operations = ["infer", "metadata", "ready", "config", "stats"]

[[rule]]
name = "admins"
subjects = ["admin"]
models = ["*"]
operations = ["admin"]

[[rule]]
name = "metadata only"
subjects = ["bob"]
models = ["addn"]
operations = ["metadata"]

# perf_analyzer ignores its -H headers over gRPC (its help says so): there it
# authenticates with a client certificate.
[[rule]]
name = "perf_analyzer's certificate"
certificates = ["spiffe://warden.dev/client/dev"]
models = ["addn"]
operations = ["infer", "metadata", "config", "stats", "ready"]
"#;

/// A server with addn (every version), nsfw and identity, the policy above, an audit
/// log, the TOML configuration `toml`, and any `extra` flags.
fn start(tag: &str, toml: &str, extra: &[&str]) -> (Server, PathBuf, TempDir) {
    let tmp = TempDir::new(tag);
    let f32 = serde_json::json!({"INFERENCE_PRECISION_HINT": "f32"});
    let models = serde_json::json!({"model_config_list": [
        {"config": {"name": "addn", "base_path": model_dir("addn"), "model_version_policy": {"all": {}}}},
        {"config": {"name": "nsfw", "base_path": model_dir("nsfw"), "plugin_config": f32}},
        {"config": {"name": "identity", "base_path": model_dir("identity")}},
    ]});
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let config_json = write("config.json", &models.to_string());
    let policy = write("authz.toml", POLICY);
    let toml = write("warden.toml", toml);
    let audit = audit_dir(tmp.path()).join("audit.log");
    let mut flags = vec![
        "--config",
        toml.to_str().unwrap(),
        "--authz-policy",
        policy.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    let server = Server::start(
        &["--config-path".into(), config_json.display().to_string()],
        &flags,
    );
    (server, audit, tmp)
}

async fn triton_clients(control: bool) {
    let (mut server, _audit, _tmp) = start(
        "triton",
        &format!("[triton]\nrepository_control = {control}\n"),
        &[],
    );
    server.wait_ready().await;
    let args = vec![
        server.rest_port.to_string(),
        server.grpc_port.to_string(),
        server.certs.join("ca.pem").display().to_string(),
        server.token(claims("alice", 600)),
        server.token(claims("admin", 600)),
        if control { "on" } else { "off" }.to_string(),
    ];
    run_client(
        &root().join(".venv/bin/python"),
        "triton_extensions.py",
        &args,
        &server,
    );
}

#[tokio::test]
async fn triton_clients_read_config_stats_index_and_logs_with_model_control_off() {
    triton_clients(false).await;
}

#[tokio::test]
async fn triton_clients_see_load_and_unload_refused_as_unsupported_with_model_control_on() {
    triton_clients(true).await;
}

#[tokio::test]
async fn kserve_sdk_checks_health_and_infers_like_openvino() {
    let (mut server, _audit, tmp) = start("kserve-sdk", "", &[]);
    server.wait_ready().await;
    let request = tmp.path().join("nsfw.json");
    example_request("nsfw", "coffee.png", &request).unwrap();
    let out = tmp.path().join("out.json");
    let args = vec![
        server.rest_port.to_string(),
        server.grpc_port.to_string(),
        server.certs.join("ca.pem").display().to_string(),
        server.token(claims("alice", 600)),
        "nsfw".to_string(),
        request.display().to_string(),
        out.display().to_string(),
    ];
    run_client(
        &root().join(".venv-deploy/bin/python"),
        "kserve_sdk.py",
        &args,
        &server,
    );
    let want = reference(&model_dir("nsfw").join("1/model.onnx"), &request).unwrap();
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let want = want["outputs"].as_object().unwrap();
    assert!(!want.is_empty());
    for front in ["rest", "grpc"] {
        for (name, w) in want {
            let diff = max_abs_diff(&floats(&got[front][name]), &floats(&w["data"]));
            assert!(
                diff < 1e-4,
                "{front} {name}: differs from OpenVINO by {diff}"
            );
        }
    }
}

/// The throughput perf_analyzer reports, from its summary line.
fn throughput(stdout: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| {
            l.split_once("Throughput:")
                .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn perf_analyzer_runs_over_https_with_a_token_and_grpc_tls_with_a_certificate() {
    // perf_analyzer sends its -H headers (the bearer token) over HTTP only; over gRPC it
    // authenticates with a client certificate (a development CA's) instead.
    let client = TempDir::new("perf-client");
    let client_certs = make_certs(client.path());
    let client_ca = client_certs.join("ca.pem");
    let (mut server, audit, _tmp) = start(
        "perf",
        "",
        &[
            "--client-ca",
            client_ca.to_str().unwrap(),
            "--grpc-client-cert",
            "optional",
            "--grpc-auth",
            "jwt-or-mtls",
        ],
    );
    server.wait_ready().await;
    let dir = root().join(".runtime/perf_analyzer");
    let ca = server.certs.join("ca.pem").display().to_string();
    let auth = format!(
        "Authorization: Bearer {}",
        server.token(claims("alice", 600))
    );
    // A bounded run: exactly this many requests, no search for a stable window (on a
    // shared machine one may never come).
    let common = [
        "-m",
        "addn",
        "--concurrency-range",
        "1",
        "--request-count",
        "50",
    ];
    let transports: [(&str, Vec<String>); 2] = [
        (
            "http",
            vec![
                "-i".into(),
                "http".into(),
                "-u".into(),
                format!("https://localhost:{}", server.rest_port),
                "--ssl-https-ca-certificates-file".into(),
                ca.clone(),
                "--ssl-https-verify-peer".into(),
                "1".into(),
                "--ssl-https-verify-host".into(),
                "2".into(),
                "-H".into(),
                auth.clone(),
            ],
        ),
        (
            "grpc",
            vec![
                "-i".into(),
                "grpc".into(),
                "-u".into(),
                format!("localhost:{}", server.grpc_port),
                "--ssl-grpc-use-ssl".into(),
                "true".into(),
                "--ssl-grpc-root-certifications-file".into(),
                ca.clone(),
                "--ssl-grpc-private-key-file".into(),
                client_certs.join("client.key").display().to_string(),
                "--ssl-grpc-certificate-chain-file".into(),
                client_certs.join("client.pem").display().to_string(),
            ],
        ),
    ];
    for (name, args) in transports {
        let out = Command::new(dir.join("bin/perf_analyzer"))
            .env("LD_LIBRARY_PATH", dir.join("lib"))
            .args(common)
            .args(&args)
            .output()
            .expect("perf_analyzer runs (scripts/fetch-perf-analyzer.sh)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{name}:\n{stdout}");
        assert!(
            out.status.success(),
            "perf_analyzer over {name} failed:\n{stdout}\n{stderr}\naudit:\n{:#?}",
            audit_records(&audit)
                .iter()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
        );
        assert!(
            throughput(&stdout) > 0.0,
            "{name}: no throughput:\n{stdout}"
        );
    }
    // Every inference was allowed, as the token's subject over HTTPS and as the
    // certificate over gRPC.
    let records = audit_records(&audit);
    for (listener, principal) in [
        ("rest", "alice"),
        ("grpc", "spiffe://warden.dev/client/dev"),
    ] {
        let infers: Vec<_> = records
            .iter()
            .filter(|r| r["listener"] == listener && r["operation"] == "infer")
            .collect();
        assert!(
            infers.len() >= 50,
            "{listener}: {} inferences",
            infers.len()
        );
        assert!(
            infers
                .iter()
                .all(|r| r["principal"] == principal && r["decision"] == "allowed"),
            "{listener}: {infers:?}"
        );
    }
}

/// A new call through one front, and what it must come to.
struct Case {
    name: &'static str,
    who: Option<&'static str>,
    /// REST method and path.
    rest: (&'static str, &'static str),
    /// gRPC path and request message.
    grpc: (&'static str, Vec<u8>),
    status: u16,
    code: i32,
    decision: &'static str,
    operation: Option<&'static str>,
}

fn config_request(model: &str) -> Vec<u8> {
    proto::ModelConfigRequest {
        name: model.into(),
        version: String::new(),
    }
    .encode_to_vec()
}

fn stats_request(model: &str) -> Vec<u8> {
    proto::ModelStatisticsRequest {
        name: model.into(),
        version: String::new(),
    }
    .encode_to_vec()
}

fn load_request(model: &str) -> Vec<u8> {
    proto::RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: model.into(),
        parameters: Default::default(),
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_calls_refuse_the_same_through_rest_and_grpc_and_are_audited() {
    let (mut server, audit, _tmp) = start("ext-refusals", "", &[]);
    server.wait_ready().await;
    let cases = [
        Case {
            name: "config",
            who: Some("alice"),
            rest: ("GET", "/v2/models/addn/config"),
            grpc: ("ModelConfig", config_request("addn")),
            status: 200,
            code: 0,
            decision: "allowed",
            operation: Some("config"),
        },
        Case {
            name: "config without a token",
            who: None,
            rest: ("GET", "/v2/models/addn/config"),
            grpc: ("ModelConfig", config_request("addn")),
            status: 401,
            code: 16,
            decision: "denied",
            operation: Some("config"),
        },
        Case {
            name: "config of a model not granted",
            who: Some("alice"),
            rest: ("GET", "/v2/models/identity/config"),
            grpc: ("ModelConfig", config_request("identity")),
            status: 403,
            code: 7,
            decision: "denied",
            operation: Some("config"),
        },
        Case {
            name: "config without the operation",
            who: Some("bob"),
            rest: ("GET", "/v2/models/addn/config"),
            grpc: ("ModelConfig", config_request("addn")),
            status: 403,
            code: 7,
            decision: "denied",
            operation: Some("config"),
        },
        Case {
            name: "stats of a model not granted",
            who: Some("alice"),
            rest: ("GET", "/v2/models/identity/stats"),
            grpc: ("ModelStatistics", stats_request("identity")),
            status: 403,
            code: 7,
            decision: "denied",
            operation: Some("stats"),
        },
        Case {
            name: "repository index as a user",
            who: Some("alice"),
            rest: ("POST", "/v2/repository/index"),
            grpc: ("RepositoryIndex", Vec::new()),
            status: 403,
            code: 7,
            decision: "denied",
            operation: Some("admin"),
        },
        Case {
            name: "repository index as an admin",
            who: Some("admin"),
            rest: ("POST", "/v2/repository/index"),
            grpc: ("RepositoryIndex", Vec::new()),
            status: 200,
            code: 0,
            decision: "allowed",
            operation: Some("admin"),
        },
        Case {
            name: "load while model control is off",
            who: Some("admin"),
            rest: ("POST", "/v2/repository/models/addn/load"),
            grpc: ("RepositoryModelLoad", load_request("addn")),
            status: 403,
            code: 7,
            decision: "denied",
            operation: Some("admin"),
        },
        Case {
            name: "unload without a token",
            who: None,
            rest: ("POST", "/v2/repository/models/addn/unload"),
            grpc: ("RepositoryModelUnload", load_request("addn")),
            status: 401,
            code: 16,
            decision: "denied",
            operation: Some("admin"),
        },
        Case {
            name: "log settings as a user",
            who: Some("alice"),
            rest: ("GET", "/v2/logging"),
            grpc: ("LogSettings", Vec::new()),
            status: 403,
            code: 7,
            decision: "denied",
            operation: Some("admin"),
        },
    ];
    let ca = server.certs.join("ca.pem");
    let mut h2 = H2::connect(server.grpc_port, &ca).await.unwrap();
    for c in &cases {
        let auth = c
            .who
            .map(|w| format!("Bearer {}", server.token(claims(w, 600))));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = server
            .request(c.rest.0, c.rest.1, &headers, Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, c.status, "REST {}: {:?}", c.name, r.body);
        let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
        let g = h2.grpc(c.grpc.0, &headers, &c.grpc.1).await.unwrap();
        assert_eq!(g.code, c.code, "gRPC {}: {}", c.name, g.message);
        let gid = g.headers["x-request-id"].to_str().unwrap().to_owned();
        for (front, id) in [("REST", id), ("gRPC", gid)] {
            let rec = audit_record(&audit, &id)
                .unwrap_or_else(|| panic!("{front} {}: no audit record", c.name));
            assert_eq!(rec["decision"], c.decision, "{front} {}: {rec}", c.name);
            assert_eq!(rec["status"], c.status, "{front} {}: {rec}", c.name);
            assert_eq!(
                rec["operation"].as_str(),
                c.operation,
                "{front} {}: {rec}",
                c.name
            );
            if front == "gRPC" {
                assert_eq!(rec["grpc_code"], c.code, "{}: {rec}", c.name);
            }
        }
    }
    // Server reflection: a credential by default; one audit record per call.
    let list = warden_shared::reflection_proto::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            warden_shared::reflection_proto::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    }
    .encode_to_vec();
    let path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
    let alice = format!("Bearer {}", server.token(claims("alice", 600)));
    for (who, code, decision) in [(None, 16, "denied"), (Some(alice.as_str()), 0, "allowed")] {
        let headers: Vec<(&str, &str)> = who.iter().map(|a| ("authorization", *a)).collect();
        let g = h2
            .grpc_raw(path, &headers, grpc_frame(&list))
            .await
            .unwrap();
        assert_eq!(g.code, code, "reflection: {}", g.message);
        let rec = audit_record(&audit, g.headers["x-request-id"].to_str().unwrap()).unwrap();
        assert_eq!(rec["decision"], decision, "reflection: {rec}");
        if code == 0 {
            let r: warden_shared::reflection_proto::ServerReflectionResponse = g.decode();
            assert!(
                format!("{r:?}").contains("inference.GRPCInferenceService"),
                "{r:?}"
            );
        }
    }
    // Unknown model names are never recorded.
    let admin = format!("Bearer {}", server.token(claims("admin", 600)));
    let r = server
        .request(
            "POST",
            "/v2/repository/models/made-up-name/load",
            &[("authorization", &admin)],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains("made-up-name"),
        "a made-up name was recorded"
    );
    // Without a model, statistics list only the models granted.
    let r = server
        .request(
            "GET",
            "/v2/models/stats",
            &[("authorization", &alice)],
            Bytes::new(),
        )
        .await
        .unwrap();
    let names: Vec<String> = r.json()["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"addn".to_string()) && !names.contains(&"identity".to_string()),
        "{names:?}"
    );
}

/// The statuses of a `grpc.health.v1` Watch stream as they arrive.
async fn next_status(body: &mut hyper::body::Incoming) -> Option<i32> {
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Ok(data) = frame.into_data() {
            let m = health_proto::HealthCheckResponse::decode(data.slice(5..)).ok()?;
            return Some(m.status);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_health_answers_probes_and_watch_sees_the_drain() {
    let (mut server, audit, _tmp) = start("health", "", &[]);
    server.wait_ready().await;
    let ca = server.certs.join("ca.pem");
    let mut h2 = H2::connect(server.grpc_port, &ca).await.unwrap();
    let check = |service: &str| {
        health_proto::HealthCheckRequest {
            service: service.into(),
        }
        .encode_to_vec()
    };
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    // The start record says which calls may come without a credential.
    let records = audit_records(&audit);
    let start = records.iter().find(|r| r["event"] == "start").unwrap();
    assert_eq!(start["settings"]["health"]["grpc_unauthenticated"], true);
    assert_eq!(start["settings"]["reflection"]["unauthenticated"], false);
    assert_eq!(start["settings"]["triton"]["repository_control"], false);
    // The server's names: no credential, not audited.
    let before = records.len();
    for name in ["", "inference.GRPCInferenceService"] {
        let r = h2
            .grpc_raw(
                "/grpc.health.v1.Health/Check",
                &[],
                grpc_frame(&check(name)),
            )
            .await
            .unwrap();
        assert_eq!(r.code, 0, "{name:?}: {}", r.message);
        assert_eq!(
            r.decode::<health_proto::HealthCheckResponse>().status,
            SERVING
        );
    }
    assert_eq!(
        audit_records(&audit).len(),
        before,
        "open probes are not audited"
    );
    // A model's name: a credential and `ready` on it; an unknown one is NOT_FOUND.
    let r = h2
        .grpc_raw(
            "/grpc.health.v1.Health/Check",
            &[],
            grpc_frame(&check("addn")),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 16);
    let alice = format!("Bearer {}", server.token(claims("alice", 600)));
    let auth = [("authorization", alice.as_str())];
    let r = h2
        .grpc_raw(
            "/grpc.health.v1.Health/Check",
            &auth,
            grpc_frame(&check("addn")),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.message);
    assert_eq!(
        r.decode::<health_proto::HealthCheckResponse>().status,
        SERVING
    );
    let rec = audit_record(&audit, r.headers["x-request-id"].to_str().unwrap()).unwrap();
    assert_eq!(rec["operation"], "ready");
    assert_eq!(rec["model"], "addn");
    // A health message over its small bound is refused before any credential.
    let big = check(&"m".repeat(4096));
    let r = h2
        .grpc_raw("/grpc.health.v1.Health/Check", &[], grpc_frame(&big))
        .await
        .unwrap();
    assert_eq!(r.code, 8, "{}", r.message);
    // Watch: the status now, then NOT_SERVING when the server begins to stop.
    let resp = h2
        .grpc_open("/grpc.health.v1.Health/Watch", &[], &check(""))
        .await
        .unwrap();
    let mut body = resp.into_body();
    assert_eq!(next_status(&mut body).await, Some(SERVING));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), next_status(&mut body))
        .await
        .expect("a status change within the drain");
    assert_eq!(next, Some(NOT_SERVING));
}

#[tokio::test]
async fn grpc_health_of_the_server_can_require_a_credential() {
    let (mut server, audit, _tmp) = start(
        "health-closed",
        "[health]\ngrpc_unauthenticated = false\n",
        &[],
    );
    server.wait_ready().await;
    let mut h2 = H2::connect(server.grpc_port, &server.certs.join("ca.pem"))
        .await
        .unwrap();
    let check = health_proto::HealthCheckRequest {
        service: String::new(),
    }
    .encode_to_vec();
    let path = "/grpc.health.v1.Health/Check";
    let r = h2.grpc_raw(path, &[], grpc_frame(&check)).await.unwrap();
    assert_eq!(r.code, 16, "{}", r.message);
    let alice = format!("Bearer {}", server.token(claims("alice", 600)));
    let r = h2
        .grpc_raw(path, &[("authorization", &alice)], grpc_frame(&check))
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.message);
    assert_eq!(r.decode::<health_proto::HealthCheckResponse>().status, 1);
    let rec = audit_record(&audit, r.headers["x-request-id"].to_str().unwrap()).unwrap();
    assert_eq!(rec["decision"], "allowed");
    assert_eq!(rec["principal"], "alice");
}
