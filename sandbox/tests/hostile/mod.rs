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
pub fn in_child(enter: impl FnOnce() -> Result<(), String>, action: impl FnOnce() -> i32) -> Outcome {
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

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(255)
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
        let r = libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
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
