//! The audit log: one JSON line per decision, hash-chained so that an edited, inserted,
//! deleted or reordered record is detected by `warden audit verify`.
//!
//! Each line carries `seq` (one more than the line before) and `prev`, the SHA-256 (hex)
//! of the previous line's bytes; the first record of a log has seq 0 and prev all
//! zeros. Rotation (by size or by age) renames the file to `<path>.<first seq, 12
//! digits>` and the chain continues in the new file, whose first record (`rotate`)
//! names the file it continues and the files retention deleted. Never a token, a key, a
//! secret or tensor contents: the record type has no field that could hold one. Every
//! string a client can influence is bounded and escaped here, at write time, whatever
//! the caller passed.
//!
//! Group commit: the records of calls that finish together are chained in order and
//! written with one `write` (and, with `fsync = "always"`, one `fsync`) under one lock.
//! Each call waits for the write that holds its record and is answered only after it:
//! a batch that fails fails every call in it, as one record would. With
//! `fsync = "always"` the batch is written off the async workers, so the calls that
//! finish during one `fsync` share the next.
//!
//! A failed or short write is rolled back (the file is truncated to the end of the
//! last whole record), so the chain never continues from half a record. Fail closed:
//! while records cannot be written the log is unhealthy, readiness reports it, requests
//! are refused with 503 (unless `audit.fail_open`), and an error is logged every few
//! seconds; the first write that succeeds again (a request, or [`AuditLog::retry`]
//! from housekeeping) records the outage in the chain and turns the log healthy.

use crate::logsafe::log_safe_bounded;
use serde::Serialize;
use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_shared::config::{AuditConfig, FsyncPolicy};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Least time between two "audit log unwritable" error lines.
const LOUD_EVERY: Duration = Duration::from_secs(5);

/// One audit record. Optional fields are left out when empty.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Record {
    /// `request`, `start`, `stop`, `reload`, `rotate`, `audit` (the log's own events).
    pub event: &'static str,
    /// Warden's own id for the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client's `x-request-id`, as sent (bounded and escaped); never Warden's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'static str>,
    /// allowed, denied, rate_limited, quota_exceeded, invalid, failed, unauthenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// HTTP status, or for gRPC the HTTP-equivalent of the gRPC code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// For `start`: the effective security settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// The verified signature digest of the model version that answered (OMS), so an
    /// operator can prove which exact model produced an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
}

/// Bounds, in bytes of escaped text, of the string fields a client can influence.
pub mod bounds {
    pub const ID: usize = 128;
    pub const CLIENT: usize = 64;
    pub const SHORT: usize = 64;
    pub const NAME: usize = 256;
    pub const REASON: usize = 1024;
}

/// `r` with every string field bounded and escaped (borrowed when nothing changes).
fn bounded(r: &Record) -> Cow<'_, Record> {
    use bounds::*;
    let fields: [(&Option<String>, usize); 14] = [
        (&r.request_id, ID),
        (&r.client_request_id, ID),
        (&r.client, CLIENT),
        (&r.protocol, SHORT),
        (&r.cipher, SHORT),
        (&r.principal, NAME),
        (&r.issuer, NAME),
        (&r.certificate, NAME),
        (&r.key_id, ID),
        (&r.jti_sha256, SHORT),
        (&r.model, NAME),
        (&r.version, SHORT),
        (&r.reason, REASON),
        (&r.model_digest, ID),
    ];
    let dirty = fields.iter().any(|(f, max)| {
        f.as_deref()
            .is_some_and(|s| matches!(log_safe_bounded(s, *max), Cow::Owned(_)))
    });
    if !dirty {
        return Cow::Borrowed(r);
    }
    let mut r = r.clone();
    for (f, max) in [
        (&mut r.request_id, ID),
        (&mut r.client_request_id, ID),
        (&mut r.client, CLIENT),
        (&mut r.protocol, SHORT),
        (&mut r.cipher, SHORT),
        (&mut r.principal, NAME),
        (&mut r.issuer, NAME),
        (&mut r.certificate, NAME),
        (&mut r.key_id, ID),
        (&mut r.jti_sha256, SHORT),
        (&mut r.model, NAME),
        (&mut r.version, SHORT),
        (&mut r.reason, REASON),
        (&mut r.model_digest, ID),
    ] {
        if let Some(s) = f.as_deref()
            && let Cow::Owned(safe) = log_safe_bounded(s, max)
        {
            *f = Some(safe);
        }
    }
    Cow::Owned(r)
}

/// The fields the log adds to every record; they come first on the line.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    seq: u64,
    #[serde(flatten)]
    record: &'a Record,
    prev: &'a str,
}

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log write failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

enum Output {
    Stdout,
    File {
        file: File,
        path: PathBuf,
        /// Length of the file up to the end of its last whole record.
        size: u64,
        /// The seq of the file's first record (names the file when it is rotated).
        first_seq: u64,
        /// When the file's first record was written (for age rotation).
        started: Option<time::OffsetDateTime>,
    },
}

/// Rotation and retention limits (0: none).
#[derive(Clone, Copy)]
struct Limits {
    max_file_bytes: u64,
    max_file_age: Option<Duration>,
    max_files: u32,
    max_total_bytes: u64,
}

/// Records could not be written since `since`.
struct Outage {
    since: String,
    refused: u64,
    first_error: String,
    last_loud: Instant,
}

struct Sink {
    out: Output,
    seq: u64,
    prev: String,
    limits: Limits,
    fsync: FsyncPolicy,
    /// A rollback failed: the file may end in part of a record; truncate before writing.
    dirty: bool,
    /// The log's own records, written before the next record.
    pending: Vec<Record>,
    outage: Option<Outage>,
}

pub struct AuditLog {
    sink: Mutex<Sink>,
    /// Records of [`AuditLog::append`] waiting for the next write.
    queue: Mutex<Queue>,
    healthy: AtomicBool,
    fail_open: bool,
    /// `fsync = "always"`: batches are written on a blocking thread.
    fsync_always: bool,
    failures: AtomicU64,
    /// Writes to the log (each one or more records), for `warden_audit_writes_total`.
    writes: AtomicU64,
}

/// A record and the call waiting for it to be written.
type Waiter = (Record, tokio::sync::oneshot::Sender<Result<(), AuditError>>);

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// A writer is draining the queue: new records join it instead of starting one.
    writing: bool,
}

/// Most records one write carries (a bound on the buffer; the rest go in the next).
const MAX_BATCH: usize = 256;

/// Clears `writing` when a drain ends, even by a panic, so the next record starts a
/// new writer instead of waiting for one that is gone (its own waiters, dropped with
/// the panic, are answered with an error: fail closed).
struct Draining<'a>(&'a Mutex<Queue>);

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        lock(self.0).writing = false;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The same failure again, for every record of a batch it failed.
fn again(e: &AuditError) -> AuditError {
    let kind = match e {
        AuditError::Io(e) => e.kind(),
        AuditError::Encode(_) => std::io::ErrorKind::InvalidData,
    };
    AuditError::Io(std::io::Error::new(kind, e.to_string()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    warden_shared::hex(d.as_ref())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o640)
        .open(path)
}

/// The rotated files of the log at `path` (`<path>.<12 digits>`), oldest first, with
/// the seq their name gives.
pub fn rotated_files(path: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(digits) = file.strip_prefix(&prefix)
            && digits.len() == 12
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(seq) = digits.parse()
        {
            out.push((seq, path.with_file_name(&file)));
        }
    }
    out.sort();
    Ok(out)
}

/// The seq a rotated file's name gives, if it is named like one.
fn seq_in_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let (_, digits) = name.rsplit_once('.')?;
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Where the existing files leave the chain.
struct Resume {
    next_seq: u64,
    prev: String,
    /// Length of the live file up to the end of its last whole record.
    size: u64,
    first_seq: u64,
    started: Option<time::OffsetDateTime>,
    /// Bytes of a torn last record cut from the live file.
    cut: u64,
}

fn record_fields(line: &[u8]) -> std::io::Result<(u64, Option<time::OffsetDateTime>)> {
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line is not an audit record: {e}"),
        )
    })?;
    let seq = v["seq"].as_u64().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "audit record without seq")
    })?;
    let time = v["time"].as_str().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    Ok((seq, time))
}

/// The first and last whole lines of `bytes`, and where the last whole line ends.
fn whole_lines(bytes: &[u8]) -> (Option<&[u8]>, Option<&[u8]>, usize) {
    let end = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let body = &bytes[..end];
    let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let first = lines.next();
    let last = lines.next_back().or(first);
    (first, last, end)
}

