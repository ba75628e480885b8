//! Hot reload against the real server: a rotated certificate while a client keeps its
//! connection, an invalid policy that leaves the old one in force, and a new model
//! version that appears on disk and is served.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};
use warden_tests::*;

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn replace(path: &std::path::Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_used_by_new_handshakes_while_old_connections_go_on() {
    let mut server = Server::start(
        &[
            "--model-path".into(),
            model_dir("addn").display().to_string(),
            "--model-name".into(),
            "addn".into(),
        ],
        &[],
    );
    server.wait_ready().await;
    let old_ca = server.dir.path().join("old-ca.pem");
    std::fs::copy(server.certs.join("ca.pem"), &old_ca).unwrap();
    // A long-lived connection made with the old certificate.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.rest_port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&old_ca, &[b"http/1.1"]))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let auth = format!("Bearer {}", server.good_token());
    let get = |auth: &str| {
        http::Request::get("/v2/models/addn/ready")
            .header("host", "localhost")
            .header("authorization", auth)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(sender.send_request(get(&auth)).await.unwrap().status(), 200);

    // Rotate to a certificate from another CA, the way a secret mount does (rename).
    let next = TempDir::new("next-certs");
    let new_certs = make_certs(next.path());
    replace(
        &server.certs.join("server.key"),
        &std::fs::read(new_certs.join("server.key")).unwrap(),
    );
    replace(
        &server.certs.join("server.pem"),
        &std::fs::read(new_certs.join("server.pem")).unwrap(),
    );
    let new_ca = new_certs.join("ca.pem");
    let none: &[(&str, &str)] = &[];
    let port = server.rest_port;
    eventually("a handshake with the new certificate", async || {
        https_request(port, &new_ca, "GET", "/v2/health/live", none, Bytes::new())
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    // New handshakes no longer get the old certificate...
    assert!(
        https_request(port, &old_ca, "GET", "/v2/health/live", none, Bytes::new())
            .await
            .is_err()
    );
    // ...while the connection made before the rotation keeps working.
    sender.ready().await.unwrap();
    let r = sender.send_request(get(&auth)).await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.into_body().collect().await;
    let m = plain_get(server.admin_port, "/metrics").await.unwrap();
    assert!(
        metric(&m, "warden_config_reloads_total{result=\"ok\"}") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_invalid_policy_keeps_the_old_one_and_a_valid_one_takes_over() {
    let tmp = TempDir::new("policy-reload");
    let policy = tmp.path().join("policy.toml");
    let audit = audit_dir(tmp.path()).join("audit.log");
    let allow = "[[rule]]\nname = \"alice\"\nsubjects = [\"alice\"]\nmodels = [\"addn\"]\noperations = [\"ready\"]\n";
    std::fs::write(&policy, allow).unwrap();
    let mut server = Server::start(
        &[
            "--model-path".into(),
            model_dir("addn").display().to_string(),
            "--model-name".into(),
            "addn".into(),
        ],
        &[
            "--authz-policy",
            policy.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    server.wait_ready().await;
    let ready = async |server: &Server| {
        server
            .call("GET", "/v2/models/addn/ready", Bytes::new())
            .await
            .status
    };
    assert_eq!(ready(&server).await, 200);
    replace(
        &policy,
        b"[[rule]]\nname = 'broken'\nmodels = ['*']\noperations = ['infer']\n",
    ); // no principal matcher: refused
    eventually("the failed reload is recorded", async || {
        audit_records(&audit)
            .iter()
            .any(|r| r["event"] == "reload" && r["decision"] == "failed")
    })
    .await;
    assert_eq!(ready(&server).await, 200, "the old policy stays in force");
    let m = plain_get(server.admin_port, "/metrics").await.unwrap();
    assert!(metric(&m, "warden_config_reloads_total{result=\"failed\"}") >= 1.0);
    assert!(server.log_text().contains("reload FAILED"));
    // A valid policy that no longer names alice takes over.
    replace(&policy, b"[[rule]]\nname = \"bob only\"\nsubjects = [\"bob\"]\nmodels = [\"addn\"]\noperations = [\"ready\"]\n");
    eventually("the new policy denies alice", async || {
        ready(&server).await == 403
    })
    .await;
    // And a SIGHUP reloads too (nothing changed: still denied, and recorded).
    let before = audit_records(&audit)
        .iter()
        .filter(|r| r["event"] == "reload")
        .count();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    eventually("a SIGHUP reload", async || {
        audit_records(&audit)
            .iter()
            .filter(|r| r["event"] == "reload")
            .count()
            > before
    })
    .await;
    assert_eq!(ready(&server).await, 403);
}

#[tokio::test]
async fn a_new_model_version_appears_and_is_served() {
    let repo = TempDir::new("repo");
    let model = repo.path().join("addn");
    std::fs::create_dir_all(&model).unwrap();
    let copy = |v: &str| {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(model_dir("addn").join(v))
            .arg(model.join(v))
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy("1");
    let mut server = Server::start(
        &[
            "--model-path".into(),
            model.display().to_string(),
            "--model-name".into(),
            "addn".into(),
        ],
        &[],
    );
    server.wait_ready().await;
    let infer = async |server: &Server| {
        let r = server
            .call(
                "POST",
                "/v2/models/addn/infer",
                r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}"#,
            )
            .await;
        (
            r.status,
            r.json()["model_version"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(infer(&server).await, (200, "1".to_string()));
    copy("2");
    eventually("version 2 served", async || {
        infer(&server).await == (200, "2".to_string())
    })
    .await;
    let meta = server
        .call("GET", "/v2/models/addn", Bytes::new())
        .await
        .json();
    assert_eq!(
        meta["versions"],
        serde_json::json!(["2"]),
        "latest policy: only the newest"
    );
    // Removing it goes back to version 1.
    std::fs::remove_dir_all(model.join("2")).unwrap();
    eventually("back to version 1", async || {
        infer(&server).await == (200, "1".to_string())
    })
    .await;
}
