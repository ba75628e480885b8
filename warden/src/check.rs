//! `warden check`: validates a configuration the way `nginx -t` does, and says what it
//! would serve, without binding a port or loading a model.

use std::fmt::Write as _;
use warden_backend::integrity::Outcome;
use warden_shared::config::{AuthMode, ClientCertMode, Config, OPENVINO_DIR_ENV};
use warden_shared::repository::{self, ModelSpec};

fn specs(config: &Config) -> anyhow::Result<Vec<ModelSpec>> {
    Ok(config.model_specs().map_err(anyhow::Error::msg)?.0)
}

fn client_certs(mode: ClientCertMode) -> &'static str {
    match mode {
        ClientCertMode::Off => "TLS (no client certificates)",
        ClientCertMode::Optional => "TLS + mTLS optional",
        ClientCertMode::Required => "TLS + mTLS required",
    }
}

fn auth(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Jwt => "JWT bearer token",
        AuthMode::Mtls => "client certificate",
        AuthMode::JwtOrMtls => "JWT or client certificate",
        AuthMode::JwtAndMtls => "JWT and client certificate",
    }
}

/// Every listener with its address, transport security and authentication.
fn listeners(config: &Config) -> String {
    let g = &config.gateway;
    let l = &config.limits;
    let mut out = String::from("listeners:\n");
    out += &format!(
        "  REST   https://{}:{}  {}, HTTP/1.1 + HTTP/2, auth: {}\n",
        g.rest_bind(),
        g.rest_port,
        client_certs(config.tls.rest_client_cert),
        auth(config.auth.rest_mode)
    );
    if g.grpc_port == 0 {
        out += "  gRPC   off (grpc_port 0)\n";
    } else {
        out += &format!(
            "  gRPC   {}:{}  {}, HTTP/2 ({} streams per connection, {}), auth: {}\n",
            g.grpc_bind(),
            g.grpc_port,
            client_certs(config.tls.grpc_client_cert),
            l.grpc_h2_streams(),
            match l.grpc_max_concurrent_calls {
                Some(n) => format!("at most {n} calls at once"),
                None => "no bound on calls at once".into(),
            },
            auth(config.auth.grpc_mode)
        );
    }
    if g.admin_port == 0 {
        out += "  admin  off (admin_port 0): no metrics\n";
    } else {
        let metrics = if !config.metrics.enabled {
            "metrics OFF".to_string()
        } else if config.metrics.list.is_empty() {
            "/metrics (OVMS default metrics)".to_string()
        } else {
            format!("/metrics ({})", config.metrics.list.join(", "))
        };
        out += &format!(
            "  admin  http://{}:{}  plain HTTP, {}, auth: {}\n",
            g.admin_bind_address,
            g.admin_port,
            metrics,
            if g.admin_token.is_some() {
                "bearer token (gateway.admin_token)"
            } else {
                "none (keep it on loopback)"
            }
        );
    }
    out
}

