//! `warden check`'s sandbox section: what each process will get, from the same plans
//! the processes enter, and what the running kernel offers.

use std::fmt::Write as _;
use warden_shared::config::{Config, OPENVINO_DIR_ENV};

/// The lines `warden check` prints about the two sandboxes.
pub fn describe(config: &Config) -> anyhow::Result<String> {
    let mut out = String::new();
    let kernel = warden_sandbox::kernel_abi();
    let pinned = warden_sandbox::LANDLOCK_ABI as i32;
    writeln!(
        out,
        "sandbox: Landlock ABI {pinned} required, kernel offers {}{}",
        if kernel == 0 {
            "none".to_string()
        } else {
            kernel.to_string()
        },
        if kernel < i64::from(pinned) {
            if config.backend.insecure_allow_unenforced_sandbox {
                " (NOT ENFORCEABLE: starting anyway, --insecure-allow-unenforced-sandbox)"
            } else {
                " (NOT ENFORCEABLE: the processes will refuse to start)"
            }
        } else {
            ""
        }
    )?;
    let root = nix::unistd::getuid().is_root();
    let gateway = warden_gateway::privilege::plan(config).map_err(anyhow::Error::msg)?;
    let runtime = warden_backend::runtime::locate(
        config.backend.openvino_dir.as_deref(),
        std::env::var_os(OPENVINO_DIR_ENV).map(Into::into),
    )
    .ok();
    let mut backend_read: Vec<std::path::PathBuf> = runtime.into_iter().collect();
    if let Ok((specs, file)) = config.model_specs() {
        backend_read.extend(file);
        backend_read.extend(specs.into_iter().map(|s| s.base_path));
    }
    let backend = warden_backend::sandbox::plan(
        config.backend.uid,
        config.backend.gid,
        backend_read,
        warden_sandbox::Enforcement::Required,
    )
    .map_err(anyhow::Error::msg)?;
    let fetcher = if warden_fetcher::needed(config) {
        Some(warden_fetcher::sandbox_plan(
            config,
            &warden_fetcher::store::process_env(),
        )?)
    } else {
        None
    };
    let mut plans = vec![("gateway", &gateway), ("backend", &backend)];
    plans.extend(fetcher.as_ref().map(|f| ("fetcher", f)));
    for (name, plan) in plans {
        let identity = if root {
            format!("uid {}:{}", plan.uid, plan.gid)
        } else {
            format!(
                "uid {} (not root: unchanged)",
                nix::unistd::getuid().as_raw()
            )
        };
        writeln!(
            out,
            "  {name}: {identity}, no capabilities (bounding and ambient sets cleared), not dumpable, no_new_privs"
        )?;
        writeln!(
            out,
            "    rlimits: core 0, open files {}, processes {}, file size {}",
            plan.limits.open_files,
            plan.limits.processes,
            plan.limits
                .file_size
                .map_or("unlimited".to_string(), |s| s.to_string())
        )?;
        let list = |paths: &[std::path::PathBuf]| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(out, "    landlock read-only: {}", list(&plan.read_only))?;
        writeln!(
            out,
            "    landlock writable:  {}",
            if plan.write_dirs.is_empty() {
                "nothing".to_string()
            } else {
                list(&plan.write_dirs)
            }
        )?;
        if !plan.tree_dirs.is_empty() {
            writeln!(
                out,
                "    landlock tree:      {} (files and folders made, renamed, removed)",
                list(&plan.tree_dirs)
            )?;
        }
        if plan.connect_ports.is_empty() {
            writeln!(
                out,
                "    landlock network: no TCP bind or connect; signals and abstract sockets scoped"
            )?;
        } else {
            writeln!(
                out,
                "    landlock network: no TCP bind; TCP connect only to ports {:?}; signals and abstract sockets scoped",
                plan.connect_ports
            )?;
        }
        writeln!(out, "    seccomp: {}", plan.policy.describe())?;
    }
    Ok(out)
}
