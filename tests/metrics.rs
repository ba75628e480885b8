//! Metrics end to end: a real server and model, a little traffic over REST and gRPC
//! (successes and refusals), then `/metrics` parsed by the Prometheus project's own
//! parser (prometheus_client, tests/clients/scrape_metrics.py). Every OVMS metric has a
//! series for the model with OVMS's labels, counters moved by exactly the calls made,
//! the backend's histograms count each inference, every Grafana panel's selectors
//! find a series, and `--metrics_list` selects exactly what it lists.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use warden_shared::config::{OVMS_DEFAULT_METRICS, OVMS_METRICS};
use warden_shared::proto;
use warden_tests::*;

const ADD: &str = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1.5,0,0,0]}]}"#;
const POLICY: &str = "[[rule]]\nname = \"users\"\nsubjects = [\"alice\"]\nmodels = [\"addn\"]\noperations = [\"infer\", \"metadata\", \"ready\"]\n";
/// The version of `addn` served (its highest).
const VERSION: &str = "2";

fn addn() -> Vec<String> {
    vec![
        "--model-path".into(),
        model_dir("addn").display().to_string(),
        "--model-name".into(),
        "addn".into(),
    ]
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Selector {
    panel: String,
    selector: String,
    series: usize,
}

/// One scrape, as the Prometheus parser read it.
#[derive(Debug)]
struct Scrape {
    families: BTreeMap<String, String>,
    samples: Vec<Sample>,
    selectors: Vec<Selector>,
}

impl Scrape {
    fn from_json(v: &serde_json::Value) -> Scrape {
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        Scrape {
            families: v["families"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, t)| (k.clone(), text(t)))
                .collect(),
            samples: v["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: text(&s["name"]),
                    labels: s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, l)| (k.clone(), text(l)))
                        .collect(),
                    value: s["value"].as_f64().unwrap(),
                })
                .collect(),
            selectors: v["selectors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Selector {
                    panel: text(&s["panel"]),
                    selector: text(&s["selector"]),
                    series: s["series"].as_u64().unwrap() as usize,
                })
                .collect(),
        }
    }

    /// The sample `name` whose labels are exactly `labels` (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map_or(0.0, |s| s.value)
    }

    /// The samples of `name` (a histogram's `_count` for histograms) for the model.
    fn of_model(&self, family: &str) -> Vec<&Sample> {
        let sample = if self.families.get(family).map(String::as_str) == Some("histogram") {
            format!("{family}_count")
        } else {
            family.to_owned()
        };
        self.samples
            .iter()
            .filter(|s| {
                s.name == sample && s.labels.get("name").map(String::as_str) == Some("addn")
            })
            .collect()
    }

    fn ovms_families(&self) -> BTreeSet<&str> {
        self.families
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with("ovms_"))
            .collect()
    }
}

