//! Unit tests of `pipeline.rs`: the names OVMS's metrics and logs use, and each step
//! of a call on a `State` built as the gateway builds it (see `Harness`), so that
//! removing a step fails a test (see scripts/mutants.sh).

use super::*;

#[test]
fn listeners_apis_and_methods_are_named_as_ovms_names_them() {
    assert_eq!(
        [Listener::Rest, Listener::Grpc].map(Listener::as_str),
        ["rest", "grpc"]
    );
    assert_eq!(
        [Listener::Rest, Listener::Grpc].map(Listener::interface),
        ["REST", "gRPC"]
    );
    assert_eq!(
        [Api::KServe, Api::Tfs].map(Api::as_str),
        ["KServe", "TensorFlowServing"]
    );
    assert_eq!(
        ALL_OPS.map(|o| o.method(Api::KServe)),
        [
            "ServerLive",
            "ServerReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelReady",
            "ModelInfer",
            "ModelConfig",
            "ModelStatistics",
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
            "LogSettings",
            "Check",
            "Watch",
            "ServerReflectionInfo",
            "Watch",
        ]
    );
    // TensorFlow Serving's own names for the three calls it has.
    assert_eq!(
        [
            Op::ModelMetadata,
            Op::ModelReady,
            Op::ModelInfer,
            Op::ServerLive
        ]
        .map(|o| o.method(Api::Tfs)),
        [
            "GetModelMetadata",
            "GetModelStatus",
            "Predict",
            "ServerLive"
        ]
    );
}

const ALL_OPS: [Op; 16] = [
    Op::ServerLive,
    Op::ServerReady,
    Op::ServerMetadata,
    Op::ModelMetadata,
    Op::ModelReady,
    Op::ModelInfer,
    Op::ModelConfig,
    Op::ModelStats,
    Op::RepositoryIndex,
    Op::RepositoryLoad,
    Op::RepositoryUnload,
    Op::LogSettings,
    Op::Health {
        watch: false,
        model: false,
    },
    Op::Health {
        watch: true,
        model: true,
    },
    Op::Reflection,
    Op::Health {
        watch: true,
        model: false,
    },
];

#[test]
fn only_server_liveness_and_configured_health_names_answer_without_a_credential() {
    use warden_shared::config::HealthConfig;
    let open = |h: HealthConfig| -> Vec<Op> {
        ALL_OPS
            .into_iter()
            .filter(|op| op.is_open_probe(&h))
            .collect()
    };
    let health = |grpc_unauthenticated, grpc_models_unauthenticated| HealthConfig {
        grpc_unauthenticated,
        grpc_models_unauthenticated,
    };
    let server_health = [
        Op::Health {
            watch: false,
            model: false,
        },
        Op::Health {
            watch: true,
            model: false,
        },
    ];
    let model_health = Op::Health {
        watch: true,
        model: true,
    };
    assert_eq!(
        open(health(false, false)),
        [Op::ServerLive, Op::ServerReady]
    );
    let mut want = vec![
        Op::ServerLive,
        Op::ServerReady,
        server_health[0],
        server_health[1],
    ];
    want.sort_by_key(|o| ALL_OPS.iter().position(|x| x == o));
    assert_eq!(open(health(true, false)), want);
    assert_eq!(
        open(health(false, true)),
        [Op::ServerLive, Op::ServerReady, model_health]
    );
}

#[test]
fn each_operation_is_authorized_for_what_it_touches() {
    use Operation::*;
    let got: Vec<(Scope, Option<Operation>)> = ALL_OPS.map(|o| (o.scope(), o.operation())).to_vec();
    assert_eq!(
        got,
        [
            (Scope::Server, None),
            (Scope::Server, None),
            (Scope::Server, None),
            (Scope::Model(Metadata), Some(Metadata)),
            (Scope::Model(Ready), Some(Ready)),
            (Scope::Model(Infer), Some(Infer)),
            (Scope::Model(Config), Some(Config)),
            (Scope::ModelOrAll(Stats), Some(Stats)),
            (Scope::ServerWide(Admin), Some(Admin)),
            (Scope::Named(Admin), Some(Admin)),
            (Scope::Named(Admin), Some(Admin)),
            (Scope::ServerWide(Admin), Some(Admin)),
            (Scope::Server, None),
            (Scope::Model(Ready), Some(Ready)),
            (Scope::Server, None),
            (Scope::Server, None),
        ]
    );
}

/// A subscriber that only says how much it wants: the log filter's maximum level.
struct MaxLevel(tracing::level_filters::LevelFilter);

impl tracing::Subscriber for MaxLevel {
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.0)
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn log_settings_are_read_from_the_log_filter() {
    use tracing::level_filters::LevelFilter;
    let at = |level| tracing::subscriber::with_default(MaxLevel(level), LogSettings::current);
    let settings = |info, warning, error, verbose_level| LogSettings {
        info,
        warning,
        error,
        verbose_level,
    };
    assert_eq!(at(LevelFilter::OFF), settings(false, false, false, 0));
    assert_eq!(at(LevelFilter::ERROR), settings(false, false, true, 0));
    assert_eq!(at(LevelFilter::WARN), settings(false, true, true, 0));
    assert_eq!(at(LevelFilter::INFO), settings(true, true, true, 0));
    assert_eq!(at(LevelFilter::DEBUG), settings(true, true, true, 1));
    assert_eq!(at(LevelFilter::TRACE), settings(true, true, true, 2));
}

/// A gateway's state as `warden gateway` builds it (real TLS configuration, audit
/// log, policy, catalog), with a backend socket nobody listens on until a test starts
/// a [`Stub`] there: the pipeline's own steps, or whole calls through the real fronts
/// over an in-memory HTTP/2 connection ([`Wire`]).
struct Harness {
    state: Arc<State>,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness(tag: &str, policy: &str, models: &[(&str, &str)]) -> Harness {
    harness_with(tag, policy, models, |_| {})
}

fn harness_with(
    tag: &str,
    policy: &str,
    models: &[(&str, &str)],
    tweak: impl FnOnce(&mut warden_shared::config::Config),
) -> Harness {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "warden-pipeline-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let tls = |alpn: &[&[u8]]| {
        crate::tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem"), alpn, None).unwrap()
    };
    let mut config = warden_shared::config::Config::default();
    config.audit.path = dir.join("audit.log");
    config.backend.socket_dir = dir.join("backend");
    // Issuer `iss` (HS256): `token_of` signs for it.
    config
        .auth
        .issuers
        .push(crate::auth::tests::issuer(&dir.join("hs256.secret")));
    tweak(&mut config);
    let jwt = crate::auth::jwt::JwtAuthority::from_config(&config.auth).unwrap();
    let audit = crate::audit::AuditLog::open(&config.audit).unwrap();
    let backend = crate::backend_client::connect_lazy(config.socket_path());
    let tls = (tls(&[b"h2"]), tls(&[b"h2"]));
    let policy = crate::authz::Policy::from_toml(policy).unwrap();
    let state = Arc::new(State::new(config, jwt, policy, tls, audit, backend));
    // No model at all: the catalog is left unread, as before the backend answers.
    if !models.is_empty() {
        state.catalog.replace(&proto::RepositoryIndexResponse {
            models: models
                .iter()
                .map(
                    |(name, version)| proto::repository_index_response::ModelIndex {
                        name: (*name).into(),
                        version: (*version).into(),
                        state: "READY".into(),
                        reason: String::new(),
                    },
                )
                .collect(),
        });
    }
    Harness { state, dir }
}

/// A TLS 1.3 connection over HTTP/2 from `peer`, without a client certificate.
fn conn_from(peer: &str) -> Arc<ConnInfo> {
    Arc::new(ConnInfo {
        peer: peer.parse().unwrap(),
        tls_version: "TLSv1.3",
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        alpn: Some("h2".into()),
        client_cert: None,
        activity: crate::peer::Activity::new(),
    })
}

fn call_of(state: &State, subject: &str) -> Call {
    let conn = conn_from("192.0.2.7:50000");
    let head = Head {
        listener: Listener::Grpc,
        api: Api::KServe,
        protocol: "gRPC",
        op: Ok(Op::ModelInfer),
        target: None,
        token: None,
        client_request_id: None,
        deadline: None,
        declared_len: None,
    };
    let mut call = state.begin(conn, &head);
    call.principal = Some(Principal {
        method: crate::auth::Method::Jwt,
        subject: subject.into(),
        issuer: "https://issuer.example".into(),
        key_id: None,
        jti_hash: None,
        scopes: vec![],
        groups: vec![],
        certificate: None,
    });
    call
}

fn target(model: &str, version: &str) -> Target {
    Target {
        model: model.into(),
        version: version.into(),
    }
}

const ALICE_ON_M: &str = "[[rule]]\nname = 'alice-m'\nsubjects = ['alice']\nmodels = ['m']\noperations = ['infer']\n\
                          [[rule]]\nname = 'bob-any'\nsubjects = ['bob']\nmodels = ['*']\noperations = ['infer']\n";

