//! The backend's sandbox: one linear function, [`enter`], that takes the process from
//! "just started, maybe as root" to "no privilege, no network, read-only files, a
//! syscall filter". Each step has its own error variant so a failed start says exactly
//! which protection the kernel refused.
//!
//! INVARIANT: [`enter`] runs before any thread is spawned and before any byte of a model
//! or of the model repository is read. Landlock and seccomp apply to the calling thread
//! and to the threads it creates later, so OpenVINO's worker threads inherit all of it.

mod landlock;
pub mod policy;
mod seccomp;

use crate::sys;
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, getuid};
use std::path::PathBuf;

pub use self::landlock::LANDLOCK_ABI;

/// Open files the backend may hold (sockets, model files, libraries).
pub const MAX_OPEN_FILES: u64 = 4096;
/// Processes and threads of the backend's uid (OpenVINO starts one per core, tokio a few).
pub const MAX_PROCESSES: u64 = 1024;

/// What the sandbox is built from.
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    /// uid/gid to become when started as root.
    pub uid: u32,
    pub gid: u32,
    /// Folders and files the backend may read (model repository, runtime, system libs).
    pub read_only: Vec<PathBuf>,
    /// System calls refused with EPERM (names from policies/sandbox.toml).
    pub deny_syscalls: Vec<String>,
    /// Dev-only: carry on when the kernel cannot enforce landlock or seccomp.
    pub insecure_allow_unenforced: bool,
}

/// What the sandbox ended up enforcing, for the start-up log and readiness metadata.
#[derive(Debug, Clone, Default)]
pub struct SandboxReport {
    pub uid: u32,
    pub gid: u32,
    pub landlock: String,
    pub seccomp: String,
    pub bounding_set_cleared: bool,
    pub warnings: Vec<String>,
}

/// A step that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox: closing inherited file descriptors failed: {0}")]
    CloseFds(std::io::Error),
    #[error("sandbox: setting rlimit {what} failed: {source}")]
    Rlimit {
        what: &'static str,
        source: nix::Error,
    },
    #[error("sandbox: ignoring SIGXFSZ failed: {0}")]
    Signal(std::io::Error),
    #[error("sandbox: dropping the capability bounding set failed: {0}")]
    BoundingSet(caps::errors::CapsError),
    #[error("sandbox: dropping supplementary groups failed: {0}")]
    Groups(nix::Error),
    #[error("sandbox: switching to gid {gid} failed: {source}")]
    Gid { gid: u32, source: nix::Error },
    #[error("sandbox: switching to uid {uid} failed: {source}")]
    Uid { uid: u32, source: nix::Error },
    #[error("sandbox: clearing capabilities failed: {0}")]
    Caps(caps::errors::CapsError),
    #[error("sandbox: capabilities still present after clearing: {0}")]
    CapsRemain(String),
    #[error("sandbox: PR_SET_DUMPABLE failed: {0}")]
    Dumpable(nix::Error),
    #[error("sandbox: PR_SET_NO_NEW_PRIVS failed: {0}")]
    NoNewPrivs(nix::Error),
    #[error("sandbox: landlock: {0}")]
    Landlock(String),
    #[error("sandbox: seccomp: {0}")]
    Seccomp(String),
}

/// Enters the sandbox. `before_landlock` runs after the identity change and before the
/// file-system restriction: it is where the backend binds its socket, so the socket is
/// owned by the unprivileged uid and no later step needs write access anywhere.
pub fn enter(
    policy: &SandboxPolicy,
    before_landlock: impl FnOnce() -> std::io::Result<()>,
) -> Result<SandboxReport, BindOrSandboxError> {
    let mut report = SandboxReport::default();

    // 1. Nothing inherited: no stray descriptor (a parent's socket, a key file) and no
    //    environment (LD_PRELOAD, proxies, secrets) survives into the inference process.
    sys::close_fds_from_3().map_err(SandboxError::CloseFds)?;
    sys::clear_env();

    // 2. Resource limits: no core dumps (they would hold tensors), no file growth, a
    //    bounded number of descriptors and processes.
    sys::ignore_sigxfsz().map_err(SandboxError::Signal)?;
    let lim = |what, res, v: u64| {
        setrlimit(res, v, v).map_err(|source| SandboxError::Rlimit { what, source })
    };
    lim("CORE", Resource::RLIMIT_CORE, 0)?;
    lim("FSIZE", Resource::RLIMIT_FSIZE, 0)?;
    lim("NOFILE", Resource::RLIMIT_NOFILE, MAX_OPEN_FILES)?;
    lim("NPROC", Resource::RLIMIT_NPROC, MAX_PROCESSES)?;

    // 3. Identity. The bounding set can only be dropped while CAP_SETPCAP is held, so it
    //    goes first; then groups, gid, uid (uid last: it removes the right to change the
    //    others); then every remaining capability set.
    let started_as_root = getuid().is_root();
    if started_as_root {
        caps::clear(None, caps::CapSet::Bounding).map_err(SandboxError::BoundingSet)?;
        report.bounding_set_cleared = true;
        let gid = Gid::from_raw(policy.gid);
        nix::unistd::setgroups(&[]).map_err(SandboxError::Groups)?;
        nix::unistd::setresgid(gid, gid, gid).map_err(|source| SandboxError::Gid {
            gid: policy.gid,
            source,
        })?;
        let uid = Uid::from_raw(policy.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(|source| SandboxError::Uid {
            uid: policy.uid,
            source,
        })?;
    } else {
        report.warnings.push(
            "not started as root: uid unchanged, capability bounding set kept (no_new_privs stops it being used)"
                .into(),
        );
    }
    for set in [
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(SandboxError::Caps)?;
    }
    let left = caps::read(None, caps::CapSet::Permitted).map_err(SandboxError::Caps)?;
    if !left.is_empty() {
        return Err(SandboxError::CapsRemain(format!("{left:?}")).into());
    }
    nix::sys::prctl::set_dumpable(false).map_err(SandboxError::Dumpable)?;
    nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
    report.uid = nix::unistd::getuid().as_raw();
    report.gid = nix::unistd::getgid().as_raw();

    // The socket is bound here: as the unprivileged uid, before the file system closes.
    before_landlock().map_err(BindOrSandboxError::Bind)?;

    // 4. Landlock: read-only on the repository, the runtime and a few system files; no
    //    writes anywhere; no TCP; abstract sockets and signals scoped to the sandbox.
    report.landlock = landlock::restrict(&policy.read_only, policy.insecure_allow_unenforced)
        .map_err(SandboxError::Landlock)?;

    // 5. seccomp last, so the steps above may still use the calls it forbids.
    report.seccomp = match seccomp::install(&policy.deny_syscalls) {
        Ok(s) => s,
        Err(e) if policy.insecure_allow_unenforced => {
            format!("NOT installed: {e} (--insecure-allow-unenforced-sandbox)")
        }
        Err(e) => return Err(SandboxError::Seccomp(e).into()),
    };
    Ok(report)
}

/// Either a sandbox step or the socket bind between them failed.
#[derive(Debug, thiserror::Error)]
pub enum BindOrSandboxError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("binding the backend socket failed: {0}")]
    Bind(std::io::Error),
}