async fn scrape(server: &Server) -> Scrape {
    let text = plain_get(server.admin_port, "/metrics").await.unwrap();
    let file = server.dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/clients/scrape_metrics.py"))
        .arg(&file)
        .arg(root().join("deploy/grafana/warden.json"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Scrape::from_json(&serde_json::from_slice(&out.stdout).unwrap())
}

fn start(extra: &[&str]) -> (TempDir, Server) {
    let tmp = TempDir::new("metrics");
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut args = vec!["--authz-policy", policy.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start(&addn(), &args);
    (tmp, server)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn grpc_infer() -> Vec<u8> {
    let floats: Vec<u8> = [1.5f32, 0.0, 0.0, 0.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    proto::ModelInferRequest {
        model_name: "addn".into(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(floats)],
        ..Default::default()
    }
    .encode_to_vec()
}

/// What `drive` did, to compare with the counters.
struct Load {
    rest_infer: u32,
    grpc_infer: u32,
}

/// Successes and refusals on both fronts, and one failed TLS handshake.
async fn drive(server: &Server) -> Load {
    let alice = bearer(&server.token(claims("alice", 600)));
    let mallory = bearer(&server.token(claims("mallory", 600)));
    let rest =
        |auth: Option<&str>, method: &'static str, path: &'static str, body: &'static str| {
            let headers: Vec<(&'static str, String)> = auth
                .iter()
                .map(|a| ("authorization", a.to_string()))
                .collect();
            async move {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                server
                    .request(method, path, &headers, Bytes::from_static(body.as_bytes()))
                    .await
                    .unwrap()
                    .status
            }
        };
    let infer = "/v2/models/addn/infer";
    let load = Load {
        rest_infer: 5,
        grpc_infer: 4,
    };
    for _ in 0..load.rest_infer {
        assert_eq!(rest(Some(&alice), "POST", infer, ADD).await, 200);
    }
    assert_eq!(rest(Some(&alice), "GET", "/v2/models/addn", "").await, 200);
    assert_eq!(
        rest(Some(&alice), "GET", "/v2/models/addn/ready", "").await,
        200
    );
    // Refusals: no credentials and an unknown model (no model to count them under),
    // then two on the model (forbidden, malformed).
    assert_eq!(rest(None, "POST", infer, ADD).await, 401);
    assert_eq!(rest(Some(&alice), "GET", "/v2/models/nope", "").await, 403);
    assert_eq!(rest(Some(&mallory), "POST", infer, ADD).await, 403);
    assert_eq!(rest(Some(&alice), "POST", infer, "{nope").await, 400);

    let ca = server.certs.join("ca.pem");
    let mut grpc = H2::connect(server.grpc_port, &ca).await.unwrap();
    let auth = [("authorization", alice.as_str())];
    for _ in 0..load.grpc_infer {
        let r = grpc.grpc("ModelInfer", &auth, &grpc_infer()).await.unwrap();
        assert_eq!(r.code, 0, "{}", r.message);
        let out: proto::ModelInferResponse = r.decode();
        assert_eq!(out.model_version, VERSION);
    }
    let meta = proto::ModelMetadataRequest {
        name: "addn".into(),
        version: String::new(),
    };
    let r = grpc
        .grpc("ModelMetadata", &auth, &meta.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.message);
    let r = grpc
        .grpc(
            "ModelInfer",
            &[("authorization", "Bearer junk")],
            &grpc_infer(),
        )
        .await
        .unwrap();
    assert_eq!(r.code, 16, "UNAUTHENTICATED");

    // A client that is not speaking TLS.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.rest_port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut [0u8; 64])).await;
    load
}

/// Scrapes until `check` holds (a failed handshake is counted once the gateway has
/// given up on it), or 10 s have passed.
async fn settled(server: &Server, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(server).await;
        if check(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_ovms_metric_and_every_dashboard_panel_after_a_little_traffic() {
    let all = OVMS_METRICS.join(",");
    let (_tmp, mut server) = start(&["--metrics_list", &all]);
    server.wait_ready().await;
    let load = drive(&server).await;
    let m = settled(&server, |s| {
        s.value("warden_tls_handshakes_total", &[("result", "failed")]) >= 1.0
    })
    .await;

    // Every OVMS metric, with a series for the model and exactly OVMS's labels.
    assert_eq!(
        m.ovms_families(),
        OVMS_METRICS.iter().copied().collect(),
        "every OVMS metric listed is exported"
    );
    let labels_of = |family: &str| -> BTreeSet<&str> {
        match family {
            "ovms_requests_success" | "ovms_requests_fail" => {
                BTreeSet::from(["api", "interface", "method", "name", "version"])
            }
            "ovms_request_time_us" => BTreeSet::from(["interface", "name", "version"]),
            _ => BTreeSet::from(["name", "version"]),
        }
    };
    for family in OVMS_METRICS {
        let series = m.of_model(family);
        assert!(
            !series.is_empty(),
            "{family} has no series for addn: {:?}",
            m.samples
        );
        for s in series {
            let got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            let want = labels_of(family);
            // OVMS writes ModelReady (and TFS's GetModelStatus) without a version.
            if matches!(
                s.labels.get("method").map(String::as_str),
                Some("ModelReady" | "GetModelStatus")
            ) {
                let mut no_version = want.clone();
                no_version.remove("version");
                assert_eq!(got, no_version, "{family}: {s:?}");
            } else {
                assert_eq!(got, want, "{family}: {s:?}");
                assert_eq!(s.labels["version"], VERSION, "{family}: {s:?}");
            }
        }
    }

    // Counters moved by exactly the calls made.
    let req = |name: &str, interface: &str, method: &str| {
        let mut l = vec![
            ("api", "KServe"),
            ("interface", interface),
            ("method", method),
            ("name", "addn"),
        ];
        if method != "ModelReady" {
            l.push(("version", VERSION));
        }
        m.value(name, &l)
    };
    assert_eq!(
        req("ovms_requests_success", "REST", "ModelInfer"),
        f64::from(load.rest_infer)
    );
    assert_eq!(
        req("ovms_requests_success", "gRPC", "ModelInfer"),
        f64::from(load.grpc_infer)
    );
    assert_eq!(req("ovms_requests_success", "REST", "ModelMetadata"), 1.0);
    assert_eq!(req("ovms_requests_success", "REST", "ModelReady"), 1.0);
    assert_eq!(req("ovms_requests_success", "gRPC", "ModelMetadata"), 1.0);
    assert_eq!(
        req("ovms_requests_fail", "REST", "ModelInfer"),
        2.0,
        "forbidden and malformed, on the model"
    );
    let total = |name: &str| -> f64 {
        m.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    };
    assert_eq!(
        total("ovms_requests_fail"),
        2.0,
        "calls that named no known model are not counted under a model"
    );
    for (interface, n) in [("REST", load.rest_infer), ("gRPC", load.grpc_infer)] {
        assert_eq!(
            m.value(
                "ovms_request_time_us_count",
                &[
                    ("interface", interface),
                    ("name", "addn"),
                    ("version", VERSION)
                ]
            ),
            f64::from(n),
            "{interface}: one observation per successful inference"
        );
    }
    let inferences = f64::from(load.rest_infer + load.grpc_infer);
    let model = [("name", "addn"), ("version", VERSION)];
    for h in ["ovms_inference_time_us", "ovms_wait_for_infer_req_time_us"] {
        assert_eq!(
            m.value(&format!("{h}_count"), &model),
            inferences,
            "{h}: one observation per inference"
        );
        let mut inf = model.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(m.value(&format!("{h}_bucket"), &inf), inferences, "{h}");
    }
    assert!(m.value("ovms_inference_time_us_sum", &model) > 0.0);
    assert!(
        m.value("ovms_inference_time_us_sum", &model)
            < m.value(
                "ovms_request_time_us_sum",
                &[
                    ("interface", "REST"),
                    ("name", "addn"),
                    ("version", VERSION)
                ]
            ) + m.value(
                "ovms_request_time_us_sum",
                &[
                    ("interface", "gRPC"),
                    ("name", "addn"),
                    ("version", VERSION)
                ]
            ),
        "inference is a part of each request's time"
    );
    assert!(m.value("ovms_streams", &model) >= 1.0);
    assert!(m.value("ovms_infer_req_queue_size", &model) >= m.value("ovms_streams", &model));
    assert_eq!(m.value("ovms_infer_req_active", &model), 0.0, "idle now");
    assert_eq!(m.value("ovms_current_requests", &model), 0.0, "idle now");

    // Warden's own: every audited call by decision, refusals, auth failures.
    let decision = |iface: &str, d: &str| {
        m.value(
            "warden_requests_total",
            &[("api", "KServe"), ("interface", iface), ("decision", d)],
        )
    };
    assert_eq!(
        decision("REST", "allowed"),
        f64::from(load.rest_infer) + 2.0
    );
    assert_eq!(
        decision("gRPC", "allowed"),
        f64::from(load.grpc_infer) + 1.0
    );
    assert_eq!(
        decision("REST", "denied"),
        3.0,
        "no token, unknown model, mallory"
    );
    assert_eq!(decision("REST", "invalid"), 1.0);
    assert_eq!(decision("gRPC", "denied"), 1.0);
    assert_eq!(
        m.value(
            "warden_auth_failures_total",
            &[("reason", "missing_credentials")]
        ),
        1.0
    );
    assert_eq!(
        m.value("warden_authz_denied_total", &[("model", "addn")]),
        1.0
    );
    assert_eq!(
        m.value("warden_authz_denied_total", &[("model", "_unknown")]),
        1.0
    );
    assert_eq!(m.value("warden_backend_restarts_total", &[]), 0.0);

    // Every panel of the dashboard finds a series.
    assert!(m.selectors.len() > 20, "{:?}", m.selectors);
    let empty: Vec<String> = m
        .selectors
        .iter()
        .filter(|s| s.series == 0)
        .map(|s| format!("{}: {}", s.panel, s.selector))
        .collect();
    assert!(empty.is_empty(), "panels without data: {empty:#?}");
}

#[tokio::test]
async fn the_default_set_and_a_metrics_list_select_exactly_as_ovms() {
    let (_tmp, mut default) = start(&[]);
    let (_tmp2, mut listed) = start(&[
        "--metrics_list",
        "ovms_requests_success,ovms_infer_req_queue_size",
    ]);
    default.wait_ready().await;
    listed.wait_ready().await;
    for server in [&default, &listed] {
        // One refusal, so the refusal panels have a series too.
        let r = server
            .request("GET", "/v2/models/addn", &[], Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 401);
        let auth = bearer(&server.good_token());
        let r = server
            .request(
                "POST",
                "/v2/models/addn/infer",
                &[("authorization", &auth)],
                Bytes::from_static(ADD.as_bytes()),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let m = scrape(&default).await;
    assert_eq!(
        m.ovms_families(),
        OVMS_METRICS[..OVMS_DEFAULT_METRICS]
            .iter()
            .copied()
            .collect(),
        "OVMS's default set"
    );
    assert!(m.families.contains_key("warden_requests_total"));
    let empty: Vec<String> = m
        .selectors
        .iter()
        .filter(|s| s.series == 0)
        .map(|s| format!("{}: {}", s.panel, s.selector))
        .collect();
    // After one success and one refusal, every panel has a series (0s for the rest).
    assert!(
        empty.is_empty(),
        "panels without data by default: {empty:#?}"
    );

    let m = scrape(&listed).await;
    assert_eq!(
        m.ovms_families(),
        BTreeSet::from(["ovms_requests_success", "ovms_infer_req_queue_size"]),
        "exactly the listed OVMS metrics"
    );
    assert!(
        m.families.contains_key("warden_requests_total"),
        "Warden's own stay"
    );
    assert_eq!(
        m.value(
            "ovms_requests_success",
            &[
                ("api", "KServe"),
                ("interface", "REST"),
                ("method", "ModelInfer"),
                ("name", "addn"),
                ("version", VERSION)
            ]
        ),
        1.0
    );
    assert_eq!(m.of_model("ovms_infer_req_queue_size").len(), 1);
}

#[tokio::test]
async fn an_unknown_metric_name_is_refused_at_start_naming_it() {
    for (name, why) in [
        ("ovms_bogus", "is not an OVMS metric"),
        ("ovms_current_graphs", "MediaPipe"),
    ] {
        let list = format!("ovms_requests_success,{name}");
        let (_tmp, mut server) = start(&["--metrics_list", &list]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{name} was not refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!status.success());
        let log = server.log_text();
        assert!(
            log.contains("--metrics_list") && log.contains(name) && log.contains(why),
            "{name}: {log}"
        );
    }
}