fn resume(path: &Path) -> std::io::Result<Resume> {
    let mut r = Resume {
        next_seq: 0,
        prev: GENESIS.into(),
        size: 0,
        first_seq: 0,
        started: None,
        cut: 0,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let (first, last, end) = whole_lines(&bytes);
    r.size = end as u64;
    r.cut = (bytes.len() - end) as u64;
    if let (Some(first), Some(last)) = (first, last) {
        let (first_seq, started) = record_fields(first)?;
        let (last_seq, _) = record_fields(last)?;
        r.first_seq = first_seq;
        r.started = started;
        r.next_seq = last_seq + 1;
        r.prev = sha256_hex(last);
        return Ok(r);
    }
    // The live file has no record: the chain continues from the newest rotated file.
    if let Some((_, newest)) = rotated_files(path)?.pop() {
        let bytes = std::fs::read(&newest)?;
        if let (_, Some(last), _) = whole_lines(&bytes) {
            r.next_seq = record_fields(last)?.0 + 1;
            r.prev = sha256_hex(last);
        }
    }
    r.first_seq = r.next_seq;
    Ok(r)
}

impl AuditLog {
    /// Opens the log, continuing the chain of the existing files. A torn last record
    /// (no final newline: a crash or a full disk mid-write) is cut off, and the cut is
    /// recorded in the chain.
    pub fn open(cfg: &AuditConfig) -> std::io::Result<AuditLog> {
        let mut pending = Vec::new();
        let (out, seq, prev) = if cfg.path == Path::new("-") {
            (Output::Stdout, 0, GENESIS.to_string())
        } else {
            let r = resume(&cfg.path)?;
            let file = open_append(&cfg.path)?;
            if r.cut > 0 {
                file.set_len(r.size)?;
                tracing::warn!(
                    path = %cfg.path.display(),
                    bytes = r.cut,
                    "audit log ended in a torn record (no final newline); it was cut off"
                );
                pending.push(Record {
                    event: "audit",
                    decision: Some("failed"),
                    reason: Some(format!(
                        "on open: cut a torn partial record of {} bytes from the end of {}",
                        r.cut,
                        cfg.path.display()
                    )),
                    ..Record::default()
                });
            }
            (
                Output::File {
                    file,
                    path: cfg.path.clone(),
                    size: r.size,
                    first_seq: r.first_seq,
                    started: r.started,
                },
                r.next_seq,
                r.prev,
            )
        };
        Ok(AuditLog {
            sink: Mutex::new(Sink {
                out,
                seq,
                prev,
                limits: Limits {
                    max_file_bytes: cfg.max_file_bytes,
                    max_file_age: (cfg.max_file_age_secs > 0)
                        .then(|| Duration::from_secs(cfg.max_file_age_secs)),
                    max_files: cfg.max_files,
                    max_total_bytes: cfg.max_total_bytes,
                },
                fsync: cfg.fsync,
                dirty: false,
                pending,
                outage: None,
            }),
            queue: Mutex::default(),
            healthy: AtomicBool::new(true),
            fail_open: cfg.fail_open,
            fsync_always: cfg.fsync == FsyncPolicy::Always,
            failures: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    /// Appends one record. On failure the log turns unhealthy and stays so until a
    /// later write succeeds; that write first records the outage.
    pub fn write(&self, record: &Record) -> Result<(), AuditError> {
        let mut sink = lock(&self.sink);
        self.write_one(&mut sink, record)
    }

    fn write_one(&self, sink: &mut Sink, record: &Record) -> Result<(), AuditError> {
        let result = sink.flush_own().and_then(|()| sink.write_record(record));
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.settle(sink, &result);
        result
    }

    /// Appends one record with the records of the calls finishing alongside (group
    /// commit, see the module doc); returns once the write that holds it is done.
    pub async fn append(self: &Arc<Self>, record: Record) -> Result<(), AuditError> {
        let (done, written) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = lock(&self.queue);
            q.waiting.push((record, done));
            !std::mem::replace(&mut q.writing, true)
        };
        if lead {
            if self.fsync_always {
                let log = Arc::clone(self);
                drop(tokio::task::spawn_blocking(move || log.drain()));
            } else {
                // A write without fsync is quick: done here, with no await in between,
                // so a cancelled call cannot leave the queue without a writer.
                self.drain();
            }
        }
        written.await.unwrap_or_else(|_| {
            Err(AuditError::Io(std::io::Error::other(
                "the audit writer stopped before writing the record",
            )))
        })
    }

    /// Writes what is queued, batch after batch, until the queue is empty.
    fn drain(&self) {
        let _draining = Draining(&self.queue);
        loop {
            let batch: Vec<Waiter> = {
                let mut q = lock(&self.queue);
                if q.waiting.is_empty() {
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect()
            };
            let (records, waiters): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
            let results = self.commit(&records);
            for (w, r) in waiters.into_iter().zip(results) {
                let _ = w.send(r);
            }
        }
    }

    /// Writes `records` in order: with one write when the log is healthy and no
    /// rotation falls inside them, else one by one as [`AuditLog::write`] does.
    fn commit(&self, records: &[Record]) -> Vec<Result<(), AuditError>> {
        let mut sink = lock(&self.sink);
        if records.len() > 1 && sink.pending.is_empty() && sink.outage.is_none() {
            match sink.encode(records) {
                Ok((lines, hash)) if sink.fits(lines.len() as u64) => {
                    let result = sink.put(&lines, records.len() as u64, hash);
                    self.writes.fetch_add(1, Ordering::Relaxed);
                    let result = result.map_err(AuditError::from);
                    let results: Vec<_> = records
                        .iter()
                        .map(|_| result.as_ref().map_err(again).copied())
                        .collect();
                    for r in &results {
                        self.settle(&mut sink, r);
                    }
                    return results;
                }
                // A rotation inside the batch, or a record that cannot be encoded:
                // one by one, so each gets its own outcome.
                _ => {}
            }
        }
        records
            .iter()
            .map(|r| self.write_one(&mut sink, r))
            .collect()
    }

    /// While unhealthy, tries to write the log's pending records (the outage record
    /// first), so that the log recovers even when no request comes to write one (a
    /// server that is not ready gets no traffic). Returns whether the log is healthy.
    pub fn retry(&self) -> bool {
        if self.healthy() {
            return true;
        }
        let mut sink = lock(&self.sink);
        let result = sink.flush_own();
        if let Err(e) = &result
            && let Some(o) = sink.outage.as_mut()
        {
            if o.last_loud.elapsed() >= LOUD_EVERY {
                o.last_loud = Instant::now();
                tracing::error!(error = %e, refused = o.refused, since = %o.since,
                    "AUDIT LOG UNWRITABLE: requests are refused (503) until a record can be written");
            }
            return false;
        }
        self.settle(&mut sink, &result);
        result.is_ok()
    }

    fn settle(&self, sink: &mut Sink, result: &Result<(), AuditError>) {
        match result {
            Ok(()) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!("AUDIT LOG WRITABLE AGAIN: serving requests");
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                self.failures.fetch_add(1, Ordering::Relaxed);
                match sink.outage.as_mut() {
                    Some(o) => {
                        o.refused += 1;
                        if o.last_loud.elapsed() >= LOUD_EVERY {
                            o.last_loud = Instant::now();
                            tracing::error!(error = %e, refused = o.refused, since = %o.since,
                                "AUDIT LOG UNWRITABLE: requests are refused (503) until a record can be written");
                        }
                    }
                    None => {
                        tracing::error!(error = %e,
                            "AUDIT LOG WRITE FAILED: requests are refused (503) until a record can be written");
                        sink.outage = Some(Outage {
                            since: now_rfc3339(),
                            refused: 1,
                            first_error: e.to_string(),
                            last_loud: Instant::now(),
                        });
                    }
                }
            }
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// Records that could not be written since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Writes to the log since the start, each of one or more records.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl Sink {
    /// Writes the log's own pending records and, after an outage, the record of it.
    fn flush_own(&mut self) -> Result<(), AuditError> {
        while let Some(r) = self.pending.first().cloned() {
            self.write_record(&r)?;
            self.pending.remove(0);
        }
        if let Some(o) = &self.outage {
            let r = Record {
                event: "audit",
                decision: Some("failed"),
                reason: Some(format!(
                    "records could not be written from {} until now: {} refused (first error: {})",
                    o.since, o.refused, o.first_error
                )),
                ..Record::default()
            };
            self.write_record(&r)?;
            self.outage = None;
        }
        Ok(())
    }

    /// The lines of `records`, chained on from the last record written; and the hash
    /// of the last of them.
    fn encode(&self, records: &[Record]) -> Result<(Vec<u8>, String), AuditError> {
        let mut lines = Vec::with_capacity(records.len() * 512);
        let mut prev = self.prev.clone();
        for (seq, record) in (self.seq..).zip(records) {
            let start = lines.len();
            serde_json::to_writer(
                &mut lines,
                &Line {
                    time: now_rfc3339(),
                    seq,
                    record: &bounded(record),
                    prev: &prev,
                },
            )?;
            prev = sha256_hex(&lines[start..]);
            lines.push(b'\n');
        }
        Ok((lines, prev))
    }

    fn write_record(&mut self, record: &Record) -> Result<(), AuditError> {
        let record = std::slice::from_ref(record);
        let (mut line, mut hash) = self.encode(record)?;
        if let Some(note) = self.rotate_if_needed(line.len() as u64)? {
            // The new file starts with the record of the rotation; if it cannot be
            // written now it is written before the next record.
            let (l, h) = self.encode(std::slice::from_ref(&note))?;
            if let Err(e) = self.put(&l, 1, h) {
                self.pending.insert(0, note);
                return Err(e.into());
            }
            (line, hash) = self.encode(record)?;
        }
        self.put(&line, 1, hash)?;
        Ok(())
    }

    /// Writes `count` encoded lines whole, or none of them; `hash` is the last one's.
    fn put(&mut self, line: &[u8], count: u64, hash: String) -> std::io::Result<()> {
        match &mut self.out {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line)?;
                out.flush()?;
            }
            Output::File {
                file,
                size,
                started,
                ..
            } => {
                if self.dirty {
                    file.set_len(*size)?;
                    self.dirty = false;
                }
                // One write of the whole line: with O_APPEND it lands in one piece or,
                // on a full disk, in part: then the part is cut off again.
                let written = loop {
                    match file.write(line) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        r => break r,
                    }
                };
                let mut failure = match written {
                    Ok(n) if n == line.len() => None,
                    Ok(n) => Some(std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!("short write ({n} of {} bytes): disk full?", line.len()),
                    )),
                    Err(e) => Some(e),
                };
                if failure.is_none()
                    && self.fsync == FsyncPolicy::Always
                    && let Err(e) = file.sync_data()
                {
                    failure = Some(e);
                }
                if let Some(e) = failure {
                    if let Err(t) = file.set_len(*size) {
                        tracing::error!(error = %t, "audit log: cannot cut a partly written record; retrying before the next one");
                        self.dirty = true;
                    }
                    return Err(e);
                }
                if *size == 0 {
                    *started = Some(time::OffsetDateTime::now_utc());
                }
                *size += line.len() as u64;
            }
        }
        self.seq += count;
        self.prev = hash;
        Ok(())
    }

    /// Why `incoming` more bytes must go to a new file, if they must: `"size"`, they
    /// would pass the size limit; `"age"`, the live file is older than the age limit.
    /// Never for an empty file.
    fn rotation_due(&self, incoming: u64) -> Option<&'static str> {
        let Output::File { size, started, .. } = &self.out else {
            return None;
        };
        if *size == 0 {
            None
        } else if self.limits.max_file_bytes > 0 && *size + incoming > self.limits.max_file_bytes {
            Some("size")
        } else if self.too_old(*started) {
            Some("age")
        } else {
            None
        }
    }

    /// Whether `incoming` bytes of several records can go to the live file whole: no
    /// rotation is due before them and none would fall inside them (an empty file
    /// takes any one record, not any batch).
    fn fits(&self, incoming: u64) -> bool {
        let max = self.limits.max_file_bytes;
        match &self.out {
            Output::File { size, .. } => {
                self.rotation_due(incoming).is_none() && (max == 0 || *size + incoming <= max)
            }
            Output::Stdout => true,
        }
    }

    fn too_old(&self, started: Option<time::OffsetDateTime>) -> bool {
        match (self.limits.max_file_age, started) {
            (Some(age), Some(t)) => time::OffsetDateTime::now_utc() - t >= age,
            _ => false,
        }
    }

    /// Rotates the live file when the next line would pass the size limit or the file
    /// is older than the age limit; returns the record that starts the new file.
    fn rotate_if_needed(&mut self, incoming: u64) -> std::io::Result<Option<Record>> {
        let Some(why) = self.rotation_due(incoming) else {
            return Ok(None);
        };
        let seq = self.seq;
        let limits = self.limits;
        let Output::File {
            file,
            path,
            size,
            first_seq,
            started,
        } = &mut self.out
        else {
            return Ok(None);
        };
        let rotated = PathBuf::from(format!("{}.{:012}", path.display(), first_seq));
        if rotated.symlink_metadata().is_ok() {
            // Never overwrite an older part of the chain.
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists", rotated.display()),
            ));
        }
        file.sync_data()?;
        std::fs::rename(&*path, &rotated)?;
        let new = open_append(path).inspect_err(|_| {
            // Put the old file back so the chain stays in one place.
            let _ = std::fs::rename(&rotated, &*path);
        })?;
        *file = new;
        *size = 0;
        *started = None;
        let continued = format!(
            "{} (seq {}..={}, {})",
            rotated.display(),
            first_seq,
            seq.saturating_sub(1),
            why
        );
        *first_seq = seq;
        let pruned = prune(path, limits);
        let mut reason = format!("rotated: continues from {continued}");
        if !pruned.is_empty() {
            reason.push_str("; retention deleted ");
            reason.push_str(&pruned.join(", "));
        }
        Ok(Some(Record {
            event: "rotate",
            decision: Some("allowed"),
            reason: Some(reason),
            ..Record::default()
        }))
    }
}

