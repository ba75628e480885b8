//! The end-to-end harness: starts the real `warden` binary with real certificates and
//! real models, and talks to it over real TLS. Nothing here is mocked.
//!
//! Files are laid out as a deployment would: the fixture folder is 0755 and the model
//! and runtime folders must be enterable by the backend's uid 5000 (they are copied to
//! a staging folder when the checkout itself is not).
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The `warden` binary under test: `$WARDEN_BIN`, else `target/debug/warden`.
pub fn warden_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WARDEN_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let bin = target.join("debug/warden");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p warden` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A path under the repository's `.models` (fetched by scripts/fetch-models.sh).
pub fn model_dir(name: &str) -> PathBuf {
    let p = root().join(".models").join(name);
    assert!(
        p.is_dir(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    service_readable(&p)
}

/// The OpenVINO runtime folder (fetched by scripts/fetch-runtime.sh).
pub fn runtime_dir() -> PathBuf {
    let p = root().join(".runtime/openvino");
    assert!(
        p.join("libopenvino_c.so").exists(),
        "{} is missing: run scripts/fetch-runtime.sh",
        p.display()
    );
    service_readable(&p)
}

fn traversable(path: &Path) -> bool {
    path.ancestors().skip(1).all(|p| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// `path` itself when the service uids can reach it, else a copy in a world-readable
/// staging folder (a checkout under a 0700 home directory cannot be read by uid 5000).
pub fn service_readable(path: &Path) -> PathBuf {
    if !is_root() || traversable(path) {
        return path.to_owned();
    }
    let staged = Path::new("/tmp/warden-test-staging").join(path.strip_prefix("/").unwrap_or(path));
    if !staged.exists() {
        let _ = std::fs::create_dir_all(staged.parent().unwrap_or(Path::new("/tmp")));
        let status = Command::new("cp")
            .arg("-a")
            .arg(path)
            .arg(&staged)
            .status()
            .expect("cp runs");
        assert!(status.success(), "staging {} failed", path.display());
        let mut p = staged.parent();
        while let Some(dir) = p {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            if dir == Path::new("/tmp")
                || dir.parent().is_none()
                || dir == Path::new("/tmp/warden-test-staging")
            {
                break;
            }
            p = dir.parent();
        }
    }
    staged
}

pub fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// For a test that needs root: true when running as root. Otherwise the test is
/// skipped (returns false, with a note on stderr) — unless WARDEN_REQUIRE_ROOT=1 (CI
/// sets it), where it FAILS, so no root-only check passes silently because CI stopped
/// running as root. `why` says what needs root.
pub fn require_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("WARDEN_REQUIRE_ROOT").as_deref() != Ok("1"),
        "needs root ({why}) and WARDEN_REQUIRE_ROOT=1 is set"
    );
    eprintln!("SKIPPED: needs root ({why}); WARDEN_REQUIRE_ROOT=1 makes this a failure");
    false
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh 0755 folder for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "warden-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("WARDEN_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The uid:gid the gateway drops to when the tests run as root (the default).
pub const GATEWAY_UID: u32 = 5001;

/// A folder for an audit log inside `parent`: 0750 and owned by the gateway's uid when
/// running as root, as the gateway's pre-flight check requires (it rotates there).
pub fn audit_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("audit");
    std::fs::create_dir_all(&dir).expect("audit dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    if is_root() {
        std::os::unix::fs::chown(&dir, Some(GATEWAY_UID), Some(GATEWAY_UID)).expect("chown");
    }
    dir
}

/// A CA for client certificates, and certificates it (or another CA) issues.
pub struct ClientPki {
    pub ca_pem: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

pub fn client_pki(dir: &Path, name: &str) -> ClientPki {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} client CA"));
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    let ca_pem = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_pem, cert.pem()).unwrap();
    ClientPki {
        ca_pem,
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// A client certificate for `uri` (URI SAN), valid now or expired.
pub fn client_cert(pki: &ClientPki, uri: &str, expired: bool) -> ClientIdentity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "client");
    p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    if expired {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(1);
    }
    let cert = p.signed_by(&key, &pki.issuer).unwrap();
    ClientIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Runs `warden certs-dev --out DIR`.
pub fn make_certs(dir: &Path) -> PathBuf {
    let out = dir.join("certs");
    let status = Command::new(warden_bin())
        .args(["certs-dev", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("runs");
    assert!(status.success(), "certs-dev failed");
    out
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    // The kernel may hand the same ephemeral port out twice in a row once the probe
    // socket is closed: never give one out twice in this process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `warden serve`.
pub struct Server {
    pub child: Child,
    pub rest_port: u16,
    pub grpc_port: u16,
    pub admin_port: u16,
    pub certs: PathBuf,
    pub dir: TempDir,
    pub log: PathBuf,
}

/// The issuer and audience every test server is configured with.
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "warden-test";

impl Server {
    /// Starts `warden serve` with dev certificates on free ports; `models` are the
    /// model-selection flags (e.g. `--model-path X --model-name Y`), `extra` any others.
    pub fn start(models: &[String], extra: &[&str]) -> Server {
        Server::start_with_env(models, extra, &[])
    }

    /// [`Server::start`] with more environment variables (cloud credentials).
    pub fn start_with_env(models: &[String], extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new("serve");
        let certs = make_certs(dir.path());
        let rest_port = free_port();
        let grpc_port = free_port();
        let admin_port = free_port();
        let log = dir.path().join("serve.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(warden_bin());
        cmd.arg("serve")
            .args(models)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--rest-port",
                &rest_port.to_string(),
            ])
            .args(["--grpc-port", &grpc_port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(certs.join("server.key"))
            .arg("--jwt-key")
            .arg(certs.join("jwt.pub.pem"))
            .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
            .arg("--socket-dir")
            .arg(dir.path().join("sock"))
            .arg("--openvino-dir")
            .arg(runtime_dir())
            .args(extra)
            .env("WARDEN_LOG", "info")
            .envs(env.iter().copied())
            .stdout(logf.try_clone().expect("dup"))
            .stderr(logf);
        if !extra.contains(&"--audit-log") {
            cmd.arg("--audit-log")
                .arg(audit_dir(dir.path()).join("audit.log"));
        }
        let child = cmd.spawn().expect("warden serve starts");
        Server {
            child,
            rest_port,
            grpc_port,
            admin_port,
            certs,
            dir,
            log,
        }
    }

    /// Waits until `/v2/health/ready` answers 200.
    pub async fn wait_ready(&mut self) -> &mut Server {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("warden serve exited early ({status}):\n{}", self.log_text());
            }
            if let Ok(r) = self
                .request("GET", "/v2/health/ready", &[], Bytes::new())
                .await
                && r.status == 200
            {
                return self;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in time:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        // Lossy: OpenVINO's own messages can carry bytes that are not UTF-8.
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Signs a token with the server's development key.
    pub fn token(&self, claims: serde_json::Value) -> String {
        sign(&self.certs.join("jwt.key"), claims)
    }

    /// A token that passes every check.
    pub fn good_token(&self) -> String {
        self.token(claims("alice", 600))
    }

    /// One HTTPS request on a new connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        https_request(
            self.rest_port,
            &self.certs.join("ca.pem"),
            method,
            path,
            headers,
            body,
        )
        .await
    }

    /// An authenticated request with a good token.
    pub async fn call(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Reply {
        let auth = format!("Bearer {}", self.good_token());
        self.request(method, path, &[("authorization", &auth)], body.into())
            .await
            .expect("request completes")
    }

    /// Direct child processes of `warden serve`, as (pid, role).
    pub fn children(&self) -> Vec<(u32, String)> {
        let me = self.child.id();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let status = proc_status(pid);
            if status.get("PPid").map(String::as_str) != Some(&me.to_string()) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let role = cmdline
                .split(|b| *b == 0)
                .nth(1)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            out.push((pid, role));
        }
        out
    }

    pub fn child_pid(&self, role: &str) -> u32 {
        self.children()
            .into_iter()
            .find(|(_, r)| r == role)
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("no {role} child"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // Exited, or already reaped by the test itself.
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/proc/<pid>/status` as a map.
pub fn proc_status(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Standard claims for `sub`, valid for `ttl` seconds.
pub fn claims(sub: &str, ttl: i64) -> serde_json::Value {
    let now = now();
    serde_json::json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + ttl})
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signs `claims` with an EC P-256 PEM key (ES256).
pub fn sign(key: &Path, claims: serde_json::Value) -> String {
    let pem = std::fs::read(key).expect("key readable");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("EC key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .expect("signs")
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A client certificate chain and key, PEM.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A rustls client trusting only `ca`.
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config_with(ca, alpn, None)
}

/// A rustls client trusting only `ca`, presenting `identity` if given.
pub fn client_config_with(
    ca: &Path,
    alpn: &[&[u8]],
    identity: Option<&ClientIdentity>,
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .expect("ca")
        .flatten()
    {
        roots.add(c).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(id) => {
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert");
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                .expect("client key");
            cfg.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => cfg.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS connection to `localhost:port` offering one ALPN protocol, trusting only `ca`.
pub async fn tls_connect(
    port: u16,
    ca: &Path,
    alpn: &[u8],
    identity: Option<&ClientIdentity>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .context("TCP connect")?;
    let connector = tokio_rustls::TlsConnector::from(client_config_with(ca, &[alpn], identity));
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    connector.connect(name, tcp).await.context("TLS handshake")
}

/// One HTTP/1.1 request over TLS to `localhost:port`.
pub async fn https_request(
    port: u16,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    https_request_as(port, ca, None, method, path, headers, body).await
}

/// One HTTP/1.1 request over TLS, presenting a client certificate if given.
pub async fn https_request_as(
    port: u16,
    ca: &Path,
    identity: Option<&ClientIdentity>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    let tls = tls_connect(port, ca, b"http/1.1", identity).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Runs the independent reference (OpenVINO's Python API, in process, f32) on a JSON
/// request file and returns `{"outputs": {name: {"shape", "data"}}}`.
pub fn reference(model_file: &Path, request_json: &Path) -> anyhow::Result<serde_json::Value> {
    let py = root().join(".venv/bin/python");
    let out = Command::new(&py)
        .arg(root().join("scripts/kserve_example.py"))
        .arg("reference")
        .arg(model_file)
        .arg(request_json)
        .output()
        .with_context(|| format!("{} (run scripts/fetch-models.sh)", py.display()))?;
    if !out.status.success() {
        bail!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Writes a KServe JSON request for a demo model built from a real image.
pub fn example_request(model: &str, image: &str, out: &Path) -> anyhow::Result<()> {
    let py = root().join(".venv/bin/python");
    let status = Command::new(&py)
        .arg(root().join("scripts/kserve_example.py"))
        .arg("request")
        .arg(model)
        .arg(root().join(".models/images").join(image))
        .arg(out)
        .status()?;
    if !status.success() {
        bail!("making the example request failed");
    }
    Ok(())
}

/// The largest absolute difference between two equally long float lists.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "output lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// GET over plain HTTP/1.0 on loopback (the admin listener); returns the body.
pub async fn plain_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// The value of one Prometheus series (exact name and labels), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The JSON records of an audit file.
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// One HTTP/2 connection over TLS to `localhost:port`, for several requests (REST or
/// gRPC) on it.
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

/// A gRPC answer: the status (from the trailers, or the head of a trailers-only
/// answer), its message, the response head, and the one response message, unframed.
#[derive(Debug)]
pub struct GrpcReply {
    pub code: i32,
    pub message: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl GrpcReply {
    /// The response message, decoded.
    pub fn decode<M: prost::Message + Default>(&self) -> M {
        M::decode(self.body.clone()).expect("a well-formed response message")
    }
}

/// A gRPC length-prefixed message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(5 + message.len());
    b.push(0);
    b.extend_from_slice(&(message.len() as u32).to_be_bytes());
    b.extend_from_slice(message);
    Bytes::from(b)
}

impl H2 {
    pub async fn connect(port: u16, ca: &Path) -> anyhow::Result<H2> {
        Self::connect_as(port, ca, None).await
    }

    pub async fn connect_as(
        port: u16,
        ca: &Path,
        identity: Option<&ClientIdentity>,
    ) -> anyhow::Result<H2> {
        let tls = tls_connect(port, ca, b"h2", identity).await?;
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await?;
        tokio::spawn(conn);
        Ok(H2 { sender })
    }

    /// One request on this connection.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        self.sender.ready().await?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// One unary call of `inference.GRPCInferenceService/<method>` with `message`
    /// (encoded, not yet framed) as its request.
    pub async fn grpc(
        &mut self,
        method: &str,
        headers: &[(&str, &str)],
        message: &[u8],
    ) -> anyhow::Result<GrpcReply> {
        self.grpc_raw(
            &format!("/inference.GRPCInferenceService/{method}"),
            headers,
            grpc_frame(message),
        )
        .await
    }

    /// A gRPC call whose answer is read as it streams (a server-streaming method):
    /// the response head, its body still open.
    pub async fn grpc_open(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        message: &[u8],
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        self.sender.ready().await?;
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Ok(self
            .sender
            .send_request(req.body(Full::new(grpc_frame(message)))?)
            .await?)
    }

    /// A gRPC call with the body as given (already framed, or deliberately not).
    pub async fn grpc_raw(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<GrpcReply> {
        self.sender.ready().await?;
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
        let head = resp.headers().clone();
        let collected = resp.into_body().collect().await?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let data = collected.to_bytes();
        let field = |name: &str| {
            trailers
                .get(name)
                .or_else(|| head.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let code = field("grpc-status")
            .context("no grpc-status")?
            .parse()
            .context("grpc-status is a number")?;
        let message = field("grpc-message").unwrap_or_default();
        let body = if data.len() >= 5 {
            data.slice(5..)
        } else {
            Bytes::new()
        };
        Ok(GrpcReply {
            code,
            message,
            headers: head,
            body,
        })
    }
}

/// The audit records with `request_id` = `id`.
pub fn audit_record(path: &Path, id: &str) -> Option<serde_json::Value> {
    audit_records(path)
        .into_iter()
        .find(|r| r["request_id"] == id)
}

/// Runs a client script of `tests/clients/` with `python` against `server` and returns
/// what it printed. The script exits non-zero on its first failed check and ends with a
/// "N passed, 0 failed" line; either failing fails the test, with the server's log.
pub fn run_client(python: &Path, script: &str, args: &[String], server: &Server) -> String {
    let out = Command::new(python)
        .arg(root().join("tests/clients").join(script))
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log_text()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    stdout
}
