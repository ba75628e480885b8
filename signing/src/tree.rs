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

/// The bounds of one walk: [`MAX_ENTRIES`] and [`MAX_DEPTH`] outside tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub entries: usize,
    pub depth: usize,
}

const BOUNDS: Bounds = Bounds {
    entries: MAX_ENTRIES,
    depth: MAX_DEPTH,
};

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
    hash_folder_within(root, manifest, skip, BOUNDS)
}

fn hash_folder_within(
    root: &Path,
    manifest: &Manifest,
    skip: Option<&[String]>,
    bounds: Bounds,
) -> Result<BTreeMap<String, HashedFile>, VerifyError> {
    let mut out = BTreeMap::new();
    let mut entries = 0usize;
    // (folder, its components relative to root)
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(root.to_owned(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        if rel.len() > bounds.depth {
            return Err(VerifyError::Folder {
                path: dir,
                message: format!("nested deeper than {} folders", bounds.depth),
            });
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            entries += 1;
            if entries > bounds.entries {
                return Err(VerifyError::Folder {
                    path: root.to_owned(),
                    message: format!("more than {} entries", bounds.entries),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Scratch;

    fn manifest(allow_symlinks: bool) -> Manifest {
        Manifest {
            model_name: "m".into(),
            root_digest: [0; 32],
            allow_symlinks,
            ignore_paths: vec![vec![".git".into()]],
            files: BTreeMap::new(),
        }
    }

    fn message(e: VerifyError) -> String {
        match e {
            VerifyError::Folder { message, .. } => message,
            other => panic!("want a folder error, got {other}"),
        }
    }

    #[test]
    fn the_walk_counts_every_entry_up_to_its_bound_and_not_one_more() {
        let s = Scratch::empty();
        for i in 0..3 {
            std::fs::write(s.path().join(format!("f{i}")), b"x").unwrap();
        }
        // A folder counts as an entry, and so does each file in it.
        std::fs::create_dir(s.path().join("d")).unwrap();
        std::fs::write(s.path().join("d/g"), b"y").unwrap();
        let m = manifest(false);
        let within =
            |entries| hash_folder_within(&s.path(), &m, None, Bounds { entries, depth: 8 });
        let files = within(5).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["d/g", "f0", "f1", "f2"]);
        assert_eq!(message(within(4).unwrap_err()), "more than 4 entries");
        assert_eq!(message(within(0).unwrap_err()), "more than 0 entries");
    }

    #[test]
    fn the_walk_goes_down_to_its_depth_bound_and_not_one_level_more() {
        let s = Scratch::empty();
        let mut deepest = s.path().to_path_buf();
        for level in 0..3 {
            deepest.push(format!("l{level}"));
        }
        std::fs::create_dir_all(&deepest).unwrap();
        std::fs::write(deepest.join("f"), b"x").unwrap();
        let m = manifest(false);
        let within = |depth| {
            hash_folder_within(
                &s.path(),
                &m,
                None,
                Bounds {
                    entries: 100,
                    depth,
                },
            )
        };
        assert_eq!(
            within(3).unwrap().keys().collect::<Vec<_>>(),
            ["l0/l1/l2/f"]
        );
        assert_eq!(
            message(within(2).unwrap_err()),
            "nested deeper than 2 folders"
        );
    }

    #[test]
    fn the_shipped_bounds_are_the_published_ones() {
        assert_eq!((BOUNDS.entries, BOUNDS.depth), (MAX_ENTRIES, MAX_DEPTH));
        let s = Scratch::empty();
        let mut deep = s.path().to_path_buf();
        for level in 0..=MAX_DEPTH {
            deep.push(format!("{level}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = hash_folder(&s.path(), &manifest(false), None).unwrap_err();
        assert_eq!(
            message(err),
            format!("nested deeper than {MAX_DEPTH} folders")
        );
    }

    #[test]
    fn an_allowed_symlink_to_a_file_is_hashed_as_its_target_and_to_anything_else_refused() {
        let s = Scratch::empty();
        std::fs::write(s.path().join("weights"), b"w").unwrap();
        std::os::unix::fs::symlink("weights", s.path().join("alias")).unwrap();
        let files = hash_folder(&s.path(), &manifest(true), None).unwrap();
        assert_eq!(files["alias"].digest, files["weights"].digest);
        assert_eq!(
            message(hash_folder(&s.path(), &manifest(false), None).unwrap_err()),
            "is a symlink and the signature does not allow symlinks"
        );

        let s = Scratch::empty();
        std::os::unix::fs::symlink("/dev/null", s.path().join("device")).unwrap();
        assert_eq!(
            message(hash_folder(&s.path(), &manifest(true), None).unwrap_err()),
            "is a symlink to something other than a file"
        );
    }

    #[test]
    fn a_file_is_opened_without_following_a_symlink_unless_allowed() {
        let s = Scratch::empty();
        std::fs::write(s.path().join("weights"), b"w").unwrap();
        let link = s.path().join("alias");
        std::os::unix::fs::symlink("weights", &link).unwrap();
        // The walk saw a file; a symlink put there before the open is not followed.
        assert!(matches!(
            hash_file(&link, false),
            Err(VerifyError::Io { .. })
        ));
        assert_eq!(hash_file(&link, true).unwrap().stamp.size, 1);
    }

    #[test]
    fn a_fifo_put_in_place_of_a_file_is_refused_without_blocking() {
        let s = Scratch::empty();
        let fifo = s.path().join("model.bin");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        // Opened without O_NONBLOCK a FIFO with no writer blocks forever.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(hash_file(&fifo, false).map(|_| ()).map_err(message));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO blocked");
        assert_eq!(got.unwrap_err(), "is not a regular file");
    }
}