#[tokio::test]
async fn a_model_is_authorized_before_its_existence_is_told() {
    let h = harness(
        "admit",
        ALICE_ON_M,
        &[("m", "1"), ("m", "2"), ("other", "1")],
    );
    let s = &h.state;
    let admit = |subject: &str, model: &str, version: &str| {
        let mut call = call_of(s, subject);
        let t = target(model, version);
        async move {
            let r = s.admit_model(&mut call, &t, Operation::Infer).await;
            (
                r,
                call.rule.clone(),
                call.model.clone(),
                call.version.clone(),
            )
        }
    };
    // Allowed: the rule that allowed it is recorded, with the model and version.
    assert_eq!(
        admit("alice", "m", "2").await,
        (
            Ok(()),
            Some("alice-m".into()),
            Some("m".into()),
            Some("2".into())
        )
    );
    // Not allowed: refused, whether the model exists or not (no rule, no answer
    // about the repository), and never under another operation.
    assert_eq!(admit("alice", "other", "").await.0, Err(Refusal::Forbidden));
    assert_eq!(admit("alice", "ghost", "").await.0, Err(Refusal::Forbidden));
    assert_eq!(admit("mallory", "m", "").await.0, Err(Refusal::Forbidden));
    let mut call = call_of(s, "alice");
    let m = target("m", "");
    let metadata = s.admit_model(&mut call, &m, Operation::Metadata).await;
    assert_eq!(metadata, Err(Refusal::Forbidden));
    // Allowed everywhere: now the repository answers.
    assert_eq!(
        admit("bob", "ghost", "").await.0,
        Err(Refusal::UnknownModel)
    );
    assert_eq!(admit("bob", "m", "9").await.0, Err(Refusal::UnknownVersion));
    let (r, rule, model, version) = admit("bob", "other", "").await;
    assert_eq!(
        (r, rule, model, version),
        (Ok(()), Some("bob-any".into()), Some("other".into()), None)
    );
    // Names are checked before anything else.
    assert!(matches!(
        admit("bob", "../m", "").await.0,
        Err(Refusal::BadName(_))
    ));
    assert!(matches!(
        admit("bob", "m", "x").await.0,
        Err(Refusal::BadName(_))
    ));
    // A call without a principal never gets this far; if it did, it is refused.
    let mut anonymous = call_of(s, "bob");
    anonymous.principal = None;
    let r = s.admit_model(&mut anonymous, &m, Operation::Infer).await;
    assert_eq!(r, Err(Refusal::Internal));
}

fn last_record(h: &Harness) -> serde_json::Value {
    let text = std::fs::read_to_string(h.dir.join("audit.log")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[tokio::test]
async fn without_the_backends_catalog_a_model_call_is_refused_as_unavailable() {
    let h = harness("no-catalog", ALICE_ON_M, &[]);
    let s = &h.state;
    let mut call = call_of(s, "alice");
    // The backend is asked (nobody listens), and the call refused, not guessed at.
    let r = s
        .admit_model(&mut call, &target("m", ""), Operation::Infer)
        .await;
    assert_eq!(r, Err(Refusal::BackendUnavailable));
    assert!(!s.catalog.loaded());
}

#[tokio::test]
async fn probes_answer_from_the_backend_and_are_limited_per_ip() {
    let h = harness_with("probes", ALICE_ON_M, &[("m", "1")], |c| {
        c.limits.rate_per_ip_unauthenticated_rps = 1;
        c.limits.rate_burst_seconds = 4;
    });
    let s = &h.state;
    let from = |ip: &str| ConnInfo {
        peer: format!("{ip}:50000").parse().unwrap(),
        ..(*call_of(s, "x").conn).clone()
    };
    // One client IP: its burst of 4, then refused (the calls follow each other
    // within far less than the second a token takes to come back).
    let a = from("192.0.2.7");
    for _ in 0..4 {
        assert!(matches!(
            s.probe::<()>(&a, Op::ServerLive, None).await,
            Ok(Answer::Live)
        ));
    }
    assert!(matches!(
        s.probe::<()>(&a, Op::ServerLive, None).await,
        Err(Refusal::RateLimited(_))
    ));
    // Another IP has its own budget. Nobody answers on the backend's socket: not
    // ready, not serving.
    let b = from("192.0.2.8");
    assert!(matches!(
        s.probe::<()>(&b, Op::ServerReady, None).await,
        Ok(Answer::Ready(false))
    ));
    let health = Op::Health {
        watch: false,
        model: true,
    };
    assert!(matches!(
        s.probe::<()>(&b, health, Some(&target("m", ""))).await,
        Ok(Answer::Health(Serving::NotServing))
    ));
    // A model's health names only a model the repository has, by a valid name.
    assert!(matches!(
        s.probe::<()>(&b, health, Some(&target("ghost", ""))).await,
        Err(Refusal::UnknownModel)
    ));
    assert!(matches!(
        s.probe::<()>(&b, health, Some(&target("../m", ""))).await,
        Err(Refusal::BadName(_))
    ));
}

#[tokio::test]
async fn every_decision_is_recorded_and_a_call_whose_record_cannot_be_written_fails() {
    let h = harness("finish", ALICE_ON_M, &[("m", "1")]);
    let s = &h.state;
    let mut call = call_of(s, "alice");
    s.admit_model(&mut call, &target("m", ""), Operation::Infer)
        .await
        .unwrap();
    let id = call.id.clone();
    assert_eq!(s.finish(call, None, 200, Some(0)).await, Ok(()));
    let r = last_record(&h);
    assert_eq!(r["request_id"], id.as_str());
    assert_eq!(
        (
            &r["principal"],
            &r["model"],
            &r["operation"],
            &r["listener"]
        ),
        (
            &"alice".into(),
            &"m".into(),
            &"infer".into(),
            &"grpc".into()
        )
    );
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&"allowed".into(), &"rule: alice-m".into())
    );
    assert_eq!((&r["status"], &r["grpc_code"]), (&200.into(), &0.into()));

    let refused = call_of(s, "mallory");
    let forbidden = Refusal::Forbidden;
    assert_eq!(
        s.finish(refused, Some(&forbidden), 403, Some(7)).await,
        Ok(())
    );
    let r = last_record(&h);
    assert_eq!(
        (&r["decision"], &r["principal"]),
        (&"denied".into(), &"mallory".into())
    );
    assert_eq!(r["reason"], forbidden.reason().as_str());
    let chain = crate::audit::verify(&[h.dir.join("audit.log")]).unwrap();
    assert!(chain.is_ok(), "the records chain");

    // Fail closed: a call whose record cannot be written is refused, whatever
    // its own outcome, and counted.
    s.audit.break_writes();
    let call = call_of(s, "alice");
    assert_eq!(
        s.finish(call, None, 200, Some(0)).await,
        Err(Refusal::AuditUnavailable)
    );
    let call = call_of(s, "mallory");
    assert_eq!(
        s.finish(call, Some(&forbidden), 403, Some(7)).await,
        Err(Refusal::AuditUnavailable)
    );
}

#[tokio::test]
async fn an_inference_counts_in_its_versions_statistics_as_it_ended() {
    let h = harness("stats", ALICE_ON_M, &[("m", "1"), ("m", "2")]);
    let s = &h.state;
    let counts = || {
        let v = s.stats.get("m", 2);
        (v.success.count, v.fail.count)
    };
    // Named version, or the latest when none is named; a 4xx or a refusal fails.
    for (version, status, refusal, want) in [
        ("2", 200, None, (1, 0)),
        ("", 200, None, (2, 0)),
        ("2", 399, None, (3, 0)),
        ("2", 400, None, (3, 1)),
        ("2", 200, Some(Refusal::Timeout), (3, 2)),
    ] {
        let mut call = call_of(s, "alice");
        s.admit_model(&mut call, &target("m", version), Operation::Infer)
            .await
            .unwrap();
        s.finish(call, refusal.as_ref(), status, None)
            .await
            .unwrap();
        assert_eq!(counts(), want, "version {version:?}, status {status}");
    }
    assert_eq!(
        s.stats.get("m", 1),
        Default::default(),
        "version 1 was not called"
    );
    // Only inferences count.
    let mut call = call_of(s, "alice");
    s.admit_model(&mut call, &target("m", "2"), Operation::Infer)
        .await
        .unwrap();
    call.op = Some(Op::ModelMetadata);
    s.finish(call, None, 200, None).await.unwrap();
    assert_eq!(counts(), (3, 2));
    // An empty version is not recorded as one.
    let mut call = call_of(s, "alice");
    call.version = Some(String::new());
    s.finish(call, None, 200, None).await.unwrap();
    assert_eq!(last_record(&h).get("version"), None);
}

#[tokio::test]
async fn each_call_is_counted_in_the_metrics_ovms_names() {
    let h = harness("metrics", ALICE_ON_M, &[("m", "1")]);
    let s = &h.state;
    let finished = |op: Op, refusal: Option<Refusal>, status: u16| async move {
        let mut call = call_of(s, "alice");
        s.admit_model(&mut call, &target("m", "1"), Operation::Infer)
            .await
            .unwrap();
        call.op = Some(op);
        s.finish(call, refusal.as_ref(), status, None)
            .await
            .unwrap();
    };
    finished(Op::ModelInfer, None, 200).await;
    finished(Op::ModelInfer, None, 200).await;
    finished(Op::ModelInfer, None, 500).await;
    finished(Op::ModelReady, None, 200).await;
    finished(Op::ModelInfer, Some(Refusal::BackendUnavailable), 503).await;
    let text = s.metrics.render(|_| true);
    let has = |line: &str| assert!(text.contains(line), "{line} in:\n{text}");
    has(
        "ovms_requests_success{api=\"KServe\",interface=\"gRPC\",method=\"ModelInfer\",name=\"m\",version=\"1\"} 2\n",
    );
    has(
        "ovms_requests_fail{api=\"KServe\",interface=\"gRPC\",method=\"ModelInfer\",name=\"m\",version=\"1\"} 2\n",
    );
    // OVMS labels ModelReady without a version.
    has(
        "ovms_requests_success{api=\"KServe\",interface=\"gRPC\",method=\"ModelReady\",name=\"m\"} 1\n",
    );
    // Only successful inferences are timed.
    has("ovms_request_time_us_count{interface=\"gRPC\",name=\"m\",version=\"1\"} 2\n");
    has("warden_requests_total{api=\"KServe\",interface=\"gRPC\",decision=\"allowed\"} 4\n");
    has("warden_refusals_total{reason=\"backend_unavailable\"} 1\n");
    has("warden_backend_unavailable_total 1\n");
    // A call that never named a model the repository has counts in no model series.
    let stranger = call_of(s, "mallory");
    s.finish(stranger, Some(&Refusal::Forbidden), 403, Some(7))
        .await
        .unwrap();
    let text = s.metrics.render(|_| true);
    assert!(!text.contains("method=\"Unknown\""), "{text}");
}

