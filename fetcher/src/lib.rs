//! `warden fetcher`: the only Warden process that talks to object storage. It copies
//! every `s3://`, `gs://` and `az://` model repository of the configuration into the
//! local cache (`models.object_storage.cache_dir`), which the sandboxed backend reads
//! read-only as it reads any local repository; the backend keeps no network access.
//!
//! Started by `warden serve` before the backend: it prints `ready` on standard output
//! once every remote repository has been fetched whole, and exits with the reason
//! (wrong credentials, an unreachable endpoint, a refused key, a repository over its
//! bounds) if that first fetch fails. Afterwards it polls every
//! `models.file_system_poll_wait_seconds` (and on SIGHUP); a failed pass keeps every
//! cached version as it was. Credentials come from its environment, which only this
//! process receives; no secret is ever logged (see [`Redactor`]).

pub mod sandbox;
pub mod store;
pub mod sync;

use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use warden_shared::config::Config;
use warden_shared::remote::{RemoteUrl, remote_specs};

/// The line the fetcher prints when the first fetch is complete.
pub const READY: &str = "ready";

/// Replaces every secret the environment holds by `[redacted]` in a text about to be
/// logged or printed: error messages of HTTP clients may echo a URL with a SAS token or
/// a header value, and this is the one place such text passes before it leaves.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Learns the secret values of `env`: every value of a cloud variable long enough to
    /// be a secret, and the key and SAS parts of a connection string.
    pub fn new(env: &store::Env) -> Redactor {
        let mut secrets = Vec::new();
        for (k, v) in env {
            if k == "AZURE_STORAGE_CONNECTION_STRING" {
                for part in v.split(';') {
                    if let Some((name, value)) = part.split_once('=')
                        && matches!(name.trim(), "AccountKey" | "SharedAccessSignature")
                    {
                        secrets.push(value.to_owned());
                    }
                }
            }
            // Names of files, regions and endpoints are not secrets; everything else is
            // treated as one.
            let public = k.ends_with("_FILE")
                || k.ends_with("REGION")
                || k.contains("ENDPOINT")
                || k == "GOOGLE_APPLICATION_CREDENTIALS"
                || k == "GOOGLE_SERVICE_ACCOUNT"
                || k.ends_with("ACCOUNT_NAME")
                || k == "AWS_ACCESS_KEY_ID";
            if !public {
                secrets.push(v.clone());
                // A SAS token's signature also travels URL-encoded.
                for part in v.split('&') {
                    if let Some(("sig", sig)) = part.split_once('=') {
                        secrets.push(sig.to_owned());
                    }
                }
            }
        }
        secrets.retain(|s| s.len() >= 6);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "[redacted]");
        }
        out
    }
}

/// The remote repositories of `config`: model, URL and cache folder.
fn remotes(config: &Config) -> anyhow::Result<Vec<(String, RemoteUrl, PathBuf)>> {
    let (specs, _) = config.configured_specs().map_err(anyhow::Error::msg)?;
    let cache = &config.models.object_storage.cache_dir;
    Ok(remote_specs(&specs)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|(model, url)| {
            let local = url.cache_path(cache);
            (model, url, local)
        })
        .collect())
}

/// Whether `config` serves anything from object storage (then `warden serve` starts a
/// fetcher).
pub fn needed(config: &Config) -> bool {
    remotes(config).is_ok_and(|r| !r.is_empty())
}

/// Creates the cache folder: owned by the fetcher's uid, group the backend's, 0750
/// (when started as root; else the caller's own, 0750).
fn prepare_cache_dir(config: &Config) -> anyhow::Result<()> {
    let os = &config.models.object_storage;
    std::fs::create_dir_all(&os.cache_dir)
        .with_context(|| format!("cannot create {}", os.cache_dir.display()))?;
    let m = std::fs::symlink_metadata(&os.cache_dir)?;
    if !m.is_dir() {
        anyhow::bail!("{} is not a folder", os.cache_dir.display());
    }
    if nix::unistd::getuid().is_root() {
        std::os::unix::fs::chown(&os.cache_dir, Some(os.uid), Some(config.backend.gid))?;
    }
    std::fs::set_permissions(&os.cache_dir, std::fs::Permissions::from_mode(0o750))?;
    Ok(())
}

