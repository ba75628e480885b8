//! Every OVMS flag and config.json key, table-driven: each is either accepted with its
//! effect (asserted through `warden check`'s report, or a real server for what the
//! backend does with the model) or refused, naming the flag or key, with exit status 1.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::Command;
use warden_tests::*;

struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `warden check` with dev certificates, a JWT key, and `args`.
fn check(certs: &Path, args: &[String]) -> Checked {
    let out = Command::new(warden_bin())
        .arg("check")
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server.key"))
        .arg("--jwt-key")
        .arg(certs.join("jwt.pub.pem"))
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        .arg("--openvino-dir")
        .arg(runtime_dir())
        .args(args)
        .output()
        .unwrap();
    Checked {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn addn() -> Vec<String> {
    vec![
        "--model_path".into(),
        model_dir("addn").display().to_string(),
        "--model_name".into(),
        "addn".into(),
    ]
}

/// Flags accepted with their effect: the flags, then text `warden check` must print.
const ACCEPTED: &[(&[&str], &[&str])] = &[
    (
        &["--grpc_max_threads", "8"],
        &[
            "limits.grpc_max_concurrent_calls = 8",
            "at most 8 calls at once",
        ],
    ),
    (
        &["--grpc_channel_arguments", "grpc.max_concurrent_streams=8"],
        &[
            "limits.grpc_h2_max_concurrent_streams = 8",
            "HTTP/2 (8 streams per connection",
        ],
    ),
    (
        &[
            "--grpc_channel_arguments",
            "grpc.max_receive_message_length=1048576",
        ],
        &["gRPC message 1048576 B"],
    ),
    (
        &["--grpc_memory_quota", "0"],
        &["no total in-flight byte quota", "quotas: 0 B in flight"],
    ),
    (
        &["--grpc_memory_quota", "1048576"],
        &["quotas: 1048576 B in flight"],
    ),
    (&["--rest_workers", "3"], &["gateway.worker_threads = 3"]),
    (&["--grpc_workers", "1"], &["one gRPC server"]),
    (&["--nireq", "3"], &["settings: nireq 3"]),
    (
        &["--nireq", "0"],
        &["--nireq 0 -> the default number of infer requests"],
    ),
    (&["--shape", "(2,4)"], &["settings: shape (2,4)"]),
    (&["--shape", "(-1,4)"], &["settings: shape (-1,4)"]),
    (
        &["--shape", "{\"x\":\"(1:8,4)\"}"],
        &["settings: shape x=(1:8,4)"],
    ),
    (&["--layout", "CN:NC"], &["settings: layout CN:NC"]),
    (&["--layout", "NC"], &["settings: layout NC"]),
    (&["--batch_size", "3"], &["settings: batch_size 3"]),
    (
        &["--shape", "(2,4)", "--batch_size", "3"],
        &["batch_size 3 NOT APPLIED: shape is set"],
    ),
    (&["--log_level", "DEBUG"], &["log filter \"debug\""]),
    (&["--log_level", "WARNING"], &["log filter \"warn\""]),
    (
        &["--file_system_poll_wait_seconds", "0"],
        &["repository: re-read on SIGHUP only"],
    ),
    (
        &["--file_system_poll_wait_seconds", "5"],
        &["repository: polled every 5s"],
    ),
    (&["--metrics_enable"], &["metrics.enabled = true"]),
    (&["--metrics_enable=false"], &["metrics OFF"]),
    (
        &[
            "--metrics_list",
            "ovms_requests_success,ovms_infer_req_active",
        ],
        &["/metrics (ovms_requests_success, ovms_infer_req_active)"],
    ),
    (
        &[
            "--rest_bind_address",
            "127.0.0.1",
            "--grpc_bind_address",
            "127.0.0.2",
        ],
        &["REST   https://127.0.0.1:", "gRPC   127.0.0.2:"],
    ),
    (&["--port", "9555"], &[":9555  TLS"]),
    (&["--port", "0"], &["gRPC   off"]),
    (&["--rest_port", "8555"], &["REST   https://0.0.0.0:8555"]),
    (
        &["--target_device", "CPU"],
        &["--target_device CPU -> OpenVINO device"],
    ),
    (
        &["--plugin_config", "{\"NUM_STREAMS\":1}"],
        &["--plugin_config {\"NUM_STREAMS\":1} -> OpenVINO properties"],
    ),
    (&["--model_version_policy", "{\"all\":{}}"], &["version 1:"]),
];

/// Flags refused: the flags, then text the error must hold (the flag's name).
const REFUSED: &[(&[&str], &str)] = &[
    (
        &["--cpu_extension", "/lib/x.so"],
        "--cpu_extension is refused",
    ),
    (&["--cache_dir", "/tmp/c"], "--cache_dir is refused"),
    (&["--log_path", "/tmp/l"], "--log_path is refused"),
    (&["--stateful"], "--stateful is refused"),
    (&["--stateful=true"], "--stateful is refused"),
    (
        &["--idle_sequence_cleanup"],
        "--idle_sequence_cleanup is refused",
    ),
    (
        &["--max_sequence_number", "4"],
        "--max_sequence_number is refused",
    ),
    (
        &["--low_latency_transformation"],
        "--low_latency_transformation is refused",
    ),
    (
        &["--sequence_cleaner_poll_wait_minutes", "5"],
        "--sequence_cleaner_poll_wait_minutes is refused",
    ),
    (
        &["--custom_node_resources_cleaner_interval_seconds", "1"],
        "--custom_node_resources_cleaner_interval_seconds is refused",
    ),
    (&["--mean", "[1,2,3]"], "--mean is refused"),
    (&["--scale", "255"], "--scale is refused"),
    (&["--color_format", "BGR:RGB"], "--color_format is refused"),
    (&["--precision", "fp16:fp32"], "--precision is refused"),
    (
        &["--allowed_local_media_path", "/tmp"],
        "--allowed_local_media_path is refused",
    ),
    (
        &["--allowed_media_domains", "all"],
        "--allowed_media_domains is refused",
    ),
    (&["--allow_credentials"], "--allow_credentials is refused"),
    (&["--allowed_origins", "*"], "--allowed_origins is refused"),
    (&["--allowed_methods", "*"], "--allowed_methods is refused"),
    (&["--allowed_headers", "*"], "--allowed_headers is refused"),
    (&["--api_key_file", "/tmp/k"], "--api_key_file is refused"),
    (&["--verbose_response"], "--verbose_response is refused"),
    (&["--trace_path", "/tmp/t"], "--trace_path is refused"),
    (&["--pull"], "--pull is refused"),
    (&["--source_model", "x/y"], "--source_model is refused"),
    (&["--source_loras", "a=b/c"], "--source_loras is refused"),
    (&["--gguf_filename", "m.gguf"], "--gguf_filename is refused"),
    (&["--overwrite_models"], "--overwrite_models is refused"),
    (
        &["--model_repository_path", "/m"],
        "--model_repository_path is refused",
    ),
    (&["--weight-format", "int4"], "--weight-format is refused"),
    (
        &["--extra_quantization_params", "--sym"],
        "--extra_quantization_params is refused",
    ),
    (&["--list_models"], "--list_models is refused"),
    (&["--add_to_config"], "--add_to_config is refused"),
    (&["--remove_from_config"], "--remove_from_config is refused"),
    (&["--configure"], "--configure is refused"),
    (&["--task", "text_generation"], "--task is refused"),
    (&["--max_num_seqs", "8"], "--max_num_seqs is refused"),
    (&["--pipeline_type", "LM"], "--pipeline_type is refused"),
    (&["--shape", "auto"], "--shape"),
    (&["--shape", "{\"x\":\"auto\"}"], "--shape"),
    (&["--shape", "(1,x)"], "--shape"),
    (&["--batch_size", "auto"], "--batch_size auto is refused"),
    (&["--batch_size", "two"], "--batch_size"),
    (&["--layout", "NHWC:NCH"], "--layout"),
    (&["--layout", "nchw"], "--layout"),
    (&["--grpc_workers", "4"], "--grpc_workers 4 is refused"),
    (&["--rest_workers", "0"], "--rest_workers 0 is refused"),
    (&["--rest_port", "0"], "--rest_port 0 is refused"),
    (
        &["--grpc_max_threads", "0"],
        "--grpc_max_threads 0 is refused",
    ),
    (
        &[
            "--grpc_channel_arguments",
            "grpc.max_connection_age_ms=2000",
        ],
        "grpc.max_connection_age_ms is refused",
    ),
    (
        &["--grpc_channel_arguments", "grpc.max_concurrent_streams=0"],
        "grpc.max_concurrent_streams",
    ),
    (&["--metrics_list", "ovms_bogus"], "--metrics_list"),
    (
        &["--metrics_enable", "--admin-port", "0"],
        "--metrics_enable is refused",
    ),
    (&["--log_level", "LOUD"], "--log_level"),
    (
        &["--model_version_policy", "{\"newest\":{}}"],
        "--model_version_policy",
    ),
    (
        &["--rest_bind_address", "127.0.0.1,::1"],
        "--rest_bind_address",
    ),
    (&["--grpc_bind_address", "localhost"], "gRPC bind address"),
];

#[test]
fn every_accepted_ovms_flag_takes_effect_in_the_checked_configuration() {
    let dir = TempDir::new("ovms-flags");
    let certs = make_certs(dir.path());
    let baseline = check(&certs, &addn());
    assert_eq!(baseline.code, 0, "{}{}", baseline.stdout, baseline.stderr);
    assert!(baseline.stdout.contains("  (none)"), "{}", baseline.stdout);
    for (flags, expect) in ACCEPTED {
        let mut args = addn();
        args.extend(strings(flags));
        let r = check(&certs, &args);
        assert_eq!(r.code, 0, "{flags:?}:\n{}{}", r.stdout, r.stderr);
        for e in *expect {
            assert!(
                r.stdout.contains(e),
                "{flags:?}: expected {e:?} in:\n{}",
                r.stdout
            );
            // The effect comes from the flag: the baseline does not print it.
            assert!(
                !baseline.stdout.contains(e),
                "{flags:?}: {e:?} is printed without the flag too"
            );
        }
    }
}

#[test]
fn every_refused_ovms_flag_is_named_with_exit_status_1() {
    let dir = TempDir::new("ovms-refused");
    let certs = make_certs(dir.path());
    for (flags, expect) in REFUSED {
        let mut args = addn();
        args.extend(strings(flags));
        let r = check(&certs, &args);
        assert_eq!(r.code, 1, "{flags:?}:\n{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(expect),
            "{flags:?}: expected {expect:?} in:\n{}",
            r.stderr
        );
        assert!(!r.stdout.contains("configuration OK"), "{flags:?}");
    }
    // A URL Warden does not read is refused, never taken as a local folder name
    // (s3://, gs:// and az:// are fetched: tests/object_storage.rs).
    for url in ["hdfs://nn/m", "http://host/m"] {
        let r = check(
            &certs,
            &strings(&["--model_path", url, "--model_name", "m"]),
        );
        let scheme = url.split("://").next().unwrap();
        assert_eq!(r.code, 1, "{url}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("--model_path") && r.stderr.contains(&format!("{scheme}://")),
            "{url}: {}",
            r.stderr
        );
    }
    // An unknown flag: clap names it, status 2.
    let r = check(&certs, &strings(&["--no_such_flag", "1"]));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--no_such_flag"), "{}", r.stderr);
    // Model settings belong to --model_path; beside --config_path they are refused.
    let cfg = dir.path().join("config.json");
    write_config(&cfg, &[model("addn", serde_json::json!({}))], None);
    let r = check(
        &certs,
        &strings(&["--config_path", cfg.to_str().unwrap(), "--shape", "(1,4)"]),
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--shape"), "{}", r.stderr);
}

fn model(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut config = serde_json::json!({
        "name": name,
        "base_path": model_dir("addn").display().to_string(),
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    serde_json::json!({ "config": config })
}

fn write_config(path: &Path, models: &[serde_json::Value], more: Option<serde_json::Value>) {
    let mut doc = serde_json::json!({ "model_config_list": models });
    if let Some(more) = more {
        for (k, v) in more.as_object().unwrap() {
            doc[k] = v.clone();
        }
    }
    std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn every_config_json_key_takes_effect_or_is_refused_by_name() {
    let dir = TempDir::new("ovms-keys");
    let certs = make_certs(dir.path());
    let cfg: PathBuf = dir.path().join("config.json");
    let run = |models: &[serde_json::Value], more: Option<serde_json::Value>| {
        write_config(&cfg, models, more);
        check(&certs, &strings(&["--config_path", cfg.to_str().unwrap()]))
    };
    use serde_json::json;
    let accepted: Vec<(serde_json::Value, Option<serde_json::Value>, &str)> = vec![
        (json!({"batch_size": 3}), None, "settings: batch_size 3"),
        (json!({"batch_size": "3"}), None, "settings: batch_size 3"),
        (json!({"layout": "CN:NC"}), None, "settings: layout CN:NC"),
        (
            json!({"layout": {"x": "NC"}}),
            None,
            "settings: layout x=NC",
        ),
        (
            json!({"shape": {"x": "(2,4)"}}),
            None,
            "settings: shape x=(2,4)",
        ),
        (json!({"shape": "(2,4)"}), None, "settings: shape (2,4)"),
        (json!({"nireq": 2}), None, "settings: nireq 2"),
        (
            json!({"model_version_policy": {"specific": {"versions": [1]}}}),
            None,
            "version 1:",
        ),
        (json!({"target_device": "CPU"}), None, "on CPU"),
        (json!({"stateful": false}), None, "configuration OK"),
        (json!({"allow_cache": false}), None, "configuration OK"),
        (
            json!({"plugin_config": {"NUM_STREAMS": 1, "ENABLE_CPU_PINNING": true}}),
            None,
            "configuration OK",
        ),
        (
            json!({}),
            Some(
                json!({"monitoring": {"metrics": {"enable": true, "metrics_list": ["ovms_streams"]}}}),
            ),
            "/metrics (ovms_streams)",
        ),
        (
            json!({}),
            Some(json!({"monitoring": {"metrics": {"enable": false}}})),
            "metrics OFF",
        ),
        (
            json!({}),
            Some(json!({"pipeline_config_list": [], "mediapipe_config_list": []})),
            "configuration OK",
        ),
    ];
    for (extra, more, expect) in &accepted {
        let r = run(&[model("m", extra.clone())], more.clone());
        assert_eq!(r.code, 0, "{extra} {more:?}:\n{}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains(expect),
            "{extra} {more:?}: expected {expect:?} in:\n{}",
            r.stdout
        );
    }
    let refused: Vec<(serde_json::Value, Option<serde_json::Value>, &str)> = vec![
        (json!({"shape": "auto"}), None, "shape \"auto\""),
        (json!({"shape": {"x": "auto"}}), None, "auto"),
        (json!({"batch_size": "auto"}), None, "batch_size \"auto\""),
        (json!({"layout": "NHWC:NC"}), None, "layout"),
        (json!({"stateful": true}), None, "stateful"),
        (
            json!({"idle_sequence_cleanup": true}),
            None,
            "idle_sequence_cleanup",
        ),
        (
            json!({"max_sequence_number": 8}),
            None,
            "max_sequence_number",
        ),
        (
            json!({"low_latency_transformation": true}),
            None,
            "low_latency_transformation",
        ),
        (
            json!({"custom_loader_options": {"loader_name": "x"}}),
            None,
            "custom_loader_options",
        ),
        (json!({"allow_cache": true}), None, "allow_cache"),
        (json!({"graph_path": "g.pbtxt"}), None, "graph_path"),
        (json!({"mean": [1, 2, 3]}), None, "mean"),
        (json!({"scale": 255}), None, "scale"),
        (json!({"color_format": "BGR:RGB"}), None, "color_format"),
        (json!({"precision": "fp16"}), None, "precision"),
        (json!({"nireq": -1}), None, "nireq"),
        (json!({"frobnicate": 1}), None, "\"frobnicate\""),
        (json!({"base_path": "hdfs://nn/m"}), None, "hdfs://"),
        (json!({}), Some(json!({"bogus": 1})), "\"bogus\""),
        (
            json!({}),
            Some(json!({"pipeline_config_list": [{"name": "p"}]})),
            "pipeline_config_list",
        ),
        (
            json!({}),
            Some(json!({"custom_loader_config_list": [{"config": {}}]})),
            "custom_loader_config_list",
        ),
        (
            json!({}),
            Some(json!({"monitoring": {"metrics": {"enable": true, "metrics_list": ["nope"]}}})),
            "metrics_list",
        ),
        (
            json!({}),
            Some(json!({"monitoring": {"metrics": {"enable": true, "x": 1}}})),
            "\"x\"",
        ),
    ];
    for (extra, more, expect) in &refused {
        let r = run(&[model("m", extra.clone())], more.clone());
        assert_eq!(r.code, 1, "{extra} {more:?}:\n{}{}", r.stdout, r.stderr);
        let text = format!("{}{}", r.stdout, r.stderr);
        assert!(
            text.contains(expect),
            "{extra} {more:?}: expected {expect:?} in:\n{text}"
        );
        assert!(!r.stdout.contains("configuration OK"));
    }
}

/// What the backend does with `batch_size`, `shape`, `layout` and `nireq`, on the real
/// model through the real server: addn adds 2 to each element of a [1,4] input.
#[tokio::test]
async fn the_backend_reshapes_and_transposes_as_configured() {
    let dir = TempDir::new("ovms-backend");
    let cfg = dir.path().join("config.json");
    write_config(
        &cfg,
        &[
            model("plain", serde_json::json!({})),
            model("batch3", serde_json::json!({"batch_size": 3, "nireq": 3})),
            model(
                "shape2",
                serde_json::json!({"shape": {"x": "(2,4)"}, "batch_size": 5}),
            ),
            model(
                "cn",
                serde_json::json!({"layout": "CN:NC", "batch_size": 3}),
            ),
        ],
        None,
    );
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut server = Server::start(
        &strings(&["--config_path", cfg.to_str().unwrap()]),
        &[
            "--log_level",
            "DEBUG",
            "--grpc_memory_quota",
            "0",
            "--file_system_poll_wait_seconds",
            "0",
        ],
    );
    server.wait_ready().await;
    let shape_of = |r: &Reply| r.json()["inputs"][0]["shape"].clone();
    let meta = server.call("GET", "/v2/models/plain", Bytes::new()).await;
    assert_eq!(shape_of(&meta), serde_json::json!([1, 4]));
    let meta = server.call("GET", "/v2/models/batch3", Bytes::new()).await;
    assert_eq!(shape_of(&meta), serde_json::json!([3, 4]), "batch_size 3");
    let meta = server.call("GET", "/v2/models/shape2", Bytes::new()).await;
    assert_eq!(
        shape_of(&meta),
        serde_json::json!([2, 4]),
        "shape wins over batch_size, as in OVMS"
    );
    let meta = server.call("GET", "/v2/models/cn", Bytes::new()).await;
    assert_eq!(
        shape_of(&meta),
        serde_json::json!([4, 3]),
        "layout CN:NC: requests send CN, batch N is the second dimension"
    );

    let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let infer = |model: &str, shape: serde_json::Value, data: Vec<f32>| {
        let body = serde_json::json!({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]});
        (format!("/v2/models/{model}/infer"), body.to_string())
    };
    let (path, body) = infer("batch3", serde_json::json!([3, 4]), x.clone());
    let r = server.call("POST", &path, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outputs"][0]["shape"], serde_json::json!([3, 4]));
    let expect: Vec<f64> = x.iter().map(|v| f64::from(*v) + 2.0).collect();
    assert_eq!(floats(&r.json()["outputs"][0]["data"]), expect);
    // The model now takes batches of 3 only.
    let (path, body) = infer("batch3", serde_json::json!([1, 4]), x[..4].to_vec());
    let r = server.call("POST", &path, body).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));

    // CN:NC: send x transposed ([4,3], column j holds row j of x); the backend
    // transposes back, so the output is the model's own [3,4] = x + 2.
    let xt: Vec<f32> = (0..4)
        .flat_map(|c| (0..3).map(move |n| (n * 4 + c) as f32))
        .collect();
    let (path, body) = infer("cn", serde_json::json!([4, 3]), xt);
    let r = server.call("POST", &path, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outputs"][0]["shape"], serde_json::json!([3, 4]));
    assert_eq!(floats(&r.json()["outputs"][0]["data"]), expect);

    let log = server.log_text();
    assert!(
        log.contains("model=batch3") && log.contains("nireq=3"),
        "nireq 3 in the load log:\n{log}"
    );
    assert!(
        log.contains("DEBUG"),
        "--log_level DEBUG wins over WARDEN_LOG=info"
    );
    assert!(
        log.contains("poll_seconds=0"),
        "--file_system_poll_wait_seconds 0 reaches the backend"
    );
    // --grpc_memory_quota 0 is no quota, not a quota of zero bytes: bodies are served.
    let (path, body) = infer("plain", serde_json::json!([1, 4]), x[..4].to_vec());
    assert_eq!(server.call("POST", &path, body).await.status, 200);
}

/// A layout naming an output, or a reshape the model cannot take, fails at load with
/// the model and the reason, and the server says so (not ready, 404 for the model).
#[tokio::test]
async fn settings_the_model_cannot_take_fail_at_load_with_the_reason() {
    let dir = TempDir::new("ovms-badload");
    let cfg = dir.path().join("config.json");
    write_config(
        &cfg,
        &[
            model("ok", serde_json::json!({})),
            model("badname", serde_json::json!({"layout": {"y": "NC"}})),
        ],
        None,
    );
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let server = Server::start(&strings(&["--config_path", cfg.to_str().unwrap()]), &[]);
    // Not ready while a configured model failed: wait for the load log instead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !server.log_text().contains("model version not served") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let log = server.log_text();
    assert!(
        log.contains("\"y\", which is not an input of the model"),
        "{log}"
    );
    let r = server
        .call("GET", "/v2/models/ok/ready", Bytes::new())
        .await;
    assert_eq!(r.status, 200);
    let r = server
        .call("GET", "/v2/models/badname/ready", Bytes::new())
        .await;
    assert_ne!(r.status, 200);
    // The server stops when dropped (SIGTERM, so it stops its gateway and backend too;
    // a SIGKILL here left them running after every test run).
}
