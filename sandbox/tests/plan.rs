//! The sandbox's own layers against plans written here (the processes' real plans are
//! tested in backend/, gateway/ and fetcher/tests/sandbox.rs): each Landlock access
//! class grants what it names and nothing more, seccomp's argument filters compare what
//! the kernel compares, a policy that cannot be installed stops the start, resource
//! limits are pinned within what the process may set, and `enter` applies every layer.
//! Each case runs in a forked child (see hostile/mod.rs); the test runner is never
//! sandboxed.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod hostile;

use hostile::{
    NO_SANDBOX, Outcome, errno, in_child, last_errno, mprotect_writable_to, require_root, rlimit,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use warden_sandbox::{Enforcement, Fds, Layers, Limits, Plan, Policy, enter, enter_layers};

/// A fresh folder for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("warden-plan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn plan(policy: &str, enforcement: Enforcement) -> Plan {
    Plan {
        uid: 5000,
        gid: 5000,
        fds: Fds::ClosedAtStart,
        limits: Limits {
            open_files: 256,
            processes: 4096,
            file_size: None,
        },
        read_only: vec![],
        write_dirs: vec![],
        tree_dirs: vec![],
        connect_ports: vec![],
        policy: Policy::parse(policy).unwrap_or_else(|e| panic!("{e}")),
        enforcement,
    }
}

fn only(layer: fn(&mut Layers)) -> Layers {
    let mut l = Layers::NONE;
    layer(&mut l);
    l
}

/// An I/O result as the exit code `in_child` reports: 0 or the errno.
fn code<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

fn write_file(path: &Path) -> i32 {
    code(std::fs::File::create(path).and_then(|mut f| f.write_all(b"data")))
}

#[test]
fn each_landlock_class_grants_what_it_names_and_nothing_more() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("landlock");
    let ro = s.dir("ro");
    std::fs::write(ro.join("f"), b"r").unwrap();
    let ro_file = s.0.join("ro-file");
    std::fs::write(&ro_file, b"r").unwrap();
    let w = s.dir("w");
    let t = s.dir("t");
    std::fs::create_dir(t.join("from")).unwrap();
    let outside = s.dir("outside");
    std::fs::write(outside.join("f"), b"o").unwrap();

    let mut p = plan("", Enforcement::Required);
    // A file may be listed by itself: it gets the file rights of its class only.
    p.read_only = vec![ro.clone(), ro_file.clone()];
    p.write_dirs = vec![w.clone()];
    p.tree_dirs = vec![t.clone()];
    let landlock = only(|l| l.landlock = true);
    let run = |action: &dyn Fn() -> i32| {
        in_child(
            || {
                let report = enter_layers(&p, landlock, || Ok(())).map_err(|e| e.to_string())?;
                if !report.landlock.starts_with("enforced (ABI 6") {
                    return Err(format!("landlock: {}", report.landlock));
                }
                Ok(())
            },
            action,
        )
    };
    // The ABI is pinned: a kernel that enforced it offers at least it.
    assert!(warden_sandbox::kernel_abi() >= warden_sandbox::LANDLOCK_ABI as i64);

    // Read-only: read, never write or create.
    assert_eq!(run(&|| code(std::fs::read(ro.join("f")))), errno(0));
    assert_eq!(run(&|| code(std::fs::read(&ro_file))), errno(0));
    assert_eq!(run(&|| write_file(&ro.join("f"))), errno(libc::EACCES));
    assert_eq!(run(&|| write_file(&ro.join("new"))), errno(libc::EACCES));
    // Nothing outside the plan, not even a read.
    assert_eq!(
        run(&|| code(std::fs::read(outside.join("f")))),
        errno(libc::EACCES)
    );

    // A write folder: files made, written, truncated, renamed (rotation) and removed;
    // no folder, link or FIFO.
    let rotate = || {
        let a = w.join("log");
        let b = w.join("log.1");
        for step in [
            write_file(&a),
            write_file(&a), // File::create truncates
            code(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&a)
                    .and_then(|f| f.set_len(1)),
            ),
            code(std::fs::rename(&a, &b)),
            code(std::fs::remove_file(&b)),
        ] {
            if step != 0 {
                return step;
            }
        }
        0
    };
    assert_eq!(run(&rotate), errno(0));
    assert_eq!(
        run(&|| code(std::fs::create_dir(w.join("d")))),
        errno(libc::EACCES)
    );
    assert_eq!(
        run(&|| code(std::os::unix::fs::symlink("/etc/hostname", w.join("l")))),
        errno(libc::EACCES)
    );
    assert_eq!(run(&|| mkfifo(&w.join("p"))), errno(libc::EACCES));

    // A tree folder: folders made, filled, renamed into place across folders and
    // removed; still no link or FIFO.
    let cache = || {
        let d = t.join("d");
        for step in [
            code(std::fs::create_dir(&d)),
            write_file(&d.join("f")),
            code(std::fs::rename(d.join("f"), t.join("from/f"))),
            code(std::fs::rename(t.join("from"), d.join("into"))),
            code(std::fs::remove_file(d.join("into/f"))),
            code(std::fs::remove_dir(d.join("into"))),
            code(std::fs::remove_dir(&d)),
        ] {
            if step != 0 {
                return step;
            }
        }
        0
    };
    assert_eq!(run(&cache), errno(0));
    assert_eq!(
        run(&|| code(std::os::unix::fs::symlink("/etc/hostname", t.join("l")))),
        errno(libc::EACCES)
    );
    assert_eq!(run(&|| mkfifo(&t.join("p"))), errno(libc::EACCES));
}

