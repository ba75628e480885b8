//! The model names and versions the backend's repository has, as the gateway knows
//! them. Nothing a client names reaches an audit record, a log line, a metric label or
//! a rate-limiter key before it is found here: an unknown name is refused and counted
//! under one fixed label, so a client cannot grow the gateway's state with made-up
//! names or versions.
//!
//! The index comes from the backend (`RepositoryIndex` over the socket), refreshed by
//! the housekeeping loop and, on a miss, at most once per [`MISS_REFRESH_INTERVAL`]
//! (a version that just appeared on disk is served without waiting for the next tick).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use warden_shared::proto::RepositoryIndexResponse;

/// The fewest time between two refreshes caused by unknown names.
pub const MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// What the catalog says of a model and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served (with the version asked, or with some version when none was asked).
    Known,
    UnknownModel,
    UnknownVersion,
}

#[derive(Debug, Default)]
struct Index {
    /// Model name → versions ready now. A configured model that failed to load is
    /// present with no versions.
    models: HashMap<String, BTreeSet<u64>>,
}

#[derive(Debug)]
pub struct Catalog {
    index: RwLock<Arc<Index>>,
    /// When a refresh may next be caused by a miss.
    next_miss_refresh: Mutex<Instant>,
    /// Whether the backend has answered once.
    loaded: std::sync::atomic::AtomicBool,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            index: RwLock::default(),
            next_miss_refresh: Mutex::new(Instant::now()),
            loaded: Default::default(),
        }
    }
}

impl Catalog {
    /// Replaces the index with the backend's answer.
    pub fn replace(&self, answer: &RepositoryIndexResponse) {
        let mut models: HashMap<String, BTreeSet<u64>> = HashMap::new();
        for m in &answer.models {
            let versions = models.entry(m.name.clone()).or_default();
            if m.state == "READY"
                && let Ok(v) = m.version.parse::<u64>()
            {
                versions.insert(v);
            }
        }
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Index { models });
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the backend has answered at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `version` is empty for "the latest".
    pub fn lookup(&self, model: &str, version: &str) -> Lookup {
        let index = Arc::clone(&self.index.read().unwrap_or_else(|e| e.into_inner()));
        let Some(versions) = index.models.get(model) else {
            return Lookup::UnknownModel;
        };
        if version.is_empty() {
            return if versions.is_empty() {
                Lookup::UnknownVersion
            } else {
                Lookup::Known
            };
        }
        match version.parse::<u64>() {
            Ok(v) if versions.contains(&v) => Lookup::Known,
            _ => Lookup::UnknownVersion,
        }
    }

    /// The version a call on `model` reaches: the one named, or the highest when none
    /// is (as the backend picks it). `None` when the catalog does not have it.
    pub fn resolve(&self, model: &str, version: &str) -> Option<u64> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let versions = index.models.get(model)?;
        if version.is_empty() {
            return versions.last().copied();
        }
        version.parse().ok().filter(|v| versions.contains(v))
    }

    /// Whether a miss may cause a refresh now (and, if so, takes the turn).
    pub fn take_miss_refresh(&self) -> bool {
        let mut next = self
            .next_miss_refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now < *next {
            return false;
        }
        *next = now + MISS_REFRESH_INTERVAL;
        true
    }

    /// The ready versions of a model the repository has, oldest first (empty for a
    /// name it does not have).
    pub fn versions(&self, model: &str) -> Vec<u64> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index
            .models
            .get(model)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Names of the models known now, for readiness and `warden check`.
    pub fn models(&self) -> Vec<String> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = index.models.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_shared::proto::repository_index_response::ModelIndex;

    fn entry(name: &str, version: &str, state: &str) -> ModelIndex {
        ModelIndex {
            name: name.into(),
            version: version.into(),
            state: state.into(),
            reason: String::new(),
        }
    }

    #[test]
    fn only_what_the_repository_has_is_known() {
        let c = Catalog::default();
        assert_eq!(c.lookup("m", ""), Lookup::UnknownModel, "empty before load");
        assert!(!c.loaded());
        c.replace(&RepositoryIndexResponse {
            models: vec![
                entry("m", "1", "READY"),
                entry("m", "3", "READY"),
                entry("m", "2", "LOADING"),
                entry("broken", "", "UNAVAILABLE"),
            ],
        });
        assert!(c.loaded());
        assert_eq!(c.lookup("m", ""), Lookup::Known);
        assert_eq!(c.lookup("m", "3"), Lookup::Known);
        assert_eq!(c.lookup("m", "2"), Lookup::UnknownVersion);
        assert_eq!(c.lookup("m", "03x"), Lookup::UnknownVersion);
        assert_eq!(c.lookup("m", &"9".repeat(40)), Lookup::UnknownVersion);
        assert_eq!(c.lookup("n", ""), Lookup::UnknownModel);
        assert_eq!(c.lookup("broken", ""), Lookup::UnknownVersion);
        assert_eq!(c.resolve("m", ""), Some(3));
        assert_eq!(c.resolve("m", "1"), Some(1));
        assert_eq!(c.resolve("m", "2"), None);
        assert_eq!(c.resolve("broken", ""), None);
        assert_eq!(c.resolve("n", ""), None);
        assert_eq!(c.models(), vec!["broken".to_string(), "m".to_string()]);
        assert_eq!(c.versions("m"), vec![1, 3]);
        assert!(c.versions("n").is_empty());
    }

    #[test]
    fn misses_refresh_at_most_once_per_interval() {
        let c = Catalog::default();
        assert!(c.take_miss_refresh());
        assert!(!c.take_miss_refresh());
    }
}
