//! The gateway gives up root once its ports are bound and its keys are read: it runs
//! as its own uid with no capabilities and no_new_privs, so a compromise of the
//! network-facing process gains nothing beyond what that uid may do.

use nix::unistd::{Gid, Uid};

/// Why dropping privileges failed; the gateway refuses to serve in that case.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("dropping the capability bounding set failed: {0}")]
    BoundingSet(caps::errors::CapsError),
    #[error("dropping supplementary groups failed: {0}")]
    Groups(nix::Error),
    #[error("switching to gid {0} failed: {1}")]
    Gid(u32, nix::Error),
    #[error("switching to uid {0} failed: {1}")]
    Uid(u32, nix::Error),
    #[error("clearing capabilities failed: {0}")]
    Caps(caps::errors::CapsError),
    #[error("PR_SET_NO_NEW_PRIVS failed: {0}")]
    NoNewPrivs(nix::Error),
}

/// Drops to `uid:gid` when root; in every case clears capabilities and sets
/// no_new_privs. Must run before any thread is started: capabilities are per thread.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<bool, PrivilegeError> {
    let root = nix::unistd::getuid().is_root();
    if root {
        caps::clear(None, caps::CapSet::Bounding).map_err(PrivilegeError::BoundingSet)?;
        nix::unistd::setgroups(&[]).map_err(PrivilegeError::Groups)?;
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(|e| PrivilegeError::Gid(gid, e))?;
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u).map_err(|e| PrivilegeError::Uid(uid, e))?;
    }
    for set in [
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(PrivilegeError::Caps)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?;
    Ok(root)
}

/// What the gateway still needs after start-up: to read its certificates, keys and
/// policy again (for reloads) and to append to the audit log. Everything else on the
/// file system is closed to it, it cannot connect or bind any TCP port (so a bug cannot
/// be turned into a request to an internal service), and it can signal or reach
/// abstract sockets only inside its own sandbox. Runs before any thread is started.
pub fn restrict(
    read: &[std::path::PathBuf],
    write_dirs: &[std::path::PathBuf],
    insecure: bool,
) -> Result<String, String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
    };
    let abi = ABI::V6;
    let level = if insecure {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let e = |e: landlock::RulesetError| e.to_string();
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(e)?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(e)?
        .scope(Scope::from_all(abi))
        .map_err(e)?
        .create()
        .map_err(e)?;
    let read_access = AccessFs::from_read(abi);
    let write_access = read_access
        | AccessFs::WriteFile
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
        | AccessFs::Truncate;
    for (paths, access) in [(read, read_access), (write_dirs, write_access)] {
        for p in paths {
            let Ok(fd) = PathFd::new(p) else { continue };
            let a = if p.is_dir() {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, a)).map_err(e)?;
        }
    }
    let status = ruleset.restrict_self().map_err(e)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("enforced (ABI 6)".into()),
        other if insecure => Ok(format!("{other:?} (--insecure-allow-unenforced-sandbox)")),
        other => Err(format!(
            "kernel enforces the gateway's ruleset only as {other:?}; refusing to start"
        )),
    }
}
