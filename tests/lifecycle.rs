//! Supervision and shutdown against the real server under load: a backend killed with
//! SIGKILL is restarted and no caller gets a wrong answer; SIGTERM loses no request
//! that was accepted.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use warden_tests::*;

const BODY: &str = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

fn addn() -> Vec<String> {
    vec![
        "--model-path".into(),
        model_dir("addn").display().to_string(),
        "--model-name".into(),
        "addn".into(),
    ]
}

#[derive(Debug)]
#[allow(dead_code)] // the payloads are read through Debug in failure messages
enum Outcome {
    Correct,
    Wrong(String),
    Status(u16),
    /// Never accepted: the connection or the TLS handshake failed.
    NotAccepted,
    /// Accepted, then lost: the request was sent and no full answer came.
    Lost(String),
}

async fn one(port: u16, ca: &std::path::Path, auth: &str) -> (Instant, Outcome) {
    let r = https_request(
        port,
        ca,
        "POST",
        "/v2/models/addn/infer",
        &[("authorization", auth)],
        Bytes::from_static(BODY.as_bytes()),
    )
    .await;
    let outcome = match r {
        Ok(r) if r.status == 200 => {
            let y = floats(&r.json()["outputs"][0]["data"]);
            if y == vec![3.0, 4.0, 5.0, 6.0] {
                Outcome::Correct
            } else {
                Outcome::Wrong(format!("{y:?}"))
            }
        }
        Ok(r) => Outcome::Status(r.status),
        Err(e) => {
            let text = format!("{e:#}");
            if text.contains("TLS handshake") || text.contains("TCP connect") {
                Outcome::NotAccepted
            } else {
                Outcome::Lost(text)
            }
        }
    };
    (Instant::now(), outcome)
}

/// `workers` callers in a loop until `stop` is set.
fn load(
    server: &Server,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinSet<Vec<(Instant, Outcome)>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (port, ca, auth) = (
            server.rest_port,
            server.certs.join("ca.pem"),
            format!("Bearer {}", server.good_token()),
        );
        let stop = Arc::clone(&stop);
        set.spawn(async move {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) && out.len() < 5000 {
                out.push(one(port, &ca, &auth).await);
            }
            out
        });
    }
    set
}

#[tokio::test]
async fn a_killed_backend_is_restarted_and_no_answer_is_wrong() {
    let mut server = Server::start(&addn(), &[]);
    server.wait_ready().await;
    let first = server.child_pid("backend");
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = load(&server, 4, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.extend(r.unwrap());
    }
    let wrong: Vec<_> = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Wrong(_)))
        .collect();
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    let bad: Vec<_> = results
        .iter()
        .filter(|(_, o)| {
            matches!(o, Outcome::Status(s) if *s != 503)
                || matches!(o, Outcome::Lost(_) | Outcome::NotAccepted)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "only 503 may replace an answer while the backend is down: {bad:?}"
    );
    let unavailable = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Status(503)))
        .count();
    // Served again: the first correct answer after the last 503.
    let last_503 = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Status(503)))
        .map(|(t, _)| *t)
        .max()
        .unwrap_or(killed_at);
    let recovered = results
        .iter()
        .filter(|(t, o)| *t > last_503 && matches!(o, Outcome::Correct))
        .map(|(t, _)| *t)
        .min();
    let recovered = recovered.expect("no correct answer after the restart");
    println!(
        "{} calls, {unavailable} answered 503 while the backend restarted, served again {:?} after the kill",
        results.len(),
        recovered - killed_at
    );
    assert!(
        recovered - killed_at < Duration::from_secs(5),
        "took {:?}",
        recovered - killed_at
    );
    let second = server.child_pid("backend");
    assert_ne!(first, second, "a new backend process");
    let m = plain_get(server.admin_port, "/metrics").await.unwrap();
    assert_eq!(metric(&m, "warden_backend_restarts_total"), 1.0, "{m}");
    assert_eq!(
        metric(&m, "warden_backend_unavailable_total"),
        unavailable as f64,
        "each 503 was a call that found the backend unavailable"
    );
    if require_root("the restarted backend's uid drop") {
        assert_eq!(
            proc_status(second)["Uid"].split_whitespace().next(),
            Some("5000"),
            "the restarted backend dropped privileges too"
        );
        assert_eq!(proc_status(second)["Seccomp"], "2");
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "warden serve kept running"
    );
}

#[tokio::test]
async fn sigterm_under_load_loses_no_accepted_request() {
    let mut server = Server::start(&addn(), &[]);
    server.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = load(&server, 6, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking({
        let deadline = Instant::now() + Duration::from_secs(40);
        move || loop {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Some(code),
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.extend(r.unwrap());
    }
    assert_eq!(status, Some(0), "warden serve exits 0 on SIGTERM");
    let correct = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Correct))
        .count();
    let lost: Vec<_> = results
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Correct | Outcome::NotAccepted))
        .collect();
    println!(
        "{} calls: {correct} answered correctly, {} not accepted after the stop began",
        results.len(),
        results.len() - correct - lost.len()
    );
    assert!(correct > 10);
    assert!(
        lost.is_empty(),
        "accepted requests lost or refused during the stop: {lost:?}"
    );
}
