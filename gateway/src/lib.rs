//! Warden's gateway: the only process that faces the network.
//!
//! Start-up order (see [`run`]): read the configuration, certificates, keys and policy,
//! open the audit log, bind the ports, drop privileges, and only then start threads and
//! accept connections.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod backend_client;
pub mod error;
pub mod gate;
pub mod grpc;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod privilege;
pub mod reload;
pub mod rest;
pub mod server;
pub mod state;
pub mod tensor;
pub mod tls;

use anyhow::Context;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::Duration;
use warden_shared::config::Config;

/// How long a stopping gateway waits for calls in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(25);

/// ALPN protocols offered on the REST port.
pub(crate) const REST_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN protocols offered on the gRPC port.
pub(crate) const GRPC_ALPN: &[&[u8]] = &[b"h2"];

fn bind(address: &str, port: u16) -> anyhow::Result<StdTcpListener> {
    let ip: std::net::IpAddr = address
        .parse()
        .with_context(|| format!("bind address {address:?} is not an IP address"))?;
    let addr = SocketAddr::new(ip, port);
    let l = StdTcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The policy named by the configuration, or the open one (loudly).
pub fn load_policy(config: &Config) -> anyhow::Result<authz::Policy> {
    match &config.auth.policy {
        Some(path) => authz::Policy::from_file(path),
        None => Ok(authz::Policy::open()),
    }
}

/// The effective security settings, for the start record and `warden check`.
pub fn settings(config: &Config, policy: &authz::Policy) -> serde_json::Value {
    let l = &config.limits;
    serde_json::json!({
        "tls": {"versions": ["TLSv1.3", "TLSv1.2"], "rest_client_cert": config.tls.rest_client_cert, "grpc_client_cert": config.tls.grpc_client_cert},
        "auth": {"rest_mode": config.auth.rest_mode, "grpc_mode": config.auth.grpc_mode,
                 "issuers": config.auth.all_issuers().iter().map(|i| i.issuer.clone()).collect::<Vec<_>>(),
                 "policy": if policy.open { "NONE (every authenticated caller allowed)".to_string() } else { format!("{} rules", policy.rules.len()) }},
        "limits": l,
        "audit": {"fsync": config.audit.fsync, "fail_open": config.audit.fail_open},
        "gateway_uid": config.gateway.uid,
    })
}

/// What the gateway may still touch once it serves: read the folders of its
/// certificates, keys, JWKS and policy (their files are replaced by rename on rotation,
/// so the folder is granted), the CPU information tokio sizes its pool from, and write
/// the audit log's folder (for rotation).
fn landlock_paths(config: &Config) -> (Vec<std::path::PathBuf>, Vec<std::path::PathBuf>) {
    let parent = |p: &std::path::Path| {
        p.parent()
            .map(|d| d.to_owned())
            .unwrap_or_else(|| p.to_owned())
    };
    let mut read: Vec<std::path::PathBuf> = Vec::new();
    let mut files: Vec<&std::path::Path> = Vec::new();
    files.extend(config.tls.cert.as_deref());
    files.extend(config.tls.key.as_deref());
    files.extend(config.tls.client_ca.as_deref());
    files.extend(config.auth.policy.as_deref());
    files.extend(config.gateway.admin_token.as_deref());
    let issuers = config.auth.all_issuers();
    for i in &issuers {
        files.extend(i.keys.iter().map(|k| k.as_path()));
        files.extend(i.hs256_secret.as_deref());
    }
    read.extend(files.into_iter().map(parent));
    read.extend(
        [
            "/proc/self",
            "/sys/fs/cgroup",
            "/sys/devices/system/cpu",
            "/etc/localtime",
        ]
        .map(std::path::PathBuf::from),
    );
    let write = if config.audit.path == std::path::Path::new("-") {
        vec![]
    } else {
        vec![parent(&config.audit.path)]
    };
    (read, write)
}

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let (cert, key) = (
        config.tls.cert.clone().unwrap_or_default(),
        config.tls.key.clone().unwrap_or_default(),
    );
    let ca = config.tls.client_ca.as_deref();
    let rest_tls = tls::server_config(
        &cert,
        &key,
        REST_ALPN,
        auth::mtls::verifier(config.tls.rest_client_cert, ca)?,
    )?;
    let grpc_tls = tls::server_config(
        &cert,
        &key,
        GRPC_ALPN,
        auth::mtls::verifier(config.tls.grpc_client_cert, ca)?,
    )?;
    let jwt = auth::jwt::JwtAuthority::from_config(&config.auth)?;
    let policy = load_policy(&config)?;
    if policy.open {
        tracing::warn!(
            "NO AUTHORIZATION POLICY (auth.policy): every authenticated caller may use every model"
        );
    }
    let audit = audit::AuditLog::open(&config.audit)
        .with_context(|| format!("cannot open the audit log {}", config.audit.path.display()))?;
    if config.audit.fail_open {
        tracing::warn!(
            "AUDIT FAIL-OPEN: requests are served even when their audit record cannot be written"
        );
    }
    let rest = bind(config.gateway.rest_bind(), config.gateway.rest_port)?;
    let rest_addr = rest.local_addr()?;
    let grpc = match config.gateway.grpc_port {
        0 => None,
        port => Some(bind(config.gateway.grpc_bind(), port)?),
    };
    let admin = match config.gateway.admin_port {
        0 => None,
        port => Some(bind(&config.gateway.admin_bind_address, port)?),
    };
    let admin_token = match &config.gateway.admin_token {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read admin token {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };

    // INVARIANT: no thread exists yet; capabilities are per thread, so they are cleared
    // here, once, for the whole process.
    let was_root = privilege::drop_privileges(config.gateway.uid, config.gateway.gid)
        .context("the gateway could not drop its privileges")?;
    let (read, write) = landlock_paths(&config);
    let landlock = privilege::restrict(
        &read,
        &write,
        config.backend.insecure_allow_unenforced_sandbox,
    )
    .map_err(|e| anyhow::anyhow!("the gateway could not restrict itself with landlock: {e}"))?;
    tracing::info!(
        uid = nix::unistd::getuid().as_raw(),
        was_root,
        %landlock,
        "gateway privileges dropped"
    );

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.gateway.worker_threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().thread_name("warden-gateway").build()?;
    rt.block_on(async move {
        let backend = backend_client::connect_lazy(config.socket_path());
        let start = audit::Record {
            event: "start",
            settings: Some(settings(&config, &policy)),
            ..Default::default()
        };
        let state = Arc::new(state::State::new(config, jwt, policy, (rest_tls, grpc_tls), audit, backend));
        if state.audit.write(&start).is_err() {
            state.metrics.inc("warden_audit_write_failures_total", &[]);
        }
        let rest = tokio::net::TcpListener::from_std(rest)?;
        tracing::info!(%rest_addr, "gateway listening (REST, TLS)");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(server::serve_rest(rest, Arc::clone(&state)));
        if let Some(l) = grpc {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(grpc_addr = %l.local_addr()?, "gateway listening (gRPC, TLS)");
            tasks.spawn(server::serve_grpc(l, Arc::clone(&state)));
        }
        if let Some(l) = admin {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(admin_addr = %l.local_addr()?, "admin listening (metrics, plain HTTP)");
            tasks.spawn(admin::serve(l, Arc::clone(&state), admin_token));
        }
        tasks.spawn(housekeeping(Arc::clone(&state)));
        tokio::select! {
            _ = tasks.join_next() => tracing::error!("a listener stopped"),
            _ = shutdown_signal() => tracing::info!("gateway stopping: no new connections; finishing calls in flight"),
        }
        // Graceful stop: close the listeners (new connections are refused), report not
        // ready, and let the calls in flight finish, up to a deadline.
        state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        tasks.abort_all();
        state.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
        let busy = |s: &state::State| {
            s.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0
                || s.open_connections.load(std::sync::atomic::Ordering::Acquire) > 0
        };
        while busy(&state) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = state.in_flight.load(std::sync::atomic::Ordering::Acquire);
        if left > 0 {
            tracing::warn!(left, "stop deadline reached with calls in flight");
        }
        let stop = audit::Record {
            event: "stop",
            ..Default::default()
        };
        let _ = state.audit.write(&stop);
        Ok(())
    })
}

/// Periodic upkeep: reloads on SIGHUP or when a watched file changes, JWKS files
/// that changed on disk, rate-limiter memory.
async fn housekeeping(state: Arc<state::State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let files = reload::watched(&state);
    let mut seen = reload::fingerprint(&files);
    let mut n = 0u64;
    loop {
        let sighup = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = reload::fingerprint(&files);
        if sighup || now != seen {
            seen = now;
            let _ = reload::reload(&state, if sighup { "SIGHUP" } else { "file change" });
        }
        for (issuer, result) in state.jwt.refresh() {
            let (label, ok) = match &result {
                Ok(()) => ("ok", true),
                Err(_) => ("failed", false),
            };
            state
                .metrics
                .inc("warden_config_reloads_total", &[("result", label)]);
            let reason = result.err().map(|e| e.to_string());
            if ok {
                tracing::info!(%issuer, "JWKS reloaded");
            } else {
                tracing::warn!(%issuer, error = ?reason, "JWKS reload failed; old keys stay in force");
            }
            let rec = audit::Record {
                event: "reload",
                reason: Some(format!(
                    "jwks {issuer}: {}",
                    reason.unwrap_or_else(|| "ok".into())
                )),
                decision: Some(if ok { "allowed" } else { "failed" }),
                ..Default::default()
            };
            let _ = state.audit.write(&rec);
        }
        n += 1;
        if n.is_multiple_of(30) {
            state.rates.housekeeping();
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
