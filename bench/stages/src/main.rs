//! `warden-stages --config warden.toml`: the gateway and the backend in ONE process,
//! neither in its sandbox, for counting instructions per request under valgrind
//! (`bench/bench.py --only instructions`).
//!
//! Why a separate program: valgrind translates code at run time and so needs
//! executable mappings (PROT_EXEC), which the gateway's seccomp policy forbids, and the
//! sandboxes are never switched off in the `warden` binary or its configuration. This
//! program is not built into that binary and is not shipped; it calls the very wiring
//! `warden gateway` and `warden backend` use ([`warden_gateway::wire`],
//! [`warden_backend::wire`]), skipping only the step that enters the sandbox, so the
//! instructions it counts are those of the served request path. One process also lets
//! one callgrind run count both sides of the Unix socket.
//!
//! Runs as whoever starts it (the bench runs it as root: it never drops privileges),
//! until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use warden_shared::config::Config;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let path: PathBuf = match std::env::args_os().skip(1).collect::<Vec<_>>().as_slice() {
        [flag, path] if flag == "--config" => path.into(),
        _ => anyhow::bail!("usage: warden-stages --config WARDEN_TOML"),
    };
    let config = Config::from_file(&path)?;
    // `warden serve` makes the socket folder; here there is no supervisor.
    let dir = &config.backend.socket_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;

    // The backend lets only this process's own uid connect.
    let me = Some(nix::unistd::getuid().as_raw());
    let backend = warden_backend::wire(
        &config,
        &warden_backend::BackendOptions {
            gateway_uid: me,
            ..Default::default()
        },
    )?;
    let listener = backend.bind()?;
    let gateway = warden_gateway::wire(config.clone())?;
    let audit = warden_gateway::open_audit(&config)?;
    let backend = std::thread::Builder::new()
        .name("backend".into())
        .spawn(move || backend.serve(Some(listener)))?;
    let served = warden_gateway::serve(gateway, audit);
    // The backend stops on the same signal.
    let stopped = backend
        .join()
        .map_err(|_| anyhow::anyhow!("the backend thread panicked"))?;
    served.and(stopped)
}
