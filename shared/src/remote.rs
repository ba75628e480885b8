//! Model repositories in object storage (`s3://`, `gs://`, `az://`, as OVMS takes them).
//!
//! The backend never talks to the network: `warden fetcher` copies each remote
//! repository into a local cache folder, and every other process reads the cache path
//! that [`RemoteUrl::cache_path`] gives, exactly as it reads a local repository. This
//! module only parses: it is shared by the fetcher, the backend and `warden check`, so
//! that all three agree on where a URL lands in the cache.

use crate::repository::ModelSpec;
use std::path::{Path, PathBuf};

/// The cloud behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Provider {
    /// Amazon S3 or an S3-compatible service (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`, `azure://`, `azfs://`).
    Azure,
}

impl Provider {
    /// The scheme Warden writes (and the cache folder's name).
    pub fn scheme(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::Gcs => "gs",
            Provider::Azure => "az",
        }
    }
}

/// A parsed object-storage model path: `scheme://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteUrl {
    pub provider: Provider,
    /// The S3 or GCS bucket, or the Azure container.
    pub bucket: String,
    /// The key prefix under which the version folders are, without leading or trailing
    /// `/`; empty: the bucket's root.
    pub prefix: String,
}

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.provider.scheme(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Checks one `/`-separated relative key (or prefix): no empty, `.` or `..` segment,
/// no backslash, no control character, not absolute. Such a key could otherwise name
/// a file outside the cache folder, or two keys the same file.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    if key.starts_with('/') {
        return Err(format!("key {key:?} is absolute"));
    }
    if key.contains('\\') || key.chars().any(char::is_control) {
        return Err(format!(
            "key {key:?} holds a backslash or a control character"
        ));
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "key {key:?} has an empty, \".\" or \"..\" segment (it could leave the cache folder)"
            ));
        }
    }
    Ok(())
}

impl RemoteUrl {
    /// The URL a model path names, or `None` for a local path. A `scheme://` that is
    /// not object storage Warden reads (http://, hdfs://, ...) is refused, never taken
    /// as a folder name.
    pub fn of(path: &Path) -> Result<Option<RemoteUrl>, String> {
        let text = path.to_string_lossy();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(None);
        };
        let provider = match scheme.to_ascii_lowercase().as_str() {
            "s3" => Provider::S3,
            "gs" => Provider::Gcs,
            "az" | "azure" | "azfs" => Provider::Azure,
            other => {
                return Err(format!(
                    "{text}: {other}:// is not a model path Warden reads (a local folder, s3://, gs://, az://, azure:// or azfs://)"
                ));
            }
        };
        let rest = rest.trim_end_matches('/');
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = !bucket.is_empty()
            && bucket.len() <= 255
            && !bucket.starts_with('.')
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !bucket_ok {
            return Err(format!(
                "{text}: {bucket:?} is not a bucket or container name (letters, digits, '-', '_', '.')"
            ));
        }
        if !prefix.is_empty() {
            check_key(prefix).map_err(|e| format!("{text}: {e}"))?;
        }
        Ok(Some(RemoteUrl {
            provider,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }))
    }

    /// Where the fetcher keeps this repository: `<cache_dir>/<scheme>/<bucket>/<prefix>`.
    pub fn cache_path(&self, cache_dir: &Path) -> PathBuf {
        let mut p = cache_dir.join(self.provider.scheme()).join(&self.bucket);
        if !self.prefix.is_empty() {
            p.push(&self.prefix);
        }
        p
    }

    /// The key prefix to list, with its trailing `/` (empty for the bucket's root).
    pub fn list_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }
}

/// Checks a model path as given (`--model_path`, `base_path`, the config file): a local
/// folder or a URL Warden reads.
pub fn check_model_path(path: &Path) -> Result<(), String> {
    RemoteUrl::of(path).map(|_| ())
}

/// The remote repositories among `specs`, with the model they belong to.
pub fn remote_specs(specs: &[ModelSpec]) -> Result<Vec<(String, RemoteUrl)>, String> {
    let mut out = Vec::new();
    for s in specs {
        if let Some(url) = RemoteUrl::of(&s.base_path)? {
            out.push((s.name.clone(), url));
        }
    }
    Ok(out)
}

