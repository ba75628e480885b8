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
