//! Deployment checks: the Kubernetes manifests, the systemd unit, the Dockerfile and the
//! Grafana dashboard pass the offline checker (tests/deploy/check_deploy.py, with its
//! self-test of hostile edits); the shipped warden.toml files pass `warden check`;
//! `warden serve` works under exactly the unit's capability bounding set;
//! `warden health` (the image's HEALTHCHECK) tells ready from not ready; the KServe
//! runtime (deploy/kserve) passes its checker (KServe SDK types, conventions, the
//! rendered pod against the Kubernetes schemas) and its arguments pass `warden check`
//! on the image's warden.toml; and checkov finds nothing in deploy/ and the Dockerfile
//! that deploy/checkov-skips.yaml does not explain. (The image itself is built and run
//! by scripts/container-test.sh.)
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use bytes::Bytes;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use warden_tests::*;

fn python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        py.display()
    );
    py
}

/// The deployment tools' own environment (scripts/requirements-deploy.txt).
fn deploy_python() -> PathBuf {
    let py = root().join(".venv-deploy/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/setup.sh",
        py.display()
    );
    py
}

fn checker() -> PathBuf {
    root().join("tests/deploy/check_deploy.py")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn deploy_files_pass_the_offline_checker_and_its_self_test() {
    let out = Command::new(python())
        .arg(checker())
        .arg(root())
        .output()
        .expect("the checker runs");
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "deployment checks failed:\n{report}");
    assert!(
        report.contains("hostile edits caught") && !report.contains("FAIL"),
        "{report}"
    );
}

/// Writes the k8s or systemd warden.toml with its paths pointed at real test files, for
/// `warden check`: unknown keys and bad values fail exactly as they would in production.
fn rendered_config(which: &str, dir: &Path, certs: &Path) -> PathBuf {
    let models = dir.join("config.json");
    let list = serde_json::json!({"model_config_list": [
        {"config": {"name": "identity", "base_path": model_dir("identity")}}
    ]});
    std::fs::write(&models, list.to_string()).expect("config.json");
    let sets = [
        ("tls.cert", certs.join("server.pem")),
        ("tls.key", certs.join("server.key")),
        ("auth.jwt_key", certs.join("jwt.pub.pem")),
        ("backend.socket_dir", dir.join("sock")),
        ("backend.openvino_dir", runtime_dir()),
        ("models.config_path", models),
    ];
    let mut cmd = Command::new(python());
    cmd.arg(checker()).args(["render-config", which]);
    for (key, value) in &sets {
        cmd.arg("--set").arg(format!("{key}={}", value.display()));
    }
    let out = cmd.output().expect("render-config runs");
    assert!(out.status.success(), "render-config: {}", text(&out));
    let path = dir.join(format!("{which}.toml"));
    std::fs::write(&path, &out.stdout).expect("write config");
    path
}

#[test]
fn shipped_configurations_pass_warden_check() {
    let dir = TempDir::new("deploy-check");
    let certs = make_certs(dir.path());
    for which in ["kubernetes", "systemd"] {
        let config = rendered_config(which, dir.path(), &certs);
        let out = Command::new(warden_bin())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("warden check runs");
        assert!(
            out.status.success(),
            "{which} warden.toml fails `warden check`:\n{}",
            text(&out)
        );
        assert!(text(&out).contains("configuration OK"), "{}", text(&out));
    }
}

fn health(args: &[&str]) -> (i32, String) {
    let out = Command::new(warden_bin())
        .arg("health")
        .args(args)
        .output()
        .expect("warden health runs");
    (out.status.code().unwrap_or(-1), text(&out))
}

