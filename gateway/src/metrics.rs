//! Prometheus metrics, text format, served on the admin listener.
//!
//! One registry: every family is declared once below ([`FAMILIES`]) with its name,
//! type, labels, help and what it means in Warden; the code emits through the typed
//! handles (a [`Counter`], [`Gauge`] or [`Histogram`] of `N` labels takes exactly `N`
//! label values), and the docs (`docs/metrics.md`) and the Grafana dashboard
//! (`deploy/grafana/warden.json`) are checked against it by the tests at the end of
//! this file. The OVMS names keep existing dashboards and autoscalers working, with
//! OVMS's labels and meanings; Warden's own start with `warden_`.
//!
//! Label values are never anything a client wrote: model names come from the catalog
//! (the repository's own names), everything else from fixed tables, so the number of
//! series is bounded by the repository and those tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

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

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Which set a family belongs to, which decides when it is exported: OVMS's default
/// set (`metrics.list` empty), OVMS's optional metrics (only when listed), or Warden's
/// own (always, while metrics are enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    OvmsDefault,
    OvmsOptional,
    Warden,
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub set: Set,
    /// The `# HELP` line.
    pub help: &'static str,
    /// What it counts in Warden and where it is measured (for the docs).
    pub meaning: &'static str,
}

/// A counter of `N` labels.
#[derive(Debug, Clone, Copy)]
pub struct Counter<const N: usize>(pub &'static Family);
/// A gauge of `N` labels.
#[derive(Debug, Clone, Copy)]
pub struct Gauge<const N: usize>(pub &'static Family);
/// A histogram of `N` labels, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Histogram<const N: usize>(pub &'static Family);

/// Declares every family once: a typed handle each, and [`FAMILIES`].
macro_rules! registry {
    ($($handle:ident: $kind:ident<$n:literal> {
        name: $name:literal,
        labels: [$($label:literal),*],
        set: $set:ident,
        help: $help:literal,
        meaning: $meaning:literal $(,)?
    })*) => {
        $(
            #[doc = $help]
            pub const $handle: $kind<$n> = $kind(&Family {
                name: $name,
                kind: Kind::$kind,
                labels: &[$($label),*],
                set: Set::$set,
                help: $help,
                meaning: $meaning,
            });
            const _: () = assert!($handle.0.labels.len() == $n, "label count of the handle");
        )*
        /// Every family, in the order `/metrics` and the docs list them.
        pub const FAMILIES: &[&Family] = &[$($handle.0),*];
    };
}

registry! {
    REQUESTS_SUCCESS: Counter<5> {
        name: "ovms_requests_success",
        labels: ["api", "interface", "method", "name", "version"],
        set: OvmsDefault,
        help: "Number of successful requests to a model.",
        meaning: "Calls on a model the repository has, answered successfully. `version` is the version that answered (the latest when the client named none); absent for `ModelReady`, as in OVMS.",
    }
    REQUESTS_FAIL: Counter<5> {
        name: "ovms_requests_fail",
        labels: ["api", "interface", "method", "name", "version"],
        set: OvmsDefault,
        help: "Number of failed requests to a model.",
        meaning: "Calls on a model the repository has that were refused or failed (any refusal of the refusal table, after the model was known). Calls that never named a known model count only in `warden_requests_total`.",
    }
    REQUEST_TIME: Histogram<3> {
        name: "ovms_request_time_us",
        labels: ["interface", "name", "version"],
        set: OvmsDefault,
        help: "Processing time of requests to a model, in microseconds.",
        meaning: "Gateway time of each successful inference, from its request head to its answer rendered (TLS handshake excluded).",
    }
    INFERENCE_TIME: Histogram<2> {
        name: "ovms_inference_time_us",
        labels: ["name", "version"],
        set: OvmsDefault,
        help: "Inference execution time in the OpenVINO backend, in microseconds.",
        meaning: "Measured in the backend around OpenVINO's inference call alone, and carried back with each answer over the socket; one observation per inference.",
    }
    WAIT_FOR_INFER_REQ_TIME: Histogram<2> {
        name: "ovms_wait_for_infer_req_time_us",
        labels: ["name", "version"],
        set: OvmsDefault,
        help: "Request waiting time for a free infer request, in microseconds.",
        meaning: "Measured in the backend from the inference's arrival until an infer request of the pool was free and bound to it; one observation per inference.",
    }
    STREAMS: Gauge<2> {
        name: "ovms_streams",
        labels: ["name", "version"],
        set: OvmsDefault,
        help: "Number of OpenVINO execution streams.",
        meaning: "`NUM_STREAMS` of the compiled model, as the backend reads it; asked of the backend at each scrape.",
    }
    CURRENT_REQUESTS: Gauge<2> {
        name: "ovms_current_requests",
        labels: ["name", "version"],
        set: OvmsDefault,
        help: "Number of requests being currently processed by the model server.",
        meaning: "Calls on the model in the gateway now, from the moment the repository is known to have it until the answer is sent.",
    }
    INFER_REQ_QUEUE_SIZE: Gauge<2> {
        name: "ovms_infer_req_queue_size",
        labels: ["name", "version"],
        set: OvmsOptional,
        help: "Inference request queue size (nireq).",
        meaning: "Infer requests in the version's pool (`nireq`; unset: twice OpenVINO's `OPTIMAL_NUMBER_OF_INFER_REQUESTS`); asked of the backend at each scrape.",
    }
    INFER_REQ_ACTIVE: Gauge<2> {
        name: "ovms_infer_req_active",
        labels: ["name", "version"],
        set: OvmsOptional,
        help: "Number of infer requests bound to a request now, loading its data or inferring.",
        meaning: "Infer requests of the pool taken by an inference now (not those waiting for one); asked of the backend at each scrape.",
    }
    REQUESTS: Counter<3> {
        name: "warden_requests_total",
        labels: ["api", "interface", "decision"],
        set: Warden,
        help: "Calls handled, by the audit decision.",
        meaning: "Every audited call (health probes are not), whatever it named, by its audit record's `decision`.",
    }
    REFUSALS: Counter<1> {
        name: "warden_refusals_total",
        labels: ["reason"],
        set: Warden,
        help: "Calls refused, by the refusal table's fixed reason label.",
        meaning: "One per refused call, labelled by `gateway/src/refusal.rs`.",
    }
    AUTH_FAILURES: Counter<1> {
        name: "warden_auth_failures_total",
        labels: ["reason"],
        set: Warden,
        help: "Calls refused by authentication, by reason.",
        meaning: "Failed authentications (missing, malformed, expired, ... credentials).",
    }
    AUTHZ_DENIED: Counter<1> {
        name: "warden_authz_denied_total",
        labels: ["model"],
        set: Warden,
        help: "Calls refused by the authorization policy, by model.",
        meaning: "Policy denials; `model` is `_unknown` for every name the repository does not have.",
    }
    RATE_LIMITED: Counter<1> {
        name: "warden_rate_limited_total",
        labels: ["scope"],
        set: Warden,
        help: "Calls refused by a rate limit, by scope.",
        meaning: "Rate-limit refusals: `ip` (failed authentications and health probes), `principal`, `model`, `total`.",
    }
    QUOTA_REFUSED: Counter<1> {
        name: "warden_quota_refused_total",
        labels: ["scope"],
        set: Warden,
        help: "Calls refused by a memory quota, by scope.",
        meaning: "Calls whose bytes did not fit the in-flight quota of their principal or of the server.",
    }
    QUOTA_IN_FLIGHT_BYTES: Gauge<0> {
        name: "warden_quota_in_flight_bytes",
        labels: [],
        set: Warden,
        help: "Request bytes reserved against the server's memory quota now.",
        meaning: "Bytes of bodies and decoded tensors held by calls in flight, counted in KiB units (`limits.quota_bytes`; absent when it is 0).",
    }
    TLS_HANDSHAKES: Counter<1> {
        name: "warden_tls_handshakes_total",
        labels: ["result"],
        set: Warden,
        help: "TLS handshakes, by result.",
        meaning: "`ok`, `failed` or `timeout`, both listeners.",
    }
    CONNECTIONS: Gauge<1> {
        name: "warden_connections",
        labels: ["listener"],
        set: Warden,
        help: "Open client connections, by listener.",
        meaning: "Connections past their TLS handshake, open now.",
    }
    CONNECTIONS_REFUSED: Counter<1> {
        name: "warden_connections_refused_total",
        labels: ["reason"],
        set: Warden,
        help: "Connections closed at once by a connection limit, by reason.",
        meaning: "Connections over `limits.max_connections` or the per-IP limit.",
    }
    CONNECTIONS_TIMED_OUT: Counter<1> {
        name: "warden_connections_timed_out_total",
        labels: ["reason"],
        set: Warden,
        help: "Connections closed because no request arrived in time.",
        meaning: "Connections closed by the header read timeout.",
    }
    BACKEND_UNAVAILABLE: Counter<0> {
        name: "warden_backend_unavailable_total",
        labels: [],
        set: Warden,
        help: "Calls that found the backend unavailable.",
        meaning: "Calls refused because the backend could not be reached or was restarting.",
    }
    BACKEND_RESTARTS: Counter<0> {
        name: "warden_backend_restarts_total",
        labels: [],
        set: Warden,
        help: "Times the supervisor restarted the backend.",
        meaning: "Counted by `warden serve`, reported by the backend it started; read at each scrape.",
    }
    AUDIT_WRITE_FAILURES: Counter<0> {
        name: "warden_audit_write_failures_total",
        labels: [],
        set: Warden,
        help: "Audit records that could not be written.",
        meaning: "Each record lost; the call is refused unless `audit.fail_open`.",
    }
    AUDIT_WRITES: Counter<0> {
        name: "warden_audit_writes_total",
        labels: [],
        set: Warden,
        help: "Writes to the audit log, each of one or more records.",
        meaning: "Records of calls that finish together share one write (group commit): records per write is `warden_requests_total` over this. Read at each scrape.",
    }
    AUDIT_HEALTHY: Gauge<0> {
        name: "warden_audit_healthy",
        labels: [],
        set: Warden,
        help: "1 while audit records can be written, 0 while they cannot.",
        meaning: "While 0, requests are refused (fail closed).",
    }
    CONFIG_RELOADS: Counter<1> {
        name: "warden_config_reloads_total",
        labels: ["result"],
        set: Warden,
        help: "Configuration reloads, by result.",
        meaning: "SIGHUP or file-change reloads of certificates, keys and policy: `ok` or `failed`.",
    }
}

/// Series key: family name and its rendered labels.
type Key = (&'static str, String);

struct Hist {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
    /// Shared with [`Tracked`] guards, which count themselves out when dropped.
    gauges: Mutex<BTreeMap<Key, Arc<AtomicI64>>>,
    hists: Mutex<BTreeMap<Key, Hist>>,
}

/// Holds a gauge one higher while it lives (`ovms_current_requests`).
pub struct Tracked(Arc<AtomicI64>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Appends `v` to `out` escaped as a label value (backslash, double quote, newline).
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `a="x",b="y"`; a label with an empty value is left out (the same series to
/// Prometheus, and how OVMS writes `ModelReady` without `version`). Written into one
/// buffer: it runs on every update of a series, several times per request.
fn labels(family: &Family, values: &[&str]) -> String {
    let mut out = String::with_capacity(64);
    for (k, v) in family.labels.iter().zip(values) {
        if v.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_into(&mut out, v);
        out.push('"');
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn inc<const N: usize>(&self, c: Counter<N>, values: [&str; N]) {
        self.add(c, values, 1);
    }

    /// Adds `n` (0 makes the series exist, so a dashboard shows 0 rather than nothing).
    pub fn add<const N: usize>(&self, c: Counter<N>, values: [&str; N], n: u64) {
        *lock(&self.counters)
            .entry((c.0.name, labels(c.0, &values)))
            .or_default() += n;
    }

    /// Raises a counter to `total` when it is behind (a count kept elsewhere).
    pub fn raise_to<const N: usize>(&self, c: Counter<N>, values: [&str; N], total: u64) {
        let mut counters = lock(&self.counters);
        let v = counters
            .entry((c.0.name, labels(c.0, &values)))
            .or_default();
        *v = (*v).max(total);
    }

    fn gauge<const N: usize>(&self, g: Gauge<N>, values: [&str; N]) -> Arc<AtomicI64> {
        Arc::clone(
            lock(&self.gauges)
                .entry((g.0.name, labels(g.0, &values)))
                .or_default(),
        )
    }

    pub fn gauge_add<const N: usize>(&self, g: Gauge<N>, values: [&str; N], d: i64) {
        self.gauge(g, values).fetch_add(d, Ordering::AcqRel);
    }

    pub fn set<const N: usize>(&self, g: Gauge<N>, values: [&str; N], v: i64) {
        self.gauge(g, values).store(v, Ordering::Release);
    }

    /// Raises the gauge by one until the returned guard is dropped.
    pub fn track<const N: usize>(&self, g: Gauge<N>, values: [&str; N]) -> Tracked {
        let v = self.gauge(g, values);
        v.fetch_add(1, Ordering::AcqRel);
        Tracked(v)
    }

    /// Replaces every series of `g` with `series` (a model version no longer served
    /// loses its series).
    pub fn replace<const N: usize>(
        &self,
        g: Gauge<N>,
        series: impl IntoIterator<Item = ([String; N], i64)>,
    ) {
        let mut gauges = lock(&self.gauges);
        gauges.retain(|(name, _), _| *name != g.0.name);
        for (values, v) in series {
            let values: [&str; N] = std::array::from_fn(|i| values[i].as_str());
            gauges.insert(
                (g.0.name, labels(g.0, &values)),
                Arc::new(AtomicI64::new(v)),
            );
        }
    }

    pub fn observe<const N: usize>(&self, h: Histogram<N>, values: [&str; N], v: f64) {
        let mut hists = lock(&self.hists);
        let h = hists
            .entry((h.0.name, labels(h.0, &values)))
            .or_insert_with(|| Hist {
                buckets: vec![0; BUCKETS_US.len()],
                sum: 0.0,
                count: 0,
            });
        for (i, b) in BUCKETS_US.iter().enumerate() {
            if v <= *b {
                h.buckets[i] += 1;
            }
        }
        h.sum += v;
        h.count += 1;
    }

    /// The Prometheus text exposition of the families `exported` says yes to, in
    /// [`FAMILIES`] order.
    pub fn render(&self, exported: impl Fn(&Family) -> bool) -> String {
        let counters = lock(&self.counters);
        let gauges = lock(&self.gauges);
        let hists = lock(&self.hists);
        let mut out = String::new();
        let series = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        for f in FAMILIES.iter().filter(|f| exported(f)) {
            let name = f.name;
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} {}",
                f.help,
                f.kind.as_str()
            );
            match f.kind {
                Kind::Counter => {
                    for ((_, l), v) in counters.iter().filter(|((n, _), _)| *n == name) {
                        let _ = writeln!(out, "{name}{} {v}", series(l));
                    }
                }
                Kind::Gauge => {
                    for ((_, l), v) in gauges.iter().filter(|((n, _), _)| *n == name) {
                        let _ = writeln!(out, "{name}{} {}", series(l), v.load(Ordering::Acquire));
                    }
                }
                Kind::Histogram => {
                    for ((_, l), h) in hists.iter().filter(|((n, _), _)| *n == name) {
                        let sep = if l.is_empty() { "" } else { "," };
                        for (b, c) in BUCKETS_US.iter().zip(&h.buckets) {
                            let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"{b}\"}} {c}");
                        }
                        let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                        let _ = writeln!(out, "{name}_sum{} {}", series(l), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", series(l), h.count);
                    }
                }
            }
        }
        out
    }
}

/// The metrics table of `docs/metrics.md`, generated from [`FAMILIES`] (a test keeps
/// the file equal to it).
pub fn docs_table() -> String {
    let mut out =
        String::from("| name | type | labels | exported | meaning |\n|---|---|---|---|---|\n");
    for f in FAMILIES {
        let set = match f.set {
            Set::OvmsDefault => "OVMS default set",
            Set::OvmsOptional => "only when listed in `metrics.list`",
            Set::Warden => "always",
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {set} | {} {} |",
            f.name,
            f.kind.as_str(),
            if f.labels.is_empty() {
                "none".to_owned()
            } else {
                f.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            f.help,
            f.meaning
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn label_values_are_escaped_and_empty_ones_left_out() {
        let f = REQUESTS_SUCCESS.0;
        assert_eq!(
            labels(f, &["KServe", "gRPC", "", "a\\b\"c\nd", "1"]),
            r#"api="KServe",interface="gRPC",name="a\\b\"c\nd",version="1""#
        );
        assert_eq!(labels(f, &["", "", "", "", ""]), "");
        assert_eq!(labels(f, &["", "", "", "", "2"]), r#"version="2""#);
    }

    fn repo_file(path: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc(AUTH_FAILURES, ["token_expired"]);
        m.inc(AUTH_FAILURES, ["token_expired"]);
        m.observe(REQUEST_TIME, ["REST", "m", "1"], 300.0);
        let text = m.render(|_| true);
        assert!(
            text.contains("warden_auth_failures_total{reason=\"token_expired\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "ovms_request_time_us_bucket{interface=\"REST\",name=\"m\",version=\"1\",le=\"250\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ovms_request_time_us_bucket{interface=\"REST\",name=\"m\",version=\"1\",le=\"500\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ovms_request_time_us_count{interface=\"REST\",name=\"m\",version=\"1\"} 1"
            ),
            "{text}"
        );
        m.inc(
            REQUESTS_SUCCESS,
            ["KServe", "REST", "ModelReady", "a\"b", ""],
        );
        let text = m.render(|_| true);
        assert!(
            text.contains(
                "ovms_requests_success{api=\"KServe\",interface=\"REST\",method=\"ModelReady\",name=\"a\\\"b\"} 1"
            ),
            "an empty label is left out: {text}"
        );
        assert!(!m.render(|f| f.set == Set::Warden).contains("ovms_"));
    }

    #[test]
    fn tracked_gauges_count_out_and_replaced_gauges_forget_old_series() {
        let m = Metrics::default();
        let a = m.track(CURRENT_REQUESTS, ["m", "1"]);
        let b = m.track(CURRENT_REQUESTS, ["m", "1"]);
        assert!(
            m.render(|_| true)
                .contains("ovms_current_requests{name=\"m\",version=\"1\"} 2")
        );
        drop((a, b));
        assert!(
            m.render(|_| true)
                .contains("ovms_current_requests{name=\"m\",version=\"1\"} 0")
        );
        m.replace(STREAMS, [(["m".to_string(), "1".to_string()], 4)]);
        m.replace(STREAMS, [(["m".to_string(), "2".to_string()], 2)]);
        let text = m.render(|_| true);
        assert!(
            text.contains("ovms_streams{name=\"m\",version=\"2\"} 2"),
            "{text}"
        );
        assert!(!text.contains("version=\"1\"} 4"), "{text}");
        m.raise_to(BACKEND_RESTARTS, [], 3);
        m.raise_to(BACKEND_RESTARTS, [], 1);
        assert!(
            m.render(|_| true)
                .contains("warden_backend_restarts_total 3")
        );
    }

    #[test]
    fn families_are_unique_and_named_by_their_set() {
        let mut seen = BTreeSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} declared twice", f.name);
            assert_eq!(
                f.name.starts_with("ovms_"),
                f.set != Set::Warden,
                "{}",
                f.name
            );
            assert_eq!(
                f.kind == Kind::Counter && f.set == Set::Warden,
                f.name.ends_with("_total"),
                "{}: Warden's counters, and only they, end in _total",
                f.name
            );
        }
    }

    /// The OVMS names the configuration accepts (`metrics.list`, `--metrics_list`,
    /// config.json) are exactly the registry's OVMS families, default set first.
    #[test]
    fn the_configuration_knows_exactly_the_registry_ovms_families() {
        use warden_shared::config::{OVMS_DEFAULT_METRICS, OVMS_METRICS};
        let ovms = |set: Set| -> BTreeSet<&str> {
            FAMILIES
                .iter()
                .filter(|f| f.set == set)
                .map(|f| f.name)
                .collect()
        };
        let default: BTreeSet<&str> = OVMS_METRICS[..OVMS_DEFAULT_METRICS]
            .iter()
            .copied()
            .collect();
        let optional: BTreeSet<&str> = OVMS_METRICS[OVMS_DEFAULT_METRICS..]
            .iter()
            .copied()
            .collect();
        assert_eq!(default, ovms(Set::OvmsDefault));
        assert_eq!(optional, ovms(Set::OvmsOptional));
    }

    /// `docs/metrics.md` holds the table generated from the registry, unchanged.
    #[test]
    fn the_docs_table_is_the_registry() {
        let docs = repo_file("docs/metrics.md");
        assert!(
            docs.contains(&docs_table()),
            "docs/metrics.md is out of date; its table must be:\n{}",
            docs_table()
        );
    }

    /// Metric names an expression uses: identifiers of the OVMS or Warden namespaces,
    /// with a histogram's `_bucket` / `_sum` / `_count` suffix taken off.
    fn names_in(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut word = String::new();
        for c in expr.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            if word.starts_with("ovms_") || word.starts_with("warden_") {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .filter(|b| {
                        FAMILIES
                            .iter()
                            .any(|f| f.name == *b && f.kind == Kind::Histogram)
                    })
                    .unwrap_or(&word);
                names.push(base.to_owned());
            }
            word.clear();
        }
        names
    }

    /// Every expression of the dashboard (panel targets and template variables).
    fn dashboard_expressions() -> Vec<String> {
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("expr" | "definition" | "query", serde_json::Value::String(s)) => {
                                out.push(s.clone())
                            }
                            _ => walk(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let d: serde_json::Value =
            serde_json::from_str(&repo_file("deploy/grafana/warden.json")).expect("JSON");
        let mut out = Vec::new();
        walk(&d, &mut out);
        out
    }

    /// Every metric a dashboard panel or variable queries is in the registry, and only
    /// metrics exported by default, so every panel has data without a `metrics.list`
    /// (tests/metrics.rs checks that each has a series after a short load).
    #[test]
    fn the_dashboard_queries_only_registry_metrics_exported_by_default() {
        let exprs = dashboard_expressions();
        assert!(exprs.len() > 10, "{exprs:?}");
        let mut used = BTreeSet::new();
        for e in &exprs {
            for n in names_in(e) {
                let f = FAMILIES
                    .iter()
                    .find(|f| f.name == n)
                    .unwrap_or_else(|| panic!("dashboard queries {n}, not in the registry: {e}"));
                assert_ne!(
                    f.set,
                    Set::OvmsOptional,
                    "{n} is not exported by default: {e}"
                );
                used.insert(n);
            }
        }
        assert!(used.len() >= 10, "{used:?}");
    }

    #[test]
    fn names_in_expressions_are_found() {
        assert_eq!(
            names_in(
                "histogram_quantile(0.5, sum by (le) (rate(ovms_request_time_us_bucket{name=~\"$model\"}[5m]))) / warden_connections"
            ),
            vec![
                "ovms_request_time_us".to_string(),
                "warden_connections".to_string()
            ]
        );
    }
}