/// Returns the report; an error means the configuration would not start. `mapping`
/// says what each OVMS flag given set.
pub fn run(config: &Config, mapping: &[String]) -> anyhow::Result<String> {
    config.validate()?;
    let mut out = String::new();
    let g = &config.gateway;
    let cert = config
        .tls
        .cert
        .as_deref()
        .unwrap_or_else(|| std::path::Path::new(""));
    let key = config
        .tls
        .key
        .as_deref()
        .unwrap_or_else(|| std::path::Path::new(""));
    let ca = config.tls.client_ca.as_deref();
    let rest_mtls = warden_gateway::auth::mtls::verifier(config.tls.rest_client_cert, ca)?;
    let grpc_mtls = warden_gateway::auth::mtls::verifier(config.tls.grpc_client_cert, ca)?;
    warden_gateway::tls::server_config(cert, key, &[b"h2"], rest_mtls)?;
    warden_gateway::tls::server_config(cert, key, &[b"h2"], grpc_mtls)?;
    let jwt = warden_gateway::auth::jwt::JwtAuthority::from_config(&config.auth)?;
    let policy = warden_gateway::load_policy(config)?;
    out += &listeners(config);
    writeln!(out, "OVMS flags and config.json settings in effect:")?;
    if mapping.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for line in mapping {
        writeln!(out, "  {line}")?;
    }
    writeln!(
        out,
        "repository: {}",
        match config.models.file_system_poll_wait_seconds {
            0 => "re-read on SIGHUP only".to_string(),
            n => format!("polled every {n}s and on SIGHUP"),
        }
    )?;
    writeln!(
        out,
        "TLS:     certificate {} (loaded), key {} (loaded)",
        cert.display(),
        key.display()
    )?;
    writeln!(
        out,
        "auth:    REST {:?} (client certificates {:?}), gRPC {:?} (client certificates {:?}); leeway {}s, max token lifetime {}s",
        config.auth.rest_mode,
        config.tls.rest_client_cert,
        config.auth.grpc_mode,
        config.tls.grpc_client_cert,
        config.auth.leeway_secs,
        config.auth.max_lifetime_secs
    )?;
    for line in jwt.describe() {
        writeln!(out, "  {line}")?;
    }
    writeln!(out, "authorization policy:")?;
    for line in policy.describe() {
        writeln!(out, "  {line}")?;
    }
    for w in policy.cross_issuer_warnings(&warden_gateway::issuer_names(config)) {
        writeln!(out, "  WARNING: {w}")?;
    }
    let a = &config.audit;
    writeln!(
        out,
        "audit:   {} (rotate at {} bytes or {}s, keep {} files / {} bytes, fsync {:?}, {})",
        a.path.display(),
        a.max_file_bytes,
        a.max_file_age_secs,
        a.max_files,
        a.max_total_bytes,
        a.fsync,
        if a.fail_open {
            "FAIL-OPEN"
        } else {
            "fail closed"
        }
    )?;
    // The same pre-flight checks the gateway runs at start, for the uid it runs as.
    let run_as = warden_gateway::run_as(config);
    let audit = warden_gateway::audit::preflight(a, run_as, false)
        .map_err(|e| anyhow::anyhow!("audit log: {e}"))?;
    for n in &audit.notes {
        writeln!(out, "         {n}")?;
    }
    for w in &audit.warnings {
        writeln!(out, "         WARNING: {w}")?;
    }
    warden_gateway::reload::preflight(config, run_as).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = warden_backend::runtime::locate(
        config.backend.openvino_dir.as_deref(),
        std::env::var_os(OPENVINO_DIR_ENV).map(Into::into),
    );
    writeln!(
        out,
        "backend: uid {}:{} when started as root, socket {}, OpenVINO runtime {}",
        config.backend.uid,
        config.backend.gid,
        config.socket_path().display(),
        match &runtime {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("MISSING ({e})"),
        }
    )?;
    writeln!(
        out,
        "gateway: drops to uid {}:{} when started as root",
        g.uid, g.gid
    )?;
    let l = &config.limits;
    writeln!(
        out,
        "limits:  body {} B, gRPC message {} B, tensor {} elements, JSON depth {}, URL {} B, {} headers / {} B",
        l.max_body_bytes,
        l.max_grpc_message_bytes,
        l.max_tensor_elements,
        l.max_json_depth,
        l.max_url_bytes,
        l.max_headers,
        l.max_header_bytes
    )?;
    writeln!(
        out,
        "         connections {} total / {} per IP; timeouts: TLS {}s, headers {}s, idle {}s, request {}s",
        l.max_connections,
        l.max_connections_per_ip,
        l.tls_handshake_timeout_secs,
        l.header_read_timeout_secs,
        l.idle_timeout_secs,
        l.request_timeout_secs
    )?;
    writeln!(
        out,
        "         HTTP/2: {} streams, windows {} / {} B, reset budgets {} / {}",
        l.h2_max_concurrent_streams,
        l.h2_stream_window_bytes,
        l.h2_connection_window_bytes,
        l.h2_max_pending_accept_reset_streams,
        l.h2_max_local_error_reset_streams
    )?;
    let rate = |n: u32| {
        if n == 0 {
            "unlimited".to_string()
        } else {
            format!("{n}/s")
        }
    };
    writeln!(
        out,
        "         rates: total {}, per principal {}, per model {}, per IP unauthenticated {} (burst {}s); quotas: {} B in flight, {} B per principal",
        rate(l.rate_total_rps),
        rate(l.rate_per_principal_rps),
        rate(l.rate_per_model_rps),
        rate(l.rate_per_ip_unauthenticated_rps),
        l.rate_burst_seconds,
        l.quota_bytes,
        l.quota_per_principal_bytes
    )?;
    let integrity = warden_backend::integrity::Integrity::load(&config.signing)?;
    writeln!(
        out,
        "signing: mode {} by default, signature file {:?}, {} trusted key(s){}",
        config.signing.default_mode(),
        config.signing.signature_file,
        integrity.keys.keys.len(),
        integrity
            .keys
            .keys
            .iter()
            .map(|k| format!("\n         key {} ({}, loaded)", k.source, k.curve))
            .collect::<String>()
    )?;
    for (name, mode) in &config.signing.models {
        writeln!(out, "         model {name}: {mode}")?;
    }
    let (remote, mut problems) = warden_fetcher::describe(config)?;
    out += &remote;
    writeln!(out, "models:")?;
    let configured = config.configured_specs().map_err(anyhow::Error::msg)?.0;
    for (spec, conf) in specs(config)?.into_iter().zip(configured) {
        if let Ok(Some(url)) = warden_shared::remote::RemoteUrl::of(&conf.base_path)
            && !spec.base_path.exists()
        {
            writeln!(
                out,
                "  {:<20} from {url}: not in the cache yet (fetched at start; see object storage above)",
                spec.name
            )?;
            continue;
        }
        writeln!(
            out,
            "  {:<20} settings: {}",
            spec.name,
            spec.describe_settings()
        )?;
        let versions = repository::list_versions(&spec.base_path);
        match versions {
            Err(e) => {
                problems += 1;
                writeln!(out, "  {:<20} ERROR {e}", spec.name)?;
            }
            Ok(v) => {
                let served = spec
                    .version_policy
                    .select(v.iter().map(|(n, _)| *n).collect());
                if served.is_empty() {
                    problems += 1;
                    writeln!(
                        out,
                        "  {:<20} ERROR no version matches the policy",
                        spec.name
                    )?;
                }
                for (n, dir) in v.iter().filter(|(n, _)| served.contains(n)) {
                    // The same check the backend runs before loading (files are only
                    // hashed here, never parsed).
                    let signature = match integrity.check(&spec.name, *n, dir) {
                        Ok(Outcome::Verified(v)) => format!("signature verified {}", v.digest),
                        Ok(Outcome::Unsigned) => "UNSIGNED (optional)".into(),
                        Ok(Outcome::NotChecked) => "signature not checked".into(),
                        Err(e) => {
                            problems += 1;
                            writeln!(out, "  {:<20} version {n}: ERROR {e}", spec.name)?;
                            continue;
                        }
                    };
                    match repository::find_model_files(dir) {
                        Ok(files) => writeln!(
                            out,
                            "  {:<20} version {n}: {} on {}, {signature}",
                            spec.name,
                            files.primary().display(),
                            spec.target_device
                        )?,
                        Err(e) => {
                            problems += 1;
                            writeln!(out, "  {:<20} version {n}: ERROR {e}", spec.name)?;
                        }
                    }
                }
            }
        }
    }
    if problems > 0 {
        anyhow::bail!("{out}configuration has {problems} model problem(s)");
    }
    Ok(out)
}
