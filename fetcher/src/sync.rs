//! Keeps the cache in step with the remote repositories, with OVMS's version semantics:
//! a numeric folder under the repository is a version; versions appear, change and
//! disappear with the remote. A version reaches the cache folder the backend reads only
//! whole: every object is downloaded into a staging folder, checked (size, the ETag it
//! was listed with, the MD5 where the ETag is one), then the folder is renamed into
//! place in one step (or exchanged with the old one: `renameat2(RENAME_EXCHANGE)`). A
//! failure at any point leaves the cached versions as they were.

use futures_util::StreamExt;
use md5::Digest;
use object_store::{GetOptions, ObjectStore, path::Path as StorePath};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warden_shared::remote::{RemoteUrl, check_key};

/// One object of a version, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the version folder, checked by [`check_key`].
    pub rel: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// One remote repository and the cache folder it is copied to.
pub struct Repo {
    pub model: String,
    pub url: RemoteUrl,
    pub store: Arc<dyn ObjectStore>,
    pub local: PathBuf,
}

/// Bounds over all remote repositories together.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_bytes: u64,
    pub max_files: usize,
}

/// What one pass did to one repository.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub published: Vec<u64>,
    pub retired: Vec<u64>,
    pub unchanged: Vec<u64>,
    /// Versions whose download or check failed (their old copy, if any, is kept).
    pub failed: Vec<(u64, String)>,
}

/// The versions of one listing: version -> its objects.
pub type Listing = BTreeMap<u64, Vec<Entry>>;

/// Lists a repository into versions, refusing keys that could leave the cache.
pub async fn list(repo: &Repo) -> anyhow::Result<Listing> {
    let prefix = repo.url.list_prefix();
    let store_prefix = (!prefix.is_empty()).then(|| StorePath::from(prefix.trim_end_matches('/')));
    let mut stream = repo.store.list(store_prefix.as_ref());
    let mut out = Listing::new();
    while let Some(meta) = stream.next().await {
        let meta = meta.map_err(|e| anyhow::anyhow!("{}: listing failed: {e}", repo.url))?;
        let key = meta.location.as_ref();
        let rel = key.strip_prefix(prefix.as_str()).unwrap_or(key);
        // A "folder" placeholder some tools create.
        if rel.ends_with('/') && meta.size == 0 {
            continue;
        }
        check_key(rel).map_err(|e| anyhow::anyhow!("{}: object refused: {e}", repo.url))?;
        let Some((first, rest)) = rel.split_once('/') else {
            continue; // Objects beside the version folders: OVMS ignores them too.
        };
        let Some(version) = first.parse::<u64>().ok().filter(|v| *v > 0) else {
            continue;
        };
        out.entry(version).or_default().push(Entry {
            rel: rest.to_owned(),
            size: meta.size,
            etag: meta.e_tag.clone(),
        });
    }
    for entries in out.values_mut() {
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    }
    Ok(out)
}

/// Checks the bounds over all listings.
pub fn check_bounds(listings: &[&Listing], bounds: Bounds) -> anyhow::Result<()> {
    let (mut files, mut bytes) = (0usize, 0u64);
    for l in listings {
        for e in l.values().flatten() {
            files += 1;
            bytes = bytes.saturating_add(e.size);
        }
    }
    if files > bounds.max_files {
        anyhow::bail!(
            "the remote repositories hold {files} objects, more than models.object_storage.max_repository_files = {}; nothing fetched",
            bounds.max_files
        );
    }
    if bytes > bounds.max_bytes {
        anyhow::bail!(
            "the remote repositories hold {bytes} bytes, more than models.object_storage.max_repository_bytes = {}; nothing fetched",
            bounds.max_bytes
        );
    }
    Ok(())
}

/// The cache: its root, the staging folder beside the published trees, and what each
/// published version folder was fetched from.
pub struct Cache {
    staging: PathBuf,
    fetched: BTreeMap<PathBuf, Vec<Entry>>,
    next: u64,
}