/// Replaces every remote base path by its cache folder: what the backend and
/// `warden check` read.
pub fn localize(specs: &mut [ModelSpec], cache_dir: &Path) -> Result<(), String> {
    for s in specs {
        if let Some(url) = RemoteUrl::of(&s.base_path)? {
            s.base_path = url.cache_path(cache_dir);
        }
    }
    Ok(())
}

/// Environment variables that carry cloud credentials or select them (OVMS's and the
/// clouds' own tools' names, and every `AWS_*`, `AZURE_*`, `GOOGLE_*` object_store
/// reads). Only the fetcher gets them: the supervisor removes them from the gateway's
/// and the backend's environment.
pub fn is_cloud_env(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "AWS_",
        "AZURE_",
        "GOOGLE_",
        "GCP_",
        "GCS_",
        "S3_",
        "OBJECT_STORE_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RemoteUrl::of(Path::new("s3://models/resnet/"))
            .unwrap()
            .unwrap();
        assert_eq!(u.provider, Provider::S3);
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("models", "resnet"));
        assert_eq!(u.list_prefix(), "resnet/");
        assert_eq!(u.to_string(), "s3://models/resnet");
        assert_eq!(
            u.cache_path(Path::new("/c")),
            Path::new("/c/s3/models/resnet")
        );
        for (text, p) in [
            ("gs://b/a/b", Provider::Gcs),
            ("az://c/m", Provider::Azure),
            ("azure://c/m", Provider::Azure),
            ("azfs://c/m", Provider::Azure),
        ] {
            assert_eq!(RemoteUrl::of(Path::new(text)).unwrap().unwrap().provider, p);
        }
        let root = RemoteUrl::of(Path::new("gs://b")).unwrap().unwrap();
        assert_eq!(root.list_prefix(), "");
        assert_eq!(root.cache_path(Path::new("/c")), Path::new("/c/gs/b"));
        assert_eq!(RemoteUrl::of(Path::new("/models/m")).unwrap(), None);
        for bad in [
            "http://x/m",
            "s3://",
            "s3://../m",
            "s3://.b/m",
            "s3://b/../m",
            "s3://b/a//m",
            "s3://b/a\\m",
            "gs://b/./m",
        ] {
            assert!(RemoteUrl::of(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_remote_base_paths_are_fetched_and_replaced_by_their_cache() {
        let m = crate::config::ModelsConfig::default();
        let spec = |name: &str, path: &str| {
            crate::repository::ModelSpec::single(name, Path::new(path), &m).unwrap()
        };
        let mut specs = vec![spec("local", "/models/a"), spec("far", "s3://bucket/b/")];
        let remote = remote_specs(&specs).unwrap();
        assert_eq!(remote.len(), 1);
        assert_eq!(remote[0].0, "far");
        assert_eq!(remote[0].1.to_string(), "s3://bucket/b");
        localize(&mut specs, Path::new("/cache")).unwrap();
        assert_eq!(specs[0].base_path, Path::new("/models/a"));
        assert_eq!(specs[1].base_path, Path::new("/cache/s3/bucket/b"));

        // A URL Warden cannot read is an error everywhere a model path is taken.
        assert!(check_model_path(Path::new("/models/a")).is_ok());
        assert!(check_model_path(Path::new("s3://bucket/b")).is_ok());
        let mut bad = vec![spec("bad", "s3://b/../m")];
        assert!(check_model_path(&bad[0].base_path).is_err());
        assert!(remote_specs(&bad).is_err());
        assert!(localize(&mut bad, Path::new("/cache")).is_err());
    }

    #[test]
    fn keys() {
        assert!(check_key("1/model.onnx").is_ok());
        for bad in ["", "/1/m", "1/../m", "1//m", "./1", "1/m\\x", "1/\u{0}"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cloud_environment() {
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AZURE_STORAGE_CONNECTION_STRING",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "S3_ENDPOINT",
        ] {
            assert!(is_cloud_env(name));
        }
        assert!(!is_cloud_env("WARDEN_LOG"));
        assert!(!is_cloud_env("PATH"));
    }
}
