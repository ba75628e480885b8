//! Landlock with the ABI pinned in this one place: a newer kernel does not silently
//! widen or narrow what Warden asks for, and an older one that cannot enforce it stops
//! the start (unless the operator chose [`Enforcement::BestEffort`]).

use crate::{Enforcement, Plan};
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, make_bitflags,
};

/// The Landlock ABI Warden is written and tested against (kernel 6.12+): file access
/// rights incl. truncate and ioctl on devices, TCP bind/connect, abstract-socket and
/// signal scoping. The only place the ABI is named.
pub const LANDLOCK_ABI: ABI = ABI::V6;

/// The Landlock ABI the running kernel offers (0: none).
pub fn kernel_abi() -> i64 {
    crate::sys::landlock_abi_version()
}

/// What `enter` needs from Landlock.
pub(crate) fn restrict(plan: &Plan) -> Result<String, String> {
    let enforcement = plan.enforcement;
    let abi = LANDLOCK_ABI;
    let level = match enforcement {
        Enforcement::Required => CompatLevel::HardRequirement,
        Enforcement::BestEffort => CompatLevel::BestEffort,
    };
    let e = |e: landlock::RulesetError| e.to_string();
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(e)?
        .handle_access(make_bitflags!(AccessNet::{BindTcp | ConnectTcp}))
        .map_err(e)?
        .scope(Scope::from_all(abi))
        .map_err(e)?
        .create()
        .map_err(e)?;
    let read = AccessFs::from_read(abi);
    // Appending to and rotating files in a folder: no folders, devices, links or sockets.
    let write = read | make_bitflags!(AccessFs::{WriteFile | MakeReg | RemoveFile | Truncate});
    // A cache tree: folders made, removed and renamed into place (Refer), files
    // written; still no links, devices, sockets or fifos.
    let tree = write | make_bitflags!(AccessFs::{MakeDir | RemoveDir | Refer});
    for (paths, access) in [
        (&plan.read_only, read),
        (&plan.write_dirs, write),
        (&plan.tree_dirs, tree),
    ] {
        for path in paths {
            // A path that does not exist on this host (say /lib64) grants nothing.
            let Ok(fd) = PathFd::new(path) else { continue };
            let a = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, a))
                .map_err(|err| format!("rule for {}: {err}", path.display()))?;
        }
    }
    for port in &plan.connect_ports {
        ruleset = ruleset
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(|err| format!("rule for TCP port {port}: {err}"))?;
    }
    let status = ruleset.restrict_self().map_err(e)?;
    match (status.ruleset, enforcement) {
        (RulesetStatus::FullyEnforced, _) => Ok(format!(
            "enforced (ABI {}, kernel offers {})",
            abi as i32,
            kernel_abi()
        )),
        (other, Enforcement::BestEffort) => Ok(format!(
            "{other:?} (--insecure-allow-unenforced-sandbox; kernel offers ABI {})",
            kernel_abi()
        )),
        (other, Enforcement::Required) => Err(format!(
            "kernel enforces the ruleset only as {other:?} (kernel ABI {}, needed {}); refusing to start",
            kernel_abi(),
            abi as i32
        )),
    }
}