#[tokio::test]
async fn statistics_of_every_model_list_only_those_the_caller_may_read() {
    let policy =
        "[[rule]]\nname = 'stats'\nsubjects = ['alice']\nmodels = ['m*']\noperations = ['stats']\n";
    let h = harness(
        "model-stats",
        policy,
        &[("m1", "1"), ("m1", "2"), ("m2", "1"), ("other", "1")],
    );
    let s = &h.state;
    let listed = |call: &Call, model: &str, version: &str| -> Vec<(String, String)> {
        s.model_stats(call, &target(model, version))
            .into_iter()
            .map(|m| (m.name, m.version))
            .collect()
    };
    let pair = |m: &str, v: &str| (m.to_string(), v.to_string());
    let alice = call_of(s, "alice");
    let mut all = listed(&alice, "", "");
    all.sort();
    assert_eq!(all, [pair("m1", "1"), pair("m1", "2"), pair("m2", "1")]);
    assert_eq!(listed(&alice, "m1", "2"), [pair("m1", "2")]);
    assert_eq!(listed(&alice, "m1", "3"), []);
    assert_eq!(listed(&call_of(s, "mallory"), "", ""), []);
    let mut anonymous = call_of(s, "alice");
    anonymous.principal = None;
    assert_eq!(listed(&anonymous, "", ""), []);
}

#[tokio::test]
async fn with_audit_fail_open_a_call_is_served_without_its_record() {
    let h = harness("fail-open", ALICE_ON_M, &[("m", "1")]);
    // The configuration is read when deciding: set it as an operator would.
    let mut config = h.state.config.clone();
    config.audit.fail_open = true;
    let audit = crate::audit::AuditLog::open(&config.audit).unwrap();
    audit.break_writes();
    assert!(audit.fail_open());
    let s = State::new(
        config,
        crate::auth::jwt::JwtAuthority::from_config(&Default::default()).unwrap(),
        crate::authz::Policy::from_toml(ALICE_ON_M).unwrap(),
        (h.state.tls(false), h.state.tls(true)),
        audit,
        crate::backend_client::connect_lazy(h.state.config.socket_path()),
    );
    let call = call_of(&s, "alice");
    assert_eq!(s.finish(call, None, 200, Some(0)).await, Ok(()));
}

#[tokio::test]
async fn each_budget_refuses_past_its_limit_and_only_its_own_callers() {
    let h = harness_with("budgets", ALICE_ON_M, &[("m", "1")], |c| {
        c.limits.rate_per_principal_rps = 1;
        c.limits.rate_per_model_rps = 0;
        c.limits.rate_total_rps = 0;
        c.limits.rate_per_ip_unauthenticated_rps = 1;
        c.limits.rate_burst_seconds = 2;
        c.limits.quota_bytes = 0;
        c.limits.quota_per_principal_bytes = 1000;
    });
    let s = &h.state;
    // Per principal: a burst of 2, then refused; another principal is not.
    let alice = call_of(s, "alice").principal.unwrap();
    let bob = call_of(s, "bob").principal.unwrap();
    assert_eq!(s.admit_principal(&alice), Ok(()));
    assert_eq!(s.admit_principal(&alice), Ok(()));
    assert!(matches!(
        s.admit_principal(&alice),
        Err(Refusal::RateLimited(_))
    ));
    assert_eq!(s.admit_principal(&bob), Ok(()));
    // Per client IP, for calls without a credential.
    let conn = call_of(s, "x").conn;
    assert_eq!(s.limit_ip(&conn), Ok(()));
    assert_eq!(s.limit_ip(&conn), Ok(()));
    assert!(matches!(s.limit_ip(&conn), Err(Refusal::RateLimited(_))));
    // Memory: a principal's calls together stay under its quota; a call that ends
    // gives its bytes back. (Step 2 starts each call's reservation.)
    let reserved = |who: &str| {
        let mut call = call_of(s, who);
        call.reservation = s.quotas.start(Some(who));
        call
    };
    let mut first = reserved("alice");
    assert_eq!(s.charge(&mut first, 600), Ok(()));
    let mut second = reserved("alice");
    assert!(matches!(s.charge(&mut second, 600), Err(Refusal::Quota(_))));
    let mut other = reserved("bob");
    assert_eq!(s.charge(&mut other, 600), Ok(()));
    drop(first);
    assert_eq!(s.charge(&mut second, 600), Ok(()));
}

#[tokio::test]
async fn a_bad_credential_is_refused_and_a_flood_of_them_is_rate_limited_per_ip() {
    let h = harness_with("authn", ALICE_ON_M, &[("m", "1")], |c| {
        c.limits.rate_per_ip_unauthenticated_rps = 1;
        c.limits.rate_burst_seconds = 1;
    });
    let s = &h.state;
    let call = call_of(s, "x");
    assert!(matches!(
        s.authenticate(&call, Some("not.a.token")),
        Err(Refusal::Unauthenticated(_))
    ));
    assert!(matches!(
        s.authenticate(&call, None),
        Err(Refusal::RateLimited(_))
    ));
}

#[tokio::test]
async fn a_named_or_server_wide_operation_is_authorized_without_the_repository() {
    let policy =
        "[[rule]]\nname = 'ops'\nsubjects = ['ops']\nmodels = ['*']\noperations = ['admin']\n";
    let h = harness("named", policy, &[]);
    let s = &h.state;
    let mut call = call_of(s, "ops");
    assert_eq!(
        s.admit_named(&mut call, &target("new-model", ""), Operation::Admin),
        Ok(())
    );
    assert_eq!(call.rule.as_deref(), Some("ops"));
    assert_eq!(
        call.model, None,
        "a name the repository may not have is never recorded"
    );
    let mut call = call_of(s, "ops");
    let server = target(crate::authz::SERVER_WIDE, "");
    assert_eq!(s.admit_named(&mut call, &server, Operation::Admin), Ok(()));
    let mut call = call_of(s, "alice");
    assert_eq!(
        s.admit_named(&mut call, &target("new-model", ""), Operation::Admin),
        Err(Refusal::Forbidden)
    );
    let mut call = call_of(s, "ops");
    assert!(matches!(
        s.admit_named(&mut call, &target("../x", ""), Operation::Admin),
        Err(Refusal::BadName(_))
    ));
    call.principal = None;
    assert_eq!(
        s.admit_named(&mut call, &target("x", ""), Operation::Admin),
        Err(Refusal::Internal)
    );
}

#[test]
fn a_call_is_counted_out_however_it_ends() {
    // The count shutdown waits on (lib.rs drains until it is 0).
    let count = Arc::new(std::sync::atomic::AtomicI64::new(2));
    drop(InFlight(Arc::clone(&count)));
    assert_eq!(count.load(std::sync::atomic::Ordering::Acquire), 1);
    let held = InFlight(Arc::clone(&count));
    let unwound = std::panic::catch_unwind(move || {
        let _call = held;
        panic!("a call that fails half way");
    });
    assert!(unwound.is_err());
    assert_eq!(count.load(std::sync::atomic::Ordering::Acquire), 0);
}

#[test]
fn versions_are_digits_and_bounded() {
    assert!(check_version("").is_ok());
    assert!(check_version("12").is_ok());
    assert!(check_version(&"9".repeat(20)).is_ok());
    for bad in ["x", "-1", "1.0", " 1", &"9".repeat(21)] {
        assert_eq!(
            check_version(bad),
            Err(Refusal::BadName("model version must be a positive integer")),
            "{bad}"
        );
    }
}

#[test]
fn client_request_ids_are_kept_only_when_plain() {
    assert_eq!(
        client_request_id(Some("abc-1.2:3")),
        Some("abc-1.2:3".into())
    );
    assert_eq!(client_request_id(Some("a\nb")), None);
    assert_eq!(client_request_id(Some(&"a".repeat(65))), None);
    assert_eq!(client_request_id(Some("")), None);
}

// ---------------------------------------------------------------------------------
// The wire: a backend stub on the harness's socket, and calls through the real fronts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use warden_shared::frames;

/// A backend on the harness's socket, answering as Warden's backend does from the
/// models the test gives it, and noting what each call carried across the socket.
#[derive(Default)]
struct Stub {
    ready: AtomicBool,
    /// (name, version) served, all ready unless named in `unready`.
    models: Mutex<Vec<(String, String)>>,
    unready: Mutex<Vec<String>>,
    /// An inference on this model answers after this long.
    slow: Mutex<Option<(String, Duration)>>,
    index_calls: AtomicUsize,
    /// (method, principal, request id) of each call.
    seen: Mutex<Vec<(&'static str, Option<String>, Option<String>)>>,
}

/// The digest the stub's answers carry.
const STUB_DIGEST: &str = "sha256:0123abcd";

impl Stub {
    fn serving(models: &[(&str, &str)]) -> Arc<Stub> {
        let stub = Stub::default();
        stub.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        stub.set_models(models);
        Arc::new(stub)
    }

    fn set_models(&self, models: &[(&str, &str)]) {
        *self.models.lock().unwrap() = models
            .iter()
            .map(|(m, v)| ((*m).to_owned(), (*v).to_owned()))
            .collect();
    }

