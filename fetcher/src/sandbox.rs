//! The fetcher's sandbox: [`warden_sandbox::enter`] with its own uid (group: the
//! backend's, so the backend can read the cache), no capability, a Landlock view that
//! may write only the cache folder and connect only to the object-storage ports, and a
//! seccomp allow-list (`policies/fetcher-sandbox.toml`). Entered after the clients are
//! built (credential files read) and before any byte is fetched.

use std::path::{Path, PathBuf};
use warden_sandbox::{Enforcement, Fds, Limits, Plan, Policy, Report, SandboxError};
use warden_shared::config::Config;

/// The policy text shipped with this build.
pub const EMBEDDED: &str = include_str!("../../policies/fetcher-sandbox.toml");

/// Descriptors: connections to the endpoints, files being written, tokio's own.
pub const MAX_OPEN_FILES: u64 = 256;
/// Threads of the fetcher's uid.
pub const MAX_PROCESSES: u64 = 64;

/// The policy compiled into this binary.
pub fn policy() -> Result<Policy, String> {
    Policy::parse(EMBEDDED).map_err(|e| format!("policies/fetcher-sandbox.toml: {e}"))
}

/// The fetcher's plan: write only under the cache folder, read the policy's system
/// paths (certificates, name resolution) and the folders of token files that are
/// re-read on refresh (web identity), connect only to `ports`.
pub fn plan(config: &Config, token_files: &[&Path], ports: Vec<u16>) -> Result<Plan, String> {
    let policy = policy()?;
    let mut read_only: Vec<PathBuf> = policy.read_only.iter().map(|r| r.path.clone()).collect();
    read_only.extend(
        token_files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned)),
    );
    Ok(Plan {
        uid: config.models.object_storage.uid,
        gid: config.backend.gid,
        fds: Fds::CloseFrom3,
        limits: Limits {
            open_files: MAX_OPEN_FILES,
            processes: MAX_PROCESSES,
            file_size: None,
        },
        read_only,
        write_dirs: vec![],
        tree_dirs: vec![config.models.object_storage.cache_dir.clone()],
        connect_ports: ports,
        policy,
        enforcement: if config.backend.insecure_allow_unenforced_sandbox {
            Enforcement::BestEffort
        } else {
            Enforcement::Required
        },
    })
}

/// Enters the sandbox. INVARIANT: no thread exists yet.
pub fn enter(plan: &Plan) -> Result<Report, SandboxError> {
    warden_sandbox::enter(plan, || Ok(()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_policy_is_valid() {
        super::policy().unwrap();
    }
}
