//! Hostile actions for the sandbox tests of both processes: each is tried in a forked
//! child that first enters a sandbox, then makes one attempt. The parent (the test
//! runner) is never sandboxed; it sees the child's exit code (the errno the attempt
//! got, 0 if it succeeded) or the signal that killed it (SIGSYS: seccomp's kill).
//!
//! Included by backend/tests/sandbox.rs and gateway/tests/sandbox.rs with `#[path]`.
#![allow(dead_code, clippy::unwrap_used)]

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// Exit code of a child whose sandbox could not be entered.
pub const NO_SANDBOX: i32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attempt's errno (0: it worked).
    Exit(i32),
    /// Killed by this signal; whether a core was dumped.
    Signal(i32, bool),
}

pub const SIGSYS: Outcome = Outcome::Signal(libc::SIGSYS, false);

pub fn errno(e: i32) -> Outcome {
    Outcome::Exit(e)
}

/// Runs `action` in a forked child after `enter` succeeded.
pub fn in_child(
    enter: impl FnOnce() -> Result<(), String>,
    action: impl FnOnce() -> i32,
) -> Outcome {
    // SAFETY: the child only enters the sandbox and runs one action, then _exits;
    // glibc's fork handlers keep malloc usable in the child.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = match enter() {
                Ok(()) => action(),
                Err(e) => {
                    eprintln!("sandbox: {e}");
                    NO_SANDBOX
                }
            };
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => Outcome::Exit(code),
            WaitStatus::Signaled(_, sig, core) => Outcome::Signal(sig as i32, core),
            other => panic!("unexpected {other:?}"),
        },
    }
}

pub fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(255)
}

/// Result of a raw system call as an exit code: 0 on success, else the errno.
fn rc(r: libc::c_long) -> i32 {
    if r >= 0 { 0 } else { last_errno() }
}

/// Every namespace flag of clone/unshare.
pub const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWTIME", 0x80),
];

/// io_uring_setup(8, zeroed params): the first step of every io_uring attack (an
/// IORING_OP_SOCKET + IORING_OP_CONNECT ring bypasses seccomp's socket rule).
pub fn io_uring_setup() -> i32 {
    let mut params = [0u8; 120];
    // SAFETY: params is a zeroed io_uring_params of the kernel's size (120 bytes).
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 8u32, params.as_mut_ptr()) };
    if r >= 0 {
        // SAFETY: closing the ring descriptor we just got.
        unsafe { libc::close(r as i32) };
    }
    rc(r)
}

pub fn unshare(flag: libc::c_int) -> i32 {
    // SAFETY: unshare takes only flags.
    rc(unsafe { libc::syscall(libc::SYS_unshare, flag) })
}

/// A raw clone(2) with a namespace flag, like fork() (SIGCHLD, no shared memory); the
/// child, if one is made, exits at once.
pub fn clone_with(flag: libc::c_int) -> i32 {
    // SAFETY: a fork-like clone: no CLONE_VM, null stack (the child runs on a copy of
    // ours), null tid pointers; the child _exits immediately.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flag | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r == 0 {
        // SAFETY: in the new child.
        unsafe { libc::_exit(0) }
    }
    if r > 0 {
        let _ = waitpid(nix::unistd::Pid::from_raw(r as i32), None);
    }
    rc(r)
}

/// clone3 with a namespace flag (its flags sit in memory, out of seccomp's sight).
pub fn clone3_with(flag: libc::c_int) -> i32 {
    // struct clone_args (v0): flags, pidfd, child_tid, parent_tid, exit_signal, stack,
    // stack_size, tls.
    let mut args = [0u64; 8];
    args[0] = flag as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: args is a valid clone_args of size 64; the child _exits immediately.
    let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) };
    if r == 0 {
        // SAFETY: in the new child.
        unsafe { libc::_exit(0) }
    }
    if r > 0 {
        let _ = waitpid(nix::unistd::Pid::from_raw(r as i32), None);
    }
    rc(r)
}

/// getpid through the x32 ABI (x86_64 only; the number with bit 30 set).
pub fn x32_getpid() -> i32 {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // x32's getpid is 39, as x86_64's.
    // SAFETY: getpid takes no argument.
    rc(unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) })
}

pub fn ptrace_attach(pid: i32) -> i32 {
    // SAFETY: a plain PTRACE_ATTACH with null pointers, as ptrace(2) documents.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r == 0 { 0 } else { last_errno() }
}