/// The fetcher's sandbox for `config` with the credentials of `env`: TCP connect to the
/// endpoints' ports, 443 for token services (STS, OAuth) and, where no static credential
/// is given, 80 for the instance metadata service.
pub fn sandbox_plan(config: &Config, env: &store::Env) -> anyhow::Result<warden_sandbox::Plan> {
    let mut ports: Vec<u16> = remotes(config)?
        .iter()
        .map(|(_, url, _)| store::endpoint(url, env).port)
        .collect();
    ports.push(443);
    let static_credentials = [
        "AWS_SECRET_ACCESS_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_SERVICE_ACCOUNT",
    ]
    .iter()
    .any(|k| env.contains_key(*k));
    if !static_credentials {
        ports.push(80);
    }
    ports.sort_unstable();
    ports.dedup();
    let token_files: Vec<PathBuf> = ["AWS_WEB_IDENTITY_TOKEN_FILE", "AZURE_FEDERATED_TOKEN_FILE"]
        .iter()
        .filter_map(|k| env.get(*k).map(PathBuf::from))
        .collect();
    let token_refs: Vec<&std::path::Path> = token_files.iter().map(|p| p.as_path()).collect();
    sandbox::plan(config, &token_refs, ports).map_err(anyhow::Error::msg)
}

/// Runs the fetcher until SIGTERM/SIGINT.
pub fn run(config: &Config) -> anyhow::Result<()> {
    config.validate()?;
    let remotes = remotes(config)?;
    if remotes.is_empty() {
        anyhow::bail!("no s3://, gs:// or az:// model path in the configuration: nothing to fetch");
    }
    let os = config.models.object_storage.clone();
    let env = store::process_env();
    let redactor = Redactor::new(&env);
    prepare_cache_dir(config)?;
    let mut repos = Vec::new();
    for (model, url, local) in remotes {
        let ep = store::endpoint(&url, &env);
        let client = store::build(&url, &env, &os)
            .map_err(|e| anyhow::anyhow!("{url}: {}", redactor.clean(&format!("{e:#}"))))?;
        tracing::info!(model, url = %url, endpoint = %ep.url, cache = %local.display(), "remote repository");
        repos.push(sync::Repo {
            model,
            url,
            store: client,
            local,
        });
    }
    let plan = sandbox_plan(config, &env)?;
    let ports = plan.connect_ports.clone();
    let report = sandbox::enter(&plan)?;
    tracing::info!(
        uid = report.uid,
        gid = report.gid,
        landlock = %report.landlock,
        seccomp = %report.seccomp,
        connect_ports = ?ports,
        "fetcher sandbox entered"
    );
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(config, os, repos, redactor))
}