    fn note<T>(&self, method: &'static str, r: &GrpcRequest<T>) {
        let text = |k: &str| {
            r.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.seen.lock().unwrap().push((
            method,
            text(warden_shared::wire::PRINCIPAL_HEADER),
            text(warden_shared::wire::REQUEST_ID_HEADER),
        ));
    }

    fn methods(&self) -> Vec<&'static str> {
        self.seen.lock().unwrap().iter().map(|s| s.0).collect()
    }

    /// The versions of `model`, newest first.
    fn versions(&self, model: &str) -> Vec<String> {
        let mut v: Vec<String> = (self.models.lock().unwrap().iter())
            .filter(|(m, _)| m == model)
            .map(|(_, v)| v.clone())
            .collect();
        v.sort_by_key(|v| std::cmp::Reverse(v.parse::<u64>().unwrap()));
        v
    }

    /// The version a call on `model` (and `version`, if set) is served by.
    fn find(&self, model: &str, version: &str) -> Result<String, Status> {
        let versions = self.versions(model);
        match version {
            "" => versions.first().cloned(),
            v => versions.iter().find(|x| *x == v).cloned(),
        }
        .ok_or_else(|| Status::not_found(format!("{model} {version}")))
    }
}

#[tonic::async_trait]
impl proto::grpc_inference_service_server::GrpcInferenceService for Stub {
    async fn server_live(
        &self,
        r: GrpcRequest<proto::ServerLiveRequest>,
    ) -> Result<GrpcResponse<proto::ServerLiveResponse>, Status> {
        self.note("ServerLive", &r);
        Ok(GrpcResponse::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        r: GrpcRequest<proto::ServerReadyRequest>,
    ) -> Result<GrpcResponse<proto::ServerReadyResponse>, Status> {
        self.note("ServerReady", &r);
        let ready = self.ready.load(std::sync::atomic::Ordering::Relaxed);
        Ok(GrpcResponse::new(proto::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        r: GrpcRequest<proto::ModelReadyRequest>,
    ) -> Result<GrpcResponse<proto::ModelReadyResponse>, Status> {
        self.note("ModelReady", &r);
        let m = r.into_inner();
        self.find(&m.name, &m.version)?;
        let ready = !self.unready.lock().unwrap().contains(&m.name);
        Ok(GrpcResponse::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        r: GrpcRequest<proto::ServerMetadataRequest>,
    ) -> Result<GrpcResponse<proto::ServerMetadataResponse>, Status> {
        self.note("ServerMetadata", &r);
        Err(Status::unimplemented("the gateway answers server metadata"))
    }

    async fn model_metadata(
        &self,
        r: GrpcRequest<proto::ModelMetadataRequest>,
    ) -> Result<GrpcResponse<proto::ModelMetadataResponse>, Status> {
        self.note("ModelMetadata", &r);
        let m = r.into_inner();
        self.find(&m.name, &m.version)?;
        let tensor = |name: &str| proto::model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
        };
        Ok(GrpcResponse::new(proto::ModelMetadataResponse {
            versions: self.versions(&m.name),
            name: m.name,
            platform: "stub".into(),
            inputs: vec![tensor("x")],
            outputs: vec![tensor("y")],
        }))
    }

    /// The gateway sends inferences framed, never over gRPC.
    async fn model_infer(
        &self,
        r: GrpcRequest<proto::ModelInferRequest>,
    ) -> Result<GrpcResponse<proto::ModelInferResponse>, Status> {
        self.note("ModelInfer over gRPC", &r);
        Err(Status::unimplemented("ModelInfer is framed"))
    }

    async fn repository_index(
        &self,
        r: GrpcRequest<proto::RepositoryIndexRequest>,
    ) -> Result<GrpcResponse<proto::RepositoryIndexResponse>, Status> {
        self.note("RepositoryIndex", &r);
        self.index_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unready = self.unready.lock().unwrap().clone();
        let models = (self.models.lock().unwrap().iter())
            .map(
                |(name, version)| proto::repository_index_response::ModelIndex {
                    name: name.clone(),
                    version: version.clone(),
                    state: if unready.contains(name) {
                        "UNAVAILABLE"
                    } else {
                        "READY"
                    }
                    .into(),
                    reason: String::new(),
                },
            )
            .collect();
        Ok(GrpcResponse::new(proto::RepositoryIndexResponse { models }))
    }
}

/// Answers each FP32 input doubled, as output `y`.
impl frames::Infer for Stub {
    async fn infer(&self, call: frames::Call) -> Result<frames::Answer, Status> {
        self.seen.lock().unwrap().push((
            "ModelInfer",
            Some(call.principal).filter(|p| !p.is_empty()),
            Some(call.request_id),
        ));
        let m = call.request;
        let version = self.find(&m.model_name, &m.model_version)?;
        let slow = self.slow.lock().unwrap().clone();
        if let Some((model, delay)) = slow
            && model == m.model_name
        {
            tokio::time::sleep(delay).await;
        }
        let raw: Vec<Bytes> = (m.raw_input_contents.iter())
            .map(|b| {
                (b.chunks_exact(4))
                    .flat_map(|c| (2.0 * f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into()
            })
            .collect();
        let outputs = (m.inputs.iter())
            .map(|i| proto::model_infer_response::InferOutputTensor {
                name: "y".into(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                ..Default::default()
            })
            .collect();
        let digest = proto::InferParameter {
            parameter_choice: Some(proto::infer_parameter::ParameterChoice::StringParam(
                STUB_DIGEST.into(),
            )),
        };
        Ok(frames::Answer {
            response: proto::ModelInferResponse {
                model_name: m.model_name,
                model_version: version,
                id: m.id,
                parameters: [("model_digest".to_owned(), digest)].into(),
                outputs,
                raw_output_contents: raw,
            },
            wait_us: 7,
            inference_us: 11,
        })
    }
}

impl Harness {
    /// Starts `stub` on the backend's socket; it serves until the test's runtime ends.
    fn backend(&self, stub: &Arc<Stub>) {
        let path = self.state.config.socket_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let service = proto::grpc_inference_service_server::GrpcInferenceServiceServer::from_arc(
            Arc::clone(stub),
        );
        let (grpc, incoming) = tokio::sync::mpsc::channel(8);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(incoming)),
        );
        let stub = Arc::clone(stub);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (grpc, stub) = (grpc.clone(), Arc::clone(&stub));
                tokio::spawn(async move { frames::route(stream, &grpc, stub).await });
            }
        });
    }

    /// A client of the gateway's real gRPC front, over HTTP/2 on an in-memory
    /// connection from `peer` (TLS is the one layer left out).
    async fn grpc_client(&self, peer: &str) -> Wire {
        let (state, conn) = (Arc::clone(&self.state), conn_from(peer));
        Wire::to(move |req| crate::front::grpc::handle(Arc::clone(&state), Arc::clone(&conn), req))
            .await
    }

    /// The same for the REST front.
    async fn rest_client(&self, peer: &str) -> Wire {
        let (state, conn) = (Arc::clone(&self.state), conn_from(peer));
        Wire::to(move |req| crate::front::rest::handle(Arc::clone(&state), Arc::clone(&conn), req))
            .await
    }

    /// Every audit record so far.
    fn records(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A request body the test sends chunk by chunk; it ends when its sender is dropped.
struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// An HTTP/2 client connected over an in-memory connection to a server that hands
/// each request to `handler`.
struct Wire(hyper::client::conn::http2::SendRequest<Chunks>);

/// What a call got back.
#[derive(Debug)]
struct Reply {
    status: http::StatusCode,
    /// `grpc-status`, from the headers (a trailers-only answer) or the trailers.
    grpc: Option<i32>,
    body: Bytes,
}

impl Wire {
    async fn to<F, Fut, B>(handler: F) -> Wire
    where
        F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = http::Response<B>> + Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (near, far) = tokio::io::duplex(1 << 16);
        let service = hyper::service::service_fn(move |req| {
            let answer = handler(req);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let exec = hyper_util::rt::TokioExecutor::new();
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(exec.clone())
                .serve_connection(hyper_util::rt::TokioIo::new(far), service),
        );
        let (sender, conn) =
            hyper::client::conn::http2::handshake(exec, hyper_util::rt::TokioIo::new(near))
                .await
                .unwrap();
        tokio::spawn(conn);
        Wire(sender)
    }

    /// Sends `req` with a body fed through the returned sender, and the answer's head
    /// as the server gives it (the body may still be open then).
    fn send(
        &mut self,
        req: http::request::Builder,
    ) -> (
        tokio::sync::mpsc::Sender<Bytes>,
        impl std::future::Future<Output = http::Response<Incoming>> + use<>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let sent = self.0.send_request(req.body(Chunks(rx)).unwrap());
        (tx, async move { sent.await.unwrap() })
    }

    /// [`Wire::send`], the answer read whole.
    fn open(
        &mut self,
        req: http::request::Builder,
    ) -> (
        tokio::sync::mpsc::Sender<Bytes>,
        tokio::task::JoinHandle<Reply>,
    ) {
        let (tx, sent) = self.send(req);
        let answer = tokio::spawn(async move {
            let (parts, body) = sent.await.into_parts();
            let body = body.collect().await.unwrap();
            let grpc = (parts.headers.get("grpc-status"))
                .or_else(|| body.trailers().and_then(|t| t.get("grpc-status")))
                .map(|v| v.to_str().unwrap().parse().unwrap());
            Reply {
                status: parts.status,
                grpc,
                body: body.to_bytes(),
            }
        });
        (tx, answer)
    }

    /// Sends `req` with `body`, whole, and waits for the answer.
    async fn call(&mut self, req: http::request::Builder, body: &[u8]) -> Reply {
        let (tx, answer) = self.open(req);
        if !body.is_empty() {
            tx.send(Bytes::copy_from_slice(body)).await.unwrap();
        }
        drop(tx);
        answer.await.unwrap()
    }

    /// A unary gRPC call of `method` (a full path) with `message`.
    async fn grpc(
        &mut self,
        method: &str,
        token: Option<&str>,
        message: &impl prost::Message,
    ) -> Reply {
        self.call(grpc_request(method, token), &grpc_frame(message))
            .await
    }
}

fn grpc_request(method: &str, token: Option<&str>) -> http::request::Builder {
    let mut req = http::Request::post(format!("http://warden.test{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req
}

/// A gRPC message with its 5-byte prefix.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// The message of a gRPC answer.
fn grpc_message<M: prost::Message + Default>(reply: &Reply) -> M {
    assert_eq!(reply.grpc, Some(0), "{reply:?}");
    M::decode(&reply.body[5..]).unwrap()
}

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

fn infer_request(model: &str, version: &str, values: &[f32]) -> proto::ModelInferRequest {
    proto::ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, values.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..Default::default()
    }
}

#[tokio::test]
async fn an_inference_crosses_the_socket_with_the_verified_principal_and_is_recorded() {
    let h = harness("wire-infer", ALICE_ON_M, &[("m", "1")]);
    let stub = Stub::serving(&[("m", "1"), ("m", "3")]);
    h.backend(&stub);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let alice = crate::auth::tests::token_of("alice", None);

    let reply = c
        .grpc(INFER, Some(&alice), &infer_request("m", "", &[1.5, -2.0]))
        .await;
    let answer: proto::ModelInferResponse = grpc_message(&reply);
    assert_eq!(
        answer.raw_output_contents,
        vec![Bytes::from(
            [3.0f32, -4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        )]
    );
    // The backend got the principal the gateway verified and the call's own id, and
    // the record names the version the backend used and its digest.
    let records = h.records();
    let r = records.last().unwrap();
    let seen = stub.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.0, "ModelInfer");
    assert_eq!(seen.1.as_deref(), Some("alice (iss)"));
    assert_eq!(seen.2.as_deref(), r["request_id"].as_str());
    assert_eq!(
        (
            &r["decision"],
            &r["model"],
            &r["version"],
            &r["model_digest"]
        ),
        (
            &"allowed".into(),
            &"m".into(),
            &"3".into(),
            &STUB_DIGEST.into()
        )
    );
    assert_eq!((&r["status"], &r["grpc_code"]), (&200.into(), &0.into()));
}

/// Alice may do everything to `m` but administer; `ops` administers the server.
const WIRE_POLICY: &str = "[[rule]]\nname = 'alice-m'\nsubjects = ['alice']\nmodels = ['m']\n\
                           operations = ['infer', 'metadata', 'ready', 'config', 'stats']\n\
                           [[rule]]\nname = 'ops'\nsubjects = ['ops']\nmodels = ['*']\noperations = ['admin']\n";

fn token(subject: &str) -> String {
    crate::auth::tests::token_of(subject, None)
}

#[tokio::test]
async fn a_call_without_a_valid_credential_never_reaches_the_backend() {
    let h = harness("wire-authn", WIRE_POLICY, &[("m", "1")]);
    let stub = Stub::serving(&[("m", "1")]);
    h.backend(&stub);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let request = infer_request("m", "", &[1.0, 2.0]);
    for credential in [None, Some("not.a.token")] {
        let reply = c.grpc(INFER, credential, &request).await;
        assert_eq!(reply.grpc, Some(16), "{reply:?}");
    }
    // A valid credential for a model its principal may not use.
    let reply = c.grpc(INFER, Some(&token("mallory")), &request).await;
    assert_eq!(reply.grpc, Some(7), "{reply:?}");
    assert!(stub.methods().is_empty(), "{:?}", stub.methods());
    let records = h.records();
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r["decision"] == "denied"),
        "{records:?}"
    );
}

#[tokio::test]
async fn each_named_operation_answers_what_the_backend_says_of_the_named_model() {
    let h = harness("wire-ops", WIRE_POLICY, &[("m", "1"), ("m", "3")]);
    let stub = Stub::serving(&[("m", "1"), ("m", "3")]);
    h.backend(&stub);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let alice = token("alice");
    let method = |m: &str| format!("{}{m}", crate::front::grpc::SERVICE);

    let meta: proto::ModelMetadataResponse = grpc_message(
        &c.grpc(
            &method("ModelMetadata"),
            Some(&alice),
            &proto::ModelMetadataRequest {
                name: "m".into(),
                version: String::new(),
            },
        )
        .await,
    );
    assert_eq!(
        (meta.name.as_str(), meta.versions),
        ("m", vec!["3".into(), "1".into()])
    );
    let config: proto::ModelConfigResponse = grpc_message(
        &c.grpc(
            &method("ModelConfig"),
            Some(&alice),
            &proto::ModelConfigRequest {
                name: "m".into(),
                version: String::new(),
            },
        )
        .await,
    );
    assert_eq!(config.config.unwrap().name, "m");
    let ready = |version: &str| proto::ModelReadyRequest {
        name: "m".into(),
        version: version.into(),
    };
    let r: proto::ModelReadyResponse = grpc_message(
        &c.grpc(&method("ModelReady"), Some(&alice), &ready("1"))
            .await,
    );
    assert!(r.ready);
    stub.unready.lock().unwrap().push("m".into());
    let r: proto::ModelReadyResponse = grpc_message(
        &c.grpc(&method("ModelReady"), Some(&alice), &ready(""))
            .await,
    );
    assert!(!r.ready);
    // A version the repository does not have is refused without asking the backend
    // about it; a miss reads the backend's index again (once), in case it is new.
    let before = stub.methods().len();
    let reply = c
        .grpc(&method("ModelReady"), Some(&alice), &ready("2"))
        .await;
    assert_eq!(reply.grpc, Some(5), "{reply:?}");
    assert_eq!(stub.methods()[before..], ["RepositoryIndex"]);
}

#[tokio::test]
async fn statistics_of_one_model_are_authorized_and_of_all_are_filtered() {
    let h = harness("wire-stats", WIRE_POLICY, &[("m", "1"), ("n", "1")]);
    h.backend(&Stub::serving(&[("m", "1"), ("n", "1")]));
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let path = format!("{}ModelStatistics", crate::front::grpc::SERVICE);
    let stats = |name: &str| proto::ModelStatisticsRequest {
        name: name.into(),
        version: String::new(),
    };
    // No name: every model the caller may read statistics of, without a refusal.
    let all: proto::ModelStatisticsResponse =
        grpc_message(&c.grpc(&path, Some(&token("alice")), &stats("")).await);
    let names: Vec<_> = all.model_stats.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["m"]);
    // A name: authorized on that model.
    let one: proto::ModelStatisticsResponse =
        grpc_message(&c.grpc(&path, Some(&token("alice")), &stats("m")).await);
    assert_eq!(one.model_stats.len(), 1);
    let reply = c.grpc(&path, Some(&token("alice")), &stats("n")).await;
    assert_eq!(reply.grpc, Some(7), "{reply:?}");
    // Over REST, the model comes from the path: the same decisions.
    let mut r = h.rest_client("192.0.2.7:50001").await;
    let get = |path: &str, who: &str| {
        http::Request::get(format!("http://warden.test{path}"))
            .header("authorization", format!("Bearer {}", token(who)))
    };
    let reply = r.call(get("/v2/models/stats", "alice"), b"").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["model_stats"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["model_stats"][0]["name"], "m");
    let reply = r.call(get("/v2/models/n/stats", "alice"), b"").await;
    assert_eq!(reply.status, 403, "{reply:?}");
}

#[tokio::test]
async fn server_wide_and_named_operations_take_the_admin_right_before_anything_else() {
    let h = harness_with("wire-admin", WIRE_POLICY, &[("m", "1")], |c| {
        c.triton.repository_control = true;
    });
    let stub = Stub::serving(&[("m", "1")]);
    stub.unready.lock().unwrap().push("n".into());
    stub.set_models(&[("m", "1"), ("n", "1")]);
    h.backend(&stub);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let method = |m: &str| format!("{}{m}", crate::front::grpc::SERVICE);
    let (alice, ops) = (token("alice"), token("ops"));

    let index = |ready| proto::RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let reply = c
        .grpc(&method("RepositoryIndex"), Some(&alice), &index(false))
        .await;
    assert_eq!(reply.grpc, Some(7), "{reply:?}");
    let all: proto::RepositoryIndexResponse = grpc_message(
        &c.grpc(&method("RepositoryIndex"), Some(&ops), &index(false))
            .await,
    );
    assert_eq!(all.models.len(), 2);
    let ready: proto::RepositoryIndexResponse = grpc_message(
        &c.grpc(&method("RepositoryIndex"), Some(&ops), &index(true))
            .await,
    );
    let names: Vec<_> = ready.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["m"]);

