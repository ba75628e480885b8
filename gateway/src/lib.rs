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
pub mod catalog;
pub mod conn;
pub mod front;
pub mod heap;
pub mod limits;
pub mod logsafe;
pub mod metrics;
pub mod peer;
pub mod pipeline;
pub mod privilege;
pub mod refusal;
pub mod reload;
pub mod state;
pub mod stats;
pub mod tls;
pub mod triton;

pub use authz::{issuer_names, load_policy};
use tls::{GRPC_ALPN, REST_ALPN};

use anyhow::Context;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::Duration;
use warden_shared::config::Config;

/// How long a stopping gateway waits for calls in flight.
const DRAIN_DEADLINE: Duration = Duration::from_secs(25);

fn bind(address: &str, port: u16) -> anyhow::Result<StdTcpListener> {
    let ip: std::net::IpAddr = address
        .parse()
        .with_context(|| format!("bind address {address:?} is not an IP address"))?;
    let addr = SocketAddr::new(ip, port);
    let l = StdTcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
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
        "audit": {"fsync": config.audit.fsync, "fail_open": config.audit.fail_open,
                  "max_file_bytes": config.audit.max_file_bytes, "max_file_age_secs": config.audit.max_file_age_secs,
                  "max_files": config.audit.max_files, "max_total_bytes": config.audit.max_total_bytes},
        "gateway_uid": config.gateway.uid,
        // Calls that may come without a credential, and the admin operations taken.
        "health": config.health,
        "reflection": config.reflection,
        "triton": config.triton,
    })
}

/// The uid:gid the gateway runs as once it serves: the configured one when started
/// as root (it drops to it), else its own.
pub fn run_as(config: &Config) -> (u32, u32) {
    if nix::unistd::getuid().is_root() {
        (config.gateway.uid, config.gateway.gid)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }
}

/// Everything the gateway reads and binds before it enters its sandbox: the
/// configuration checked, TLS configurations, token verifier, policy, listening sockets
/// and admin token. Made by [`wire`]; served by [`serve`]. The benchmark's
/// instruction-count harness (bench/stages) wires the same way, so what it measures is
/// the gateway the binary runs.
pub struct Wired {
    config: Config,
    sandbox_plan: warden_sandbox::Plan,
    tls: (Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>),
    jwt: auth::jwt::JwtAuthority,
    policy: authz::Policy,
    rest: StdTcpListener,
    grpc: Option<StdTcpListener>,
    admin: Option<StdTcpListener>,
    admin_token: Option<String>,
}

/// Runs the gateway until SIGTERM/SIGINT: [`wire`], enter the sandbox, open the audit
/// log, [`serve`].
pub fn run(config: Config) -> anyhow::Result<()> {
    // Sandbox step 1, before the gateway opens anything itself.
    privilege::close_inherited_fds()?;
    let wired = wire(config)?;
    // INVARIANT: no thread exists yet: capabilities, Landlock and seccomp apply to the
    // calling thread and the threads it starts later, so they are set here, once, for
    // the whole process.
    let was_root = nix::unistd::getuid().is_root();
    let report =
        privilege::enter(&wired.sandbox_plan).context("the gateway could not enter its sandbox")?;
    for w in &report.warnings {
        tracing::warn!("sandbox: {w}");
    }
    // Opened as the gateway's own uid: it creates every audit file itself (the live
    // one and each one rotation starts), so they are all its own, whatever capabilities
    // root had (without CAP_DAC_OVERRIDE root cannot open a file in the gateway's 0750
    // folder).
    let audit = open_audit(&wired.config)?;
    tracing::info!(
        uid = report.uid,
        gid = report.gid,
        was_root,
        limits = %report.limits,
        landlock = %report.landlock,
        seccomp = %report.seccomp,
        "gateway sandboxed"
    );
    serve(wired, audit)
}

/// Opens the audit log the configuration names.
pub fn open_audit(config: &Config) -> anyhow::Result<audit::AuditLog> {
    audit::AuditLog::open(&config.audit)
        .with_context(|| format!("cannot open the audit log {}", config.audit.path.display()))
}

/// Reads and checks everything the gateway needs before its sandbox (see [`Wired`]).
/// Starts no thread.
pub fn wire(config: Config) -> anyhow::Result<Wired> {
    config.validate()?;
    let sandbox_plan = privilege::plan(&config).map_err(anyhow::Error::msg)?;
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
    let run_as = run_as(&config);
    // Fail at start, not at the first rotation or key rotation after the privilege drop.
    reload::preflight(&config, run_as).map_err(|e| anyhow::anyhow!("{e}"))?;
    let audit_check = audit::preflight(&config.audit, run_as, true)
        .map_err(|e| anyhow::anyhow!("audit log: {e}"))?;
    for w in &audit_check.warnings {
        tracing::warn!("audit log: {w}");
    }
    if config.audit.fail_open {
        tracing::warn!(
            "AUDIT FAIL-OPEN: requests are served even when their audit record cannot be written"
        );
    }
    let rest = bind(config.gateway.rest_bind(), config.gateway.rest_port)?;
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
    Ok(Wired {
        config,
        sandbox_plan,
        tls: (rest_tls, grpc_tls),
        jwt,
        policy,
        rest,
        grpc,
        admin,
        admin_token,
    })
}

