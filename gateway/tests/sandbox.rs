//! The gateway's real sandbox (the plan `warden gateway` enters after binding:
//! policies/gateway-sandbox.toml, uid 5000, Landlock limited to its certificate, key and
//! policy folders and the audit folder), applied in forked children against hostile
//! actions. The parent (the test runner) is never sandboxed.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

#[path = "../../sandbox/tests/hostile/mod.rs"]
mod hostile;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use warden_shared::config::Config;

/// A deployment's layout: certificates in one folder, the audit log in another.
/// Made once per test process: a forked child sees the parent's paths.
fn layout() -> (PathBuf, Config) {
    static LAYOUT: std::sync::OnceLock<(PathBuf, Config)> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(make_layout).clone()
}

fn make_layout() -> (PathBuf, Config) {
    let dir = hostile::fixed_dir("gateway-sandbox");
    for sub in ["certs", "audit", "other"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["certs/server.pem", "certs/server.key", "other/secret"] {
        std::fs::write(dir.join(f), b"x").unwrap();
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut config = Config::default();
    config.gateway.uid = 5000;
    config.gateway.gid = 5000;
    config.tls.cert = Some(dir.join("certs/server.pem"));
    config.tls.key = Some(dir.join("certs/server.key"));
    config.audit.path = dir.join("audit/audit.log");
    (dir, config)
}

fn enter(layers: warden_sandbox::Layers) -> Result<(), String> {
    let (_, config) = layout();
    let plan = warden_gateway::privilege::plan(&config)?;
    warden_sandbox::enter_layers(&plan, layers, || Ok(()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

// The gateway runs no generated code: W -> X is refused.
hostile_battery!(enter, libc::EPERM);

fn full_sandbox() -> Result<(), String> {
    enter(Layers::ALL)
}

#[test]
fn certificates_can_be_reread_and_the_audit_folder_written_but_nothing_else() {
    let (dir, _) = layout();
    let cert = dir.join("certs/server.pem");
    assert_eq!(in_child(full_sandbox, || read_file(&cert)), errno(0));
    let secret = dir.join("other/secret");
    assert_eq!(
        in_child(full_sandbox, || read_file(&secret)),
        errno(libc::EACCES)
    );
    let write = |p: PathBuf| {
        move || match std::fs::write(&p, b"x") {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(255),
        }
    };
    assert_eq!(
        in_child(full_sandbox, write(dir.join("audit/audit.log.1"))),
        errno(0)
    );
    // Rotation: rename inside the audit folder.
    let (a, b) = (dir.join("audit/audit.log.1"), dir.join("audit/audit.log.2"));
    let rename = move || match std::fs::rename(&a, &b) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    };
    assert_eq!(in_child(full_sandbox, rename), errno(0));
    assert_eq!(
        in_child(full_sandbox, write(dir.join("certs/planted.pem"))),
        errno(libc::EACCES)
    );
}

#[test]
fn a_new_listening_socket_is_refused() {
    // bind(2) is not on the gateway's allow-list: its listeners exist before the
    // sandbox; a compromised gateway cannot open another, even a Unix one.
    let sock = std::env::temp_dir().join(format!("warden-gw-listen-{}", std::process::id()));
    let code = in_child(
        full_sandbox,
        move || match std::os::unix::net::UnixListener::bind(&sock) {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(255),
        },
    );
    assert_eq!(code, errno(libc::EPERM));
}
