//! Landlock with the ABI pinned: a newer kernel does not silently widen or narrow what
//! this code asked for, and an older one that cannot enforce it stops the start.

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use std::path::PathBuf;

/// The Landlock ABI this code was written and tested against (kernel 6.12+).
pub const LANDLOCK_ABI: ABI = ABI::V6;

/// Restricts the calling thread (and its future threads) to reading `read_only`.
/// Returns a one-line description of what is enforced.
pub fn restrict(read_only: &[PathBuf], insecure: bool) -> Result<String, String> {
    let level = if insecure {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let abi = LANDLOCK_ABI;
    let read = AccessFs::from_read(abi);
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(|e| e.to_string())?
        .scope(Scope::from_all(abi))
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    for path in read_only {
        // A path that does not exist on this host (say /lib64) grants nothing.
        let Ok(fd) = PathFd::new(path) else { continue };
        let access = if path.is_dir() {
            read
        } else {
            read & AccessFs::from_file(abi)
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("rule for {}: {e}", path.display()))?;
    }
    let status = ruleset.restrict_self().map_err(|e| e.to_string())?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(format!("enforced (ABI {})", abi as i32)),
        RulesetStatus::PartiallyEnforced if insecure => {
            Ok("PARTIALLY enforced (--insecure-allow-unenforced-sandbox)".into())
        }
        RulesetStatus::NotEnforced if insecure => {
            Ok("NOT enforced (--insecure-allow-unenforced-sandbox)".into())
        }
        other => Err(format!(
            "kernel enforces the ruleset only as {other:?}; refusing to start"
        )),
    }
}
