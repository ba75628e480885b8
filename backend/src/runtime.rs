//! Finding and loading the OpenVINO C library.
//!
//! The library is loaded by explicit path: `openvino-finder`'s search panics when it
//! walks into a folder Landlock hides, and an explicit path is also the honest answer
//! to "which runtime is this process running".

use std::path::{Path, PathBuf};

/// The file the backend loads inside the runtime folder.
pub const OPENVINO_C_LIBRARY: &str = "libopenvino_c.so";

/// Why the runtime is not usable.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "OpenVINO runtime not found (looked in {looked}); run `scripts/fetch-runtime.sh` \
         or point --openvino-dir / WARDEN_OPENVINO_DIR at a folder holding {OPENVINO_C_LIBRARY}"
    )]
    NotFound { looked: String },
    #[error("OpenVINO runtime at {path} could not be loaded: {message}")]
    Load { path: PathBuf, message: String },
}

/// Resolves the runtime folder: explicit setting, then the environment variable, then
/// `.runtime/openvino` in the working directory, then beside the executable's project
/// (`target/<profile>/warden` → `../../.runtime/openvino`).
pub fn locate(explicit: Option<&Path>, env: Option<PathBuf>) -> Result<PathBuf, RuntimeError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_owned());
    } else {
        if let Some(p) = env {
            candidates.push(p);
        }
        candidates.push(PathBuf::from(warden_shared::config::DEFAULT_OPENVINO_DIR));
        if let Ok(exe) = std::env::current_exe()
            && let Some(project) = exe.parent().and_then(Path::parent).and_then(Path::parent)
        {
            candidates.push(project.join(warden_shared::config::DEFAULT_OPENVINO_DIR));
        }
    }
    for c in &candidates {
        if c.join(OPENVINO_C_LIBRARY).is_file() {
            return Ok(std::fs::canonicalize(c).unwrap_or_else(|_| c.clone()));
        }
    }
    Err(RuntimeError::NotFound {
        looked: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Loads the C library from the runtime folder. Call only inside the sandbox.
pub fn load(dir: &Path) -> Result<(), RuntimeError> {
    let path = dir.join(OPENVINO_C_LIBRARY);
    openvino_sys::library::load_from(&path).map_err(|message| RuntimeError::Load { path, message })
}