async fn serve(
    config: &Config,
    os: warden_shared::config::ObjectStorageConfig,
    repos: Vec<sync::Repo>,
    redactor: Redactor,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut cache = sync::Cache::open(&os.cache_dir)?;
    let bounds = sync::Bounds {
        max_bytes: os.max_repository_bytes,
        max_files: os.max_repository_files,
    };
    let problems = pass(&mut cache, &repos, bounds, &redactor).await;
    if let Some(first) = problems.first() {
        anyhow::bail!("the first fetch failed: {first}");
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}")?;
        out.flush()?;
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let poll = config.models.file_system_poll_wait_seconds;
    loop {
        tokio::select! {
            _ = async {
                if poll == 0 {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(std::time::Duration::from_secs(poll)).await
                }
            } => {}
            _ = hup.recv() => tracing::info!("SIGHUP: fetching the remote repositories"),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        pass(&mut cache, &repos, bounds, &redactor).await;
    }
    tracing::info!("fetcher stopped");
    Ok(())
}

/// One pass over every repository: list them all, check the bounds over all, then
/// bring each cache folder in step. Returns the problems (already logged).
async fn pass(
    cache: &mut sync::Cache,
    repos: &[sync::Repo],
    bounds: sync::Bounds,
    redactor: &Redactor,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut listings = Vec::new();
    for r in repos {
        match sync::list(r).await {
            Ok(l) if l.is_empty() => {
                problems.push(format!("{}: no version folder (1/, 2/, ...) found", r.url));
                listings.push(None);
            }
            Ok(l) => listings.push(Some(l)),
            Err(e) => {
                problems.push(redactor.clean(&format!("{e:#}")));
                listings.push(None);
            }
        }
    }
    let all: Vec<&sync::Listing> = listings.iter().flatten().collect();
    if let Err(e) = sync::check_bounds(&all, bounds) {
        problems.push(format!("{e:#}"));
    } else {
        for (r, l) in repos.iter().zip(&listings) {
            let Some(l) = l else { continue };
            match cache.apply(r, l).await {
                Ok(o) => {
                    if !o.published.is_empty() || !o.retired.is_empty() {
                        tracing::info!(model = %r.model, url = %r.url, published = ?o.published, retired = ?o.retired, "cache updated");
                    }
                    for (v, why) in o.failed {
                        problems.push(format!(
                            "{} version {v} not fetched (the cached copy, if any, keeps serving): {}",
                            r.url,
                            redactor.clean(&why)
                        ));
                    }
                }
                Err(e) => {
                    problems.push(format!("{}: {}", r.url, redactor.clean(&format!("{e:#}"))))
                }
            }
        }
    }
    for p in &problems {
        tracing::error!("{p}");
    }
    problems
}

/// For `warden check`: what each remote repository would fetch, and whether the
/// credentials work (a listing is made); never a secret.
pub fn describe(config: &Config) -> anyhow::Result<(String, usize)> {
    let remotes = remotes(config)?;
    let mut out = String::new();
    let mut problems = 0;
    if remotes.is_empty() {
        return Ok((out, 0));
    }
    let os = &config.models.object_storage;
    let env = store::process_env();
    let redactor = Redactor::new(&env);
    out += &format!(
        "object storage: fetched by `warden fetcher` (uid {}) into {} (bounds {} B, {} objects; timeout {}s, {} retries)\n",
        os.uid,
        os.cache_dir.display(),
        os.max_repository_bytes,
        os.max_repository_files,
        os.timeout_secs,
        os.retries
    );
    let names: Vec<&String> = env.keys().collect();
    out += &format!(
        "         credentials from the environment: {}\n",
        if names.is_empty() {
            "none (instance or workload identity)".to_string()
        } else {
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut listings = Vec::new();
    for (model, url, local) in &remotes {
        let ep = store::endpoint(url, &env);
        let line = match store::build(url, &env, os) {
            Err(e) => {
                problems += 1;
                format!("ERROR {}", redactor.clean(&format!("{e:#}")))
            }
            Ok(client) => {
                let repo = sync::Repo {
                    model: model.clone(),
                    url: url.clone(),
                    store: Arc::clone(&client),
                    local: local.clone(),
                };
                match rt.block_on(sync::list(&repo)) {
                    Ok(l) => {
                        let files: usize = l.values().map(Vec::len).sum();
                        let bytes: u64 = l.values().flatten().map(|e| e.size).sum();
                        let versions: Vec<String> = l.keys().map(u64::to_string).collect();
                        let text = format!(
                            "credentials OK; would fetch versions [{}] ({files} objects, {bytes} B)",
                            versions.join(", ")
                        );
                        listings.push(l);
                        text
                    }
                    Err(e) => {
                        problems += 1;
                        format!("ERROR {}", redactor.clean(&format!("{e:#}")))
                    }
                }
            }
        };
        out += &format!(
            "  {model:<20} {url} via {} -> {}: {line}\n",
            ep.url,
            local.display()
        );
    }
    let all: Vec<&sync::Listing> = listings.iter().collect();
    if let Err(e) = sync::check_bounds(
        &all,
        sync::Bounds {
            max_bytes: os.max_repository_bytes,
            max_files: os.max_repository_files,
        },
    ) {
        problems += 1;
        out += &format!("         ERROR {e}\n");
    }
    Ok((out, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let env: store::Env = [
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("AWS_REGION", "eu-west-1"),
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                "AccountName=acct;AccountKey=c2VjcmV0a2V5;BlobEndpoint=http://h:1/acct",
            ),
            ("AZURE_STORAGE_SAS_TOKEN", "sv=2022&sig=abcdef%2Bxyz"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = Redactor::new(&env);
        let text = "GET http://h/c?sv=2022&sig=abcdef%2Bxyz failed; key c2VjcmV0a2V5, secret wJalrXUtnFEMI/K7MDENG, region eu-west-1, endpoint http://h:1/acct";
        let clean = r.clean(text);
        for s in ["abcdef%2Bxyz", "c2VjcmV0a2V5", "wJalrXUtnFEMI/K7MDENG"] {
            assert!(!clean.contains(s), "{clean}");
        }
        assert!(clean.contains("eu-west-1"), "{clean}");
        assert!(clean.contains("http://h:1/acct"), "{clean}");
    }
}
