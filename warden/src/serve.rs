//! `warden serve`: a small supervisor, like OpenSSH's privileged monitor. It prepares
//! the socket directory, starts the gateway and the backend as child processes of the
//! same binary, restarts the backend with backoff when it dies, and forwards signals.
//! It never opens a network socket and never touches a request byte: it is the only
//! part that keeps root, so that a backend restarted later can still become uid 5000.

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use warden_shared::config::Config;

/// First delay before restarting a crashed backend; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A backend that ran this long before dying restarts at [`MIN_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long children get to finish in-flight work after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Creates the socket directory so that only the two service users can enter it:
/// owner = backend uid (it creates the socket), group = gateway gid with the setgid bit
/// (the socket inherits that group, so the gateway may connect), mode 02750; 0700 when
/// not started as root.
///
/// Safely: the last component is opened with O_NOFOLLOW|O_DIRECTORY (a symlink planted
/// there is refused, not followed), ownership and mode are checked and changed through
/// that descriptor (fstat/fchown/fchmod: no window in which the path can be swapped),
/// and a directory that already belongs to another unprivileged user is refused.
pub fn prepare_socket_dir(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = &config.backend.socket_dir;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => {
                anyhow::anyhow!("socket directory {} is a symlink; refused", dir.display())
            }
            Some(nix::libc::ENOTDIR) => {
                anyhow::anyhow!("socket directory {} is not a directory", dir.display())
            }
            _ => anyhow::Error::new(e).context(format!("cannot open {}", dir.display())),
        })?;
    let m = handle.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    if ![0, me, config.backend.uid].contains(&m.uid()) {
        anyhow::bail!(
            "socket directory {} belongs to uid {}, not to root or the backend; refused",
            dir.display(),
            m.uid()
        );
    }
    if nix::unistd::getuid().is_root() {
        std::os::unix::fs::fchown(&handle, Some(config.backend.uid), Some(config.gateway.gid))?;
        handle.set_permissions(std::fs::Permissions::from_mode(0o2750))?;
    } else {
        handle.set_permissions(std::fs::Permissions::from_mode(0o700))?;
    }
    let m = handle.metadata()?;
    tracing::info!(dir = %dir.display(), mode = format!("{:o}", m.mode() & 0o7777), uid = m.uid(), gid = m.gid(), "socket directory ready");
    Ok(())
}

/// Buffers of 1 MiB and more (request bodies, the frames forwarding them) get their own
/// mappings, unmapped when the request ends. glibc's default raises that threshold each
/// time such a block is freed, up to 32 MiB, after which large bodies come from the heap
/// and a flood of uploads leaves its peak resident for good (bench/: 400 MiB after a
/// flood of 16 MB requests, 43 MiB with this). Setting it also stops the raising. A
/// `GLIBC_TUNABLES` in the environment is left as it is.
pub const GATEWAY_MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=1048576";

/// Removes the cloud credentials (and every variable that selects them) from a child's
/// environment: only the fetcher gets them. The sandbox clears a process's environment
/// too, but /proc/<pid>/environ keeps the one it started with; this keeps the secrets
/// out of that as well.
pub fn scrub_cloud_env(cmd: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(warden_shared::remote::is_cloud_env)
        {
            cmd.env_remove(&name);
        }
    }
}

fn spawn(
    role: &str,
    args: &[OsString],
    pipe_stderr: bool,
    env: &[(&str, String)],
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the warden executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg(role)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if role != "fetcher" {
        scrub_cloud_env(cmd.as_std_mut());
    }
    if role == "gateway" && std::env::var_os("GLIBC_TUNABLES").is_none() {
        cmd.env("GLIBC_TUNABLES", GATEWAY_MALLOC_TUNABLES);
    }
    if role == "fetcher" {
        // Its standard output says when the first fetch is complete; its logs go to
        // our standard error.
        cmd.stdout(Stdio::piped());
    }
    if pipe_stderr {
        // The backend sets RLIMIT_FSIZE to 0; relaying its output through a pipe keeps
        // its logs flowing even when our own stderr is a regular file.
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start the {role}"))?;
    if pipe_stderr {
        if let Some(mut out) = child.stdout.take() {
            tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::stdout()).await });
        }
        if let Some(mut err) = child.stderr.take() {
            tokio::spawn(async move { tokio::io::copy(&mut err, &mut tokio::io::stderr()).await });
        }
    }
    tracing::info!(role, pid = child.id(), "started");
    Ok(child)
}

fn signal_child(child: &Child, sig: Signal) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

async fn stop(child: &mut Child) -> Option<ExitStatus> {
    signal_child(child, Signal::SIGTERM);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// What a root supervisor needs to start its children as the service users: the socket
/// directory's owner, group and setgid bit (CHOWN, FOWNER, FSETID), the children's
/// switch to their uid and gid with an empty bounding set (SETUID, SETGID, SETPCAP), and
/// signals to children that run under other uids (KILL). Bit numbers of capability.h.
const ROOT_CAPS: [(&str, u32); 7] = [
    ("CHOWN", 0),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
];

/// The capabilities of [`ROOT_CAPS`] missing from `CapEff` of /proc/self/status text.
fn missing_root_caps(status: &str) -> Vec<&'static str> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    ROOT_CAPS
        .iter()
        .filter(|(_, bit)| eff & (1 << bit) == 0)
        .map(|(name, _)| *name)
        .collect()
}

