//! The system-call filter, built from a reviewed policy file (policies/*.toml):
//!
//! - `[[allow]]`: the only calls that succeed, each with its reason; an entry may pin one
//!   argument (`arg` with `values`: it must equal one of them; with `clear`: none of
//!   those bits may be set).
//! - `[[errno]]`: calls answered with a fixed error so a library takes its fallback
//!   (clone3 -> ENOSYS makes glibc use clone, whose flags can be checked).
//! - `[[kill]]`: calls only hostile code makes; the process dies with SIGSYS, so an
//!   exploit cannot probe, and the supervisor logs and restarts it.
//! - everything else: EPERM, so a library probing for an optional feature on a path the
//!   measurement did not see gets an ordinary error instead of taking the service down.
//!
//! Before any of it: the architecture is checked (another ABI is killed) and x32 system
//! call numbers (the x86_64 ABI with bit 30 set, a second number for many calls) are
//! killed, so no call is reachable by a number the lists do not name.

use crate::syscalls::{Lookup, constant, lookup};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One allowed call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    pub name: String,
    pub why: String,
    /// Index of the filtered argument (0-5).
    #[serde(default)]
    pub arg: Option<u8>,
    /// The argument must equal one of these (constants by name, or numbers).
    #[serde(default)]
    pub values: Vec<String>,
    /// None of these bits may be set in the argument.
    #[serde(default)]
    pub clear: Vec<String>,
}

/// A call answered with a fixed error number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Errno {
    pub name: String,
    pub errno: String,
    pub why: String,
}

/// A call that kills the process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    pub name: String,
    pub why: String,
}

/// A read-only path of the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOnly {
    pub path: std::path::PathBuf,
    pub why: String,
}

/// A process's sandbox policy as reviewed data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub read_only: Vec<ReadOnly>,
    #[serde(default)]
    pub allow: Vec<Allow>,
    #[serde(default)]
    pub errno: Vec<Errno>,
    #[serde(default)]
    pub kill: Vec<Kill>,
}

fn errno_number(name: &str) -> Option<i32> {
    Some(match name {
        "ENOSYS" => libc::ENOSYS,
        "EPERM" => libc::EPERM,
        "EACCES" => libc::EACCES,
        "EINVAL" => libc::EINVAL,
        "EAFNOSUPPORT" => libc::EAFNOSUPPORT,
        _ => return None,
    })
}

/// x86_64 marks x32 system calls with this bit (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