pub fn read_file(path: &std::path::Path) -> i32 {
    match std::fs::read(path) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

pub fn setuid_root() -> i32 {
    // SAFETY: setuid takes a number.
    rc(unsafe { libc::syscall(libc::SYS_setuid, 0) })
}

pub fn execve_sh() -> i32 {
    let sh = std::ffi::CString::new("/bin/sh").unwrap();
    match nix::unistd::execv(&sh, &[&sh]) {
        Ok(_) => 0,
        Err(e) => e as i32,
    }
}

pub fn socket(family: libc::c_int, kind: libc::c_int) -> i32 {
    // SAFETY: socket takes numbers; the descriptor is closed.
    let fd = unsafe { libc::socket(family, kind, 0) };
    if fd >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        0
    } else {
        last_errno()
    }
}

/// Makes a fresh writable anonymous page executable (what shellcode needs).
pub fn mprotect_writable_to_exec() -> i32 {
    mprotect_writable_to(libc::PROT_READ | libc::PROT_EXEC)
}

/// Changes a fresh writable anonymous page's protection to `prot`.
pub fn mprotect_writable_to(prot: libc::c_int) -> i32 {
    // SAFETY: a fresh private anonymous mapping, unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 100;
        }
        let r = libc::mprotect(p, 4096, prot);
        let code = if r == 0 { 0 } else { last_errno() };
        libc::munmap(p, 4096);
        code
    }
}

/// A process of our own that crashes in `dir`: whether the kernel wrote a core file is
/// the signal status the parent sees (WCOREDUMP).
pub fn crash_in(dir: &std::path::Path) -> i32 {
    let _ = std::env::set_current_dir(dir);
    // SAFETY: abort never returns; SIGABRT's default action dumps core if allowed.
    unsafe { libc::abort() }
}