    let load = proto::RepositoryModelLoadRequest {
        model_name: "new-model".into(),
        ..Default::default()
    };
    let reply = c
        .grpc(&method("RepositoryModelLoad"), Some(&alice), &load)
        .await;
    assert_eq!(reply.grpc, Some(7), "{reply:?}");
    assert_eq!(
        h.records().last().unwrap()["reason"],
        Refusal::Forbidden.reason()
    );
    let reply = c
        .grpc(&method("RepositoryModelLoad"), Some(&ops), &load)
        .await;
    assert_eq!(reply.grpc, Some(12), "{reply:?}");

    let read = proto::LogSettingsRequest::default();
    let reply = c.grpc(&method("LogSettings"), Some(&alice), &read).await;
    assert_eq!(reply.grpc, Some(7), "{reply:?}");
    let _: proto::LogSettingsResponse =
        grpc_message(&c.grpc(&method("LogSettings"), Some(&ops), &read).await);
    let mut change = proto::LogSettingsRequest::default();
    change.settings.insert(
        "log_info".into(),
        proto::log_settings_request::SettingValue {
            parameter_choice: Some(
                proto::log_settings_request::setting_value::ParameterChoice::BoolParam(false),
            ),
        },
    );
    let reply = c.grpc(&method("LogSettings"), Some(&ops), &change).await;
    assert_eq!(reply.grpc, Some(12), "{reply:?}");

