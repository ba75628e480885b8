//! Warden's process sandbox, shared by the gateway and the backend: one linear function,
//! [`enter`], takes a process from "just started, maybe as root" to "no inherited
//! descriptors or environment, bounded resources, its own uid with no capability,
//! not dumpable, no_new_privs, a Landlock file-system view, a seccomp allow-list".
//! Each step has its own error variant, so a failed start says exactly which
//! protection the kernel refused.
//!
//! INVARIANT (the caller's): [`enter`] runs before any thread is spawned. Capabilities,
//! Landlock and seccomp apply to the calling thread and the threads it creates later;
//! a thread started before would keep none of them.
//!
//! `unsafe` is confined to [`sys`].

mod landlock;
mod seccomp;
pub mod sys;
mod syscalls;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{Gid, Uid};
use std::path::PathBuf;

pub use self::landlock::{LANDLOCK_ABI, kernel_abi};
pub use self::seccomp::{Allow, Errno, Kill, Policy, ReadOnly};

/// How strictly the kernel must enforce Landlock and seccomp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Refuse to start unless every restriction is fully enforced (production).
    Required,
    /// Dev only (`--insecure-allow-unenforced-sandbox`): carry on, and say so, when the
    /// kernel cannot enforce Landlock or seccomp.
    BestEffort,
}

/// Which inherited descriptors survive step 1.
#[derive(Debug, Clone)]
pub enum Fds {
    /// Close every descriptor from 3 upwards.
    CloseFrom3,
    /// Close every descriptor from 3 upwards but these (the caller's own listeners and
    /// files, opened before entering; all CLOEXEC).
    CloseFrom3Except(Vec<i32>),
    /// The caller ran [`close_inherited_fds`] first thing, before opening its own
    /// files; every descriptor open now is its own.
    ClosedAtStart,
}

/// Step 1 for a process that must open files (listeners, logs) before entering the
/// sandbox: call it before opening anything.
pub fn close_inherited_fds() -> Result<(), SandboxError> {
    sys::close_fds_from_3().map_err(SandboxError::CloseFds)
}

/// Resource limits, soft = hard, so the process cannot raise them again.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_NPROC: processes and threads of the process's (real) uid.
    pub processes: u64,
    /// RLIMIT_FSIZE: `Some(0)` forbids growing any file; `None` leaves it as it is.
    pub file_size: Option<u64>,
}

/// Everything a sandbox is built from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// uid/gid to become when started as root.
    pub uid: u32,
    pub gid: u32,
    pub fds: Fds,
    pub limits: Limits,
    /// Files and folders readable after Landlock.
    pub read_only: Vec<PathBuf>,
    /// Folders in which files may be created, written, truncated and removed.
    pub write_dirs: Vec<PathBuf>,
    /// Folders whose whole tree may be changed: files and folders made, removed and
    /// renamed inside it (the fetcher's model cache). No links, devices or sockets.
    pub tree_dirs: Vec<PathBuf>,
    /// TCP ports the process may connect to (the fetcher's object-storage endpoints);
    /// no port may ever be bound.
    pub connect_ports: Vec<u16>,
    /// The seccomp policy (policies/*.toml).
    pub policy: Policy,
    pub enforcement: Enforcement,
}

/// What the sandbox ended up enforcing, for the start-up log.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub uid: u32,
    pub gid: u32,
    pub limits: String,
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
    #[error("sandbox: ignoring SIGXFSZ failed: {0}")]
    Signal(std::io::Error),
    #[error("sandbox: setting rlimit {what} failed: {source}")]
    Rlimit {
        what: &'static str,
        source: nix::Error,
    },
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
    #[error("{0}")]
    BeforeLandlock(std::io::Error),
    #[error("sandbox: landlock: {0}")]
    Landlock(String),
    #[error("sandbox: seccomp: {0}")]
    Seccomp(String),
}

/// Which layers [`enter_layers`] applies; [`Layers::ALL`] is what production uses. The
/// others exist so tests can show that one layer, alone, refuses an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    pub rlimits: bool,
    pub identity: bool,
    /// PR_SET_DUMPABLE 0.
    pub dumpable: bool,
    pub landlock: bool,
    pub seccomp: bool,
}

impl Layers {
    pub const ALL: Layers = Layers {
        rlimits: true,
        identity: true,
        dumpable: true,
        landlock: true,
        seccomp: true,
    };
    pub const NONE: Layers = Layers {
        rlimits: false,
        identity: false,
        dumpable: false,
        landlock: false,
        seccomp: false,
    };
}

/// Enters the sandbox. `before_landlock` runs after the identity change and before the
/// file-system restriction: the backend binds its socket there, so the socket is owned
/// by the unprivileged uid and no later step needs write access anywhere.
pub fn enter(
    plan: &Plan,
    before_landlock: impl FnOnce() -> std::io::Result<()>,
) -> Result<Report, SandboxError> {
    enter_layers(plan, Layers::ALL, before_landlock)
}