impl Policy {
    /// Parses and checks a policy: every entry has a reason, every name and constant is
    /// known, no call is on two lists.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for r in &p.read_only {
            if r.why.trim().is_empty() || !r.path.is_absolute() {
                return Err(format!(
                    "read_only {}: needs an absolute path and a reason",
                    r.path.display()
                ));
            }
        }
        let entries = p
            .allow
            .iter()
            .map(|a| ("allow", a.name.as_str(), a.why.as_str()))
            .chain(
                p.errno
                    .iter()
                    .map(|e| ("errno", e.name.as_str(), e.why.as_str())),
            )
            .chain(
                p.kill
                    .iter()
                    .map(|k| ("kill", k.name.as_str(), k.why.as_str())),
            );
        for (list, name, why) in entries {
            if why.trim().is_empty() {
                return Err(format!("{list} {name}: needs a reason (why)"));
            }
            if lookup(name) == Lookup::Unknown {
                return Err(format!("{list} {name}: unknown system call"));
            }
            if let Some(other) = seen.insert(name, list)
                && (other != "allow" || list != "allow")
            {
                return Err(format!("{name} is on the {other} and the {list} list"));
            }
        }
        for a in &p.allow {
            match (a.arg, a.values.is_empty(), a.clear.is_empty()) {
                (None, true, true) => {}
                (Some(i), false, true) | (Some(i), true, false) if i < 6 => {}
                _ => {
                    return Err(format!(
                        "allow {}: an argument filter needs `arg` (0-5) and exactly one of `values` or `clear`",
                        a.name
                    ));
                }
            }
            for c in a.values.iter().chain(&a.clear) {
                if constant(c).is_none() {
                    return Err(format!("allow {}: unknown constant {c:?}", a.name));
                }
            }
        }
        for e in &p.errno {
            if errno_number(&e.errno).is_none() {
                return Err(format!("errno {}: unknown error {:?}", e.name, e.errno));
            }
        }
        Ok(p)
    }

    /// Names on the kill list.
    pub fn killed(&self) -> impl Iterator<Item = &str> {
        self.kill.iter().map(|k| k.name.as_str())
    }

    /// One line for logs and `warden check`.
    pub fn describe(&self) -> String {
        let filtered = self.allow.iter().filter(|a| a.arg.is_some()).count();
        format!(
            "allow-list of {} calls ({} with argument filters), {} answered with a fixed errno, {} kill the process, x32 and foreign architectures kill, everything else EPERM",
            self.allow
                .iter()
                .map(|a| a.name.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            filtered,
            self.errno.len(),
            self.kill.len()
        )
    }

    /// The BPF programs, in the order they must be installed (the allow-list last: it
    /// refuses seccomp(2) itself).
    pub fn compile(&self) -> Result<Vec<BpfProgram>, String> {
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
        let e = |e: seccompiler::BackendError| e.to_string();
        let number = |name: &str| match lookup(name) {
            Lookup::Number(n) => Some(n),
            _ => None,
        };
        let mut programs = Vec::new();

        // Errno answers, one filter per error number.
        let mut by_errno: BTreeMap<i32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for x in &self.errno {
            let code = errno_number(&x.errno).ok_or("errno")?;
            if let Some(nr) = number(&x.name) {
                by_errno.entry(code).or_default().insert(nr, vec![]);
            }
        }
        for (code, rules) in by_errno {
            let f = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(code as u32),
                arch,
            )
            .map_err(e)?;
            programs.push(BpfProgram::try_from(f).map_err(e)?);
        }

        // Kill list, with the x32 check right after the architecture check.
        let mut kill: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for k in &self.kill {
            if let Some(nr) = number(&k.name) {
                kill.insert(nr, vec![]);
            }
        }
        let f = SeccompFilter::new(kill, SeccompAction::Allow, SeccompAction::KillProcess, arch)
            .map_err(e)?;
        let mut program = BpfProgram::try_from(f).map_err(e)?;
        if cfg!(target_arch = "x86_64") {
            insert_x32_check(&mut program)?;
        }
        programs.push(program);

        // The allow-list. Calls answered by an errno filter pass here so that filter's
        // answer is the one the caller sees.
        let mut allow: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        let mut unconditional: Vec<i64> = Vec::new();
        for a in &self.allow {
            let Some(nr) = number(&a.name) else { continue };
            let rules = allow.entry(nr).or_default();
            match a.arg {
                None => unconditional.push(nr),
                Some(i) if !a.values.is_empty() => {
                    for v in &a.values {
                        let v = constant(v).ok_or("constant")?;
                        let c = SeccompCondition::new(i, arg_len(&a.name), SeccompCmpOp::Eq, v)
                            .map_err(e)?;
                        rules.push(SeccompRule::new(vec![c]).map_err(e)?);
                    }
                }
                Some(i) => {
                    let mut mask = 0u64;
                    for b in &a.clear {
                        mask |= constant(b).ok_or("constant")?;
                    }
                    let c =
                        SeccompCondition::new(i, arg_len(&a.name), SeccompCmpOp::MaskedEq(mask), 0)
                            .map_err(e)?;
                    rules.push(SeccompRule::new(vec![c]).map_err(e)?);
                }
            }
        }
        for nr in unconditional {
            allow.insert(nr, vec![]);
        }
        for x in &self.errno {
            if let Some(nr) = number(&x.name) {
                allow.insert(nr, vec![]);
            }
        }
        let f = SeccompFilter::new(
            allow,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            arch,
        )
        .map_err(e)?;
        programs.push(BpfProgram::try_from(f).map_err(e)?);
        Ok(programs)
    }

    /// Installs the filters on the calling thread; threads created later inherit them.
    pub fn install(&self) -> Result<String, String> {
        for program in self.compile()? {
            seccompiler::apply_filter(&program).map_err(|e| e.to_string())?;
        }
        Ok(self.describe())
    }
}

/// The width the kernel gives an argument: `int` arguments are compared on their low 32
/// bits (the kernel ignores the upper half of the register for them), the rest on 64.
fn arg_len(call: &str) -> SeccompCmpArgLen {
    match call {
        // int domain; int cmd; int option; int prot; and ioctl's request, which the
        // kernel takes as `unsigned int` (upper bits of the register are ignored by it,
        // so they must be ignored here too or a value could pass with junk in them).
        "socket" | "socketpair" | "fcntl" | "prctl" | "mmap" | "mprotect" | "ioctl"
        | "arch_prctl" | "madvise" => SeccompCmpArgLen::Dword,
        _ => SeccompCmpArgLen::Qword,
    }
}