    // Over REST the names come from the path: the same decisions.
    let mut r = h.rest_client("192.0.2.7:50001").await;
    let post = |path: &str, who: &str| {
        http::Request::post(format!("http://warden.test{path}"))
            .header("authorization", format!("Bearer {}", token(who)))
    };
    let load = "/v2/repository/models/new-model/load";
    let reply = r.call(post(load, "alice"), b"").await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(
        h.records().last().unwrap()["reason"],
        Refusal::Forbidden.reason()
    );
    let reply = r.call(post(load, "ops"), b"").await;
    assert_eq!(reply.status, 501, "{reply:?}");
    let reply = r.call(post("/v2/repository/index", "alice"), b"{}").await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let reply = r
        .call(post("/v2/repository/index", "ops"), b"{\"ready\": true}")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let index: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(index.as_array().map(Vec::len), Some(1), "{index}");
}

#[tokio::test]
async fn repository_control_off_refuses_load_as_disabled() {
    let h = harness("wire-load", WIRE_POLICY, &[("m", "1")]);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let load = proto::RepositoryModelLoadRequest {
        model_name: "m".into(),
        ..Default::default()
    };
    let path = format!("{}RepositoryModelUnload", crate::front::grpc::SERVICE);
    let reply = c.grpc(&path, Some(&token("ops")), &load).await;
    assert_eq!(reply.grpc, Some(7), "{reply:?}");
    let records = h.records();
    let r = records.last().unwrap();
    assert_eq!(
        (&r["principal"], &r["reason"]),
        (&"ops".into(), &"disabled".into())
    );
}

#[tokio::test]
async fn the_catalog_is_read_when_unread_and_again_on_a_miss_at_most_once_a_second() {
    let h = harness("wire-catalog", WIRE_POLICY, &[]);
    let stub = Stub::serving(&[("m", "1")]);
    h.backend(&stub);
    let s = &h.state;
    let reads = || stub.index_calls.load(std::sync::atomic::Ordering::Relaxed);
    let admit = |version: &str| {
        let mut call = call_of(s, "alice");
        let t = target("m", version);
        async move { s.admit_model(&mut call, &t, Operation::Infer).await }
    };
    // Unread: read before the first call is decided, then not again while it knows.
    assert_eq!(admit("").await, Ok(()));
    assert_eq!(reads(), 1);
    assert_eq!(admit("1").await, Ok(()));
    assert_eq!(reads(), 1);
    // A version the backend began serving since: the miss reads the index again.
    stub.set_models(&[("m", "1"), ("m", "2")]);
    assert_eq!(admit("2").await, Ok(()));
    assert_eq!(reads(), 2);
    // Another miss within the second: refused from what is known, without a read.
    assert_eq!(admit("9").await, Err(Refusal::UnknownVersion));
    assert_eq!(reads(), 2);
    tokio::time::sleep(crate::catalog::MISS_REFRESH_INTERVAL).await;
    assert_eq!(admit("9").await, Err(Refusal::UnknownVersion));
    assert_eq!(reads(), 3);
}

#[tokio::test]
async fn readiness_needs_the_backend_the_audit_log_and_no_drain() {
    let h = harness("wire-ready", WIRE_POLICY, &[]);
    let stub = Stub::serving(&[("m", "1")]);
    h.backend(&stub);
    let s = &h.state;
    let conn = &conn_from("192.0.2.9:1");
    let health = |model: bool| Op::Health {
        watch: false,
        model,
    };
    let ready = || async {
        matches!(
            s.probe::<()>(conn, Op::ServerReady, None).await,
            Ok(Answer::Ready(true))
        )
    };
    let serving = |t: Option<Target>| async move {
        match s.probe::<()>(conn, health(t.is_some()), t.as_ref()).await {
            Ok(Answer::Health(status)) => status,
            other => panic!("{:?}", other.err()),
        }
    };
    assert!(matches!(
        s.probe::<()>(conn, Op::ServerLive, None).await,
        Ok(Answer::Live)
    ));
    assert!(ready().await);
    assert_eq!(serving(None).await, Serving::Serving);
    // A model's health reads the unread catalog first, then asks the backend.
    assert_eq!(serving(Some(target("m", ""))).await, Serving::Serving);
    assert_eq!(
        stub.index_calls.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    stub.unready.lock().unwrap().push("m".into());
    assert_eq!(serving(Some(target("m", ""))).await, Serving::NotServing);
    assert_eq!(
        stub.index_calls.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    stub.unready.lock().unwrap().clear();
    // The backend not ready.
    stub.ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(!ready().await);
    assert_eq!(serving(None).await, Serving::NotServing);
    stub.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    // Draining: nothing serves, whatever the backend says.
    s.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(!ready().await);
    assert_eq!(serving(Some(target("m", ""))).await, Serving::NotServing);
    s.draining
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(ready().await);
    // The audit log broken: not ready (every call would be refused)...
    s.audit.break_writes();
    let call = call_of(s, "alice");
    assert_eq!(
        s.finish(call, None, 200, Some(0)).await,
        Err(Refusal::AuditUnavailable)
    );
    assert!(!ready().await);
    assert_eq!(serving(None).await, Serving::NotServing);
}

#[tokio::test]
async fn with_audit_fail_open_a_broken_audit_log_leaves_the_server_ready() {
    let h = harness_with("wire-ready-open", WIRE_POLICY, &[("m", "1")], |c| {
        c.audit.fail_open = true;
    });
    h.backend(&Stub::serving(&[("m", "1")]));
    let s = &h.state;
    s.audit.break_writes();
    let call = call_of(s, "alice");
    assert_eq!(s.finish(call, None, 200, Some(0)).await, Ok(()));
    assert!(!s.audit.healthy());
    let conn = conn_from("192.0.2.9:1");
    assert!(matches!(
        s.probe::<()>(&conn, Op::ServerReady, None).await,
        Ok(Answer::Ready(true))
    ));
}

/// A request body as a front gets it from hyper, while its client is still sending:
/// the test feeds `chunks` (dropping it ends the body).
struct Upload {
    chunks: Option<tokio::sync::mpsc::Sender<Bytes>>,
    body: Body,
    /// The client's connection, and its wait for the answer (a client that stops
    /// waiting resets the stream).
    _wire: (Wire, tokio::task::JoinHandle<http::Response<Incoming>>),
}

impl Upload {
    /// `declared`: the request's declared length (Content-Length), if any.
    async fn start(declared: Option<u64>) -> Upload {
        let (mut wire, mut requests) = Wire::capture().await;
        let (chunks, answer) = wire.send(http::Request::post("http://warden.test/upload"));
        let answer = tokio::spawn(answer);
        let body = tokio::time::timeout(PROMPT, requests.recv())
            .await
            .expect("the request reached the server")
            .unwrap()
            .into_body();
        Upload {
            chunks: Some(chunks),
            body: Body::new(body, declared),
            _wire: (wire, answer),
        }
    }

    async fn send(&self, bytes: &[u8]) {
        let chunks = self.chunks.as_ref().expect("the body is still open");
        chunks.send(Bytes::copy_from_slice(bytes)).await.unwrap();
    }

    /// Ends the body.
    fn end(&mut self) {
        self.chunks = None;
    }

    /// Sends each chunk, then ends the body.
    async fn finished(declared: Option<u64>, chunks: &[&[u8]]) -> Upload {
        let mut u = Upload::start(declared).await;
        for c in chunks {
            u.send(c).await;
        }
        u.end();
        u
    }
}

impl Wire {
    /// A client whose server hands each request to the test, unread, and answers
    /// only when the test drops the receiver.
    async fn capture() -> (
        Wire,
        tokio::sync::mpsc::UnboundedReceiver<http::Request<Incoming>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let wire = Wire::to(move |req| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req);
                tx.closed().await;
                http::Response::new(http_body_util::Empty::<Bytes>::new())
            }
        })
        .await;
        (wire, rx)
    }
}

/// A call of `who` with its memory reservation started, as step 2 does.
fn reserved(state: &State, who: &str) -> Call {
    let mut call = call_of(state, who);
    call.reservation = state.quotas.start(Some(who));
    call
}

/// No length in the body's first bytes (REST).
fn unframed(_: &[u8]) -> Option<u64> {
    None
}

/// Long enough for any step that does not wait on a client; a step that does fails.
const PROMPT: Duration = Duration::from_secs(3);

async fn read(
    body: &mut Body,
    state: &State,
    call: &mut Call,
    cap: usize,
    framed: &(dyn Fn(&[u8]) -> Option<u64> + Sync),
) -> Result<Bytes, Refusal> {
    tokio::time::timeout(PROMPT, body.read(state, call, cap, framed))
        .await
        .expect("the read waited on the client")
}

/// Quotas count in KiB.
const K: usize = 1024;

/// `n` KiB of `byte`.
fn kib(n: usize, byte: u8) -> Vec<u8> {
    vec![byte; n * K]
}

/// A harness whose principals each have `quota` KiB of memory.
fn quota_harness(tag: &str, quota: usize) -> Harness {
    harness_with(tag, ALICE_ON_M, &[], |c| {
        c.limits.quota_bytes = 0;
        c.limits.quota_per_principal_bytes = quota * K;
    })
}