/// The soft and hard RLIMIT_x of the calling process, as one code for the parent.
pub fn rlimit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill.
    unsafe { libc::getrlimit(resource, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

/// True when running as root. Otherwise the test is skipped, unless
/// WARDEN_REQUIRE_ROOT=1 (CI), where it fails: a test that needs root must not pass
/// silently because CI stopped running as root.
pub fn require_root() -> bool {
    if nix::unistd::getuid().is_root() {
        return true;
    }
    if std::env::var("WARDEN_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("this test needs root and WARDEN_REQUIRE_ROOT=1 is set");
    }
    eprintln!("SKIPPED: needs root (set WARDEN_REQUIRE_ROOT=1 to make this a failure)");
    false
}

/// A process to aim ptrace at: a real, separate process (attaching to the test runner
/// itself would stop it).
pub struct Target(pub std::process::Child);

impl Target {
    pub fn start() -> Target {
        Target(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("sleep"),
        )
    }
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A folder of this test binary's own under the target folder, the same for every test
/// process and every run: nextest runs each test in a process of its own, so a folder
/// named after the pid in /tmp was left behind by every test, every run.
pub fn fixed_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// A fresh folder for a crash to dump core in (world-writable so any uid could).
pub fn core_dir(tag: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = fixed_dir(&format!("core-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// The battery every sandboxed process must pass. `$enter` is a
/// `fn(warden_sandbox::Layers) -> Result<(), String>` that enters the process's real
/// sandbox with the given layers; `$wx` is what mprotect(RW -> RX) must give with all
/// layers on (the backend's JIT needs it: 0; the gateway: EPERM).
#[macro_export]
macro_rules! hostile_battery {
    ($enter:path, $wx:expr) => {
        use hostile::*;
        use warden_sandbox::Layers;

        fn full() -> Result<(), String> {
            $enter(Layers::ALL)
        }
        fn none() -> Result<(), String> {
            $enter(Layers::NONE)
        }
        fn only_seccomp() -> Result<(), String> {
            $enter(Layers {
                seccomp: true,
                ..Layers::NONE
            })
        }
        fn only_landlock() -> Result<(), String> {
            $enter(Layers {
                landlock: true,
                ..Layers::NONE
            })
        }
        fn only_identity() -> Result<(), String> {
            $enter(Layers {
                identity: true,
                ..Layers::NONE
            })
        }
        fn only_rlimits() -> Result<(), String> {
            $enter(Layers {
                rlimits: true,
                ..Layers::NONE
            })
        }
        fn only_dumpable() -> Result<(), String> {
            $enter(Layers {
                dumpable: true,
                ..Layers::NONE
            })
        }

        #[test]
        fn io_uring_setup_kills_the_process_and_only_seccomp_refuses_it() {
            assert_eq!(in_child(full, io_uring_setup), SIGSYS);
            assert_eq!(in_child(only_seccomp, io_uring_setup), SIGSYS);
            let enabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim() == "0")
                .unwrap_or(true);
            if enabled {
                // Control: without seccomp the kernel would hand out a ring.
                assert_eq!(in_child(none, io_uring_setup), errno(0));
            }
        }

        #[test]
        fn every_namespace_flag_is_refused_for_unshare_clone_and_clone3() {
            for (name, flag) in NAMESPACES {
                assert_eq!(in_child(full, || unshare(*flag)), SIGSYS, "unshare({name})");
                assert_eq!(
                    in_child(full, || clone_with(*flag)),
                    errno(libc::EPERM),
                    "clone({name})"
                );
                assert_eq!(
                    in_child(full, || clone3_with(*flag)),
                    errno(libc::ENOSYS),
                    "clone3({name})"
                );
                // The seccomp layer alone refuses each.
                assert_eq!(
                    in_child(only_seccomp, || clone_with(*flag)),
                    errno(libc::EPERM),
                    "clone({name}) seccomp only"
                );
            }
            // A plain fork-like clone (threads use the same call) still works.
            assert_eq!(in_child(full, || clone_with(0)), errno(0));
            if require_root() {
                // Control: as root without seccomp, a new user + network namespace is made.
                assert_eq!(
                    in_child(none, || clone_with(
                        libc::CLONE_NEWUSER | libc::CLONE_NEWNET
                    )),
                    errno(0)
                );
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[test]
        fn an_x32_system_call_kills_the_process() {
            assert_eq!(in_child(full, x32_getpid), SIGSYS);
            assert_eq!(in_child(only_seccomp, x32_getpid), SIGSYS);
            // Control: without the filter the kernel answers (getpid, or ENOSYS where x32
            // is compiled out) instead of killing.
            assert!(matches!(in_child(none, x32_getpid), Outcome::Exit(_)));
        }

        #[test]
        fn ptrace_of_another_process_is_refused_by_seccomp_and_by_identity_alone() {
            let target = Target::start();
            let pid = target.pid();
            assert_eq!(in_child(full, move || ptrace_attach(pid)), SIGSYS);
            assert_eq!(in_child(only_seccomp, move || ptrace_attach(pid)), SIGSYS);
            if require_root() {
                // Identity alone: uid 5000 without CAP_SYS_PTRACE may not trace root's process.
                assert_eq!(
                    in_child(only_identity, move || ptrace_attach(pid)),
                    errno(libc::EPERM)
                );
                // Control: root without the sandbox can.
                assert_eq!(in_child(none, move || ptrace_attach(pid)), errno(0));
            }
        }

        #[test]
        fn opening_a_file_outside_the_landlock_paths_is_refused_by_landlock_alone() {
            let p = std::path::Path::new("/etc/hostname");
            assert_eq!(in_child(full, || read_file(p)), errno(libc::EACCES));
            assert_eq!(
                in_child(only_landlock, || read_file(p)),
                errno(libc::EACCES)
            );
            assert_eq!(in_child(none, || read_file(p)), errno(0));
            assert_eq!(
                in_child(full, || read_file(std::path::Path::new("/etc/shadow"))),
                errno(libc::EACCES)
            );
        }

        #[test]
        fn tcp_connect_is_refused_by_landlock_alone() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let connect = move || match std::net::TcpStream::connect(addr) {
                Ok(_) => 0,
                Err(e) => e.raw_os_error().unwrap_or(255),
            };
            assert_eq!(in_child(only_landlock, connect), errno(libc::EACCES));
            assert_eq!(in_child(none, connect), errno(0));
            // With everything on, socket(AF_INET) itself is refused first.
            assert_eq!(in_child(full, connect), errno(libc::EPERM));
        }

        #[test]
        fn setuid_0_kills_and_identity_alone_refuses_it() {
            assert_eq!(in_child(full, setuid_root), SIGSYS);
            assert_eq!(in_child(only_seccomp, setuid_root), SIGSYS);
            if require_root() {
                assert_eq!(in_child(only_identity, setuid_root), errno(libc::EPERM));
                assert_eq!(in_child(none, setuid_root), errno(0));
            }
        }

        #[test]
        fn execve_kills_and_only_seccomp_refuses_it() {
            assert_eq!(in_child(full, execve_sh), SIGSYS);
            assert_eq!(in_child(only_seccomp, execve_sh), SIGSYS);
            // Control: without seccomp /bin/true runs (and exits 0 in our place).
            let exec_true = || {
                let t = std::ffi::CString::new("/bin/true").unwrap();
                match nix::unistd::execv(&t, &[&t]) {
                    Ok(_) => 0,
                    Err(e) => e as i32,
                }
            };
            assert_eq!(in_child(none, exec_true), errno(0));
        }

        #[test]
        fn only_unix_sockets_can_be_made() {
            for (family, kind) in [
                (libc::AF_INET, libc::SOCK_DGRAM),
                (libc::AF_INET, libc::SOCK_STREAM),
                (libc::AF_INET6, libc::SOCK_STREAM),
                (libc::AF_NETLINK, libc::SOCK_RAW),
                (libc::AF_PACKET, libc::SOCK_DGRAM),
            ] {
                assert_eq!(
                    in_child(full, move || socket(family, kind)),
                    errno(libc::EPERM),
                    "family {family}"
                );
                assert_eq!(
                    in_child(only_seccomp, move || socket(family, kind)),
                    errno(libc::EPERM),
                    "family {family}"
                );
            }
            assert_eq!(
                in_child(full, || socket(libc::AF_UNIX, libc::SOCK_STREAM)),
                errno(0)
            );
            assert_eq!(
                in_child(none, || socket(libc::AF_INET, libc::SOCK_DGRAM)),
                errno(0)
            );
            assert_eq!(
                in_child(none, || socket(libc::AF_NETLINK, libc::SOCK_RAW)),
                errno(0)
            );
        }

        #[test]
        fn making_a_writable_page_executable() {
            assert_eq!(in_child(full, mprotect_writable_to_exec), errno($wx));
            assert_eq!(in_child(none, mprotect_writable_to_exec), errno(0));
        }

        #[test]
        fn no_core_file_is_written_and_each_of_rlimit_core_and_dumpable_alone_stops_it() {
            let abrt = |core| Outcome::Signal(libc::SIGABRT, core);
            let dir = core_dir("full");
            let d = dir.clone();
            assert_eq!(in_child(full, move || crash_in(&d)), abrt(false));
            let d = dir.clone();
            assert_eq!(in_child(only_rlimits, move || crash_in(&d)), abrt(false));
            let d = dir.clone();
            assert_eq!(in_child(only_dumpable, move || crash_in(&d)), abrt(false));
            assert!(
                std::fs::read_dir(&dir).unwrap().next().is_none(),
                "a core file was written"
            );
            // Control: with neither, and RLIMIT_CORE raised, the kernel dumps core.
            let unlimited = || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_CORE,
                    nix::sys::resource::RLIM_INFINITY,
                    nix::sys::resource::RLIM_INFINITY,
                )
                .map_err(|e| e.to_string())?;
                none()
            };
            let d = dir.clone();
            let pattern =
                std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
            if pattern.trim_start().starts_with("core") {
                assert_eq!(in_child(unlimited, move || crash_in(&d)), abrt(true));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[test]
        fn resource_limits_are_pinned() {
            let code = in_child(full, || {
                let ok = rlimit(libc::RLIMIT_CORE) == (0, 0)
                    && rlimit(libc::RLIMIT_NOFILE).0 == rlimit(libc::RLIMIT_NOFILE).1
                    && rlimit(libc::RLIMIT_NOFILE).1 <= 1 << 20
                    && rlimit(libc::RLIMIT_NPROC).1 <= 4096;
                // Raising the core limit again is refused (hard limit 0, no capability).
                let raise = nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_CORE,
                    1 << 20,
                    1 << 20,
                );
                if ok && raise.is_err() { 0 } else { 1 }
            });
            assert_eq!(code, errno(0));
        }

        #[test]
        fn no_capability_is_left_and_identity_alone_clears_them() {
            // From /proc/self/status: capget(2) itself is not on the allow-lists.
            let caps = || {
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                let held = ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"]
                    .iter()
                    .all(|k| {
                        status
                            .lines()
                            .any(|l| l.starts_with(k) && l.ends_with("0000000000000000"))
                    });
                if held { 0 } else { 1 }
            };
            assert_eq!(in_child(full, caps), errno(0));
            if require_root() {
                assert_eq!(in_child(only_identity, caps), errno(0));
                assert_ne!(
                    in_child(none, caps),
                    errno(0),
                    "control: root holds capabilities"
                );
                let bounding = || {
                    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                    let empty = status
                        .lines()
                        .any(|l| l.starts_with("CapBnd:") && l.ends_with("0000000000000000"));
                    if empty { 0 } else { 1 }
                };
                assert_eq!(in_child(only_identity, bounding), errno(0));
            }
        }

        #[test]
        fn the_process_runs_as_5000_with_no_new_privs_and_seccomp_when_started_as_root() {
            if !require_root() {
                return;
            }
            let code = in_child(full, || {
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                let field = |k: &str| {
                    status
                        .lines()
                        .find(|l| l.starts_with(k))
                        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
                };
                let ok = field("Uid:").as_deref() == Some("5000")
                    && field("Gid:").as_deref() == Some("5000")
                    && field("NoNewPrivs:").as_deref() == Some("1")
                    && field("Seccomp:").as_deref() == Some("2")
                    && field("CapBnd:").as_deref() == Some("0000000000000000")
                    && field("CapAmb:").as_deref() == Some("0000000000000000");
                if ok { 0 } else { 1 }
            });
            assert_eq!(code, errno(0));
        }
    };
}