#[tokio::test]
async fn health_exits_0_when_ready_and_1_otherwise() {
    let mut server = Server::start(
        &[
            "--model-path".into(),
            model_dir("identity").display().to_string(),
            "--model-name".into(),
            "identity".into(),
        ],
        &[],
    );
    server.wait_ready().await;
    let address = format!("127.0.0.1:{}", server.rest_port);
    let ca = server.certs.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");

    let (code, out) = health(&["--address", &address, "--ca", ca]);
    assert_eq!(code, 0, "ready server, right CA: {out}");
    let (code, out) = health(&["--address", &address, "--insecure-skip-verify"]);
    assert_eq!(code, 0, "ready server, no verification: {out}");
    assert!(out.contains("local health checks only"), "{out}");

    // A CA that did not issue the server's certificate: the probe must not pass.
    let other = TempDir::new("other-ca");
    let other_ca = make_certs(other.path()).join("ca.pem");
    let (code, out) = health(&[
        "--address",
        &address,
        "--ca",
        other_ca.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 1, "foreign CA must fail: {out}");
    // A name the certificate does not carry.
    let (code, out) = health(&[
        "--address",
        &address,
        "--ca",
        ca,
        "--server-name",
        "warden.example.com",
    ]);
    assert_eq!(code, 1, "wrong server name must fail: {out}");

    // Nothing listening.
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, out) = health(&["--address", &closed, "--ca", ca]);
    assert_eq!(code, 1, "closed port: {out}");
    assert!(out.contains("cannot connect"), "{out}");
    // The gRPC port speaks TLS with ALPN h2 only: not a REST health answer.
    let grpc = format!("127.0.0.1:{}", server.grpc_port);
    let (code, out) = health(&["--address", &grpc, "--ca", ca]);
    assert_eq!(code, 1, "gRPC port: {out}");
}

/// The `CapabilityBoundingSet=` of deploy/systemd/warden.service, as setpriv wants it.
fn unit_bounding_set() -> String {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/warden.service"))
        .expect("warden.service");
    let caps: Vec<String> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .flat_map(|v| v.split_whitespace())
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert!(!caps.is_empty(), "no CapabilityBoundingSet in the unit");
    format!("-all,{}", caps.join(","))
}

#[tokio::test]
async fn serve_works_under_the_systemd_units_capability_bounding_set() {
    if !require_root("the supervisor switches uids") {
        return;
    }
    if Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let dir = TempDir::new("deploy-caps");
    let certs = make_certs(dir.path());
    let (rest, grpc) = (free_port(), free_port());
    let socket_dir = dir.path().join("run/warden");
    let log = dir.path().join("serve.log");
    let logf = std::fs::File::create(&log).expect("log");
    let bounding = unit_bounding_set();
    let mut child = Command::new("setpriv")
        .arg(format!("--bounding-set={bounding}"))
        .args(["--inh-caps=-all", "--no-new-privs"])
        .arg(warden_bin())
        .arg("serve")
        .arg("--audit-log")
        .arg(audit_dir(dir.path()).join("audit.log"))
        .arg("--model-path")
        .arg(model_dir("identity"))
        .args(["--model-name", "identity", "--bind-address", "127.0.0.1"])
        .args(["--rest-port", &rest.to_string()])
        .args(["--grpc-port", &grpc.to_string()])
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server.key"))
        .arg("--jwt-key")
        .arg(certs.join("jwt.pub.pem"))
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
        .arg("--socket-dir")
        .arg(&socket_dir)
        .arg("--openvino-dir")
        .arg(runtime_dir())
        .stdout(logf.try_clone().expect("dup"))
        .stderr(logf)
        .spawn()
        .expect("setpriv runs");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited early ({status}) under {bounding}:\n{}",
                log_text()
            );
        }
        if let Ok(r) = https_request(
            rest,
            &certs.join("ca.pem"),
            "GET",
            "/v2/health/ready",
            &[],
            Bytes::new(),
        )
        .await
            && r.status == 200
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "not ready under the unit's bounding set {bounding}:\n{}",
                log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The socket directory as the unit's README promises: 02750, backend:gateway.
    let m = std::fs::metadata(&socket_dir).expect("socket dir");
    assert_eq!(m.mode() & 0o7777, 0o2750, "socket directory mode");
    assert_eq!((m.uid(), m.gid()), (5000, 5001), "socket directory owner");

    // A stop finishes well inside the unit's TimeoutStopSec=30: the supervisor can
    // signal children that run under other uids.
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > Duration::from_secs(25) {
            let _ = child.kill();
            panic!(
                "serve did not stop within 25 s under {bounding}:\n{}",
                log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
}

fn kserve_checker(args: &[&str]) -> Output {
    Command::new(deploy_python())
        .arg(root().join("tests/deploy/check_kserve.py"))
        .args(args)
        .arg(root())
        .output()
        .expect("check_kserve.py runs")
}

#[test]
fn kserve_runtime_passes_its_checker_and_self_test() {
    let out = kserve_checker(&[]);
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "KServe checks failed:\n{report}");
    assert!(
        report.contains("hostile edits caught") && !report.contains("FAIL"),
        "{report}"
    );
    for group in [
        "ok   [KServe types]",
        "ok   [KServe conventions]",
        "ok   [rendered pod schemas]",
    ] {
        assert!(report.contains(group), "{group} missing:\n{report}");
    }
}