/// Whether `who` can still take `n` KiB of memory, but not one byte more.
fn quota_left(state: &State, who: &str, n: usize) -> bool {
    let mut call = reserved(state, who);
    let more = matches!(state.charge(&mut call, n * K + 1), Err(Refusal::Quota(_)));
    let mut call = reserved(state, who);
    more && state.charge(&mut call, n * K).is_ok()
}

#[tokio::test]
async fn a_declared_length_is_held_to_the_cap_and_reserved_whole_before_a_byte_is_read() {
    let h = quota_harness("body-declared", 100);
    let s = &h.state;
    let mut call = reserved(s, "alice");
    // Over the cap, or over what the quota has left: refused with nothing sent.
    let mut u = Upload::start(Some(64 * K as u64 + 1)).await;
    assert_eq!(
        read(&mut u.body, s, &mut call, 64 * K, &unframed).await,
        Err(Refusal::TooLarge(64 * K))
    );
    let mut u = Upload::start(Some(100 * K as u64 + 1)).await;
    assert!(matches!(
        read(&mut u.body, s, &mut call, 200 * K, &unframed).await,
        Err(Refusal::Quota(_))
    ));
    // At the cap: read whole, and the declared length stays reserved while the call
    // lasts.
    let mut u = Upload::finished(Some(64 * K as u64), &[&kib(30, 7), &kib(34, 8)]).await;
    let mut call = reserved(s, "alice");
    let bytes = read(&mut u.body, s, &mut call, 64 * K, &unframed)
        .await
        .unwrap();
    assert_eq!(
        (bytes.len(), bytes[30 * K - 1], bytes[30 * K]),
        (64 * K, 7, 8)
    );
    assert_eq!(call.bytes_in, 64 * K as u64);
    assert!(!u.body.unfinished());
    assert!(quota_left(s, "alice", 36));
}

#[tokio::test]
async fn an_undeclared_body_is_refused_as_it_passes_the_cap_and_charged_as_it_grows() {
    let h = quota_harness("body-undeclared", 100);
    let s = &h.state;
    // The cap, exactly, in two chunks; one byte more is refused as it arrives.
    let mut u = Upload::finished(None, &[&kib(30, 1), &kib(34, 2)]).await;
    let mut call = reserved(s, "alice");
    let r = read(&mut u.body, s, &mut call, 64 * K, &unframed).await;
    assert_eq!(r.map(|b| b.len()), Ok(64 * K));
    drop(call);
    let mut u = Upload::start(None).await;
    u.send(&kib(30, 1)).await;
    u.send(&[kib(34, 2), vec![3]].concat()).await;
    let mut call = reserved(s, "alice");
    assert_eq!(
        read(&mut u.body, s, &mut call, 64 * K, &unframed).await,
        Err(Refusal::TooLarge(64 * K))
    );
    drop(call);
    // Each chunk is charged as it comes, what it adds only: 90 of 100 in three.
    let mut u = Upload::finished(None, &[&kib(30, 1), &kib(30, 2), &kib(30, 3)]).await;
    let mut call = reserved(s, "alice");
    let r = read(&mut u.body, s, &mut call, 1000 * K, &unframed).await;
    assert_eq!(r.map(|b| b.len()), Ok(90 * K));
    assert!(quota_left(s, "alice", 10));
    drop(call);
    // A chunk past the quota is refused while the client is still sending.
    let mut u = Upload::start(None).await;
    u.send(&kib(60, 1)).await;
    u.send(&kib(60, 2)).await;
    let mut call = reserved(s, "alice");
    assert!(matches!(
        read(&mut u.body, s, &mut call, 1000 * K, &unframed).await,
        Err(Refusal::Quota(_))
    ));
}

#[tokio::test]
async fn a_length_in_the_first_bytes_is_held_to_the_cap_and_reserved_like_a_declared_one() {
    let h = quota_harness("body-framed", 100);
    let s = &h.state;
    let framed = |first: &[u8]| crate::front::grpc_wire::framed_len(first);
    // A gRPC message's 5-byte prefix, for a message of `len` bytes, split across
    // chunks (it is read as one).
    let framed_upload = |len: usize| async move {
        let u = Upload::start(None).await;
        let mut p = vec![0];
        p.extend_from_slice(&(len as u32).to_be_bytes());
        u.send(&p[..2]).await;
        u.send(&p[2..]).await;
        u
    };
    // A length past the cap, or past what the quota has left, is refused before the
    // message comes.
    let mut u = framed_upload(64 * K - 4).await;
    let mut call = reserved(s, "alice");
    assert_eq!(
        read(&mut u.body, s, &mut call, 64 * K, &framed).await,
        Err(Refusal::TooLarge(64 * K))
    );
    let mut u = framed_upload(100 * K).await;
    assert!(matches!(
        read(&mut u.body, s, &mut call, 1000 * K, &framed).await,
        Err(Refusal::Quota(_))
    ));
    drop(call);
    // At the cap: read whole, the whole length reserved.
    let mut u = framed_upload(64 * K - 5).await;
    u.send(&vec![9; 64 * K - 5]).await;
    u.end();
    let mut call = reserved(s, "alice");
    let bytes = read(&mut u.body, s, &mut call, 64 * K, &framed)
        .await
        .unwrap();
    assert_eq!((bytes.len(), bytes[4], bytes[64 * K - 1]), (64 * K, 251, 9));
    assert!(quota_left(s, "alice", 36));
}

async fn early(body: &mut Body, cap: usize) -> Result<Bytes, Refusal> {
    tokio::time::timeout(PROMPT, body.read_early(cap))
        .await
        .expect("the read waited on the client")
}

#[tokio::test]
async fn a_body_read_before_authentication_is_bounded_in_bytes_and_time_and_kept() {
    // The cap, exactly, declared or not.
    let mut u = Upload::finished(Some(10), &[&[1; 10]]).await;
    assert_eq!(early(&mut u.body, 10).await.map(|b| b.len()), Ok(10));
    let mut u = Upload::finished(None, &[&[1; 6], &[2; 4]]).await;
    assert_eq!(early(&mut u.body, 10).await.map(|b| b.len()), Ok(10));
    assert!(!u.body.unfinished());
    // The next read hands out what was read, whatever its cap.
    let h = quota_harness("body-early", 100);
    let mut call = reserved(&h.state, "alice");
    let again = read(&mut u.body, &h.state, &mut call, 1, &unframed).await;
    let again = again.unwrap();
    assert_eq!((again.len(), again[5], again[6]), (10, 1, 2));
    // One byte past the cap, or a declared length past it: refused at once.
    let mut u = Upload::start(None).await;
    u.send(&[1; 6]).await;
    u.send(&[2; 5]).await;
    assert_eq!(early(&mut u.body, 10).await, Err(Refusal::TooLarge(10)));
    let mut u = Upload::start(Some(11)).await;
    assert_eq!(early(&mut u.body, 10).await, Err(Refusal::TooLarge(10)));
    // A client that sends nothing is given REFUSAL_DISCARD_TIME.
    let mut u = Upload::start(None).await;
    let started = Instant::now();
    assert_eq!(u.body.read_early(10).await, Err(Refusal::Timeout));
    assert!(started.elapsed() >= REFUSAL_DISCARD_TIME);
}

#[tokio::test]
async fn a_refused_body_is_discarded_up_to_its_bounds() {
    // A client that finishes within the bounds is read to its end.
    let mut u = Upload::finished(None, &[&[1; 10], &[2; 10], &[3; 10]]).await;
    assert!(u.body.unfinished());
    u.body.discard(100, PROMPT).await;
    assert!(!u.body.unfinished());
    // Past the byte bound, or the time bound, it is left unfinished.
    let mut u = Upload::start(None).await;
    u.send(&[1; 8]).await;
    u.send(&[2; 8]).await;
    let started = Instant::now();
    u.body.discard(10, Duration::from_secs(30)).await;
    assert!(started.elapsed() < PROMPT);
    assert!(u.body.unfinished());
    let mut u = Upload::start(None).await;
    u.send(&[1; 8]).await;
    let started = Instant::now();
    u.body.discard(10, Duration::from_millis(200)).await;
    assert!(started.elapsed() < PROMPT);
    assert!(u.body.unfinished());
    // A body taken by the front (a stream it answers itself) is not this step's.
    assert!(u.body.take().is_some());
    assert!(!u.body.unfinished());
    assert!(u.body.take().is_none());
}

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

fn health_of(service: &str) -> warden_shared::health_proto::HealthCheckRequest {
    warden_shared::health_proto::HealthCheckRequest {
        service: service.into(),
    }
}

