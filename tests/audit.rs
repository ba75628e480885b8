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
    let audit = audit_dir(tmp.path()).join("audit.log");
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
            "ovms_requests_success{api=\"KServe\",interface=\"REST\",method=\"ModelReady\",name=\"addn\"}"
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

/// The demo layout that used to give 503 for good once the log rotated: the audit
/// folder is root's while the gateway runs as uid 5001. Now it is refused at start, and
/// `warden check` says so, before any request is served.
#[tokio::test]
async fn an_audit_folder_the_gateway_cannot_write_is_refused_at_start() {
    if !require_root("the gateway must run as another uid than the folder's owner") {
        return;
    }
    let tmp = TempDir::new("audit-owner");
    let dir = tmp.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    let audit = dir.join("audit.log");
    let mut server = Server::start(&addn(), &["--audit-log", audit.to_str().unwrap()]);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = server.log_text();
    assert!(
        log.contains("cannot rotate the audit log") && log.contains("uid 5001"),
        "{log}"
    );
    // `warden check` refuses the same configuration with the same reason.
    let certs = &server.certs;
    let out = Command::new(warden_bin())
        .arg("check")
        .args(addn())
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server.key"))
        .arg("--jwt-key")
        .arg(certs.join("jwt.pub.pem"))
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        .arg("--openvino-dir")
        .arg(runtime_dir())
        .args(["--audit-log", audit.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot rotate the audit log"), "{text}");
}

async fn ready(server: &Server) -> u16 {
    let none: &[(&str, &str)] = &[];
    server
        .request("GET", "/v2/health/ready", none, Bytes::new())
        .await
        .unwrap()
        .status
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn every_line_whole(files: &[PathBuf]) -> usize {
    let mut n = 0;
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "{} ends in half a record",
            f.display()
        );
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "torn record in {}: {e}: {}",
                    f.display(),
                    String::from_utf8_lossy(line)
                )
            });
            assert!(v["seq"].is_u64() && v["prev"].is_string());
            n += 1;
        }
    }
    n
}

