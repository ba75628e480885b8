//! The fetcher's real sandbox (the plan `warden fetcher` enters once its clients are
//! built: policies/fetcher-sandbox.toml, its own uid, Landlock limited to the cache
//! folder's tree and TCP connect to the endpoints' ports), applied in forked children.
//! The parent (the test runner) is never sandboxed.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

#[allow(unused_macros)]
#[path = "../../sandbox/tests/hostile/mod.rs"]
mod hostile;

use hostile::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use warden_shared::config::Config;

/// A listener the fetcher may connect to (its "endpoint"), another it may not, and a
/// cache folder. Made once per test process: a forked child sees the parent's state.
struct Layout {
    dir: PathBuf,
    config: Config,
    allowed: std::net::TcpListener,
    other: std::net::TcpListener,
}

fn layout() -> &'static Layout {
    static LAYOUT: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warden-fetch-sandbox-{}", std::process::id()));
        for sub in ["cache", "other"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(0o777))
                .unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut config = Config::default();
        config.models.object_storage.cache_dir = dir.join("cache");
        Layout {
            dir,
            config,
            allowed: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            other: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    })
}

fn full_sandbox() -> Result<(), String> {
    let l = layout();
    let port = l.allowed.local_addr().unwrap().port();
    let plan = warden_fetcher::sandbox::plan(&l.config, &[], vec![port])?;
    warden_sandbox::enter(&plan, || Ok(()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn connect(addr: std::net::SocketAddr) -> impl FnOnce() -> i32 {
    move || match std::net::TcpStream::connect(addr) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

#[test]
fn tcp_connect_only_to_the_endpoint_port() {
    let l = layout();
    assert_eq!(
        in_child(full_sandbox, connect(l.allowed.local_addr().unwrap())),
        errno(0)
    );
    assert_eq!(
        in_child(full_sandbox, connect(l.other.local_addr().unwrap())),
        errno(libc::EACCES)
    );
    // No listener of its own.
    let bind = || match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    };
    assert_ne!(in_child(full_sandbox, bind), errno(0));
}

#[test]
fn the_cache_tree_can_be_changed_and_nothing_else_written() {
    let l = layout();
    let cache = l.dir.join("cache");
    let tree = move || {
        let staged = cache.join(".staging/7");
        let r = std::fs::create_dir_all(&staged)
            .and_then(|()| std::fs::write(staged.join("model.onnx"), b"x"))
            .and_then(|()| std::fs::create_dir_all(cache.join("s3/b/m")))
            .and_then(|()| std::fs::rename(&staged, cache.join("s3/b/m/1")))
            .and_then(|()| std::fs::remove_dir_all(cache.join("s3/b/m/1")));
        match r {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(255),
        }
    };
    assert_eq!(in_child(full_sandbox, tree), errno(0));
    let outside = l.dir.join("other/x");
    let write = move || match std::fs::write(&outside, b"x") {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    };
    assert_eq!(in_child(full_sandbox, write), errno(libc::EACCES));
    // No link may be made in the cache (a symlink could point the backend elsewhere):
    // symlink is not on the seccomp list (EPERM), and Landlock grants no MakeSym.
    let link_at = l.dir.join("cache/link");
    let link = move || match std::os::unix::fs::symlink("/etc/shadow", &link_at) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    };
    assert_eq!(in_child(full_sandbox, link), errno(libc::EPERM));
    assert_eq!(
        in_child(full_sandbox, || read_file(std::path::Path::new(
            "/etc/hostname"
        ))),
        errno(libc::EACCES)
    );
}

#[test]
fn execve_and_writable_executable_pages_are_refused() {
    assert_eq!(in_child(full_sandbox, execve_sh), SIGSYS);
    assert_eq!(
        in_child(full_sandbox, mprotect_writable_to_exec),
        errno(libc::EPERM)
    );
    assert_eq!(
        in_child(full_sandbox, || socket(libc::AF_NETLINK, libc::SOCK_RAW)),
        errno(libc::EPERM)
    );
}