impl Cache {
    /// `root` exists (the fetcher made it before entering its sandbox); a staging folder
    /// left by an interrupted run is emptied.
    pub fn open(root: &Path) -> anyhow::Result<Cache> {
        let staging = root.join(".staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
        Ok(Cache {
            staging,
            fetched: BTreeMap::new(),
            next: 0,
        })
    }

    fn staging_dir(&mut self) -> PathBuf {
        self.next += 1;
        self.staging.join(self.next.to_string())
    }

    /// Makes one repository's cache folder match `listing`.
    pub async fn apply(&mut self, repo: &Repo, listing: &Listing) -> anyhow::Result<Outcome> {
        let mut out = Outcome::default();
        mkdirs(&repo.local)?;
        for (version, entries) in listing {
            let dir = repo.local.join(version.to_string());
            if dir.is_dir() && self.fetched.get(&dir) == Some(entries) {
                out.unchanged.push(*version);
                continue;
            }
            let staged = self.staging_dir();
            match self.download(repo, *version, entries, &staged).await {
                Ok(()) => {
                    publish(&staged, &dir, &self.staging_dir())?;
                    self.fetched.insert(dir, entries.clone());
                    out.published.push(*version);
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staged);
                    out.failed.push((*version, format!("{e:#}")));
                }
            }
        }
        for entry in std::fs::read_dir(&repo.local)? {
            let entry = entry?;
            let Some(version) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if !listing.contains_key(&version) {
                let gone = self.staging_dir();
                std::fs::rename(entry.path(), &gone)?;
                std::fs::remove_dir_all(&gone)?;
                self.fetched.remove(&entry.path());
                out.retired.push(version);
            }
        }
        Ok(out)
    }

    async fn download(
        &self,
        repo: &Repo,
        version: u64,
        entries: &[Entry],
        staged: &Path,
    ) -> anyhow::Result<()> {
        std::fs::DirBuilder::new().mode(0o750).create(staged)?;
        for e in entries {
            let key = format!("{}{version}/{}", repo.url.list_prefix(), e.rel);
            let target = staged.join(&e.rel);
            if let Some(parent) = target.parent() {
                std::fs::DirBuilder::new()
                    .mode(0o750)
                    .recursive(true)
                    .create(parent)?;
            }
            fetch_object(repo.store.as_ref(), &key, e, &target)
                .await
                .map_err(|err| anyhow::anyhow!("{}/{version}/{}: {err:#}", repo.url, e.rel))?;
        }
        Ok(())
    }
}