/// Deletes the oldest rotated files beyond `max_files` / `max_total_bytes` (the live
/// file is never deleted); returns what it deleted, as `name (seq N..)`.
fn prune(path: &Path, limits: Limits) -> Vec<String> {
    if limits.max_files == 0 && limits.max_total_bytes == 0 {
        return Vec::new();
    }
    let files = match rotated_files(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "audit retention: cannot list rotated files");
            return Vec::new();
        }
    };
    let len = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut total: u64 = files.iter().map(|(_, p)| len(p)).sum::<u64>() + len(path);
    let mut count = files.len();
    let mut deleted = Vec::new();
    let files_next: Vec<u64> = files.iter().skip(1).map(|(s, _)| *s).collect();
    for (i, (seq, file)) in files.iter().enumerate() {
        let over_count = limits.max_files > 0 && count > limits.max_files as usize;
        let over_bytes = limits.max_total_bytes > 0 && total > limits.max_total_bytes;
        if !(over_count || over_bytes) {
            break;
        }
        let size = len(file);
        match std::fs::remove_file(file) {
            Ok(()) => {
                count -= 1;
                total = total.saturating_sub(size);
                let end = files_next
                    .get(i)
                    .map(|n| format!("{}", n.saturating_sub(1)))
                    .unwrap_or_default();
                deleted.push(format!("{} (seq {seq}..={end})", file.display()));
            }
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "audit retention: cannot delete an old audit file");
                break;
            }
        }
    }
    if !deleted.is_empty() {
        tracing::info!(files = ?deleted, "audit retention deleted old files");
    }
    deleted
}

/// What a pre-flight check of the audit destination found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Facts for `warden check`.
    pub notes: Vec<String>,
    /// Things that work but should be fixed.
    pub warnings: Vec<String>,
}

/// Whether `uid:gid` (no supplementary groups, as after the privilege drop) has the
/// `want` bits (`r`=4, `w`=2, `x`=1) on a file with this metadata.
fn permits(meta: &std::fs::Metadata, uid: u32, gid: u32, want: u32) -> bool {
    if uid == 0 {
        return true;
    }
    let mode = meta.permissions().mode();
    let bits = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid {
        mode >> 3
    } else {
        mode
    } & 7;
    bits & want == want
}

/// Whether `uid:gid` can reach `path` (search permission on every ancestor) and has
/// `want` on it.
pub fn accessible_by(path: &Path, uid: u32, gid: u32, want: u32) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            break;
        }
        let m = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if !permits(&m, uid, gid, 1) {
            return Err(format!(
                "uid {uid} cannot enter {} (mode {:o}, owner {}:{})",
                d.display(),
                m.permissions().mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
        }
        dir = d.parent();
    }
    if !permits(&meta, uid, gid, want) {
        return Err(format!(
            "uid {uid} may not {} {} (mode {:o}, owner {}:{})",
            match want {
                4 => "read",
                3 => "create files in",
                _ => "use",
            },
            path.display(),
            meta.permissions().mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    Ok(())
}

/// Checks the audit destination before the gateway starts (and in `warden check`):
/// the folder exists (created `0750`, owned by the gateway, when `create` is set and
/// it does not), the gateway's `uid:gid` after the privilege drop can create and
/// rename files in it (rotation), nobody else can (not world-writable), the live file
/// is a regular file, and the file system has at least `min_free_bytes` free. `run_as`
/// is the uid:gid the gateway will run as.
pub fn preflight(cfg: &AuditConfig, run_as: (u32, u32), create: bool) -> Result<Preflight, String> {
    let mut out = Preflight::default();
    if cfg.path == Path::new("-") {
        out.notes
            .push("standard output (shared with anything else written there)".into());
        return Ok(out);
    }
    let (uid, gid) = run_as;
    let dir = match cfg.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if std::fs::symlink_metadata(&dir).is_err() {
        if !create {
            out.warnings.push(format!(
                "{} does not exist; the gateway creates it (0750, owner {uid}:{gid}) at start",
                dir.display()
            ));
            return Ok(out);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .map_err(|e| format!("cannot create the audit folder {}: {e}", dir.display()))?;
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to {uid}:{gid}: {e}", dir.display()))?;
        }
        out.notes.push(format!(
            "created {} (0750, owner {uid}:{gid})",
            dir.display()
        ));
    }
    let meta = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "the audit folder {} is world-writable (mode {:o}): anyone could delete or replace audit files; use 0750 owned by the gateway's uid {uid}",
            dir.display(),
            mode & 0o7777
        ));
    }
    accessible_by(&dir, uid, gid, 3).map_err(|e| {
        format!(
            "the gateway (uid {uid}:{gid} after dropping privileges) cannot rotate the audit log in {}: {e}; make the folder owned by uid {uid} with mode 0750",
            dir.display()
        )
    })?;
    if meta.uid() != uid && meta.uid() != 0 {
        out.warnings.push(format!(
            "the audit folder {} is owned by uid {}, who can rewrite the audit history; prefer owner {uid}",
            dir.display(),
            meta.uid()
        ));
    }
    if mode & 0o020 != 0 && meta.gid() != gid {
        out.warnings.push(format!(
            "the audit folder {} is writable by group {}",
            dir.display(),
            meta.gid()
        ));
    }
    match std::fs::symlink_metadata(&cfg.path) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(format!(
                "the audit log {} is not a regular file (a symlink or special file is refused)",
                cfg.path.display()
            ));
        }
        Ok(m) if !permits(&m, uid, gid, 6) => {
            return Err(format!(
                "the audit log {} cannot be read and appended to by uid {uid} (mode {:o}, owner {}:{}); chown it to the gateway's uid",
                cfg.path.display(),
                m.permissions().mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
        }
        _ => {}
    }
    let st = nix::sys::statvfs::statvfs(&dir)
        .map_err(|e| format!("cannot stat the file system of {}: {e}", dir.display()))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < cfg.min_free_bytes {
        return Err(format!(
            "the audit file system of {} has {free} bytes free, less than audit.min_free_bytes = {}",
            dir.display(),
            cfg.min_free_bytes
        ));
    }
    out.notes.push(format!(
        "{} (folder owner {}:{} mode {:o}, writable by uid {uid}; {} MiB free)",
        cfg.path.display(),
        meta.uid(),
        meta.gid(),
        mode & 0o7777,
        free >> 20
    ));
    if cfg.max_total_bytes > free.saturating_add(current_bytes(&cfg.path)) {
        out.warnings.push(format!(
            "audit.max_total_bytes ({}) exceeds the free space ({free} bytes): the disk fills before retention deletes anything",
            cfg.max_total_bytes
        ));
    }
    if cfg.max_files == 0 && cfg.max_total_bytes == 0 {
        out.warnings.push(
            "no audit retention (audit.max_files and audit.max_total_bytes are 0): rotated files are never deleted".into(),
        );
    }
    Ok(out)
}

fn current_bytes(path: &Path) -> u64 {
    let live = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    live + rotated_files(path)
        .unwrap_or_default()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
}

