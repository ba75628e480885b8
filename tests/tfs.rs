//! The TensorFlow Serving API against real clients: Intel's `ovmsclient` over gRPC with
//! a client certificate, the TFS gRPC stubs with a bearer token, and the TFS REST API
//! over HTTPS (tests/clients/tfs_clients.py), with results checked against OpenVINO's
//! own; then what the pipeline recorded of those calls (audit records, metrics). The
//! refusal table through the TFS routes is in tests/pipeline.rs.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use warden_tests::*;

const POLICY: &str = r#"
[[rule]]
name = "ovmsclient certificates"
certificates = ["spiffe://warden.test/client/*"]
models = ["*"]
operations = ["infer", "metadata", "ready"]

[[rule]]
name = "token users"
subjects = ["tfs-client"]
models = ["*"]
operations = ["infer", "metadata", "ready"]
"#;

#[tokio::test]
async fn tfs_clients_work_unchanged_over_mtls_and_tokens() {
    let tmp = TempDir::new("tfs");
    let dir = tmp.path();
    let f32 = serde_json::json!({"INFERENCE_PRECISION_HINT": "f32"});
    let models = serde_json::json!({"model_config_list": [
        {"config": {"name": "nsfw", "base_path": model_dir("nsfw"), "plugin_config": f32}},
        {"config": {"name": "blazeface", "base_path": model_dir("blazeface"), "plugin_config": f32}},
        {"config": {"name": "identity", "base_path": model_dir("identity")}},
    ]});
    std::fs::write(dir.join("config.json"), models.to_string()).unwrap();
    // gRPC takes a client certificate or a token; the CA below issues the certificates.
    let pki = client_pki(dir, "tfs");
    let toml = format!(
        "[tls]\nclient_ca = \"{}\"\ngrpc_client_cert = \"optional\"\n",
        pki.ca_pem.display()
    );
    std::fs::write(dir.join("warden.toml"), toml).unwrap();
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    let audit = audit_dir(dir).join("audit.log");
    let cfg = dir.join("warden.toml");
    let policy = dir.join("policy.toml");
    let mut server = Server::start(
        &[
            "--config-path".into(),
            dir.join("config.json").display().to_string(),
        ],
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--authz-policy",
            policy.to_str().unwrap(),
            "--grpc-auth",
            "jwt-or-mtls",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    server.wait_ready().await;
    let id = client_cert(&pki, "spiffe://warden.test/client/ovms", false);
    let cert = dir.join("client.pem");
    let key = dir.join("client.key");
    std::fs::write(&cert, &id.cert_pem).unwrap();
    std::fs::write(&key, &id.key_pem).unwrap();
    let before = plain_get(server.admin_port, "/metrics").await.unwrap();

    run_client(
        &root().join(".venv/bin/python"),
        "tfs_clients.py",
        &[
            server.grpc_port.to_string(),
            server.rest_port.to_string(),
            server.certs.join("ca.pem").display().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
            server.token(claims("tfs-client", 600)),
            root().join(".models").display().to_string(),
        ],
        &server,
    );

    // The same pipeline recorded every call: the certificate's principal for ovmsclient,
    // the token's for the stubs and REST, the operation each TFS method maps to.
    let records = audit_records(&audit);
    let requests: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["event"] == "request").collect();
    let by = |method: &str, op: &str, decision: &str| {
        requests
            .iter()
            .filter(|r| {
                r["auth_method"] == method && r["operation"] == op && r["decision"] == decision
            })
            .count()
    };
    for op in ["infer", "metadata", "ready"] {
        assert!(by("mtls", op, "allowed") >= 1, "mTLS {op}: {requests:?}");
        assert!(by("jwt", op, "allowed") >= 1, "token {op}: {requests:?}");
    }
    let cert_call = requests
        .iter()
        .find(|r| r["auth_method"] == "mtls")
        .unwrap();
    assert_eq!(
        cert_call["certificate"], "spiffe://warden.test/client/ovms",
        "{cert_call}"
    );
    assert_eq!(cert_call["listener"], "grpc", "{cert_call}");
    // Refusals are the refusal table's decisions.
    assert!(by("jwt", "infer", "invalid") >= 4, "{requests:?}");
    assert!(
        requests
            .iter()
            .any(|r| r["decision"] == "denied"
                && r["reason"] == "authentication: missing_credentials"),
        "{requests:?}"
    );

    // Metrics carry the TFS API and method names, as OVMS labels them: a status call
    // without a version label (as ModelReady), the others with the version that answered.
    let after = plain_get(server.admin_port, "/metrics").await.unwrap();
    let delta = |s: &str| metric(&after, s) - metric(&before, s);
    for series in [
        "ovms_requests_success{api=\"TensorFlowServing\",interface=\"gRPC\",method=\"Predict\",name=\"nsfw\",version=\"1\"}",
        "ovms_requests_success{api=\"TensorFlowServing\",interface=\"gRPC\",method=\"GetModelStatus\",name=\"nsfw\"}",
        "ovms_requests_success{api=\"TensorFlowServing\",interface=\"REST\",method=\"Predict\",name=\"nsfw\",version=\"1\"}",
        "ovms_requests_success{api=\"TensorFlowServing\",interface=\"REST\",method=\"GetModelMetadata\",name=\"blazeface\",version=\"1\"}",
    ] {
        assert!(delta(series) >= 1.0, "{series}:\n{after}");
    }
}