/// An S3 ETag of a single-part upload is the object's MD5 in hex.
fn etag_md5(etag: &str) -> Option<String> {
    let t = etag.trim_matches('"');
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

/// Downloads one object into `target` (created 0640, never followed if it exists) and
/// checks it: the object must still be the one listed (If-Match on its ETag), its bytes
/// exactly its size, and their MD5 the ETag where the ETag is an MD5.
async fn fetch_object(
    store: &dyn ObjectStore,
    key: &str,
    e: &Entry,
    target: &Path,
) -> anyhow::Result<()> {
    let options = GetOptions {
        if_match: e.etag.clone(),
        ..Default::default()
    };
    let got = store.get_opts(&StorePath::from(key), options).await?;
    if got.meta.size != e.size {
        anyhow::bail!(
            "size {} differs from the listed {} (changed while fetching)",
            got.meta.size,
            e.size
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(target)?;
    let mut md5 = md5::Md5::new();
    let mut n: u64 = 0;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        if n > e.size {
            anyhow::bail!("more bytes than its size {}", e.size);
        }
        md5.update(&chunk);
        file.write_all(&chunk)?;
    }
    if n != e.size {
        anyhow::bail!("got {n} bytes of {} (truncated)", e.size);
    }
    if let Some(expected) = e.etag.as_deref().and_then(etag_md5) {
        let actual = warden_shared::hex(&md5.finalize());
        if actual != expected {
            anyhow::bail!("MD5 {actual} differs from the ETag {expected} (corrupted in transit)");
        }
    }
    file.sync_all()?;
    Ok(())
}

/// Creates `dir` and its missing parents, 0750 (group: the backend's, which reads).
fn mkdirs(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o750)
        .recursive(true)
        .create(dir)
}

/// Puts a complete version folder in place in one step: a rename where there was none,
/// else an exchange with the old folder (which is then removed), so the backend never
/// sees a half-written or missing version.
fn publish(staged: &Path, dir: &Path, scratch: &Path) -> anyhow::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    if dir.exists() {
        renameat2(
            AT_FDCWD,
            staged,
            AT_FDCWD,
            dir,
            RenameFlags::RENAME_EXCHANGE,
        )?;
        std::fs::rename(staged, scratch)?;
        std::fs::remove_dir_all(scratch)?;
    } else {
        std::fs::rename(staged, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    fn repo(store: Arc<InMemory>, local: &Path) -> Repo {
        Repo {
            model: "m".into(),
            url: RemoteUrl::of(Path::new("s3://b/models/m"))
                .unwrap()
                .unwrap(),
            store,
            local: local.into(),
        }
    }

    async fn put(store: &InMemory, key: &str, bytes: &'static [u8]) {
        store
            .put(&StorePath::from(key), PutPayload::from_static(bytes))
            .await
            .unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warden-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn versions_appear_change_and_go() {
        let root = tmp("versions");
        let store = Arc::new(InMemory::new());
        put(&store, "models/m/1/model.onnx", b"one").await;
        put(&store, "models/m/1/sub/extra.txt", b"x").await;
        put(&store, "models/m/README", b"ignored").await;
        put(&store, "models/m/0/model.onnx", b"ignored").await;
        put(&store, "models/m/abc/model.onnx", b"ignored").await;
        put(&store, "models/other/2/model.onnx", b"not ours").await;
        let r = repo(Arc::clone(&store), &root.join("s3/b/models/m"));
        let mut cache = Cache::open(&root).unwrap();
        let l = list(&r).await.unwrap();
        assert_eq!(l.keys().copied().collect::<Vec<_>>(), vec![1]);
        let o = cache.apply(&r, &l).await.unwrap();
        assert_eq!(o.published, vec![1]);
        assert_eq!(std::fs::read(r.local.join("1/model.onnx")).unwrap(), b"one");
        assert_eq!(
            std::fs::read(r.local.join("1/sub/extra.txt")).unwrap(),
            b"x"
        );
        // Unchanged: nothing fetched again.
        let o = cache.apply(&r, &list(&r).await.unwrap()).await.unwrap();
        assert_eq!(o.unchanged, vec![1]);
        // A new version, and a changed one.
        put(&store, "models/m/2/model.onnx", b"two").await;
        put(&store, "models/m/1/model.onnx", b"one-b").await;
        let o = cache.apply(&r, &list(&r).await.unwrap()).await.unwrap();
        assert_eq!(o.published, vec![1, 2]);
        assert_eq!(
            std::fs::read(r.local.join("1/model.onnx")).unwrap(),
            b"one-b"
        );
        // Gone remotely: retired.
        store
            .delete(&StorePath::from("models/m/1/model.onnx"))
            .await
            .unwrap();
        store
            .delete(&StorePath::from("models/m/1/sub/extra.txt"))
            .await
            .unwrap();
        let o = cache.apply(&r, &list(&r).await.unwrap()).await.unwrap();
        assert_eq!(o.retired, vec![1]);
        assert!(!r.local.join("1").exists());
        assert!(r.local.join("2/model.onnx").exists());
        // Nothing left in staging.
        assert_eq!(std::fs::read_dir(root.join(".staging")).unwrap().count(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn md5_etags() {
        assert_eq!(
            etag_md5("\"D41D8CD98F00B204E9800998ECF8427E\""),
            Some("d41d8cd98f00b204e9800998ecf8427e".into())
        );
        assert_eq!(etag_md5("\"abc-2\""), None);
        assert_eq!(etag_md5("0x8DC"), None);
    }

    #[tokio::test]
    async fn a_corrupt_or_changed_object_keeps_the_old_version() {
        let root = tmp("corrupt");
        let store = Arc::new(InMemory::new());
        put(&store, "models/m/1/model.onnx", b"one").await;
        let r = repo(Arc::clone(&store), &root.join("s3/b/models/m"));
        let mut cache = Cache::open(&root).unwrap();
        cache.apply(&r, &list(&r).await.unwrap()).await.unwrap();
        // Listed with one ETag and size, changed before the download: refused.
        let mut l = list(&r).await.unwrap();
        put(&store, "models/m/1/model.onnx", b"changed").await;
        l.get_mut(&1).unwrap()[0].size = 5;
        let o = cache.apply(&r, &l).await.unwrap();
        assert_eq!(o.failed.len(), 1, "{o:?}");
        assert_eq!(std::fs::read(r.local.join("1/model.onnx")).unwrap(), b"one");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bounds() {
        let mut l = Listing::new();
        l.insert(
            1,
            vec![Entry {
                rel: "model.onnx".into(),
                size: 100,
                etag: None,
            }],
        );
        assert!(
            check_bounds(
                &[&l],
                Bounds {
                    max_bytes: 100,
                    max_files: 1
                }
            )
            .is_ok()
        );
        let e = check_bounds(
            &[&l, &l],
            Bounds {
                max_bytes: 1000,
                max_files: 1,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_repository_files"), "{e}");
        let e = check_bounds(
            &[&l],
            Bounds {
                max_bytes: 99,
                max_files: 10,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_repository_bytes"), "{e}");
    }
}