/// seccompiler's programs start with: load arch; if equal skip one; kill. The x32 check
/// goes right after: load nr; if nr >= X32 bit fall through to kill, else skip it.
/// Nothing jumps across this point, so inserting here keeps every jump valid.
fn insert_x32_check(program: &mut BpfProgram) -> Result<(), String> {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JGE_K: u16 = 0x35; // BPF_JMP 0x05, BPF_JGE 0x30, BPF_K 0
    const BPF_RET_K: u16 = 0x06;
    let arch_check_is_first = program.len() >= 3
        && program[0].code == BPF_LD_W_ABS
        && program[0].k == 4
        && program[2].code == BPF_RET_K
        && program[2].k == libc::SECCOMP_RET_KILL_PROCESS;
    if !arch_check_is_first {
        return Err("unexpected seccompiler program layout; x32 check not inserted".into());
    }
    let check = [
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_KILL_PROCESS,
        },
    ];
    program.splice(3..3, check);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_policies_are_refused() {
        for bad in [
            "[[allow]]\nname = \"nosuchcall\"\nwhy = \"x\"\n",
            "[[allow]]\nname = \"read\"\nwhy = \"\"\n",
            "[[allow]]\nname = \"socket\"\nwhy = \"x\"\narg = 0\nvalues = [\"AF_NOPE\"]\n",
            "[[allow]]\nname = \"socket\"\nwhy = \"x\"\nvalues = [\"AF_UNIX\"]\n",
            "[[allow]]\nname = \"read\"\nwhy = \"x\"\n[[kill]]\nname = \"read\"\nwhy = \"x\"\n",
            "[[errno]]\nname = \"clone3\"\nerrno = \"EWHAT\"\nwhy = \"x\"\n",
            "[[read_only]]\npath = \"relative\"\nwhy = \"x\"\n",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errno_names_are_the_kernel_numbers() {
        for (name, n) in [
            ("ENOSYS", libc::ENOSYS),
            ("EPERM", libc::EPERM),
            ("EACCES", libc::EACCES),
            ("EINVAL", libc::EINVAL),
            ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
        ] {
            assert_eq!(errno_number(name), Some(n), "{name}");
        }
        assert_eq!(errno_number("ENOENT"), None);
    }

    #[test]
    fn a_call_may_be_allowed_twice_with_filters_but_on_no_two_lists() {
        let twice = "[[allow]]\nname = \"socket\"\nwhy = \"x\"\narg = 0\nvalues = [\"AF_UNIX\"]\n\
                     [[allow]]\nname = \"socket\"\nwhy = \"y\"\narg = 5\nclear = [\"PROT_EXEC\"]\n";
        Policy::parse(twice).unwrap_or_else(|e| panic!("{e}"));
        let kill_twice =
            "[[kill]]\nname = \"ptrace\"\nwhy = \"x\"\n[[kill]]\nname = \"ptrace\"\nwhy = \"x\"\n";
        assert_eq!(
            Policy::parse(kill_twice).unwrap_err(),
            "ptrace is on the kill and the kill list"
        );
        let arg6 = "[[allow]]\nname = \"socket\"\nwhy = \"x\"\narg = 6\nvalues = [\"AF_UNIX\"]\n";
        assert!(Policy::parse(arg6).unwrap_err().contains("`arg` (0-5)"));
    }

    #[test]
    fn a_policy_names_its_kill_list_and_describes_itself() {
        let p = Policy::parse(
            "[[allow]]\nname = \"read\"\nwhy = \"x\"\n[[allow]]\nname = \"socket\"\nwhy = \"x\"\narg = 0\nvalues = [\"AF_UNIX\"]\n\
             [[allow]]\nname = \"socket\"\nwhy = \"x\"\narg = 0\nvalues = [\"AF_INET\"]\n\
             [[kill]]\nname = \"ptrace\"\nwhy = \"x\"\n[[kill]]\nname = \"execve\"\nwhy = \"x\"\n\
             [[errno]]\nname = \"clone3\"\nerrno = \"ENOSYS\"\nwhy = \"x\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.killed().collect::<Vec<_>>(), ["ptrace", "execve"]);
        assert_eq!(
            p.describe(),
            "allow-list of 2 calls (2 with argument filters), 1 answered with a fixed errno, \
             2 kill the process, x32 and foreign architectures kill, everything else EPERM"
        );
    }

    #[test]
    fn the_x32_check_goes_only_where_the_architecture_check_is_known() {
        let insn = |code, k| sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let layout = |ret_k| {
            vec![
                insn(0x20, 4),
                insn(0x15, 0),
                insn(0x06, ret_k),
                insn(0x06, libc::SECCOMP_RET_ALLOW),
            ]
        };
        let mut known = layout(libc::SECCOMP_RET_KILL_PROCESS);
        insert_x32_check(&mut known).unwrap();
        assert_eq!(known.len(), 7);
        assert_eq!((known[4].code, known[4].k), (0x35, X32_SYSCALL_BIT));
        // Every part of the check must hold, down to the last: here the third
        // instruction returns ALLOW instead of killing.
        let mut odd = layout(libc::SECCOMP_RET_ALLOW);
        assert!(insert_x32_check(&mut odd).is_err());
        assert_eq!(odd.len(), 4, "nothing inserted");
        assert!(insert_x32_check(&mut vec![insn(0x20, 4)]).is_err());
    }

    #[test]
    fn a_small_policy_compiles_with_the_x32_check() {
        let p = Policy::parse(
            "[[allow]]\nname = \"read\"\nwhy = \"x\"\n[[allow]]\nname = \"socket\"\nwhy = \"x\"\narg = 0\nvalues = [\"AF_UNIX\"]\n[[kill]]\nname = \"ptrace\"\nwhy = \"x\"\n[[errno]]\nname = \"clone3\"\nerrno = \"ENOSYS\"\nwhy = \"x\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let progs = p.compile().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(progs.len(), 3);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(progs[1][4].k, X32_SYSCALL_BIT);
        }
    }
}