/// Started as root (a container run with `--user 0`), the supervisor must be able to
/// make its children the service users; without the capabilities for it, refuse at once
/// with the reason rather than fail half-way (or run a child as root).
fn check_root_capabilities() -> anyhow::Result<()> {
    if !nix::unistd::getuid().is_root() {
        return Ok(());
    }
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let missing = missing_root_caps(&status);
    if !missing.is_empty() {
        anyhow::bail!(
            "started as root without the capabilities to switch to the service users (missing {}); \
             run as a non-root uid (e.g. --user 5000:5000, with --cap-drop ALL) or keep \
             CHOWN, FOWNER, FSETID, SETUID, SETGID, SETPCAP and KILL",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Starts the fetcher and waits for its first complete fetch, so the backend starts
/// with every remote repository in the cache. A fetcher that exits instead (wrong
/// credentials, an unreachable endpoint, a refused key) stops the start with its
/// reason (which it logged).
async fn start_fetcher(args: &[OsString]) -> anyhow::Result<Child> {
    use tokio::io::AsyncBufReadExt;
    let mut child = spawn("fetcher", args, false, &[])?;
    let out = child.stdout.take().context("fetcher stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    loop {
        match lines.next_line().await? {
            Some(line) if line == warden_fetcher::READY => break,
            Some(line) => println!("{line}"),
            None => {
                let status = child.wait().await?;
                anyhow::bail!(
                    "the object-storage fetcher failed before its first fetch was complete ({status}); see its error above"
                );
            }
        }
    }
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
        }
    });
    tracing::info!("remote model repositories fetched");
    Ok(child)
}

/// Waits for `child` if there is one; never otherwise.
async fn wait_opt(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Runs the supervisor until SIGTERM/SIGINT or until the gateway exits.
pub fn run(config: &Config, child_args: Vec<OsString>) -> anyhow::Result<i32> {
    config.validate()?;
    check_root_capabilities()?;
    prepare_socket_dir(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(supervise(child_args, warden_fetcher::needed(config)))
}

async fn supervise(args: Vec<OsString>, fetch: bool) -> anyhow::Result<i32> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut fetcher = if fetch {
        Some(start_fetcher(&args).await?)
    } else {
        None
    };
    let mut fetcher_backoff = MIN_BACKOFF;
    // The backend reports how often it was restarted (`warden_backend_restarts_total`).
    let mut restarts: u64 = 0;
    let restarts_env = |n: u64| [(warden_shared::wire::BACKEND_RESTARTS_ENV, n.to_string())];
    let mut backend = spawn("backend", &args, true, &restarts_env(restarts))?;
    let mut gateway = spawn("gateway", &args, false, &[])?;
    let mut backend_started = Instant::now();
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::select! {
            status = backend.wait() => {
                let ran = backend_started.elapsed();
                tracing::error!(status = ?status.ok(), ran_ms = ran.as_millis() as u64, "backend exited; restarting");
                if ran >= HEALTHY_RUN { backoff = MIN_BACKOFF; }
                // Keep serving signals while waiting, so a stop is never delayed.
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = term.recv() => { stop(&mut gateway).await; return Ok(0); }
                    _ = int.recv() => { stop(&mut gateway).await; return Ok(0); }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                restarts += 1;
                backend = spawn("backend", &args, true, &restarts_env(restarts))?;
                backend_started = Instant::now();
            }
            status = wait_opt(&mut fetcher) => {
                // The cache keeps serving what it holds; the fetcher comes back and
                // resumes polling.
                tracing::error!(status = ?status.ok(), "fetcher exited; restarting (the cached models keep serving)");
                tokio::time::sleep(fetcher_backoff).await;
                fetcher_backoff = (fetcher_backoff * 2).min(MAX_BACKOFF);
                fetcher = Some(spawn("fetcher", &args, false, &[])?);
            }
            status = gateway.wait() => {
                let status = status?;
                tracing::error!(?status, "gateway exited; stopping the backend");
                stop(&mut backend).await;
                if let Some(f) = fetcher.as_mut() {
                    stop(f).await;
                }
                return Ok(status.code().unwrap_or(1).max(1));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // Both reload: the gateway its certificate, keys and policy, the
                // backend its model repository.
                signal_child(&gateway, Signal::SIGHUP);
                signal_child(&backend, Signal::SIGHUP);
                if let Some(f) = &fetcher {
                    signal_child(f, Signal::SIGHUP);
                }
            }
        }
    }
    tracing::info!("stopping");
    // The gateway first: it drains calls in flight, which need the backend until done.
    let g = stop(&mut gateway).await;
    let b = stop(&mut backend).await;
    if let Some(f) = fetcher.as_mut() {
        stop(f).await;
    }
    tracing::info!(gateway = ?g, backend = ?b, "stopped");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::missing_root_caps;

    #[test]
    fn root_capabilities_are_read_from_cap_eff() {
        // Docker's and podman's default set as root: all seven present.
        assert!(missing_root_caps("Name:\twarden\nCapEff:\t00000000a80425fb\n").is_empty());
        // --cap-drop ALL.
        assert_eq!(
            missing_root_caps("CapEff:\t0000000000000000\n"),
            [
                "CHOWN", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP"
            ]
        );
        // Everything but SETPCAP (bit 8).
        assert_eq!(
            missing_root_caps("CapEff:\t00000000000000f9\n"),
            ["SETPCAP"]
        );
        // Unreadable: nothing is assumed.
        assert_eq!(missing_root_caps("").len(), 7);
    }
}