fn mkfifo(path: &Path) -> i32 {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        0
    } else {
        last_errno()
    }
}

/// Enough for a forked child to make its attempt and exit, plus the filtered calls.
const FILTERS: &str = r#"
[[allow]]
name = "exit_group"
why = "the child exits"
[[allow]]
name = "exit"
why = "the child exits"
[[allow]]
name = "close"
why = "sockets made are closed"
[[allow]]
name = "mmap"
why = "a page to change"
[[allow]]
name = "munmap"
why = "a page to change"
[[allow]]
name = "socket"
why = "only Unix sockets"
arg = 0
values = ["AF_UNIX"]
[[allow]]
name = "mprotect"
why = "never executable"
arg = 2
clear = ["PROT_EXEC"]
"#;

#[test]
fn seccomp_argument_filters_compare_what_the_kernel_compares() {
    if !require_root() {
        return;
    }
    let p = plan(FILTERS, Enforcement::Required);
    let seccomp = only(|l| l.seccomp = true);
    let run = |action: fn() -> i32| {
        in_child(
            || {
                enter_layers(&p, seccomp, || Ok(()))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
            action,
        )
    };
    fn socket(domain: libc::c_long) -> i32 {
        // SAFETY: socket(2) with plain integers; the descriptor is closed.
        let fd = unsafe { libc::syscall(libc::SYS_socket, domain, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return last_errno();
        }
        // SAFETY: fd was just returned by socket(2).
        unsafe { libc::close(fd as i32) };
        0
    }
    // A value filter: the listed value passes, any other is refused.
    assert_eq!(run(|| socket(libc::AF_UNIX.into())), errno(0));
    assert_eq!(run(|| socket(libc::AF_INET.into())), errno(libc::EPERM));
    // `domain` is an int: the kernel ignores the register's upper half, so the filter
    // must too (compared on 64 bits, AF_INET with junk above would differ from AF_INET
    // and a filter listing AF_INET could be dodged; here AF_UNIX with junk must pass,
    // as the kernel makes a Unix socket of it).
    assert_eq!(
        run(|| socket((1 << 32) | libc::AF_UNIX as libc::c_long)),
        errno(0)
    );
    assert_eq!(
        run(|| socket((1 << 32) | libc::AF_INET as libc::c_long)),
        errno(libc::EPERM)
    );
    // A clear filter: the call passes only with the listed bits clear.
    assert_eq!(run(|| mprotect_writable_to(libc::PROT_READ)), errno(0));
    assert_eq!(
        run(|| mprotect_writable_to(libc::PROT_READ | libc::PROT_EXEC)),
        errno(libc::EPERM)
    );
    // Not on the list: refused.
    // SAFETY: getppid has no arguments.
    assert_eq!(
        run(|| if unsafe { libc::getppid() } < 0 {
            libc::EPERM
        } else {
            0
        }),
        errno(libc::EPERM)
    );
}

/// A policy whose first filter makes seccomp(2) itself fail: the rest cannot be
/// installed.
const UNINSTALLABLE: &str = r#"
[[errno]]
name = "seccomp"
errno = "EPERM"
why = "the filters after this one cannot be installed"
"#;

#[test]
fn a_policy_that_cannot_be_installed_stops_the_start_unless_best_effort() {
    if !require_root() {
        return;
    }
    let seccomp = only(|l| l.seccomp = true);
    let required = plan(UNINSTALLABLE, Enforcement::Required);
    let got = in_child(
        || match enter_layers(&required, seccomp, || Ok(())) {
            Err(e) if e.to_string().starts_with("sandbox: seccomp: ") => Err(e.to_string()),
            Err(e) => {
                eprintln!("another error: {e}");
                Ok(())
            }
            Ok(r) => {
                eprintln!("started with {:?}", r.seccomp);
                Ok(())
            }
        },
        || 0,
    );
    assert_eq!(got, errno(NO_SANDBOX), "Required must refuse to start");

    let best = plan(UNINSTALLABLE, Enforcement::BestEffort);
    let got = in_child(
        || {
            let r = enter_layers(&best, seccomp, || Ok(())).map_err(|e| e.to_string())?;
            if r.seccomp.starts_with("NOT installed: ")
                && r.seccomp.ends_with("(--insecure-allow-unenforced-sandbox)")
            {
                Ok(())
            } else {
                Err(format!("report: {:?}", r.seccomp))
            }
        },
        || 0,
    );
    assert_eq!(got, errno(0), "BestEffort carries on and says so");
}

/// NOFILE after entering with `want`, from a child that first set its hard limit to
/// `hard` and, unless `privileged`, gave up root.
fn nofile_after(hard: u64, want: u64, privileged: bool) -> Outcome {
    let mut p = plan("", Enforcement::Required);
    p.limits.open_files = want;
    in_child(
        || {
            let pin = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                hard,
                hard,
            );
            pin.map_err(|e| e.to_string())?;
            if !privileged {
                let id = nix::unistd::Uid::from_raw(5000);
                nix::unistd::setresuid(id, id, id).map_err(|e| e.to_string())?;
            }
            enter_layers(&p, only(|l| l.rlimits = true), || Ok(()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
        || {
            let (soft, hard) = rlimit(libc::RLIMIT_NOFILE);
            // Exit codes are 8 bits: the limits asked for here fit in 7.
            if soft != hard { 255 } else { soft as i32 }
        },
    )
}

#[test]
fn resource_limits_are_pinned_within_what_the_process_may_set() {
    if !require_root() {
        return;
    }
    // Only CAP_SYS_RESOURCE may raise a hard limit (root in a container may lack it):
    // with it the process gets what the plan says, without it at most its hard limit.
    let raise = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    );
    let raised = if raise.unwrap() { 100 } else { 64 };
    assert_eq!(nofile_after(64, 100, true), errno(raised));
    assert_eq!(nofile_after(64, 100, false), errno(64));
    // Either can lower it.
    assert_eq!(nofile_after(64, 32, false), errno(32));
    assert_eq!(nofile_after(64, 32, true), errno(32));
}

#[test]
fn inherited_descriptors_are_closed() {
    // Needs no privilege.
    let got = in_child(
        || Ok(()),
        || {
            let path = std::ffi::CString::new("/dev/null").unwrap();
            // SAFETY: a valid path; the descriptor is deliberately not CLOEXEC.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
            if fd < 3 {
                return 254;
            }
            if warden_sandbox::close_inherited_fds().is_err() {
                return 253;
            }
            // SAFETY: F_GETFD on a number that may no longer be open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                last_errno()
            } else {
                0
            }
        },
    );
    assert_eq!(got, errno(libc::EBADF));
}

#[test]
fn enter_applies_every_layer() {
    if !require_root() {
        return;
    }
    let s = Scratch::new("enter");
    let mut p = plan(FILTERS, Enforcement::Required);
    p.read_only = vec![s.0.clone()];
    let want = p.policy.describe();
    let got = in_child(
        || {
            let r = enter(&p, || Ok(())).map_err(|e| e.to_string())?;
            let as_planned = (r.uid, r.gid) == (5000, 5000)
                && r.bounding_set_cleared
                && r.limits.starts_with("core 0, open files 256,")
                && r.landlock.starts_with("enforced")
                && r.seccomp == want;
            if as_planned {
                Ok(())
            } else {
                Err(format!("report: {r:?}"))
            }
        },
        // SAFETY: getppid has no arguments.
        || {
            if unsafe { libc::getppid() } < 0 {
                libc::EPERM
            } else {
                0
            }
        },
    );
    assert_eq!(
        got,
        errno(libc::EPERM),
        "seccomp refuses what it does not list"
    );
}
