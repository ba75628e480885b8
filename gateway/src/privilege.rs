//! The gateway's sandbox: once its ports are bound and its keys, certificates and
//! policy are read, it enters [`warden_sandbox::enter`] — its own uid, no capability,
//! not dumpable, no_new_privs, bounded descriptors and threads, no core dumps, a
//! Landlock view limited to the files it reloads and the audit folder, and a seccomp
//! allow-list (`policies/gateway-sandbox.toml`) — before any thread starts. A
//! compromise of the network-facing process gains nothing beyond that.

use std::path::{Path, PathBuf};
use warden_sandbox::{Enforcement, Fds, Limits, Plan, Policy, Report, SandboxError};
use warden_shared::config::Config;

/// The policy text shipped with this build.
pub const EMBEDDED: &str = include_str!("../../policies/gateway-sandbox.toml");

/// Descriptors beyond the connection limit: listeners, the audit log, backend
/// connections, files being reloaded, tokio's own.
pub const SPARE_FILES: u64 = 1024;
/// Threads of the gateway's uid: tokio's workers and its blocking pool (512 at most).
pub const MAX_PROCESSES: u64 = 1024;

/// The policy compiled into this binary.
pub fn policy() -> Result<Policy, String> {
    Policy::parse(EMBEDDED).map_err(|e| format!("policies/gateway-sandbox.toml: {e}"))
}

/// What the gateway may still touch once it serves: read the folders of its
/// certificates, keys, JWKS, admin token and policy (their files are replaced by rename
/// on rotation, so the folder is granted) plus the policy's system paths, and write the
/// audit log's folder (appends and rotation).
pub fn landlock_paths(config: &Config, policy: &Policy) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let parent = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.to_owned())
            .unwrap_or_else(|| p.to_owned())
    };
    let mut files: Vec<&Path> = Vec::new();
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
    let mut read: Vec<PathBuf> = files.into_iter().map(parent).collect();
    read.extend(policy.read_only.iter().map(|r| r.path.clone()));
    read.sort();
    read.dedup();
    let write = if config.audit.path == Path::new("-") {
        vec![]
    } else {
        vec![parent(&config.audit.path)]
    };
    (read, write)
}

/// The gateway's plan. Its descriptors were closed when it started
/// ([`close_inherited_fds`]); those open now (listeners, audit log) are its own.
pub fn plan(config: &Config) -> Result<Plan, String> {
    let policy = policy()?;
    let (read_only, write_dirs) = landlock_paths(config, &policy);
    Ok(Plan {
        uid: config.gateway.uid,
        gid: config.gateway.gid,
        fds: Fds::ClosedAtStart,
        limits: Limits {
            open_files: config.limits.max_connections as u64 + SPARE_FILES,
            processes: MAX_PROCESSES,
            file_size: None,
        },
        read_only,
        write_dirs,
        tree_dirs: vec![],
        connect_ports: vec![],
        policy,
        enforcement: if config.backend.insecure_allow_unenforced_sandbox {
            Enforcement::BestEffort
        } else {
            Enforcement::Required
        },
    })
}

/// Step 1 of the sandbox, done first thing: no descriptor inherited from whoever
/// started the gateway survives.
pub fn close_inherited_fds() -> Result<(), SandboxError> {
    warden_sandbox::close_inherited_fds()
}

/// Enters the sandbox. INVARIANT: no thread exists yet.
pub fn enter(plan: &Plan) -> Result<Report, SandboxError> {
    warden_sandbox::enter(plan, || Ok(()))
}