/// The image's warden.toml with its in-image paths pointed at real files here.
fn image_config(dir: &Path, certs: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("deploy/container/warden.toml"))
        .expect("deploy/container/warden.toml");
    let quoted = |p: &Path| format!("\"{}", p.display());
    let replaced = text
        .replace("\"/tmp/warden", &quoted(&dir.join("sock")))
        .replace("\"/opt/openvino", &quoted(&runtime_dir()))
        .replace("\"/etc/warden/certs", &quoted(certs));
    assert_ne!(replaced, text, "the image config's paths moved");
    let path = dir.join("image.toml");
    std::fs::write(&path, replaced).expect("write image.toml");
    path
}

#[test]
fn image_config_and_kserve_arguments_pass_warden_check() {
    let dir = TempDir::new("deploy-image-config");
    let certs = make_certs(dir.path());
    let config = image_config(dir.path(), &certs);
    let nsfw = model_dir("nsfw");

    // The seed's command line (OVMS's flags) on the image's configuration.
    let seed = [
        "--model_path".to_string(),
        nsfw.display().to_string(),
        "--model_name".into(),
        "nsfw".into(),
        "--port".into(),
        "9178".into(),
    ];
    // The KServe runtime's arguments, /mnt/models being where the model lands.
    let out = kserve_checker(&["args"]);
    assert!(out.status.success(), "{}", text(&out));
    let kserve: Vec<String> = serde_json::from_slice::<Vec<String>>(&out.stdout)
        .expect("args JSON")
        .into_iter()
        .map(|a| a.replace("/mnt/models", &nsfw.display().to_string()))
        .collect();
    assert!(kserve.iter().any(|a| a == "--rest_port=8080"), "{kserve:?}");

    for (what, args) in [("seed", seed.to_vec()), ("KServe", kserve)] {
        let out = Command::new(warden_bin())
            .args(["check", "--config"])
            .arg(&config)
            .args(&args)
            .output()
            .expect("warden check runs");
        let report = text(&out);
        assert!(
            out.status.success() && report.contains("configuration OK"),
            "{what} arguments on the image's warden.toml fail `warden check`:\n{report}"
        );
        assert!(
            report.contains("nsfw"),
            "{what}: model not listed:\n{report}"
        );
    }

    // Without key files the image refuses, naming the file (never serves plain text).
    let missing = dir.path().join("none");
    let bare = image_config(dir.path(), &missing);
    let out = Command::new(warden_bin())
        .args(["check", "--config"])
        .arg(&bare)
        .args(&seed)
        .output()
        .expect("warden check runs");
    assert!(!out.status.success(), "served without a certificate");
    assert!(
        text(&out).contains(&missing.join("server.pem").display().to_string()),
        "{}",
        text(&out)
    );
}

#[test]
fn checkov_finds_nothing_unexplained() {
    let out = kserve_checker(&["scan"]);
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "checkov:\n{report}");
    assert!(
        report.contains("all explained in deploy/checkov-skips.yaml"),
        "{report}"
    );
}
