//! The gateway's own per-model inference statistics, for Triton's statistics extension
//! (`/v2/models/stats`, gRPC `ModelStatistics`): what `perf_analyzer` and
//! `model_analyzer` read as "server side" numbers.
//!
//! Kept apart from the Prometheus metrics: these are cumulative counters per model
//! version, read whole. Only calls on a model and version the catalog knows are
//! counted, so a client cannot grow this map with made-up names.
//!
//! What the counters mean (documented in docs/configuration.md, "Triton extensions"):
//! `success`/`fail` count inference calls and their whole time in the gateway;
//! `compute_infer` is the backend's part of a successful call (the socket round trip,
//! OpenVINO's queue and inference); `compute_input` is the gateway's reading, checking
//! and decoding before it; `queue` and `compute_output` are not measured separately
//! (each successful call counted, with zero time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a total duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration64 {
    pub count: u64,
    pub ns: u64,
}

impl Duration64 {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self.ns.saturating_add(d.as_nanos() as u64);
    }
}

/// The counters of one model version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionStats {
    /// Milliseconds since the epoch of the last successful inference; 0: none yet.
    pub last_inference_ms: u64,
    pub success: Duration64,
    pub fail: Duration64,
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
}

/// What one finished inference call contributes.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The whole call in the gateway.
    pub total: Duration,
    /// The backend's part, for a call that reached it and succeeded.
    pub backend: Option<Duration>,
    /// From the call's start to its dispatch to the backend.
    pub before_backend: Option<Duration>,
    pub ok: bool,
}

#[derive(Debug, Default)]
pub struct Stats {
    by_version: Mutex<HashMap<(String, u64), VersionStats>>,
}

impl Stats {
    /// Counts one inference call on a model version the catalog knows.
    pub fn record(&self, model: &str, version: u64, s: Sample) {
        let mut map = self.by_version.lock().unwrap_or_else(|e| e.into_inner());
        let v = map.entry((model.to_owned(), version)).or_default();
        if s.ok {
            v.success.add(s.total);
            v.last_inference_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if let Some(b) = s.backend {
                v.compute_infer.add(b);
            }
            if let Some(b) = s.before_backend {
                v.compute_input.add(b);
            }
        } else {
            v.fail.add(s.total);
        }
    }

    /// The counters of a model version (zeros when it has served nothing yet).
    pub fn get(&self, model: &str, version: u64) -> VersionStats {
        let map = self.by_version.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(model.to_owned(), version))
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_success_and_failure_apart() {
        let s = Stats::default();
        let ms = Duration::from_millis;
        s.record(
            "m",
            1,
            Sample {
                total: ms(3),
                backend: Some(ms(2)),
                before_backend: Some(ms(1)),
                ok: true,
            },
        );
        s.record(
            "m",
            1,
            Sample {
                total: ms(5),
                backend: None,
                before_backend: None,
                ok: false,
            },
        );
        let v = s.get("m", 1);
        assert_eq!(
            v.success,
            Duration64 {
                count: 1,
                ns: 3_000_000
            }
        );
        assert_eq!(
            v.fail,
            Duration64 {
                count: 1,
                ns: 5_000_000
            }
        );
        assert_eq!(v.compute_infer.ns, 2_000_000);
        assert_eq!(v.compute_input.ns, 1_000_000);
        assert!(v.last_inference_ms > 0);
        assert_eq!(s.get("m", 2), VersionStats::default());
    }
}
