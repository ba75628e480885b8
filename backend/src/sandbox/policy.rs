//! The sandbox policy as reviewed data: `policies/sandbox.toml`, compiled in, so the
//! binary always carries the policy it was reviewed with.

use serde::Deserialize;
use std::path::PathBuf;

/// The policy text shipped with this build.
pub const EMBEDDED: &str = include_str!("../../../policies/sandbox.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOnly {
    pub path: PathBuf,
    pub why: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenySyscall {
    pub name: String,
    pub why: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    #[serde(rename = "read_only")]
    pub read_only: Vec<ReadOnly>,
    #[serde(rename = "deny_syscall")]
    pub deny_syscalls: Vec<DenySyscall>,
}

impl SandboxSpec {
    /// Parses and checks a policy: every entry has a reason, every call is known.
    pub fn parse(text: &str) -> Result<SandboxSpec, String> {
        let spec: SandboxSpec = toml::from_str(text).map_err(|e| e.to_string())?;
        for r in &spec.read_only {
            if r.why.trim().is_empty() || !r.path.is_absolute() {
                return Err(format!(
                    "read_only {}: needs an absolute path and a reason",
                    r.path.display()
                ));
            }
        }
        for d in &spec.deny_syscalls {
            if d.why.trim().is_empty() {
                return Err(format!("deny_syscall {}: needs a reason", d.name));
            }
            if super::seccomp::syscall_number(&d.name).is_none() {
                return Err(format!(
                    "deny_syscall {}: unknown system call on this architecture",
                    d.name
                ));
            }
        }
        Ok(spec)
    }

    /// The policy compiled into this binary.
    pub fn embedded() -> Result<SandboxSpec, String> {
        SandboxSpec::parse(EMBEDDED).map_err(|e| format!("policies/sandbox.toml: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_is_valid_and_complete() {
        let spec = SandboxSpec::embedded().unwrap();
        let denied: Vec<&str> = spec.deny_syscalls.iter().map(|d| d.name.as_str()).collect();
        // The floor the sandbox must hold (see the sandbox issue and DESIGN.md).
        for must in [
            "execve",
            "execveat",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "pivot_root",
            "bpf",
            "keyctl",
            "add_key",
            "perf_event_open",
            "kexec_load",
            "init_module",
        ] {
            assert!(denied.contains(&must), "{must} must be denied");
        }
        assert!(
            spec.read_only
                .iter()
                .all(|r| !r.path.starts_with("/etc/shadow"))
        );
    }

    #[test]
    fn unknown_calls_and_missing_reasons_are_refused() {
        assert!(
            SandboxSpec::parse(
                "read_only = []\n[[deny_syscall]]\nname = \"nosuchcall\"\nwhy = \"x\"\n"
            )
            .is_err()
        );
        assert!(
            SandboxSpec::parse("read_only = []\n[[deny_syscall]]\nname = \"execve\"\nwhy = \"\"\n")
                .is_err()
        );
        assert!(
            SandboxSpec::parse(
                "deny_syscall = []\n[[read_only]]\npath = \"relative\"\nwhy = \"x\"\n"
            )
            .is_err()
        );
    }
}
