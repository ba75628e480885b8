//! Hot reload of what the gateway reads from files: the TLS certificate and key, the
//! client CA bundle, the authorization policy and every issuer's JWT keys (PEM, JWKS,
//! HS256 secret; a key file that changes also reloads on its own, see `auth::jwt`). Triggered by SIGHUP and by a change of any of those files. A new file
//! that does not load leaves the old one in force, and says why in the log, the audit
//! log and `warden_config_reloads_total{result="failed"}`. Open connections keep the
//! configuration they were made with; new handshakes get the new one.

use crate::state::State;
use std::path::PathBuf;
use std::time::SystemTime;

/// The files a reload re-reads, for change detection.
pub fn watched(state: &State) -> Vec<PathBuf> {
    let c = &state.config;
    [
        c.tls.cert.clone(),
        c.tls.key.clone(),
        c.tls.client_ca.clone(),
        c.auth.policy.clone(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Modification times of the watched files (a missing file counts as a change too).
pub fn fingerprint(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Re-reads the TLS files and the policy; each part that loads replaces the old one,
/// each part that does not keeps the old one in force. Returns the failures.
pub fn reload(state: &State, cause: &str) -> Result<(), String> {
    let c = &state.config;
    let tls = (|| -> anyhow::Result<()> {
        let (cert, key) = (
            c.tls.cert.clone().unwrap_or_default(),
            c.tls.key.clone().unwrap_or_default(),
        );
        let ca = c.tls.client_ca.as_deref();
        let rest = crate::tls::server_config(
            &cert,
            &key,
            crate::tls::REST_ALPN,
            crate::auth::mtls::verifier(c.tls.rest_client_cert, ca)?,
        )?;
        let grpc = crate::tls::server_config(
            &cert,
            &key,
            crate::tls::GRPC_ALPN,
            crate::auth::mtls::verifier(c.tls.grpc_client_cert, ca)?,
        )?;
        state.set_tls(rest, grpc);
        Ok(())
    })()
    .map_err(|e| format!("TLS: {e:#}"));
    let policy = crate::authz::load_policy(c)
        .map(|p| state.set_policy(p))
        .map_err(|e| format!("policy: {e:#}"));
    let keys: Vec<Result<(), String>> = state
        .jwt
        .reload_all()
        .into_iter()
        .map(|(issuer, r)| {
            r.map_err(|e| format!("JWT keys of {}: {e}", crate::logsafe::log_safe(&issuer)))
        })
        .collect();
    let failures: Vec<String> = [tls, policy]
        .into_iter()
        .chain(keys)
        .filter_map(Result::err)
        .collect();
    let result = if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    };
    let ok = result.is_ok();
    state.metrics.inc(
        crate::metrics::CONFIG_RELOADS,
        [if ok { "ok" } else { "failed" }],
    );
    match &result {
        Ok(()) => tracing::info!(
            cause,
            "configuration reloaded (TLS certificate and key, client CA, policy, JWT keys)"
        ),
        Err(e) => {
            tracing::error!(cause, error = %e, "configuration reload FAILED; the old configuration stays in force where it failed")
        }
    }
    let record = crate::audit::Record {
        event: "reload",
        decision: Some(if ok { "allowed" } else { "failed" }),
        reason: Some(match &result {
            Ok(()) => format!("{cause}: tls, client CA, policy, JWT keys reloaded"),
            Err(e) => format!("{cause}: kept the old configuration where it failed: {e}"),
        }),
        ..Default::default()
    };
    if state.audit.write(&record).is_err() {
        state.metrics.inc(crate::metrics::AUDIT_WRITE_FAILURES, []);
    }
    result
}

/// Files the gateway re-reads after its privilege drop (reload on SIGHUP or change):
/// the TLS certificate, key and client CA, the policy, the JWT keys and secrets.
pub fn reread_files(c: &warden_shared::config::Config) -> Vec<(&'static str, PathBuf)> {
    let mut out: Vec<(&'static str, PathBuf)> = Vec::new();
    out.extend(c.tls.cert.clone().map(|p| ("TLS certificate", p)));
    out.extend(c.tls.key.clone().map(|p| ("TLS private key", p)));
    out.extend(c.tls.client_ca.clone().map(|p| ("client CA bundle", p)));
    out.extend(c.auth.policy.clone().map(|p| ("authorization policy", p)));
    for i in c.auth.all_issuers() {
        out.extend(i.keys.into_iter().map(|p| ("JWT key", p)));
        out.extend(i.hs256_secret.map(|p| ("HS256 secret", p)));
    }
    out
}

/// Refuses a configuration whose reload path cannot work: a file the gateway re-reads
/// on SIGHUP or change that its uid after the privilege drop (`run_as`) cannot read. A
/// root-only TLS key would otherwise load at start and then silently stay the old key
/// at every rotation.
pub fn preflight(c: &warden_shared::config::Config, run_as: (u32, u32)) -> Result<(), String> {
    let (uid, gid) = run_as;
    let mut problems = Vec::new();
    for (what, path) in reread_files(c) {
        if let Err(e) = crate::audit::accessible_by(&path, uid, gid, 4) {
            problems.push(format!(
                "the {what} {} cannot be re-read after the privilege drop ({e}), so a rotated file would never take effect; make it readable by uid {uid} or gid {gid} (e.g. chgrp {gid} FILE && chmod 0640 FILE)",
                path.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
