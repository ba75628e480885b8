//! Hashing a model folder the way `model_signing`'s "files" serialization does: every
//! regular file under the folder, path relative to it with `/` separators, SHA-256 of
//! its bytes; ignored paths (and the signature file) left out.
//!
//! Stricter than listing what the loader will open: any file the signer did not list
//! is an error, because a model format may pull in neighbouring files (ONNX external
//! data, IR weights) by name.

use crate::VerifyError;
use crate::manifest::Manifest;
use aws_lc_rs::digest;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Most files and folders walked in one model folder: bounds the work a hostile
/// folder can ask for.
pub const MAX_ENTRIES: usize = 100_000;
/// Deepest folder nesting walked.
pub const MAX_DEPTH: usize = 64;

/// What identifies a file's content without reading it again: if any of these changes
/// after hashing, the bytes may have changed too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One hashed file.
#[derive(Debug, Clone)]
pub struct HashedFile {
    pub path: PathBuf,
    pub digest: [u8; 32],
    pub stamp: Stamp,
}

fn io(path: &Path, source: std::io::Error) -> VerifyError {
    VerifyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Walks `root` and hashes every file not ignored by `manifest` nor equal to `skip`
/// (the signature file, as a relative path).
pub fn hash_folder(
    root: &Path,
    manifest: &Manifest,
    skip: Option<&[String]>,
) -> Result<BTreeMap<String, HashedFile>, VerifyError> {
    let mut out = BTreeMap::new();
    let mut entries = 0usize;
    // (folder, its components relative to root)
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(root.to_owned(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        if rel.len() > MAX_DEPTH {
            return Err(VerifyError::Folder {
                path: dir,
                message: format!("nested deeper than {MAX_DEPTH} folders"),
            });
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(VerifyError::Folder {
                    path: root.to_owned(),
                    message: format!("more than {MAX_ENTRIES} entries"),
                });
            }
            let path = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| VerifyError::Folder {
                    path: path.clone(),
                    message: "file name is not UTF-8, so no manifest can name it".into(),
                })?;
            let mut child = rel.clone();
            child.push(name);
            let ft = entry.file_type().map_err(|e| io(&path, e))?;
            let ignored = manifest.is_ignored(&child) || skip == Some(child.as_slice());
            // Like model_signing, every entry is checked for its kind, ignored or not:
            // a symlink the signer did not allow is refused wherever it is.
            if ft.is_symlink() {
                if !manifest.allow_symlinks {
                    return Err(VerifyError::Folder {
                        path,
                        message: "is a symlink and the signature does not allow symlinks".into(),
                    });
                }
                let target = std::fs::metadata(&path).map_err(|e| io(&path, e))?;
                if target.is_dir() {
                    // Following folder links could loop or leave the model; not needed.
                    return Err(VerifyError::Folder {
                        path,
                        message: "is a symlink to a folder; refused".into(),
                    });
                }
                if !target.is_file() {
                    return Err(VerifyError::Folder {
                        path,
                        message: "is a symlink to something other than a file".into(),
                    });
                }
            } else if ft.is_dir() {
                if !ignored {
                    stack.push((path, child));
                }
                continue;
            } else if !ft.is_file() {
                return Err(VerifyError::Folder {
                    path,
                    message: "is neither a file nor a folder (device, FIFO or socket)".into(),
                });
            }
            if ignored {
                continue;
            }
            let hashed = hash_file(&path, manifest.allow_symlinks)?;
            out.insert(child.join("/"), hashed);
        }
    }
    Ok(out)
}

/// SHA-256 of one file, read through one descriptor whose metadata is the stamp.
fn hash_file(path: &Path, follow_symlinks: bool) -> Result<HashedFile, VerifyError> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow_symlinks {
        // Closes the window between the walk's check and this open.
        flags |= libc::O_NOFOLLOW;
    }
    let mut file = File::options()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| io(path, e))?;
    let meta = file.metadata().map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Err(VerifyError::Folder {
            path: path.to_owned(),
            message: "is not a regular file".into(),
        });
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    Ok(HashedFile {
        path: path.to_owned(),
        digest,
        stamp: Stamp::of(&meta),
    })
}
