//! Prometheus metrics, text format, served on the admin listener. The OVMS names
//! (`ovms_requests_success`, `ovms_request_time_us`, ...) keep existing dashboards
//! working; Warden's own start with `warden_`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Histogram buckets in microseconds (OVMS uses a similar exponential series).
const BUCKETS_US: &[f64] = &[
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    25_000.0,
    50_000.0,
    100_000.0,
    250_000.0,
    500_000.0,
    1_000_000.0,
    2_500_000.0,
    5_000_000.0,
    10_000_000.0,
];

/// Every metric this process exports: name, type, help.
pub const CATALOG: &[(&str, &str, &str)] = &[
    (
        "ovms_requests_success",
        "counter",
        "Requests answered successfully.",
    ),
    (
        "ovms_requests_fail",
        "counter",
        "Requests that failed (any error status).",
    ),
    (
        "ovms_request_time_us",
        "histogram",
        "Time to answer a request, in microseconds.",
    ),
    (
        "ovms_inference_time_us",
        "histogram",
        "Time OpenVINO spent in inference, in microseconds.",
    ),
    (
        "ovms_wait_for_infer_req_time_us",
        "histogram",
        "Time waiting for a free infer request, in microseconds.",
    ),
    (
        "ovms_current_requests",
        "gauge",
        "Requests being handled now.",
    ),
    (
        "warden_auth_failures_total",
        "counter",
        "Calls refused by authentication, by reason.",
    ),
    (
        "warden_authz_denied_total",
        "counter",
        "Calls refused by the authorization policy, by model (`_unknown` for every name the repository does not have).",
    ),
    (
        "warden_refusals_total",
        "counter",
        "Calls refused, by the refusal table's fixed reason label.",
    ),
    (
        "warden_rate_limited_total",
        "counter",
        "Calls refused by a rate limit, by scope.",
    ),
    (
        "warden_quota_refused_total",
        "counter",
        "Calls refused by a memory quota, by scope.",
    ),
    (
        "warden_tls_handshakes_total",
        "counter",
        "TLS handshakes, by result.",
    ),
    (
        "warden_connections",
        "gauge",
        "Open client connections, by listener.",
    ),
    (
        "warden_connections_refused_total",
        "counter",
        "Connections closed at once by a connection limit, by reason.",
    ),
    (
        "warden_connections_timed_out_total",
        "counter",
        "Connections closed because no request arrived within the header read timeout.",
    ),
    (
        "warden_backend_unavailable_total",
        "counter",
        "Calls that found the backend unavailable.",
    ),
    (
        "warden_audit_write_failures_total",
        "counter",
        "Audit records that could not be written.",
    ),
    (
        "warden_audit_healthy",
        "gauge",
        "1 while audit records can be written, 0 while they cannot (requests are refused).",
    ),
    (
        "warden_config_reloads_total",
        "counter",
        "Configuration reloads, by result.",
    ),
];

type Key = (&'static str, String);

#[derive(Default)]
struct Hist {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
    gauges: Mutex<BTreeMap<Key, i64>>,
    hists: Mutex<BTreeMap<Key, Hist>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, &str)]) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

impl Metrics {
    pub fn inc(&self, name: &'static str, l: &[(&str, &str)]) {
        self.add(name, l, 1);
    }

    pub fn add(&self, name: &'static str, l: &[(&str, &str)], n: u64) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name, labels(l)))
            .or_default() += n;
    }

    pub fn gauge_add(&self, name: &'static str, l: &[(&str, &str)], d: i64) {
        *self
            .gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name, labels(l)))
            .or_default() += d;
    }

    pub fn set_gauge(&self, name: &'static str, l: &[(&str, &str)], v: i64) {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((name, labels(l)), v);
    }

    pub fn observe(&self, name: &'static str, l: &[(&str, &str)], v: f64) {
        let mut hists = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        let h = hists.entry((name, labels(l))).or_insert_with(|| Hist {
            buckets: vec![0; BUCKETS_US.len()],
            ..Hist::default()
        });
        for (i, b) in BUCKETS_US.iter().enumerate() {
            if v <= *b {
                h.buckets[i] += 1;
            }
        }
        h.sum += v;
        h.count += 1;
    }

    /// A counter's current value (for tests and readiness).
    pub fn counter(&self, name: &'static str, l: &[(&str, &str)]) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(name, labels(l)))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.render_only(|_| true)
    }

    /// The text format, with only the metrics `wanted` says yes to (OVMS
    /// `--metrics_list`).
    pub fn render_only(&self, wanted: impl Fn(&str) -> bool) -> String {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        let hists = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let series = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        for (name, kind, help) in CATALOG.iter().filter(|(n, _, _)| wanted(n)) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for ((n, l), v) in counters.iter().filter(|((n, _), _)| n == name) {
                        let _ = writeln!(out, "{n}{} {v}", series(l));
                    }
                }
                "gauge" => {
                    for ((n, l), v) in gauges.iter().filter(|((n, _), _)| n == name) {
                        let _ = writeln!(out, "{n}{} {v}", series(l));
                    }
                }
                _ => {
                    for ((n, l), h) in hists.iter().filter(|((n, _), _)| n == name) {
                        let sep = if l.is_empty() { "" } else { "," };
                        for (b, c) in BUCKETS_US.iter().zip(&h.buckets) {
                            let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"{b}\"}} {c}");
                        }
                        let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                        let _ = writeln!(out, "{n}_sum{} {}", series(l), h.sum);
                        let _ = writeln!(out, "{n}_count{} {}", series(l), h.count);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc("warden_auth_failures_total", &[("reason", "token_expired")]);
        m.inc("warden_auth_failures_total", &[("reason", "token_expired")]);
        m.observe("ovms_request_time_us", &[("name", "m")], 300.0);
        let text = m.render();
        assert!(
            text.contains("warden_auth_failures_total{reason=\"token_expired\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ovms_request_time_us_bucket{name=\"m\",le=\"250\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ovms_request_time_us_bucket{name=\"m\",le=\"500\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ovms_request_time_us_count{name=\"m\"} 1"),
            "{text}"
        );
        m.inc("ovms_requests_success", &[("name", "a\"b")]);
        assert!(m.render().contains("name=\"a\\\"b\""));
    }
}
