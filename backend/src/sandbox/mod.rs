//! The backend's sandbox: [`warden_sandbox::enter`] with the backend's plan. The policy
//! (read-only system paths and the seccomp allow-list) is `policies/sandbox.toml`,
//! compiled in, so the binary always carries the policy it was reviewed with.
//!
//! INVARIANT: [`enter`] runs before any thread is spawned and before any byte of a model
//! or of the model repository is read.

use std::path::PathBuf;
pub use warden_sandbox::{
    Enforcement, LANDLOCK_ABI, Layers, Policy, Report, SandboxError, enter_layers,
};
use warden_sandbox::{Fds, Limits, Plan};

/// The policy text shipped with this build.
pub const EMBEDDED: &str = include_str!("../../../policies/sandbox.toml");

/// Open files the backend may hold (the socket, its connections, model files, libraries).
pub const MAX_OPEN_FILES: u64 = 4096;
/// Processes and threads of the backend's uid (OpenVINO starts one per core and stream,
/// tokio a few, the blocking pool up to its limit).
pub const MAX_PROCESSES: u64 = 1024;

/// The policy compiled into this binary.
pub fn policy() -> Result<Policy, String> {
    Policy::parse(EMBEDDED).map_err(|e| format!("policies/sandbox.toml: {e}"))
}

/// The backend's plan: its uid, every descriptor closed, no file growth (it writes
/// nothing), read-only access to `read_only` plus the policy's system paths.
pub fn plan(
    uid: u32,
    gid: u32,
    mut read_only: Vec<PathBuf>,
    enforcement: Enforcement,
) -> Result<Plan, String> {
    let policy = policy()?;
    read_only.extend(policy.read_only.iter().map(|r| r.path.clone()));
    Ok(Plan {
        uid,
        gid,
        fds: Fds::CloseFrom3,
        limits: Limits {
            open_files: MAX_OPEN_FILES,
            processes: MAX_PROCESSES,
            file_size: Some(0),
        },
        read_only,
        write_dirs: vec![],
        tree_dirs: vec![],
        connect_ports: vec![],
        policy,
        enforcement,
    })
}

/// Enters the backend's sandbox; `before_landlock` binds the socket.
pub fn enter(
    plan: &Plan,
    before_landlock: impl FnOnce() -> std::io::Result<()>,
) -> Result<Report, SandboxError> {
    warden_sandbox::enter(plan, before_landlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_is_valid_and_refuses_the_floor() {
        let p = policy().unwrap_or_else(|e| panic!("{e}"));
        let allowed: Vec<&str> = p.allow.iter().map(|a| a.name.as_str()).collect();
        let killed: Vec<&str> = p.killed().collect();
        // The floor (the sandbox issue and DESIGN.md): never allowed, always killed.
        for must in [
            "execve",
            "execveat",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "bpf",
            "keyctl",
            "add_key",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
        ] {
            assert!(!allowed.contains(&must), "{must} must not be allowed");
            assert!(killed.contains(&must), "{must} must be on the kill list");
        }
        for never in ["setuid", "setresuid", "setgroups", "capset", "socket_inet"] {
            assert!(!allowed.contains(&never), "{never} must not be allowed");
        }
        // socket() only for AF_UNIX, clone() never with a namespace flag.
        let socket = p.allow.iter().find(|a| a.name == "socket").expect("socket");
        assert_eq!(socket.values, ["AF_UNIX"]);
        let clone = p.allow.iter().find(|a| a.name == "clone").expect("clone");
        for ns in [
            "CLONE_NEWUSER",
            "CLONE_NEWNET",
            "CLONE_NEWNS",
            "CLONE_NEWPID",
        ] {
            assert!(clone.clear.iter().any(|c| c == ns), "{ns}");
        }
        assert!(
            p.read_only
                .iter()
                .all(|r| !r.path.starts_with("/etc/shadow"))
        );
        p.compile().unwrap_or_else(|e| panic!("{e}"));
    }
}