/// `grpc.health.v1`'s SERVING and NOT_SERVING.
const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[tokio::test]
async fn a_health_name_decides_whether_the_call_needs_a_credential() {
    let h = harness("wire-health", WIRE_POLICY, &[("m", "1")]);
    let stub = Stub::serving(&[("m", "1")]);
    h.backend(&stub);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let status = |reply: &Reply| {
        grpc_message::<warden_shared::health_proto::HealthCheckResponse>(reply).status
    };
    // The server's names answer without a credential, unaudited.
    for name in HEALTH_SERVER_NAMES {
        let reply = c.grpc(HEALTH_CHECK, None, &health_of(name)).await;
        assert_eq!(status(&reply), SERVING, "{name:?}");
    }
    assert!(h.records().is_empty());
    // A model's name takes a credential, the ready right on that model, and is
    // audited.
    let reply = c.grpc(HEALTH_CHECK, None, &health_of("m")).await;
    assert_eq!(reply.grpc, Some(16), "{reply:?}");
    let alice = token("alice");
    let reply = c.grpc(HEALTH_CHECK, Some(&alice), &health_of("m")).await;
    assert_eq!(status(&reply), SERVING);
    stub.unready.lock().unwrap().push("m".into());
    let reply = c.grpc(HEALTH_CHECK, Some(&alice), &health_of("m")).await;
    assert_eq!(status(&reply), NOT_SERVING);
    let reply = c
        .grpc(HEALTH_CHECK, Some(&token("ops")), &health_of("m"))
        .await;
    assert_eq!(reply.grpc, Some(7), "{reply:?}");
    // The message is read before the caller is known: at most HEALTH_MESSAGE_BYTES
    // (framed), refused past it.
    let name = |framed: usize| health_of(&"n".repeat(framed - 5 - 3));
    assert_eq!(
        grpc_frame(&name(HEALTH_MESSAGE_BYTES)).len(),
        HEALTH_MESSAGE_BYTES
    );
    let reply = c
        .grpc(HEALTH_CHECK, None, &name(HEALTH_MESSAGE_BYTES))
        .await;
    assert_eq!(reply.grpc, Some(16), "{reply:?}");
    let reply = c
        .grpc(HEALTH_CHECK, None, &name(HEALTH_MESSAGE_BYTES + 1))
        .await;
    assert_eq!(reply.grpc, Some(8), "{reply:?}");
    assert_eq!(HEALTH_MESSAGE_BYTES, 5 + 512);
    let records = h.records();
    let seen: Vec<_> = (records.iter())
        .map(|r| (r["decision"].as_str().unwrap(), r["model"].as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("denied", None),
            ("allowed", Some("m")),
            ("allowed", Some("m")),
            ("denied", Some("m")),
            ("denied", None),
            ("invalid", None)
        ]
    );
}

#[tokio::test]
async fn a_health_watch_sends_each_change_and_ends_when_the_server_stops() {
    let h = harness("wire-watch", WIRE_POLICY, &[("m", "1")]);
    let stub = Stub::serving(&[("m", "1")]);
    h.backend(&stub);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let (tx, answer) = c.send(grpc_request("/grpc.health.v1.Health/Watch", None));
    tx.send(grpc_frame(&health_of("")).into()).await.unwrap();
    drop(tx);
    let mut body = answer.await.into_body();
    let mut next = async || {
        let frame = tokio::time::timeout(PROMPT, body.frame())
            .await
            .expect("the watch sent nothing");
        match frame.map(|f| f.unwrap().into_data()) {
            Some(Ok(data)) => Some(
                <warden_shared::health_proto::HealthCheckResponse as prost::Message>::decode(
                    &data[5..],
                )
                .unwrap()
                .status,
            ),
            _ => None,
        }
    };
    assert_eq!(next().await, Some(SERVING));
    // Unchanged, nothing is sent; a change is sent at the next look.
    tokio::time::sleep(HEALTH_WATCH_INTERVAL + HEALTH_WATCH_INTERVAL / 2).await;
    stub.ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(next().await, Some(NOT_SERVING));
    stub.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(next().await, Some(SERVING));
    // The server stopping: NOT_SERVING at once, then the end of the stream.
    let _ = h.state.shutdown.send(true);
    assert_eq!(next().await, Some(NOT_SERVING));
    assert_eq!(next().await, None);
}

#[tokio::test]
async fn reflection_opened_by_configuration_takes_no_credential_and_nothing_else_is_opened() {
    let list = warden_shared::reflection_proto::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            warden_shared::reflection_proto::server_reflection_request::MessageRequest::ListServices(
                "*".into(),
            ),
        ),
    };
    let services = |reply: &Reply| {
        use warden_shared::reflection_proto::server_reflection_response::MessageResponse;
        let r: warden_shared::reflection_proto::ServerReflectionResponse = grpc_message(reply);
        match r.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        }
    };
    let path = crate::front::reflection::V1;
    for open in [false, true] {
        let h = harness_with("wire-reflection", WIRE_POLICY, &[("m", "1")], |c| {
            c.reflection.unauthenticated = open;
        });
        let mut c = h.grpc_client("192.0.2.7:50000").await;
        let reply = c.grpc(path, None, &list).await;
        if open {
            assert!(services(&reply).contains(&"inference.GRPCInferenceService".into()));
        } else {
            assert_eq!(reply.grpc, Some(16), "{reply:?}");
            let reply = c.grpc(path, Some(&token("alice")), &list).await;
            assert!(services(&reply).contains(&"inference.GRPCInferenceService".into()));
        }
        // Only reflection: an inference still takes a credential.
        let reply = c.grpc(INFER, None, &infer_request("m", "", &[1.0])).await;
        assert_eq!(reply.grpc, Some(16), "{reply:?}");
    }
}

#[tokio::test]
async fn a_call_past_its_deadline_is_refused_as_such_and_recorded() {
    let h = harness("wire-deadline", WIRE_POLICY, &[("m", "1")]);
    let stub = Stub::serving(&[("m", "1")]);
    *stub.slow.lock().unwrap() = Some(("m".into(), Duration::from_secs(5)));
    h.backend(&stub);
    let mut c = h.grpc_client("192.0.2.7:50000").await;
    let req = grpc_request(INFER, Some(&token("alice"))).header("grpc-timeout", "300m");
    let started = Instant::now();
    let reply = c
        .call(req, &grpc_frame(&infer_request("m", "", &[1.0])))
        .await;
    assert_eq!(reply.grpc, Some(4), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let records = h.records();
    assert_eq!(records.last().unwrap()["reason"], "timeout");
}

/// Serves the first request `send` makes through `pipeline::serve` with the real gRPC
/// (or REST) front's head and codec, and says whether the client may still be
/// sending its body.
async fn body_left(h: &Harness, rest: bool, send: impl AsyncFnOnce(&mut Wire)) -> bool {
    let (mut wire, mut requests) = Wire::capture().await;
    send(&mut wire).await;
    let req = tokio::time::timeout(PROMPT, requests.recv())
        .await
        .unwrap()
        .unwrap();
    let (s, conn) = (&h.state, conn_from("192.0.2.7:50000"));
    if rest {
        let (head, codec) = crate::front::rest::head(&s.config.limits, &req);
        serve(s, &conn, head, req.into_body(), &codec)
            .await
            .body_unfinished
    } else {
        let head = crate::front::grpc::head(&s.config.limits, &req);
        let body = req.into_body();
        serve(s, &conn, head, body, &crate::front::grpc::Grpc)
            .await
            .body_unfinished
    }
}

#[tokio::test]
async fn a_refused_call_says_whether_its_client_is_still_sending() {
    let h = harness("wire-unfinished", WIRE_POLICY, &[("m", "1")]);
    h.backend(&Stub::serving(&[("m", "1")]));
    let message = grpc_frame(&infer_request("m", "", &[1.0; 64]));
    // Refused (no credential) while the client goes on sending: unfinished, after
    // REFUSAL_DISCARD_TIME.
    let (held, message2) = (std::sync::Arc::new(Mutex::new(None)), message.clone());
    let keep = Arc::clone(&held);
    let left = body_left(&h, false, async move |w: &mut Wire| {
        let (tx, answer) = w.send(grpc_request(INFER, None));
        tx.send(Bytes::copy_from_slice(&message2[..20]))
            .await
            .unwrap();
        *keep.lock().unwrap() = Some((tx, tokio::spawn(answer)));
    })
    .await;
    assert!(left);
    drop(held);
    // Refused with the whole body sent but not yet read: it is read to its end.
    let left = body_left(&h, false, async |w: &mut Wire| {
        let (tx, answer) = w.send(grpc_request(INFER, None));
        tx.send(message.clone().into()).await.unwrap();
        drop((tx, tokio::spawn(answer)));
    })
    .await;
    assert!(!left);
    // Served: a body the call does not read (REST server metadata) is not the
    // pipeline's to discard.
    let held = std::sync::Arc::new(Mutex::new(None));
    let keep = Arc::clone(&held);
    let left = body_left(&h, true, async move |w: &mut Wire| {
        let req = http::Request::get("http://warden.test/v2")
            .header("authorization", format!("Bearer {}", token("alice")));
        let (tx, answer) = w.send(req);
        tx.send(Bytes::from_static(b"{}")).await.unwrap();
        *keep.lock().unwrap() = Some((tx, tokio::spawn(answer)));
    })
    .await;
    assert!(!left);
}

#[tokio::test]
async fn a_served_versions_series_start_at_zero_as_ovms_starts_them() {
    let h = harness("zero-series", ALICE_ON_M, &[("m", "1")]);
    let s = &h.state;
    s.zero_model_series("m", "1");
    let text = s.metrics.render(|_| true);
    let has = |line: &str| assert!(text.contains(line), "{line} in:\n{text}");
    for (api, interface, method) in [
        ("KServe", "gRPC", "ModelInfer"),
        ("KServe", "REST", "ModelMetadata"),
        ("TensorFlowServing", "gRPC", "Predict"),
        ("TensorFlowServing", "REST", "GetModelMetadata"),
    ] {
        for series in ["ovms_requests_success", "ovms_requests_fail"] {
            has(&format!(
                "{series}{{api=\"{api}\",interface=\"{interface}\",method=\"{method}\",name=\"m\",version=\"1\"}} 0\n"
            ));
        }
    }
    // Readiness without a version, as OVMS labels it.
    has(
        "ovms_requests_success{api=\"KServe\",interface=\"REST\",method=\"ModelReady\",name=\"m\"} 0\n",
    );
    has(
        "ovms_requests_fail{api=\"TensorFlowServing\",interface=\"gRPC\",method=\"GetModelStatus\",name=\"m\"} 0\n",
    );
    has("ovms_current_requests{name=\"m\",version=\"1\"} 0\n");
    assert!(
        !text.contains("method=\"ModelReady\",name=\"m\",version"),
        "{text}"
    );
}