/// Where a chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub file: String,
    pub line: usize,
    pub seq: Option<u64>,
    pub why: String,
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub records: u64,
    /// The seq of the first record present; above 0 when older files were pruned.
    pub first_seq: u64,
    /// Whether the set starts where a file starts (seq 0 or a `rotate` record), as it
    /// does after pruning; if not, records before the first one were cut out of a file.
    pub starts_at_file_start: bool,
}

/// The files to verify for the arguments of `warden audit verify`: an argument that is
/// a live log with rotated files stands for the whole set; a set is put in chain order
/// (by the seq in the names, live file last) when every file belongs to one log.
pub fn expand(args: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for a in args {
        let mut rotated = Vec::new();
        if seq_in_name(a).is_none() {
            rotated = rotated_files(a)?;
            for (_, p) in &rotated {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        // A live file not (yet) there after a rotation: the rotated files are the set.
        let keep = rotated.is_empty() || a.symlink_metadata().is_ok();
        if keep && !out.contains(a) {
            out.push(a.clone());
        }
    }
    let live: Vec<&PathBuf> = out.iter().filter(|p| seq_in_name(p).is_none()).collect();
    if let [live] = live.as_slice() {
        let live = (*live).clone();
        let prefix = format!("{}.", live.display());
        if out
            .iter()
            .all(|p| *p == live || p.display().to_string().starts_with(&prefix))
        {
            out.sort_by_key(|p| seq_in_name(p).unwrap_or(u64::MAX));
        }
    }
    Ok(out)
}

/// Verifies the chain across `files` (oldest first). The first record present may have
/// a seq above 0 (older files pruned by retention); from there every seq and every
/// `prev` must follow. A seq gap where one file ends and the next begins means a file
/// of the set is missing: deleted from the middle (tampering), not pruned.
pub fn verify(files: &[PathBuf]) -> std::io::Result<Result<Intact, Break>> {
    let mut expect: Option<(u64, String)> = None;
    let mut first_seq = None;
    let mut starts_at_file_start = true;
    let mut count = 0u64;
    let mut last_file: Option<String> = None;
    for path in files {
        let text = std::fs::read(path)?;
        let shown = path.display().to_string();
        let mut first_in_file = true;
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            if raw.is_empty() {
                continue;
            }
            let brk = |seq: Option<u64>, why: String| Break {
                file: shown.clone(),
                line: i + 1,
                seq,
                why,
            };
            let v: serde_json::Value = match serde_json::from_slice(raw) {
                Ok(v) => v,
                Err(e) => return Ok(Err(brk(None, format!("not a JSON record: {e}")))),
            };
            let Some(seq) = v["seq"].as_u64() else {
                return Ok(Err(brk(None, "record without seq".into())));
            };
            if first_in_file
                && let Some(named) = seq_in_name(path)
                && named != seq
            {
                return Ok(Err(brk(
                    Some(seq),
                    format!(
                        "the file's name says it starts at seq {named}, but its first record is seq {seq} (renamed or replaced)"
                    ),
                )));
            }
            match &expect {
                None => {
                    // The first record present. seq 0 must start from the genesis;
                    // a later one means older files were pruned.
                    if seq == 0 && v["prev"].as_str() != Some(GENESIS) {
                        return Ok(Err(brk(Some(0), "seq 0 without the genesis prev".into())));
                    }
                    first_seq = Some(seq);
                    starts_at_file_start = seq == 0 || v["event"] == "rotate";
                }
                Some((want, prev)) => {
                    if seq != *want {
                        let why = if first_in_file && seq > *want {
                            format!(
                                "file starts at seq {seq} but {} ended at seq {}: records {want}..={} are missing, a file in the middle of the set was deleted (tampering)",
                                last_file.as_deref().unwrap_or("the previous file"),
                                want - 1,
                                seq - 1
                            )
                        } else if first_in_file {
                            format!(
                                "file starts at seq {seq} but the previous file ended at seq {}: files out of order or duplicated",
                                want.saturating_sub(1)
                            )
                        } else {
                            format!(
                                "seq {seq}, expected {want} (record inserted, deleted or reordered)"
                            )
                        };
                        return Ok(Err(brk(Some(seq), why)));
                    }
                    if v["prev"].as_str() != Some(prev.as_str()) {
                        return Ok(Err(brk(
                            Some(seq),
                            "prev does not match the previous record (a record before it was changed, or this one was)".into(),
                        )));
                    }
                }
            }
            expect = Some((seq + 1, sha256_hex(raw)));
            first_in_file = false;
            count += 1;
        }
        last_file = Some(shown);
    }
    Ok(Ok(Intact {
        records: count,
        first_seq: first_seq.unwrap_or(0),
        starts_at_file_start,
    }))
}

#[cfg(test)]
impl AuditLog {
    /// Makes every later write fail (EBADF on a read-only handle), as a dead disk
    /// would: for the tests of the log's callers.
    pub(crate) fn break_writes(&self) {
        if let Output::File { file, path, .. } = &mut lock(&self.sink).out
            && let Ok(read_only) = File::open(&path)
        {
            *file = read_only;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &Path, max: u64) -> AuditConfig {
        AuditConfig {
            path: path.to_path_buf(),
            max_file_bytes: max,
            max_file_age_secs: 0,
            max_files: 0,
            max_total_bytes: 0,
            min_free_bytes: 0,
            fsync: FsyncPolicy::Never,
            fail_open: false,
        }
    }

    fn log_in(dir: &Path, max: u64) -> (AuditLog, PathBuf) {
        let path = dir.join("audit.log");
        (AuditLog::open(&cfg(&path, max)).unwrap(), path)
    }

    /// A scratch folder, removed when the test drops it.
    fn tmp(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("warden-audit-unit-{tag}-"))
            .tempdir()
            .unwrap()
    }

    fn rec(i: u64) -> Record {
        Record {
            event: "request",
            request_id: Some(format!("r{i}")),
            decision: Some("allowed"),
            status: Some(200),
            ..Record::default()
        }
    }

    fn records(n: u64) -> impl Fn(Result<Intact, Break>) -> bool {
        move |r| matches!(r, Ok(Intact { records, .. }) if records == n)
    }

    /// Opens `dir/audit.log` for [`AuditLog::append`], with the given fsync policy.
    fn shared_log(dir: &Path, fsync: FsyncPolicy) -> (Arc<AuditLog>, PathBuf) {
        let path = dir.join("audit.log");
        let cfg = AuditConfig {
            fsync,
            ..cfg(&path, 0)
        };
        (Arc::new(AuditLog::open(&cfg).unwrap()), path)
    }

    /// Starts `n` calls appending a record each while the test holds the log's lock,
    /// and returns once every one has queued its record (or is the writer waiting for
    /// the lock with its own).
    async fn queue_behind_the_lock(
        log: &Arc<AuditLog>,
        n: u64,
    ) -> Vec<tokio::task::JoinHandle<Result<(), AuditError>>> {
        let started = Arc::new(AtomicU64::new(0));
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let (log, started) = (Arc::clone(log), Arc::clone(&started));
                tokio::spawn(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    log.append(rec(i)).await
                })
            })
            .collect();
        while started.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The last call queues its record right after counting itself.
        tokio::time::sleep(Duration::from_millis(100)).await;
        calls
    }

    /// A queued call's outcome, or a failure if no writer answers it within 10 s (a
    /// queue left without a writer would otherwise hang the test).
    async fn answered(
        call: tokio::task::JoinHandle<Result<(), AuditError>>,
    ) -> Result<(), AuditError> {
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("no writer answered the call")
            .unwrap()
    }

    /// Waits (at most 10 s) until no writer holds the queue: a drain that has ended
    /// must let go of it, or no later call would ever lead a write.
    async fn writer_let_go(log: &AuditLog) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&log.queue).writing {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never let go of the queue"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Group commit: calls that finish while a write is under way share the next
    /// write, with their records chained in order, under either fsync policy (a
    /// blocking thread writes under `always`, the first call itself under `never`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_finishing_together_share_one_write_and_stay_chained() {
        for (tag, fsync) in [
            ("always", FsyncPolicy::Always),
            ("never", FsyncPolicy::Never),
        ] {
            let d_scratch = tmp(&format!("group-{tag}"));
            let d = d_scratch.path();
            let (log, path) = shared_log(&d, fsync);
            let held = lock(&log.sink);
            let calls = queue_behind_the_lock(&log, 32).await;
            assert_eq!(
                log.writes(),
                0,
                "{tag}: nothing can be written while the lock is held"
            );
            drop(held);
            for c in calls {
                answered(c).await.unwrap();
            }
            // The first call's writer may have taken only its own record before it
            // waited for the lock: then the other 31 went together in a second write.
            assert!(
                (1..=2).contains(&log.writes()),
                "{tag}: 32 records in {} writes",
                log.writes()
            );
            assert!(
                records(32)(verify(std::slice::from_ref(&path)).unwrap()),
                "{tag}"
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let ids: std::collections::BTreeSet<_> = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string()
                })
                .collect();
            assert_eq!(ids.len(), 32, "{tag}: every call's own record, once");
            assert!(log.healthy());
            writer_let_go(&log).await;
        }
    }

    /// A batch that cannot be written fails every call in it (fail closed, each
    /// counted), leaves no part of it in the file, and the next write records the
    /// outage and continues the chain from the last whole record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_batch_that_cannot_be_written_fails_every_call_in_it_and_the_chain_recovers() {
        let d_scratch = tmp("group-fail");
        let d = d_scratch.path();
        let (log, path) = shared_log(&d, FsyncPolicy::Always);
        answered(tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append(rec(100)).await }
        }))
        .await
        .unwrap();
        writer_let_go(&log).await;
        let before = std::fs::read(&path).unwrap();
        let set_file = |f: File| {
            if let Output::File { file, .. } = &mut lock(&log.sink).out {
                *file = f;
            }
        };
        // Writes to a read-only handle fail (EBADF), as they would on a dead disk.
        set_file(File::open(&path).unwrap());
        let held = lock(&log.sink);
        let calls = queue_behind_the_lock(&log, 16).await;
        drop(held);
        for c in calls {
            assert!(
                answered(c).await.is_err(),
                "a call whose record was not written must fail"
            );
        }
        assert_eq!(log.failures(), 16);
        assert!(!log.healthy());
        assert!(!log.retry(), "the file is still unwritable");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "no part of the failed batch stays"
        );
        // The next batch (written here directly, so that it is one batch whatever the
        // timing) writes the outage record first, then its own, on the chain.
        set_file(open_append(&path).unwrap());
        let results = log.commit(&(101..109).map(rec).collect::<Vec<_>>());
        assert!(results.iter().all(Result::is_ok));
        assert!(log.healthy() && log.retry());
        assert!(records(10)(verify(std::slice::from_ref(&path)).unwrap()));
        let text = std::fs::read_to_string(&path).unwrap();
        let outage = text.lines().nth(1).unwrap();
        assert!(
            outage.contains(r#""event":"audit""#)
                && outage.contains(r#""decision":"failed""#)
                && outage.contains("16 refused"),
            "{outage}"
        );
    }

    #[test]
    fn chain_verifies_and_every_tampering_is_found() {
        let d_scratch = tmp("chain");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 0);
        for i in 0..5 {
            log.write(&rec(i)).unwrap();
        }
        assert!(records(5)(verify(std::slice::from_ref(&path)).unwrap()));
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let check = |ls: &[String]| {
            let p = d.join("t.log");
            std::fs::write(&p, ls.join("\n") + "\n").unwrap();
            verify(&[p]).unwrap()
        };
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("\"status\":200", "\"status\":500");
        assert_eq!(
            check(&edited).unwrap_err().line,
            4,
            "an edit breaks the next record's prev"
        );
        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted).unwrap_err().line, 2);
        let mut swapped = lines.clone();
        swapped.swap(1, 3);
        assert_eq!(check(&swapped).unwrap_err().line, 2);
        let mut inserted = lines.clone();
        inserted.insert(3, lines[3].clone());
        assert_eq!(check(&inserted).unwrap_err().line, 5);
        let mut first_cut = lines.clone();
        first_cut.remove(0);
        let r = check(&first_cut).unwrap();
        assert!(
            !r.starts_at_file_start,
            "records cut from the start of a file are told apart from pruned files"
        );
        let mut last_edited = lines.clone();
        last_edited[4] = last_edited[4].replace("r4", "r9");
        // The last record has no successor, so an edit to it is not detected, and a
        // resumed log hashes the edited line and carries on. The newest record is only
        // protected once it has left the host (see docs/audit.md).
        assert!(check(&last_edited).is_ok());
    }

    #[test]
    fn reopening_continues_the_chain_and_rotation_keeps_it() {
        let d_scratch = tmp("rotate");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 600);
        for i in 0..3 {
            log.write(&rec(i)).unwrap();
        }
        drop(log);
        let (log, _) = log_in(&d, 600);
        for i in 3..12 {
            log.write(&rec(i)).unwrap();
        }
        let files = expand(std::slice::from_ref(&path)).unwrap();
        assert!(files.len() >= 3, "rotated: {files:?}");
        assert_eq!(files.last(), Some(&path), "the live file last");
        let r = verify(&files).unwrap().unwrap();
        assert_eq!(r.first_seq, 0);
        let requests = files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.contains("\"event\":\"request\""))
            .count();
        assert_eq!(requests, 12);
        // Every rotated-to file starts with the record of the rotation.
        for f in &files[1..] {
            let first = std::fs::read_to_string(f).unwrap();
            assert!(
                first.starts_with('{')
                    && first
                        .lines()
                        .next()
                        .unwrap()
                        .contains("\"event\":\"rotate\""),
                "{first}"
            );
            let rotate = first.lines().next().unwrap();
            assert!(
                rotate.contains(", size)") && rotate.contains(r#""decision":"allowed""#),
                "{first}"
            );
        }
    }

    /// A batch that crosses the size limit is written record by record, so that the
    /// rotation falls between two records as it would without group commit: no file
    /// passes the limit, and the chain runs across the files.
    #[test]
    fn a_batch_crossing_a_rotation_rotates_between_its_records() {
        let d_scratch = tmp("batch-rotate");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 1000);
        let results = log.commit(&(0..20).map(rec).collect::<Vec<_>>());
        assert!(results.iter().all(Result::is_ok));
        let files = expand(std::slice::from_ref(&path)).unwrap();
        assert!(files.len() >= 3, "rotated: {files:?}");
        for f in &files {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len <= 1000, "{} has {len} bytes", f.display());
        }
        assert!(records(20 + files.len() as u64 - 1)(
            verify(&files).unwrap()
        ));
    }

    /// The size limit is a bound the file reaches but never passes; an empty file is
    /// never rotated, whatever comes.
    #[test]
    fn rotation_is_due_past_the_size_limit_not_at_it() {
        let d_scratch = tmp("due");
        let d = d_scratch.path();
        let (log, _) = log_in(&d, 1000);
        let mut sink = lock(&log.sink);
        assert_eq!(sink.rotation_due(5000), None, "an empty file");
        if let Output::File { size, .. } = &mut sink.out {
            *size = 100;
        }
        assert_eq!(sink.rotation_due(900), None);
        assert_eq!(sink.rotation_due(901), Some("size"));
    }

    /// Rotation by size with retention: the set keeps at most `max_files` rotated files,
    /// the chain runs across them, and verify tells pruning (at the start, fine) from a
    /// deleted middle file, an edited record and a reordered pair (tampering).
    #[test]
    fn rotation_with_retention_and_verification_across_files() {
        let d_scratch = tmp("retention");
        let d = d_scratch.path();
        let path = d.join("audit.log");
        let mut c = cfg(&path, 1500);
        c.max_files = 3;
        let log = AuditLog::open(&c).unwrap();
        for i in 0..120 {
            log.write(&rec(i)).unwrap();
        }
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(
            rotated.len(),
            3,
            "retention keeps 3 rotated files: {rotated:?}"
        );
        let files = expand(std::slice::from_ref(&path)).unwrap();
        assert_eq!(files.len(), 4);
        let intact = verify(&files).unwrap().unwrap();
        assert!(intact.first_seq > 0, "older files were pruned");
        assert!(intact.starts_at_file_start, "pruning removes whole files");
        // The rotation record says what retention deleted.
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.contains("retention deleted"), "{live}");

        // Tampering with copies of the set.
        let copy = |tag: &str| -> Vec<PathBuf> {
            let t = d.join(format!("copy-{tag}"));
            std::fs::create_dir(&t).unwrap();
            files
                .iter()
                .map(|f| {
                    let to = t.join(f.file_name().unwrap());
                    std::fs::copy(f, &to).unwrap();
                    to
                })
                .collect()
        };
        // A deleted middle file.
        let mut set = copy("middle");
        let gone = set.remove(1);
        std::fs::remove_file(&gone).unwrap();
        let b = verify(&set).unwrap().unwrap_err();
        assert_eq!(b.file, set[1].display().to_string());
        assert_eq!(b.line, 1);
        assert!(
            b.why.contains("in the middle") && b.why.contains("tampering"),
            "{b:?}"
        );
        // The set found by expanding the live file's name says the same.
        let b2 = verify(&expand(&[set[2].clone()]).unwrap())
            .unwrap()
            .unwrap_err();
        assert_eq!(b2.why, b.why);
        // The oldest file deleted: that is what pruning does, so the rest verifies.
        let mut set = copy("oldest");
        std::fs::remove_file(set.remove(0)).unwrap();
        let r = verify(&set).unwrap().unwrap();
        assert!(r.starts_at_file_start);
        // An edited record in the middle of a rotated file.
        let set = copy("edit");
        let text = std::fs::read_to_string(&set[1]).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[1] = lines[1].replace("\"status\":200", "\"status\":201");
        std::fs::write(&set[1], lines.join("\n") + "\n").unwrap();
        let b = verify(&set).unwrap().unwrap_err();
        assert_eq!((b.file.as_str(), b.line), (set[1].to_str().unwrap(), 3));
        assert!(b.why.contains("prev does not match"), "{b:?}");
        // A reordered pair.
        let set = copy("swap");
        let text = std::fs::read_to_string(&set[2]).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.swap(1, 2);
        std::fs::write(&set[2], lines.join("\n") + "\n").unwrap();
        let b = verify(&set).unwrap().unwrap_err();
        assert_eq!((b.file.as_str(), b.line), (set[2].to_str().unwrap(), 2));
        assert!(b.why.contains("reordered"), "{b:?}");
        // A rotated file renamed to look older or newer.
        let set = copy("rename");
        let renamed = set[1].with_file_name("audit.log.000000000001");
        std::fs::rename(&set[1], &renamed).unwrap();
        let b = verify(&[set[0].clone(), renamed, set[2].clone(), set[3].clone()])
            .unwrap()
            .unwrap_err();
        assert!(b.why.contains("name says"), "{b:?}");
    }

    #[test]
    fn byte_retention_keeps_the_total_under_the_limit() {
        let d_scratch = tmp("bytes");
        let d = d_scratch.path();
        let path = d.join("audit.log");
        let mut c = cfg(&path, 500);
        c.max_total_bytes = 2000;
        let log = AuditLog::open(&c).unwrap();
        for i in 0..80 {
            log.write(&rec(i)).unwrap();
        }
        let files = expand(std::slice::from_ref(&path)).unwrap();
        let total: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        // Pruning runs at rotation; the live file may have grown by one file since.
        assert!(total <= 2000 + 500, "{total}");
        assert!(verify(&files).unwrap().is_ok());
    }

    #[test]
    fn age_rotation() {
        let d_scratch = tmp("age");
        let d = d_scratch.path();
        let path = d.join("audit.log");
        let mut c = cfg(&path, 0);
        c.max_file_age_secs = 1;
        let log = AuditLog::open(&c).unwrap();
        log.write(&rec(0)).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        // A batch (group commit) rotates too, before its first record.
        assert!(log.commit(&[rec(1), rec(2)]).iter().all(Result::is_ok));
        assert_eq!(rotated_files(&path).unwrap().len(), 1);
        let files = expand(std::slice::from_ref(&path)).unwrap();
        assert!(verify(&files).unwrap().is_ok());
        assert!(std::fs::read_to_string(&path).unwrap().contains(", age)"));
    }

    #[test]
    fn a_torn_last_record_is_cut_on_open_and_the_chain_continues() {
        let d_scratch = tmp("torn");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 0);
        for i in 0..3 {
            log.write(&rec(i)).unwrap();
        }
        drop(log);
        // Half a record, as a full disk or a crash leaves it.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":\"2026-01-01T00:00:00Z\",\"seq\":3,\"ev")
            .unwrap();
        drop(f);
        assert!(verify(std::slice::from_ref(&path)).unwrap().is_err());
        // The next records come as a batch (group commit): the record of the cut is
        // still written first.
        let (log, _) = log_in(&d, 0);
        assert!(
            log.commit(&[rec(3), rec(4), rec(5)])
                .iter()
                .all(Result::is_ok)
        );
        let r = verify(std::slice::from_ref(&path)).unwrap().unwrap();
        assert_eq!(r.records, 7, "3 + the record of the cut + 3");
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.lines().nth(3).unwrap();
        assert!(cut.contains("cut a torn partial record"), "{text}");
        assert!(
            cut.contains(r#""event":"audit""#) && cut.contains(r#""decision":"failed""#),
            "{cut}"
        );
    }

    #[test]
    fn an_empty_live_file_continues_from_the_newest_rotated_file() {
        let d_scratch = tmp("empty-live");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 500);
        for i in 0..10 {
            log.write(&rec(i)).unwrap();
        }
        drop(log);
        // A rotation whose live file got no record yet.
        let next = rotated_files(&path).unwrap().len();
        assert!(next >= 1);
        let live_first = {
            let text = std::fs::read_to_string(&path).unwrap();
            record_fields(text.lines().next().unwrap().as_bytes())
                .unwrap()
                .0
        };
        std::fs::rename(
            &path,
            path.with_file_name(format!("audit.log.{live_first:012}")),
        )
        .unwrap();
        std::fs::write(&path, b"").unwrap();
        let (log, _) = log_in(&d, 500);
        log.write(&rec(10)).unwrap();
        let files = expand(std::slice::from_ref(&path)).unwrap();
        assert!(verify(&files).unwrap().is_ok());
    }

    #[test]
    fn client_strings_are_bounded_and_escaped() {
        let d_scratch = tmp("bounded");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 0);
        let huge = "A".repeat(64 * 1024);
        log.write(&Record {
            event: "request",
            request_id: Some("r\nforged".into()),
            client_request_id: Some(huge.clone()),
            principal: Some(format!("evil\n{{\"seq\":99}}\u{1b}[2J{huge}")),
            reason: Some(huge.clone()),
            model: Some("m\u{9b}x".into()),
            ..Record::default()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.len() < 4096, "{}", text.len());
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let p = v["principal"].as_str().unwrap();
        assert!(p.starts_with("evil\\n{\"seq\":99}\\u{1b}[2J"), "{p}");
        assert!(p.ends_with("bytes]"));
        assert!(!p.contains('\u{1b}') && !p.contains('\n'));
        assert_eq!(v["request_id"], "r\\nforged");
        assert_eq!(v["model"], "m\\u{9b}x");
        assert!(v["client_request_id"].as_str().unwrap().len() <= bounds::ID + 32);
        assert!(v["reason"].as_str().unwrap().len() <= bounds::REASON + 32);
    }

    #[test]
    fn preflight_refuses_what_would_fail_later() {
        let d_scratch = tmp("preflight");
        let d = d_scratch.path();
        let run_as = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let mut c = cfg(&d.join("logs/audit.log"), 0);
        // Missing folder: created (owned by the gateway) when asked to.
        let p = preflight(&c, run_as, false).unwrap();
        assert!(!p.warnings.is_empty());
        preflight(&c, run_as, true).unwrap();
        assert!(d.join("logs").is_dir());
        assert_eq!(
            std::fs::metadata(d.join("logs"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        // World-writable: refused.
        std::fs::set_permissions(d.join("logs"), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            preflight(&c, run_as, true)
                .unwrap_err()
                .contains("world-writable")
        );
        std::fs::set_permissions(d.join("logs"), std::fs::Permissions::from_mode(0o750)).unwrap();
        // A folder the gateway's uid cannot write: refused (checked for another uid).
        if run_as.0 == 0 {
            let e = preflight(&c, (5001, 5001), true).unwrap_err();
            assert!(e.contains("cannot rotate"), "{e}");
        }
        // Not enough free space: refused.
        c.min_free_bytes = u64::MAX;
        assert!(
            preflight(&c, run_as, true)
                .unwrap_err()
                .contains("min_free_bytes")
        );
        c.min_free_bytes = 0;
        // A symlink as the log: refused.
        std::os::unix::fs::symlink("/etc/passwd", d.join("logs/audit.log")).unwrap();
        assert!(
            preflight(&c, run_as, true)
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn permission_model_for_another_uid() {
        let d_scratch = tmp("perm");
        let d = d_scratch.path();
        let f = d.join("key");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert!(permits(&m, m.uid(), m.gid(), 4));
        assert!(!permits(&m, m.uid() + 1, m.gid() + 1, 4));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert!(permits(&m, m.uid() + 1, m.gid(), 4));
        assert!(!permits(&m, m.uid() + 1, m.gid(), 2));
    }

    #[test]
    fn records_cannot_carry_secrets() {
        // The record has no field for a token, key or tensor; this pins its field names.
        let v = serde_json::to_value(Record {
            event: "request",
            ..Record::default()
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"event": "request"}));
    }

    /// The log messages emitted while a closure runs on this thread.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<String>>>);

    impl tracing::Subscriber for Logs {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = Message(String::new());
            event.record(&mut m);
            lock(&self.0).push(m.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    impl Logs {
        /// How many messages so far contain `text`.
        fn count(&self, text: &str) -> usize {
            lock(&self.0).iter().filter(|m| m.contains(text)).count()
        }
    }

    /// Whether the test can run: as root, or else skipped with a note, unless
    /// WARDEN_REQUIRE_ROOT=1 (CI), where it fails (a test that needs root must not
    /// pass without checking anything).
    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("WARDEN_REQUIRE_ROOT").as_deref() != Ok("1"),
            "this test needs root (files of other owners) and WARDEN_REQUIRE_ROOT=1 is set"
        );
        eprintln!("SKIPPED: needs root (files of other owners)");
        false
    }

    fn chown_mode(p: &Path, owner: (u32, u32), mode: u32) {
        std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Every record carries the time it was written, as RFC 3339 (what age rotation
    /// reads back on open).
    #[test]
    fn records_carry_the_time_they_were_written() {
        let d_scratch = tmp("time");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 0);
        log.write(&rec(0)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let t = time::OffsetDateTime::parse(
            v["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let skew = (time::OffsetDateTime::now_utc() - t).abs();
        assert!(skew < time::Duration::minutes(1), "{t} is not now");
    }

    /// A log folder that is not there has no rotated files; a folder that cannot be
    /// listed is an error, not an empty set.
    #[test]
    fn rotated_files_of_a_missing_folder_are_none_of_an_unlistable_one_an_error() {
        let d_scratch = tmp("rotated-dir");
        let d = d_scratch.path();
        assert_eq!(
            rotated_files(&d.join("missing/audit.log")).unwrap(),
            Vec::new()
        );
        std::fs::write(d.join("afile"), b"x").unwrap();
        let e = rotated_files(&d.join("afile/audit.log")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotADirectory);
    }

    /// A rotated file's name ends in exactly 12 digits.
    #[test]
    fn a_rotated_name_has_twelve_digits() {
        assert_eq!(
            seq_in_name(Path::new("/x/audit.log.000000000042")),
            Some(42)
        );
        assert_eq!(seq_in_name(Path::new("/x/audit.log.42")), None);
        assert_eq!(seq_in_name(Path::new("/x/audit.log.0000000000042")), None);
        assert_eq!(seq_in_name(Path::new("/x/audit.log.00000000004x")), None);
        assert_eq!(seq_in_name(Path::new("/x/audit.log")), None);
    }

    /// A live file that cannot be read is an error on open, never taken for an empty
    /// one (that would restart the chain at seq 0 in front of its records). As root a
    /// file's mode does not stop a read, so a folder stands in for the unreadable file.
    #[test]
    fn an_unreadable_live_file_is_an_error_not_an_empty_log() {
        let d_scratch = tmp("resume-unreadable");
        let d = d_scratch.path();
        let live = d.join("audit.log");
        std::fs::create_dir(&live).unwrap();
        let e = resume(&live).err().expect("an unreadable live file");
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory);
    }

    /// Reopening a log that ends in a whole record cuts nothing and records no cut;
    /// a torn end is reported with the exact number of bytes cut.
    #[test]
    fn reopening_a_whole_log_cuts_nothing_and_a_torn_one_reports_its_bytes() {
        let d_scratch = tmp("reopen-clean");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 0);
        for i in 0..3 {
            log.write(&rec(i)).unwrap();
        }
        drop(log);
        let before = std::fs::read(&path).unwrap();
        let (log, _) = log_in(&d, 0);
        log.write(&rec(3)).unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.as_bytes().starts_with(&before));
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            text.lines().all(|l| l.contains(r#""event":"request""#)),
            "{text}"
        );
        // 10 bytes of a torn record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":\"2").unwrap();
        drop(f);
        let (log, _) = log_in(&d, 0);
        log.write(&rec(4)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(
            text.lines()
                .nth(4)
                .unwrap()
                .contains("cut a torn partial record of 10 bytes"),
            "{text}"
        );
        assert!(records(6)(verify(std::slice::from_ref(&path)).unwrap()));
    }

    /// While records cannot be written, the error is repeated at most every
    /// `LOUD_EVERY` (on a refused record and on housekeeping's retry alike), and the
    /// log says it is writable again once, when it recovers, not on every write.
    #[test]
    fn unwritable_and_writable_again_are_logged_once_per_change_or_period() {
        let d_scratch = tmp("loud");
        let d = d_scratch.path();
        let (log, path) = log_in(&d, 0);
        let logs = Logs::default();
        tracing::subscriber::with_default(logs.clone(), || {
            log.write(&rec(0)).unwrap();
            log.write(&rec(1)).unwrap();
            assert_eq!(logs.count("WRITABLE AGAIN"), 0, "never unwritable");
            log.break_writes();
            assert!(log.write(&rec(2)).is_err());
            assert_eq!(logs.count("AUDIT LOG WRITE FAILED"), 1);
            // Right after the first error: quiet.
            assert!(log.write(&rec(3)).is_err());
            assert!(!log.retry());
            assert_eq!(logs.count("AUDIT LOG UNWRITABLE"), 0);
            let back = |log: &AuditLog| {
                lock(&log.sink).outage.as_mut().unwrap().last_loud =
                    Instant::now() - LOUD_EVERY - Duration::from_secs(1);
            };
            // A period later: once from a refused record...
            back(&log);
            assert!(log.write(&rec(4)).is_err());
            assert_eq!(logs.count("AUDIT LOG UNWRITABLE"), 1);
            assert!(log.write(&rec(5)).is_err());
            assert_eq!(logs.count("AUDIT LOG UNWRITABLE"), 1);
            // ...and once from a retry.
            back(&log);
            assert!(!log.retry());
            assert_eq!(logs.count("AUDIT LOG UNWRITABLE"), 2);
            assert!(!log.retry());
            assert_eq!(logs.count("AUDIT LOG UNWRITABLE"), 2);
            // Writable again: said once.
            if let Output::File { file, .. } = &mut lock(&log.sink).out {
                *file = open_append(&path).unwrap();
            }
            assert!(log.retry());
            log.write(&rec(6)).unwrap();
            log.write(&rec(7)).unwrap();
            assert_eq!(logs.count("WRITABLE AGAIN"), 1);
        });
        assert_eq!(log.failures(), 4);
    }

    /// A write the file system takes only in part (here a non-blocking pipe with less
    /// room than the batch) fails as a short write: the records are not counted as
    /// written and the log turns unhealthy.
    #[test]
    fn a_short_write_fails() {
        let d_scratch = tmp("short");
        let d = d_scratch.path();
        let (log, _) = log_in(&d, 0);
        let (_read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .unwrap();
        if let Output::File { file, .. } = &mut lock(&log.sink).out {
            *file = File::from(write);
        }
        // Far more than a pipe's 64 KiB.
        let big: Vec<Record> = (0..200)
            .map(|i| Record {
                reason: Some("x".repeat(1000)),
                ..rec(i)
            })
            .collect();
        let results = log.commit(&big);
        assert_eq!(results.len(), 200);
        for r in results {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("short write"), "{e}");
        }
        assert!(!log.healthy());
        assert_eq!(lock(&log.sink).seq, 0, "nothing was written");
    }

    /// `fsync = "always"` syncs each write (a file that cannot be synced fails the
    /// write), `never` does not.
    #[test]
    fn fsync_always_syncs_and_never_does_not() {
        for (fsync, synced) in [(FsyncPolicy::Always, true), (FsyncPolicy::Never, false)] {
            let d_scratch = tmp(&format!("fsync-{synced}"));
            let d = d_scratch.path();
            let path = d.join("audit.log");
            let log = AuditLog::open(&AuditConfig {
                fsync,
                ..cfg(&path, 0)
            })
            .unwrap();
            // /dev/null takes writes but cannot be synced (EINVAL).
            if let Output::File { file, .. } = &mut lock(&log.sink).out {
                *file = OpenOptions::new().write(true).open("/dev/null").unwrap();
            }
            assert_eq!(log.write(&rec(0)).is_err(), synced);
            assert_eq!(log.healthy(), !synced);
        }
    }

    /// Rotated files `audit.log.<seq>` of `sizes` bytes each and a live file of `live`
    /// bytes in a fresh folder; returns the live file's path.
    /// The scratch folder (removed when dropped) and the live file's path in it.
    fn rotated_set(
        tag: &str,
        seqs: &[u64],
        size: usize,
        live: usize,
    ) -> (tempfile::TempDir, PathBuf) {
        let d_scratch = tmp(tag);
        let d = d_scratch.path();
        let path = d.join("audit.log");
        for s in seqs {
            std::fs::write(
                path.with_file_name(format!("audit.log.{s:012}")),
                "x".repeat(size),
            )
            .unwrap();
        }
        std::fs::write(&path, "x".repeat(live)).unwrap();
        (d_scratch, path)
    }

    fn limits(max_files: u32, max_total_bytes: u64) -> Limits {
        Limits {
            max_file_bytes: 0,
            max_file_age: None,
            max_files,
            max_total_bytes,
        }
    }

    /// Retention by count keeps `max_files` rotated files: the oldest go, and a set at
    /// the limit is left alone.
    #[test]
    fn prune_by_count_deletes_the_oldest_beyond_the_limit_only() {
        let (_scratch, path) = rotated_set("prune-count", &[0, 10, 20], 100, 100);
        let logs = Logs::default();
        tracing::subscriber::with_default(logs.clone(), || {
            let deleted = prune(&path, limits(2, 0));
            assert_eq!(
                deleted,
                vec![format!("{}.000000000000 (seq 0..=9)", path.display())]
            );
            assert_eq!(logs.count("retention deleted"), 1);
            assert_eq!(prune(&path, limits(2, 0)), Vec::<String>::new());
            assert_eq!(logs.count("retention deleted"), 1, "nothing more to say");
        });
        let left: Vec<u64> = rotated_files(&path)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(left, vec![10, 20]);
    }

    /// Retention by bytes counts the live file too.
    #[test]
    fn prune_by_bytes_counts_the_live_file() {
        let (_scratch, path) = rotated_set("prune-bytes", &[0, 10, 20], 100, 100);
        // 400 bytes in all: one rotated file must go, the live file never.
        let deleted = prune(&path, limits(0, 350));
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(rotated_files(&path).unwrap().len(), 2);
        assert!(path.exists());
        // 300 bytes left: a set at the limit is left alone.
        assert_eq!(prune(&path, limits(0, 300)), Vec::<String>::new());
        assert_eq!(rotated_files(&path).unwrap().len(), 2);
        // A live file bigger than the rotated ones together.
        let (_scratch, path) = rotated_set("prune-bytes-live", &[0], 100, 1000);
        assert_eq!(prune(&path, limits(0, 1050)).len(), 1);
        assert!(rotated_files(&path).unwrap().is_empty());
    }

    /// The bytes of a log: the live file and its rotated files, nothing else.
    #[test]
    fn current_bytes_sums_the_live_and_rotated_files() {
        let (_scratch, path) = rotated_set("current", &[0, 10], 30, 100);
        std::fs::write(path.with_file_name("audit.log.old"), "x".repeat(7)).unwrap();
        std::fs::write(
            path.with_file_name("audit.log.000000000020"),
            "x".repeat(20),
        )
        .unwrap();
        assert_eq!(current_bytes(&path), 100 + 30 + 30 + 20);
        assert_eq!(current_bytes(&path.with_file_name("none.log")), 0);
    }

    /// The owner's bits decide for the owner, the group's for the group, the others'
    /// for the rest.
    #[test]
    fn permission_bits_by_owner_group_and_others() {
        if !is_root() {
            return;
        }
        let d_scratch = tmp("perm-bits");
        let d = d_scratch.path();
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        let meta = |mode| {
            chown_mode(&f, (5001, 5002), mode);
            std::fs::metadata(&f).unwrap()
        };
        let m = meta(0o600);
        assert!(permits(&m, 5001, 9, 6));
        assert!(!permits(&m, 7, 5002, 4));
        assert!(!permits(&m, 7, 9, 4));
        let m = meta(0o060);
        assert!(
            !permits(&m, 5001, 5002, 4),
            "the owner's bits, not the group's"
        );
        assert!(permits(&m, 7, 5002, 6));
        assert!(!permits(&m, 7, 9, 4));
        let m = meta(0o006);
        assert!(!permits(&m, 5001, 9, 4));
        assert!(!permits(&m, 7, 5002, 4));
        assert!(permits(&m, 7, 9, 6));
    }

    /// Without `create`, a missing folder is only reported, not created.
    #[test]
    fn preflight_without_create_leaves_a_missing_folder_alone() {
        let d_scratch = tmp("preflight-nocreate");
        let d = d_scratch.path();
        let c = cfg(&d.join("logs/audit.log"), 0);
        let p = preflight(&c, (0, 0), false).unwrap();
        assert!(!d.join("logs").exists());
        assert!(
            p.warnings.iter().any(|w| w.contains("does not exist")),
            "{p:?}"
        );
        assert!(p.notes.is_empty(), "{p:?}");
    }

    /// A bare file name is a log in the working folder.
    #[test]
    fn preflight_of_a_bare_name_checks_the_working_folder() {
        let c = AuditConfig {
            max_files: 1,
            ..cfg(Path::new("warden-preflight-unit-test.log"), 0)
        };
        let run_as = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let p = preflight(&c, run_as, false).unwrap();
        assert!(
            !p.warnings.iter().any(|w| w.contains("does not exist")),
            "{p:?}"
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.starts_with("warden-preflight-unit-test.log (folder owner")),
            "{p:?}"
        );
    }

    /// A folder `logs` owned by `owner` with `mode`, checked for uid:gid 5001:5001.
    fn preflight_folder(tag: &str, owner: (u32, u32), mode: u32) -> Result<Preflight, String> {
        let d_scratch = tmp(tag);
        let d = d_scratch.path();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let logs = d.join("logs");
        std::fs::create_dir(&logs).unwrap();
        chown_mode(&logs, owner, mode);
        let c = AuditConfig {
            max_files: 1,
            ..cfg(&logs.join("audit.log"), 0)
        };
        preflight(&c, (5001, 5001), false)
    }

    /// Warned: a folder owned by another uid than the gateway's (root aside), and one
    /// writable by a group that is not the gateway's.
    #[test]
    fn preflight_warns_of_other_owners_and_writable_groups() {
        if !is_root() {
            return;
        }
        let warned = |p: &Preflight| {
            (
                p.warnings.iter().any(|w| w.contains("owned by uid")),
                p.warnings.iter().any(|w| w.contains("writable by group")),
            )
        };
        let p = preflight_folder("pf-own", (5001, 5001), 0o770).unwrap();
        assert_eq!(warned(&p), (false, false), "{p:?}");
        let p = preflight_folder("pf-root", (0, 5001), 0o770).unwrap();
        assert_eq!(warned(&p), (false, false), "{p:?}");
        let p = preflight_folder("pf-other", (5002, 5001), 0o770).unwrap();
        assert_eq!(warned(&p), (true, false), "{p:?}");
        assert!(p.warnings.iter().any(|w| w.contains("owned by uid 5002")));
        let p = preflight_folder("pf-group", (5001, 5003), 0o770).unwrap();
        assert_eq!(warned(&p), (false, true), "{p:?}");
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("writable by group 5003"))
        );
        let p = preflight_folder("pf-group-ro", (5001, 5003), 0o750).unwrap();
        assert_eq!(warned(&p), (false, false), "{p:?}");
    }

    /// An existing live file must be a regular file the gateway can read and append to.
    #[test]
    fn preflight_checks_an_existing_live_file() {
        if !is_root() {
            return;
        }
        let d_scratch = tmp("pf-live");
        let d = d_scratch.path();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let logs = d.join("logs");
        std::fs::create_dir(&logs).unwrap();
        chown_mode(&logs, (5001, 5001), 0o750);
        let c = AuditConfig {
            max_files: 1,
            ..cfg(&logs.join("audit.log"), 0)
        };
        std::fs::write(&c.path, b"").unwrap();
        chown_mode(&c.path, (5001, 5001), 0o600);
        preflight(&c, (5001, 5001), false).unwrap();
        chown_mode(&c.path, (0, 0), 0o600);
        let e = preflight(&c, (5001, 5001), false).unwrap_err();
        assert!(e.contains("cannot be read and appended"), "{e}");
        chown_mode(&c.path, (0, 5001), 0o640);
        let e = preflight(&c, (5001, 5001), false).unwrap_err();
        assert!(e.contains("cannot be read and appended"), "{e}");
    }

    /// Free space is blocks times block size, and exactly `min_free_bytes` is enough.
    /// /proc has no free blocks at all.
    #[test]
    fn preflight_free_space() {
        let root = (0, 0);
        let real_scratch = tmp("pf-free");
        let real = real_scratch.path();
        let c = AuditConfig {
            max_files: 1,
            ..cfg(&real.join("audit.log"), 0)
        };
        let st = nix::sys::statvfs::statvfs(real).unwrap();
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        assert!(free > 1 << 24, "the test needs some free space");
        preflight(
            &AuditConfig {
                min_free_bytes: free / 2,
                ..c.clone()
            },
            root,
            false,
        )
        .unwrap();
        let e = preflight(
            &AuditConfig {
                min_free_bytes: free * 2,
                ..c.clone()
            },
            root,
            false,
        )
        .unwrap_err();
        assert!(e.contains("min_free_bytes"), "{e}");

        let proc = AuditConfig {
            max_files: 1,
            ..cfg(Path::new("/proc/warden-audit.log"), 0)
        };
        let exceeds = |p: &Preflight| {
            p.warnings
                .iter()
                .any(|w| w.contains("exceeds the free space"))
        };
        let p = preflight(&proc, root, false).unwrap();
        assert!(!exceeds(&p), "{p:?}");
        let e = preflight(
            &AuditConfig {
                min_free_bytes: 1,
                ..proc.clone()
            },
            root,
            false,
        )
        .unwrap_err();
        assert!(e.contains("has 0 bytes free"), "{e}");
        let p = preflight(
            &AuditConfig {
                max_total_bytes: 1,
                ..proc.clone()
            },
            root,
            false,
        )
        .unwrap();
        assert!(exceeds(&p), "{p:?}");
    }

    /// No retention is warned of only when both limits are 0.
    #[test]
    fn preflight_warns_of_no_retention_only_without_both_limits() {
        let d_scratch = tmp("pf-retention");
        let d = d_scratch.path();
        let no_retention = |max_files, max_total_bytes| {
            let c = AuditConfig {
                max_files,
                max_total_bytes,
                ..cfg(&d.join("audit.log"), 0)
            };
            let p = preflight(&c, (0, 0), false).unwrap();
            p.warnings.iter().any(|w| w.contains("no audit retention"))
        };
        assert!(no_retention(0, 0));
        assert!(!no_retention(1, 0));
        assert!(!no_retention(0, 1));
        assert!(!no_retention(1, 1));
    }

    /// A set whose live file is gone after a rotation is its rotated files (not a
    /// missing file); files named twice are listed once; a set is put in chain order
    /// whatever order its files were named in.
    #[test]
    fn expand_lists_a_set_once_in_chain_order() {
        let (_scratch, path) = rotated_set("expand", &[0, 5], 10, 10);
        let r0 = path.with_file_name("audit.log.000000000000");
        let r5 = path.with_file_name("audit.log.000000000005");
        let all = vec![r0.clone(), r5.clone(), path.clone()];
        assert_eq!(expand(std::slice::from_ref(&path)).unwrap(), all);
        assert_eq!(expand(&[path.clone(), path.clone()]).unwrap(), all);
        assert_eq!(
            expand(&[r5.clone(), path.clone(), r0.clone()]).unwrap(),
            all
        );
        assert_eq!(
            expand(&[path.clone(), r5.clone(), r0.clone()]).unwrap(),
            all
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            expand(std::slice::from_ref(&path)).unwrap(),
            vec![r0.clone(), r5.clone()]
        );
        // A name that is neither there nor has rotated files stays, for verify to
        // report.
        let none = path.with_file_name("none.log");
        assert_eq!(
            expand(std::slice::from_ref(&none)).unwrap(),
            vec![none.clone()]
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn fresh_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("warden-audit-prop-")
            .tempdir()
            .unwrap()
    }

    fn record() -> impl Strategy<Value = Record> {
        let decisions = prop_oneof![
            Just("allowed"),
            Just("denied"),
            Just("invalid"),
            Just("rate_limited")
        ];
        (
            proptest::option::of(".{0,24}"),
            proptest::option::of(".{0,24}"),
            proptest::option::of("\\PC{0,24}|[\\n\\r\"\\\\]{1,4}"),
            decisions,
            proptest::option::of(100u16..600),
        )
            .prop_map(|(request_id, principal, reason, decision, status)| Record {
                event: "request",
                request_id,
                principal,
                reason,
                decision: Some(decision),
                status,
                ..Record::default()
            })
    }

    /// Writes `records` to a fresh log (rotating when `max` is set) and returns its
    /// files, oldest first.
    fn write_log(records: &[Record], max: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
        let scratch = fresh_dir();
        let dir = scratch.path();
        let path = dir.join("audit.log");
        let log = AuditLog::open(&AuditConfig {
            path: path.clone(),
            max_file_bytes: max,
            max_file_age_secs: 0,
            max_files: 0,
            max_total_bytes: 0,
            min_free_bytes: 0,
            fsync: FsyncPolicy::Never,
            fail_open: false,
        })
        .unwrap();
        for r in records {
            log.write(r).unwrap();
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &path)
            .collect();
        files.sort();
        files.push(path);
        (scratch, files)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of records, with or without rotation, verifies intact.
        #[test]
        fn written_chains_verify(records in proptest::collection::vec(record(), 0..24), rotate in any::<bool>()) {
            let (_scratch, files) = write_log(&records, if rotate { 700 } else { 0 });
            let requests = files.iter().map(|f| std::fs::read_to_string(f).unwrap().lines().filter(|l| l.contains("\"event\":\"request\"")).count()).sum::<usize>();
            prop_assert!(verify(&files).unwrap().is_ok());
            prop_assert_eq!(requests, records.len());
        }

        /// Any change to one line that has a successor is detected: a changed byte, a
        /// deleted, duplicated or emptied line, or a line swapped with its neighbour.
        /// (The newest line has no successor to vouch for it: see `verify`'s tests.)
        #[test]
        fn any_single_line_mutation_is_detected(
            records in proptest::collection::vec(record(), 2..16),
            pick in any::<proptest::sample::Index>(),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            kind in 0u8..5,
        ) {
            let (_scratch, files) = write_log(&records, 0);
            let text = std::fs::read(&files[0]).unwrap();
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
            let i = pick.index(lines.len() - 1);
            match kind {
                0 => {
                    let j = at.index(lines[i].len());
                    let new = if lines[i][j] == byte { byte.wrapping_add(1) } else { byte };
                    lines[i][j] = new;
                }
                1 => { lines.remove(i); }
                2 => { let dup = lines[i].clone(); lines.insert(i, dup); }
                3 => lines[i].clear(),
                _ => lines.swap(i, i + 1),
            }
            let mut out = Vec::new();
            for l in &lines {
                out.extend_from_slice(l);
                out.push(b'\n');
            }
            std::fs::write(&files[0], out).unwrap();
            // Deleting the very first record leaves a set that starts at seq 1 in the
            // middle of a file: not an error of the chain, but flagged (exit 1).
            let found = match verify(&files).unwrap() {
                Err(_) => true,
                Ok(intact) => !intact.starts_at_file_start,
            };
            prop_assert!(found, "mutation {} of line {} went unnoticed", kind, i + 1);
        }
    }
}