/// [`enter`] with a choice of layers (tests). Step 1 (descriptors, environment) and
/// no_new_privs always run.
pub fn enter_layers(
    plan: &Plan,
    layers: Layers,
    before_landlock: impl FnOnce() -> std::io::Result<()>,
) -> Result<Report, SandboxError> {
    let mut report = Report::default();

    // 1. Nothing inherited: no stray descriptor (a parent's socket, a key file) and no
    //    environment (LD_PRELOAD, proxies, secrets) survives into the sandboxed process.
    match &plan.fds {
        Fds::CloseFrom3 => sys::close_fds_from_3(),
        Fds::CloseFrom3Except(keep) => sys::close_fds_except(keep),
        Fds::ClosedAtStart => Ok(()),
    }
    .map_err(SandboxError::CloseFds)?;
    sys::clear_env();

    // 2. Resource limits, soft = hard: no core dumps (they would hold tensors, keys and
    //    tokens), a bounded number of descriptors and of threads, no file growth where
    //    the process writes nothing.
    if layers.rlimits {
        sys::ignore_sigxfsz().map_err(SandboxError::Signal)?;
        // Only a process with CAP_SYS_RESOURCE may raise a hard limit (root in a
        // container often lacks it): any other gets at most its current hard limit
        // (it can still lower it).
        let privileged = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .map_err(SandboxError::Caps)?;
        let lim = |what, res, v: u64| {
            let v = match getrlimit(res) {
                Ok((_, hard)) if !privileged && v > hard => hard,
                _ => v,
            };
            setrlimit(res, v, v).map_err(|source| SandboxError::Rlimit { what, source })?;
            Ok::<u64, SandboxError>(v)
        };
        lim("CORE", Resource::RLIMIT_CORE, 0)?;
        if let Some(size) = plan.limits.file_size {
            lim("FSIZE", Resource::RLIMIT_FSIZE, size)?;
        }
        let files = lim("NOFILE", Resource::RLIMIT_NOFILE, plan.limits.open_files)?;
        let procs = lim("NPROC", Resource::RLIMIT_NPROC, plan.limits.processes)?;
        report.limits = format!(
            "core 0, open files {files}, processes {procs}, file size {}",
            plan.limits
                .file_size
                .map_or("unchanged".to_string(), |s| s.to_string())
        );
    }

    // 3. Identity. The bounding set can only be dropped while CAP_SETPCAP is held, so it
    //    goes first; then groups, gid, uid (uid last: it removes the right to change the
    //    others); then every remaining capability set, checked empty.
    if layers.identity {
        if nix::unistd::getuid().is_root() {
            caps::clear(None, caps::CapSet::Bounding).map_err(SandboxError::BoundingSet)?;
            report.bounding_set_cleared = true;
            nix::unistd::setgroups(&[]).map_err(SandboxError::Groups)?;
            let gid = Gid::from_raw(plan.gid);
            nix::unistd::setresgid(gid, gid, gid).map_err(|source| SandboxError::Gid {
                gid: plan.gid,
                source,
            })?;
            let uid = Uid::from_raw(plan.uid);
            nix::unistd::setresuid(uid, uid, uid).map_err(|source| SandboxError::Uid {
                uid: plan.uid,
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
        let mut left = caps::read(None, caps::CapSet::Permitted).map_err(SandboxError::Caps)?;
        left.extend(caps::read(None, caps::CapSet::Ambient).map_err(SandboxError::Caps)?);
        if !left.is_empty() {
            return Err(SandboxError::CapsRemain(format!("{left:?}")));
        }
    }

    // 4. Not dumpable (no core, no ptrace by same-uid processes, /proc/self owned by
    //    root) and no_new_privs (no setuid binary or file capability can add privilege;
    //    also what lets an unprivileged process install seccomp filters).
    if layers.dumpable {
        nix::sys::prctl::set_dumpable(false).map_err(SandboxError::Dumpable)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
    report.uid = nix::unistd::getuid().as_raw();
    report.gid = nix::unistd::getgid().as_raw();

    before_landlock().map_err(SandboxError::BeforeLandlock)?;

    // 5. Landlock: read-only where the policy says, writes only in `write_dirs` and
    //    `tree_dirs`, no TCP bind, TCP connect only to `connect_ports`, abstract sockets
    //    and signals scoped to the sandbox.
    report.landlock = if layers.landlock {
        self::landlock::restrict(plan).map_err(SandboxError::Landlock)?
    } else {
        "off".into()
    };

    // 6. seccomp last, so the steps above may still use the calls it forbids.
    report.seccomp = if layers.seccomp {
        match plan.policy.install() {
            Ok(s) => s,
            Err(e) if plan.enforcement == Enforcement::BestEffort => {
                format!("NOT installed: {e} (--insecure-allow-unenforced-sandbox)")
            }
            Err(e) => return Err(SandboxError::Seccomp(e)),
        }
    } else {
        "off".into()
    };
    Ok(report)
}
