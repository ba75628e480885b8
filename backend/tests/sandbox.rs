//! The real sandbox function, applied in a forked child, against hostile actions. The
//! parent (the test runner) is never sandboxed; it asserts on the child's exit code,
//! which is the errno the action got (0: it succeeded).
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use warden_backend::sandbox::policy::SandboxSpec;
use warden_backend::sandbox::{SandboxPolicy, enter};

const EACCES: i32 = libc::EACCES;
const EPERM: i32 = libc::EPERM;
/// Exit code of a child whose sandbox could not be entered.
const NO_SANDBOX: i32 = 200;

fn errno(r: std::io::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

fn nix_errno<T>(r: nix::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e as i32,
    }
}

/// A model repository as a deployment lays it out: world-readable, with a symlink
/// planted by an attacker that points outside it.
fn repository() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-sandbox-repo-{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir.join("1"));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("1"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("1/model.onnx"), b"not really a model").unwrap();
    std::fs::set_permissions(
        dir.join("1/model.onnx"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let link = dir.join("1/escape");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    }
    dir
}

/// Runs `action` in a forked child inside the real sandbox; returns its exit code, or
/// the negated signal number if it was killed.
fn in_sandbox(repo: &Path, action: impl FnOnce() -> i32) -> i32 {
    let spec = SandboxSpec::embedded().unwrap();
    let mut read_only = vec![repo.to_owned()];
    read_only.extend(spec.read_only.iter().map(|r| r.path.clone()));
    let policy = SandboxPolicy {
        uid: 5000,
        gid: 5000,
        read_only,
        deny_syscalls: spec.deny_syscalls.iter().map(|d| d.name.clone()).collect(),
        insecure_allow_unenforced: false,
    };
    // SAFETY: the child only runs the sandbox function and one action, then _exits;
    // glibc's fork handlers keep malloc usable in the child.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = match enter(&policy, || Ok(())) {
                Ok(_) => action(),
                Err(e) => {
                    eprintln!("sandbox: {e}");
                    NO_SANDBOX
                }
            };
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, sig, _) => -(sig as i32),
            other => panic!("unexpected {other:?}"),
        },
    }
}

#[test]
fn reading_the_model_repository_still_works() {
    let repo = repository();
    let file = repo.join("1/model.onnx");
    assert_eq!(
        in_sandbox(&repo, || errno(std::fs::read(&file).map(|_| ()))),
        0
    );
}

#[test]
fn reading_etc_shadow_is_denied() {
    let repo = repository();
    assert_eq!(
        in_sandbox(&repo, || errno(std::fs::read("/etc/shadow").map(|_| ()))),
        EACCES
    );
}

#[test]
fn reading_outside_the_repository_is_denied() {
    let repo = repository();
    assert_eq!(
        in_sandbox(&repo, || errno(std::fs::read("/etc/hostname").map(|_| ()))),
        EACCES
    );
    assert_eq!(
        in_sandbox(&repo, || errno(std::fs::read_dir("/home").map(|_| ()))),
        EACCES
    );
}

#[test]
fn a_symlink_in_the_repository_pointing_outside_is_denied() {
    let repo = repository();
    let link = repo.join("1/escape");
    assert_eq!(
        in_sandbox(&repo, || errno(std::fs::read(&link).map(|_| ()))),
        EACCES
    );
}

#[test]
fn writing_into_the_repository_is_denied() {
    let repo = repository();
    let target = repo.join("1/planted.bin");
    let existing = repo.join("1/model.onnx");
    assert_eq!(
        in_sandbox(&repo, || errno(std::fs::write(&target, b"x"))),
        EACCES
    );
    assert_eq!(
        in_sandbox(&repo, || errno(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&existing)
                .map(|_| ())
        )),
        EACCES
    );
}

#[test]
fn creating_a_file_in_tmp_is_denied() {
    let repo = repository();
    let p = std::env::temp_dir().join(format!("warden-sandbox-write-{}", std::process::id()));
    assert_eq!(
        in_sandbox(&repo, || errno(std::fs::write(&p, b"x"))),
        EACCES
    );
    assert!(!p.exists());
}

#[test]
fn execve_is_denied() {
    let repo = repository();
    let code = in_sandbox(&repo, || {
        let sh = std::ffi::CString::new("/bin/sh").unwrap();
        nix_errno(nix::unistd::execv(&sh, &[&sh]))
    });
    assert_eq!(code, EPERM);
}

#[test]
fn ptrace_of_the_parent_is_denied() {
    let repo = repository();
    let code = in_sandbox(&repo, || {
        let parent = nix::unistd::getppid().as_raw();
        // SAFETY: a plain PTRACE_ATTACH with null pointers, as ptrace(2) documents.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_ATTACH,
                parent,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        }
    });
    assert_eq!(code, EPERM);
}

#[test]
fn tcp_connect_and_inet_sockets_are_denied_but_unix_sockets_work() {
    let repo = repository();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert_eq!(
        in_sandbox(&repo, || errno(
            std::net::TcpStream::connect(addr).map(|_| ())
        )),
        EPERM
    );
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    assert_eq!(
        in_sandbox(&repo, || nix_errno(socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::empty(),
            None
        ))),
        EPERM
    );
    assert_eq!(
        in_sandbox(&repo, || nix_errno(socket(
            AddressFamily::Inet6,
            SockType::Stream,
            SockFlag::empty(),
            None
        ))),
        EPERM
    );
    assert_eq!(
        in_sandbox(&repo, || nix_errno(socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::empty(),
            None
        ))),
        EPERM
    );
    assert_eq!(
        in_sandbox(&repo, || nix_errno(socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::empty(),
            None
        ))),
        0
    );
    drop(listener);
}

#[test]
fn raising_a_capability_is_denied() {
    let repo = repository();
    let code = in_sandbox(&repo, || {
        match caps::raise(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_ADMIN,
        ) {
            Ok(()) => 0,
            Err(_) => EPERM,
        }
    });
    assert_eq!(code, EPERM);
    // And none is held at all.
    let code = in_sandbox(&repo, || {
        let held = caps::read(None, caps::CapSet::Permitted)
            .map(|s| s.len())
            .unwrap_or(99)
            + caps::read(None, caps::CapSet::Effective)
                .map(|s| s.len())
                .unwrap_or(99);
        held as i32
    });
    assert_eq!(code, 0);
}

#[test]
fn setuid_0_is_denied() {
    let repo = repository();
    assert_eq!(
        in_sandbox(&repo, || nix_errno(nix::unistd::setuid(
            nix::unistd::Uid::from_raw(0)
        ))),
        EPERM
    );
    assert_eq!(
        in_sandbox(&repo, || nix_errno(nix::unistd::setresuid(
            0.into(),
            0.into(),
            0.into()
        ))),
        EPERM
    );
}

#[test]
fn the_child_runs_as_5000_with_no_new_privs_when_started_as_root() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let repo = repository();
    let code = in_sandbox(&repo, || {
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
            && field("CapBnd:").as_deref() == Some("0000000000000000");
        if ok { 0 } else { 1 }
    });
    assert_eq!(code, 0);
}
