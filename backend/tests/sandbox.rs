//! The backend's real sandbox (the plan `warden backend` enters: policies/sandbox.toml,
//! uid 5000, read-only model repository), applied in forked children against hostile
//! actions. The parent (the test runner) is never sandboxed.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

#[path = "../../sandbox/tests/hostile/mod.rs"]
mod hostile;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use warden_backend::sandbox::{Enforcement, enter_layers, plan};

/// A model repository as a deployment lays it out: world-readable, with a symlink
/// planted by an attacker that points outside it.
/// Made once per test process: a forked child sees the parent's path, not one named
/// after its own pid.
fn repository() -> PathBuf {
    static REPO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    REPO.get_or_init(make_repository).clone()
}

fn make_repository() -> PathBuf {
    let dir = hostile::fixed_dir("backend-sandbox-repo");
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
    // Test processes run at once and share the folder: another may have made the link.
    match std::os::unix::fs::symlink("/etc/hostname", &link) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("symlink: {e}"),
        _ => {}
    }
    dir
}

/// Enters the backend's sandbox (the layers chosen) with the repository readable.
fn enter(layers: Layers) -> Result<(), String> {
    let plan = plan(5000, 5000, vec![repository()], Enforcement::Required)?;
    enter_layers(&plan, layers, || Ok(()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

// The backend's JIT (oneDNN) needs writable pages made executable: allowed, and
// documented in policies/sandbox.toml.
hostile_battery!(enter, 0);

fn full_sandbox() -> Result<(), String> {
    enter(Layers::ALL)
}

#[test]
fn reading_the_model_repository_still_works() {
    let file = repository().join("1/model.onnx");
    assert_eq!(in_child(full_sandbox, || read_file(&file)), errno(0));
}

#[test]
fn a_symlink_in_the_repository_pointing_outside_is_denied() {
    let link = repository().join("1/escape");
    assert_eq!(
        in_child(full_sandbox, || read_file(&link)),
        errno(libc::EACCES)
    );
}

#[test]
fn writing_into_the_repository_or_tmp_is_denied() {
    let repo = repository();
    let planted = repo.join("1/planted.bin");
    let existing = repo.join("1/model.onnx");
    let write = |p: PathBuf| {
        move || match std::fs::write(&p, b"x") {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(255),
        }
    };
    assert_eq!(
        in_child(full_sandbox, write(planted.clone())),
        errno(libc::EACCES)
    );
    assert_eq!(in_child(full_sandbox, write(existing)), errno(libc::EACCES));
    let tmp = std::env::temp_dir().join(format!("warden-sandbox-write-{}", std::process::id()));
    assert_eq!(
        in_child(full_sandbox, write(tmp.clone())),
        errno(libc::EACCES)
    );
    assert!(!tmp.exists() && !planted.exists());
}