/// Serves what [`wire`] bound, with `audit` as the audit log, until SIGTERM/SIGINT:
/// starts the runtime's threads, so the sandbox (if any) must be entered before.
pub fn serve(wired: Wired, audit: audit::AuditLog) -> anyhow::Result<()> {
    let Wired {
        config,
        tls,
        jwt,
        policy,
        rest,
        grpc,
        admin,
        admin_token,
        ..
    } = wired;
    let rest_addr = rest.local_addr()?;
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
        let state = Arc::new(state::State::new(config, jwt, policy, tls, audit, backend));
        if state.audit.write(&start).is_err() {
            state.metrics.inc(metrics::AUDIT_WRITE_FAILURES, []);
        }
        zero_fixed_series(&state.metrics);
        let rest = tokio::net::TcpListener::from_std(rest)?;
        tracing::info!(%rest_addr, "gateway listening (REST, TLS)");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(conn::serve_rest(rest, Arc::clone(&state)));
        if let Some(l) = grpc {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(grpc_addr = %l.local_addr()?, "gateway listening (gRPC, TLS)");
            tasks.spawn(conn::serve_grpc(l, Arc::clone(&state)));
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

/// Series whose label values are a small fixed set start at 0, so a dashboard panel
/// that filters them (`result!="ok"`) shows 0 rather than nothing until one happens.
fn zero_fixed_series(m: &metrics::Metrics) {
    use limits::Scope;
    for result in ["ok", "failed", "timeout"] {
        m.add(metrics::TLS_HANDSHAKES, [result], 0);
    }
    for result in ["ok", "failed"] {
        m.add(metrics::CONFIG_RELOADS, [result], 0);
    }
    for scope in [Scope::Total, Scope::Principal, Scope::Model, Scope::Ip] {
        m.add(metrics::RATE_LIMITED, [scope.as_str()], 0);
    }
    for scope in [Scope::Total, Scope::Principal] {
        m.add(metrics::QUOTA_REFUSED, [scope.as_str()], 0);
    }
    m.add(metrics::AUTHZ_DENIED, [pipeline::UNKNOWN_MODEL_LABEL], 0);
    for reason in ["total", "per_ip"] {
        m.add(metrics::CONNECTIONS_REFUSED, [reason], 0);
    }
    m.add(metrics::CONNECTIONS_TIMED_OUT, ["first_request"], 0);
    for listener in [pipeline::Listener::Rest, pipeline::Listener::Grpc] {
        m.gauge_add(metrics::CONNECTIONS, [listener.as_str()], 0);
    }
}

/// Periodic upkeep: reloads on SIGHUP or when a watched file changes, JWKS files
/// that changed on disk, rate-limiter memory, heap pages a crowd of connections left.
async fn housekeeping(state: Arc<state::State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let files = reload::watched(&state);
    let mut seen = reload::fingerprint(&files);
    let mut n = 0u64;
    let mut trimmer = heap::Trimmer::default();
    loop {
        let sighup = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        // A log that could not be written retries on its own, so that a server that is
        // not ready (and so gets no traffic) still recovers once the disk has room.
        state.audit.retry();
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
            state.metrics.inc(metrics::CONFIG_RELOADS, [label]);
            let reason = result.err().map(|e| e.to_string());
            if ok {
                tracing::info!(issuer = %logsafe::log_safe(&issuer), "JWT keys reloaded (a key file changed)");
            } else {
                tracing::warn!(issuer = %logsafe::log_safe(&issuer), error = ?reason, "JWT key reload failed; old keys stay in force");
            }
            let rec = audit::Record {
                event: "reload",
                reason: Some(format!(
                    "jwt keys {issuer}: {}",
                    reason.unwrap_or_else(|| "ok".into())
                )),
                decision: Some(if ok { "allowed" } else { "failed" }),
                ..Default::default()
            };
            let _ = state.audit.write(&rec);
        }
        let open = (state.open_connections).load(std::sync::atomic::Ordering::Acquire);
        let most = (state.connections_high).swap(open, std::sync::atomic::Ordering::AcqRel);
        if trimmer.due(open, most) {
            heap::trim();
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