/// A full audit file system under load: requests are refused (503) while it is full,
/// no record is ever left half-written, the server recovers by itself once space is
/// freed (readiness first, with no request to trigger it), and the whole rotated set
/// verifies, with the outage recorded in the chain.
#[tokio::test]
async fn a_full_audit_disk_refuses_requests_leaves_no_torn_record_and_recovers() {
    if !require_root("mounts a size-limited tmpfs") {
        return;
    }
    let tmp = TempDir::new("audit-full");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=2m,mode=0750,uid=5001,gid=5001",
            "tmpfs",
        ])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot mount a tmpfs");
    let _mount = Mount(mnt.clone());
    let cfg = write(
        tmp.path(),
        "warden.toml",
        "[audit]\nmax_file_bytes = 8192\nmax_files = 0\nmax_total_bytes = 0\nmin_free_bytes = 0\n[limits]\nrate_per_principal_rps = 0\n",
    );
    let audit = mnt.join("audit.log");
    let mut server = Server::start(
        &addn(),
        &["--config", &cfg, "--audit-log", audit.to_str().unwrap()],
    );
    server.wait_ready().await;
    // Fill the file system, then give back a little: a few dozen records' worth.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match std::io::Write::write(&mut f, &chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(24 * 1024)).unwrap();
    }
    // Load: 8 clients until at least 40 requests were refused.
    let (served, refused) = {
        let server = &server;
        let client = || async move {
            let (mut served, mut refused) = (0u32, 0u32);
            for _ in 0..400 {
                let r = server.call("POST", "/v2/models/addn/infer", ADD).await;
                match r.status {
                    200 => served += 1,
                    503 => {
                        assert_eq!(r.json()["error"], "audit log unavailable; request refused");
                        refused += 1;
                        if refused >= 5 {
                            break;
                        }
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
            (served, refused)
        };
        let r = tokio::join!(
            client(),
            client(),
            client(),
            client(),
            client(),
            client(),
            client(),
            client()
        );
        [r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7]
            .iter()
            .fold((0, 0), |(a, b), (s, f)| (a + s, b + f))
    };
    assert!(
        served > 0 && refused >= 40,
        "served {served}, refused {refused}"
    );
    // While full: not ready, the state gauge says why, and no record is torn.
    assert_eq!(ready(&server).await, 503);
    let m = plain_get(server.admin_port, "/metrics").await.unwrap();
    assert_eq!(metric(&m, "warden_audit_healthy"), 0.0, "{m}");
    assert!(metric(&m, "warden_audit_write_failures_total") >= refused as f64);
    let files = |audit: &Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("ls {}*", audit.display()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect::<Vec<_>>()
    };
    let during = files(&audit);
    assert!(during.len() >= 2, "rotated meanwhile: {during:?}");
    let allowed_before = every_line_whole(&during);
    assert!(allowed_before > 0);
    // Every served request has its record.
    let allowed = during
        .iter()
        .flat_map(|f| audit_records(f))
        .filter(|r| r["event"] == "request" && r["decision"] == "allowed")
        .count();
    assert_eq!(
        allowed, served as usize,
        "no request served without its record"
    );
    assert!(
        server.log_text().contains("AUDIT LOG WRITE FAILED"),
        "a loud log line"
    );

    // Space back: the server recovers by itself, readiness first (nobody sends a
    // request to a server that is not ready).
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ready(&server).await != 200 {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        server
            .call("POST", "/v2/models/addn/infer", ADD)
            .await
            .status,
        200
    );
    let m = plain_get(server.admin_port, "/metrics").await.unwrap();
    assert_eq!(metric(&m, "warden_audit_healthy"), 1.0);
    assert!(server.log_text().contains("AUDIT LOG WRITABLE AGAIN"));
    drop(server);

    // The whole set: every line whole, the chain intact across the rotated files, the
    // outage in the chain.
    let all = files(&audit);
    every_line_whole(&all);
    let (ok, out) = verify(std::slice::from_ref(&audit));
    assert!(ok, "{out}");
    assert!(out.contains(&format!("in {} file(s)", all.len())), "{out}");
    let outage = all
        .iter()
        .flat_map(|f| audit_records(f))
        .find(|r| r["event"] == "audit")
        .expect("the outage is recorded");
    assert!(
        outage["reason"].as_str().unwrap().contains("refused"),
        "{outage}"
    );
}

/// Log injection through the real server: a token whose `sub` carries a line break, a
/// forged log line, terminal escapes and kilobytes of padding, and one with a 64 KiB
/// `sub`. Every log line and every audit record stays one line, escaped and bounded.
#[tokio::test]
async fn hostile_subjects_cannot_forge_or_flood_log_and_audit_lines() {
    let tmp = TempDir::new("inject");
    let policy = write(
        tmp.path(),
        "policy.toml",
        "[[rule]]\nname = \"alice\"\nsubjects = [\"alice\"]\nmodels = [\"addn\"]\noperations = [\"ready\"]\n",
    );
    let audit = audit_dir(tmp.path()).join("audit.log");
    let mut server = Server::start(
        &addn(),
        &[
            "--authz-policy",
            &policy,
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    server.wait_ready().await;
    let forged = "2026-01-01T00:00:00.000000Z  INFO FORGED admin logged in";
    let hostile = format!(
        "mallory\n{forged}\r\n\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}{}",
        "A".repeat(10_000)
    );
    let huge = "B".repeat(64 * 1024);
    for sub in [&hostile, &huge] {
        let token = server.token(claims(sub, 600));
        let auth = format!("Bearer {token}");
        let status = server
            .request(
                "GET",
                "/v2/models/addn/ready",
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await
            .unwrap()
            .status;
        // The hostile subject is authenticated and denied; the 64 KiB one is too long
        // to be a token at all (or even a header).
        if sub == &hostile {
            assert_eq!(status, 403);
        } else {
            assert!(status == 401 || status == 431, "{status}");
        }
    }
    let log = std::fs::read(&server.log).unwrap();
    drop(server);

    // The server log: no raw escape or C1 control, no line that starts with the forged
    // text, every line bounded.
    assert!(!log.contains(&0x1b), "a raw ESC reached the log");
    let text = String::from_utf8_lossy(&log);
    assert!(!text.contains('\u{9b}') && !text.contains('\u{202e}'));
    assert!(
        text.contains("mallory\\n2026-01-01"),
        "the denial is logged, escaped:\n{}",
        &text[..text.len().min(4000)]
    );
    for line in text.lines() {
        assert!(
            !line.starts_with(forged),
            "a forged line in the log: {line}"
        );
        assert!(
            line.len() <= 16 * 1024 + 64,
            "a log line of {} bytes",
            line.len()
        );
    }

    // The audit log: one record per line, fields escaped and bounded.
    let bytes = std::fs::read(&audit).unwrap();
    assert!(!bytes.contains(&0x1b));
    let records = audit_records(&audit);
    let denied = records
        .iter()
        .find(|r| r["decision"] == "denied" && r["status"] == 403)
        .expect("the denial is audited");
    let p = denied["principal"].as_str().unwrap();
    assert!(p.starts_with("mallory\\n2026-01-01"), "{p}");
    assert!(p.contains("\\u{1b}[2J") && p.contains("\\u{9b}") && p.contains("\\u{202e}"));
    assert!(p.len() <= 256 + 32, "principal of {} bytes", p.len());
    assert!(p.ends_with("bytes]"));
    for line in String::from_utf8(bytes).unwrap().lines() {
        assert!(line.len() < 4096, "an audit line of {} bytes", line.len());
    }
    let (ok, out) = verify(std::slice::from_ref(&audit));
    assert!(ok, "{out}");
}

/// `--log-format json`: every event is one JSON object per line, client text escaped.
#[tokio::test]
async fn json_log_format_writes_one_object_per_event() {
    let tmp = TempDir::new("jsonlog");
    let policy = write(
        tmp.path(),
        "policy.toml",
        "[[rule]]\nname = \"alice\"\nsubjects = [\"alice\"]\nmodels = [\"addn\"]\noperations = [\"ready\"]\n",
    );
    let mut server = Server::start(
        &addn(),
        &["--authz-policy", &policy, "--log-format", "json"],
    );
    server.wait_ready().await;
    let token = server.token(claims("eve\n{\"level\":\"INFO\"}", 600));
    let auth = format!("Bearer {token}");
    let status = server
        .request(
            "GET",
            "/v2/models/addn/ready",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
        .unwrap()
        .status;
    assert_eq!(status, 403);
    let text = server.log_text();
    drop(server);
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["message"] == "gateway sandboxed"),
        "{text}"
    );
    let denied = events
        .iter()
        .find(|e| e["message"] == "authorization denied")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        denied["principal"].as_str().unwrap().starts_with("eve"),
        "{denied}"
    );
    assert!(!text.lines().any(|l| l.starts_with("{\"level\":\"INFO\"}")));
}

/// Group commit on the real server, with `fsync = "always"`: calls that finish together
/// share one write (and its fsync), yet each call is answered after its own record is
/// written, every call has exactly one record, and the chain verifies.
#[tokio::test]
async fn with_fsync_always_calls_finishing_together_share_a_write_and_keep_their_records() {
    let tmp = TempDir::new("audit-group");
    let cfg = write(tmp.path(), "warden.toml", "[audit]\nfsync = \"always\"\n");
    let audit = audit_dir(tmp.path()).join("audit.log");
    let mut server = Server::start(
        &addn(),
        &["--config", &cfg, "--audit-log", audit.to_str().unwrap()],
    );
    server.wait_ready().await;
    let auth = format!("Bearer {}", server.good_token());
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..16 {
        let (port, ca, auth) = (server.rest_port, server.certs.join("ca.pem"), auth.clone());
        let audit = audit.clone();
        clients.spawn(async move {
            let mut h2 = H2::connect(port, &ca).await.unwrap();
            for i in 0..4 {
                let id = format!("group-{c}-{i}");
                let r = h2
                    .request(
                        "POST",
                        "/v2/models/addn/infer",
                        &[("authorization", &auth), ("x-request-id", &id)],
                        Bytes::from_static(ADD.as_bytes()),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status, 200, "{id}");
                // Answered only once its record is in the file.
                assert!(
                    audit_records(&audit)
                        .iter()
                        .any(|r| r["client_request_id"] == id.as_str()),
                    "{id} answered before its record was written"
                );
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let records = audit_records(&audit);
    for c in 0..16 {
        for i in 0..4 {
            let id = format!("group-{c}-{i}");
            let mine: Vec<_> = records
                .iter()
                .filter(|r| r["client_request_id"] == id.as_str())
                .collect();
            assert_eq!(mine.len(), 1, "{id}: one record each");
            assert_eq!(mine[0]["decision"], "allowed");
        }
    }
    let (ok, out) = verify(std::slice::from_ref(&audit));
    assert!(ok, "{out}");
    let metrics = plain_get(server.admin_port, "/metrics").await.unwrap();
    let writes = metric(&metrics, "warden_audit_writes_total");
    assert!(
        writes > 0.0 && writes < records.len() as f64,
        "{} records in {writes} writes: no two calls shared a write",
        records.len()
    );
}
