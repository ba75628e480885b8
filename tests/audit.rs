//! The audit log and metrics against the real server: one record per decision with
//! the right fields, a chain that `warden audit verify` checks, no secret anywhere,
//! fail-closed when the log cannot be written, and counters that move.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::Command;
use warden_tests::*;

const ADD: &str =
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1234.5678,0,0,0]}]}"#;

fn addn() -> Vec<String> {
    vec![
        "--model-path".into(),
        model_dir("addn").display().to_string(),
        "--model-name".into(),
        "addn".into(),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const POLICY: &str = "[[rule]]\nname = \"users\"\nsubjects = [\"alice\", \"flood\", \"big\"]\nmodels = [\"addn\"]\noperations = [\"infer\", \"metadata\", \"ready\"]\n";

fn verify(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(warden_bin())
        .arg("audit")
        .arg("verify")
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn one_record_per_decision_a_verifiable_chain_and_no_secrets() {
    let tmp = TempDir::new("audit");
    let cfg = write(
        tmp.path(),
        "warden.toml",
        "[limits]\nrate_per_principal_rps = 3\nrate_burst_seconds = 1\nquota_per_principal_bytes = 2048\nrequest_timeout_secs = 2\n",
    );
    let policy = write(tmp.path(), "policy.toml", POLICY);
    let audit = tmp.path().join("audit.log");
    let mut server = Server::start(
        &addn(),
        &[
            "--config",
            &cfg,
            "--authz-policy",
            &policy,
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    server.wait_ready().await;
    let before = plain_get(server.admin_port, "/metrics").await.unwrap();

    let alice = server.token(claims("alice", 600));
    let infer = "/v2/models/addn/infer";
    let mut expected: Vec<(&str, u16, Option<&str>)> = Vec::new();
    let call = |token: Option<String>, method: &'static str, path: &'static str, body: Bytes| {
        let server = &server;
        async move {
            let h = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> =
                h.iter().map(|v| ("authorization", v.as_str())).collect();
            server
                .request(method, path, &headers, body)
                .await
                .unwrap()
                .status
        }
    };
    // allowed
    assert_eq!(
        call(
            Some(alice.clone()),
            "POST",
            infer,
            Bytes::from_static(ADD.as_bytes())
        )
        .await,
        200
    );
    expected.push(("allowed", 200, Some("alice")));
    // denied: no credentials, bad token, forbidden principal
    assert_eq!(
        call(None, "GET", "/v2/models/addn", Bytes::new()).await,
        401
    );
    expected.push(("denied", 401, None));
    assert_eq!(
        call(
            Some("junk.token.here".into()),
            "GET",
            "/v2/models/addn",
            Bytes::new()
        )
        .await,
        401
    );
    expected.push(("denied", 401, None));
    assert_eq!(
        call(
            Some(server.token(claims("mallory", 600))),
            "GET",
            "/v2/models/addn",
            Bytes::new()
        )
        .await,
        403
    );
    expected.push(("denied", 403, Some("mallory")));
    // invalid
    assert_eq!(
        call(
            Some(alice.clone()),
            "POST",
            infer,
            Bytes::from_static(b"{nope")
        )
        .await,
        400
    );
    expected.push(("invalid", 400, Some("alice")));
    // quota_exceeded: 3 KiB from a principal whose quota is 2 KiB
    assert_eq!(
        call(
            Some(server.token(claims("big", 600))),
            "POST",
            infer,
            Bytes::from(vec![b' '; 3000])
        )
        .await,
        429
    );
    expected.push(("quota_exceeded", 429, Some("big")));
    // rate_limited: 3/s with a one-second burst
    let flood = server.token(claims("flood", 600));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            call(
                Some(flood.clone()),
                "GET",
                "/v2/models/addn/ready",
                Bytes::new(),
            )
            .await,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    for s in statuses {
        expected.push((
            if s == 429 { "rate_limited" } else { "allowed" },
            s,
            Some("flood"),
        ));
    }
    // failed: the backend is frozen and the request times out
    let backend = server.child_pid("backend");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backend as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let status = call(
        Some(alice.clone()),
        "POST",
        infer,
        Bytes::from_static(ADD.as_bytes()),
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backend as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    assert_eq!(status, 408);
    expected.push(("failed", 408, Some("alice")));

    let records: Vec<serde_json::Value> = audit_records(&audit)
        .into_iter()
        .filter(|r| r["event"] == "request")
        .collect();
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per decision: {records:#?}"
    );
    for (r, (decision, status, principal)) in records.iter().zip(&expected) {
        assert_eq!(r["decision"], *decision, "{r}");
        assert_eq!(r["status"], *status, "{r}");
        assert_eq!(r["principal"].as_str(), *principal, "{r}");
        for field in [
            "time",
            "seq",
            "request_id",
            "client",
            "listener",
            "protocol",
            "tls_version",
            "cipher",
            "bytes_in",
            "bytes_out",
            "latency_us",
            "prev",
        ] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        assert_eq!(r["tls_version"], "TLSv1.3");
        assert!(r["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        if *decision != "allowed" {
            assert!(
                r["reason"].as_str().is_some_and(|s| !s.is_empty()),
                "a refusal says why: {r}"
            );
        }
        if principal.is_some() {
            assert_eq!(r["issuer"], ISSUER);
            assert_eq!(r["auth_method"], "jwt");
        }
    }
    assert_eq!(records[0]["model"], "addn");
    assert_eq!(records[0]["version"], "2", "the version that answered");
    assert_eq!(records[0]["operation"], "infer");
    assert!(records[0]["bytes_in"].as_u64().unwrap() == ADD.len() as u64);
    assert_eq!(records[1]["reason"], "authentication: missing_credentials");
    assert_eq!(records[2]["reason"], "authentication: token_malformed");

    // Metrics moved by exactly what was sent.
    let after = plain_get(server.admin_port, "/metrics").await.unwrap();
    let delta = |s: &str| metric(&after, s) - metric(&before, s);
    assert_eq!(
        delta("warden_auth_failures_total{reason=\"missing_credentials\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("warden_auth_failures_total{reason=\"token_malformed\"}"),
        1.0
    );
    assert_eq!(delta("warden_authz_denied_total{model=\"addn\"}"), 1.0);
    assert_eq!(delta("warden_rate_limited_total{scope=\"principal\"}"), 2.0);
    assert_eq!(
        delta("warden_quota_refused_total{scope=\"principal\"}"),
        1.0
    );
    assert_eq!(
        delta(
            "ovms_requests_success{api=\"KServe\",interface=\"REST\",method=\"ModelInfer\",name=\"addn\",version=\"2\"}"
        ),
        1.0
    );
    assert_eq!(
        delta(
            "ovms_requests_success{api=\"KServe\",interface=\"REST\",method=\"ModelReady\",name=\"addn\",version=\"\"}"
        ),
        3.0
    );
    assert!(
        delta("ovms_request_time_us_count{interface=\"REST\",name=\"addn\",version=\"2\"}") >= 1.0
    );
    assert!(metric(&after, "warden_tls_handshakes_total{result=\"ok\"}") >= 12.0);

    // Stop the server so the stop record is written, then check the chain.
    let server_log = server.log_text();
    assert!(
        server_log.contains("authentication failed"),
        "the log is the real one"
    );
    drop(server);
    let all = audit_records(&audit);
    assert_eq!(all.first().unwrap()["event"], "start");
    assert!(all.first().unwrap()["settings"]["limits"]["rate_per_principal_rps"] == 3);
    assert_eq!(all.last().unwrap()["event"], "stop");
    let (ok, out) = verify(std::slice::from_ref(&audit));
    assert!(ok, "{out}");

    // Tampering with a copy is found, at the first broken record.
    let lines: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let tamper = |name: &str, f: &dyn Fn(&mut Vec<String>)| {
        let mut l = lines.clone();
        f(&mut l);
        let p = tmp.path().join(name);
        std::fs::write(&p, l.join("\n") + "\n").unwrap();
        verify(&[p])
    };
    let (ok, out) = tamper("edited", &|l| {
        l[3] = l[3].replace("\"status\":401", "\"status\":200")
    });
    assert!(!ok && out.contains("line 5"), "edit: {out}");
    let (ok, out) = tamper("deleted", &|l| {
        l.remove(4);
    });
    assert!(!ok && out.contains("line 5"), "delete: {out}");
    let (ok, out) = tamper("inserted", &|l| {
        let copy = l[2].clone();
        l.insert(3, copy)
    });
    assert!(!ok && out.contains("line 4"), "insert: {out}");
    let (ok, out) = tamper("reordered", &|l| l.swap(2, 6));
    assert!(!ok && out.contains("line 3"), "reorder: {out}");

    // Nothing secret in the audit log or the server log: no token, no private key, no
    // tensor value.
    let haystack = std::fs::read_to_string(&audit).unwrap() + &server_log;
    for token in [&alice, &flood] {
        let sig = token.rsplit('.').next().unwrap();
        assert!(!haystack.contains(sig), "a token signature is logged");
        let payload = token.split('.').nth(1).unwrap();
        assert!(!haystack.contains(payload), "a token payload is logged");
    }
    assert!(!haystack.contains("1234.5678"), "a tensor value is logged");
    assert!(!haystack.contains("PRIVATE KEY"), "a key is logged");
}

#[tokio::test]
async fn an_unwritable_audit_log_refuses_requests_with_503() {
    if !require_root("the gateway must run as another uid than the log's folder owner") {
        return;
    }
    let tmp = TempDir::new("audit-fail");
    // The log rotates at 4 KB; the folder is root's 0755, so the gateway (uid 5001)
    // cannot create the next file: from then on every write fails.
    let cfg = write(
        tmp.path(),
        "warden.toml",
        "[audit]\nmax_file_bytes = 4000\n",
    );
    let dir = tmp.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    let audit = dir.join("audit.log");
    let mut server = Server::start(
        &addn(),
        &["--config", &cfg, "--audit-log", audit.to_str().unwrap()],
    );
    server.wait_ready().await;
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..40 {
        let r = server.call("POST", "/v2/models/addn/infer", ADD).await;
        match r.status {
            200 => served += 1,
            503 => {
                refused += 1;
                assert_eq!(r.json()["error"], "audit log unavailable; request refused");
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
    // Every answer that served a request has its record.
    let allowed = audit_records(&audit)
        .iter()
        .filter(|r| r["event"] == "request" && r["decision"] == "allowed")
        .count();
    assert_eq!(allowed, served, "no request served without its record");
    // Readiness reports it, and the metric counts it.
    let none: &[(&str, &str)] = &[];
    assert_eq!(
        server
            .request("GET", "/v2/health/ready", none, Bytes::new())
            .await
            .unwrap()
            .status,
        503
    );
    let m = plain_get(server.admin_port, "/metrics").await.unwrap();
    assert!(
        metric(&m, "warden_audit_write_failures_total") >= refused as f64,
        "{m}"
    );
}
