//! The audit log: one JSON line per decision, hash-chained so that an edited, inserted,
//! deleted or reordered record is detected by `warden audit verify`.
//!
//! Each line carries `seq` (one more than the line before) and `prev`, the SHA-256 (hex)
//! of the previous line's bytes; the first record of a log has seq 0 and prev all
//! zeros. Rotation renames the file to `<path>.<first seq, 12 digits>` and the chain
//! simply continues in the new file. Lines are written whole with O_APPEND, in order,
//! under one lock. Never a token, a key, a secret or tensor contents: the record type
//! has no field that could hold one.
//!
//! Fail closed: when a record cannot be written the log turns unhealthy, readiness
//! reports it, and requests are refused with 503 unless `audit.fail_open` is set.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use warden_shared::config::{AuditConfig, FsyncPolicy};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record. Optional fields are left out when empty.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Record {
    /// `request`, `start`, `stop`, `reload`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client's own `x-request-id`, kept apart from Warden's id (bounded, plain).
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
        size: u64,
        first_seq: u64,
    },
}

struct Sink {
    out: Output,
    seq: u64,
    prev: String,
    max_bytes: u64,
    fsync: FsyncPolicy,
}

pub struct AuditLog {
    sink: Mutex<Sink>,
    healthy: AtomicBool,
    fail_open: bool,
    failures: AtomicU64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
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
        .mode(0o640)
        .open(path)
}

/// Where an existing log file leaves the chain.
struct Resume {
    next_seq: u64,
    prev: String,
    size: u64,
    /// The seq of the file's first record (names the file when it is rotated).
    first_seq: u64,
}

fn seq_of(line: &str) -> std::io::Result<u64> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "audit record without seq")
        })
}

fn resume(path: &Path) -> std::io::Result<Resume> {
    let empty = Resume {
        next_seq: 0,
        prev: GENESIS.into(),
        size: 0,
        first_seq: 0,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if !line.is_empty() {
            if first.is_none() {
                first = Some(line.clone());
            }
            last = Some(line);
        }
    }
    match (first, last) {
        (Some(first), Some(last)) => {
            let next_seq = seq_of(&last)? + 1;
            Ok(Resume {
                next_seq,
                prev: sha256_hex(last.as_bytes()),
                size,
                first_seq: seq_of(&first)?,
            })
        }
        _ => Ok(Resume { size, ..empty }),
    }
}

impl AuditLog {
    /// Opens the log, continuing the chain of an existing file.
    pub fn open(cfg: &AuditConfig) -> std::io::Result<AuditLog> {
        let (out, seq, prev) = if cfg.path == Path::new("-") {
            (Output::Stdout, 0, GENESIS.to_string())
        } else {
            let r = resume(&cfg.path)?;
            let file = open_append(&cfg.path)?;
            (
                Output::File {
                    file,
                    path: cfg.path.clone(),
                    size: r.size,
                    first_seq: r.first_seq,
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
                max_bytes: cfg.max_file_bytes,
                fsync: cfg.fsync,
            }),
            healthy: AtomicBool::new(true),
            fail_open: cfg.fail_open,
            failures: AtomicU64::new(0),
        })
    }

    /// Appends one record. On failure the log turns unhealthy and stays so until a
    /// later write succeeds.
    pub fn write(&self, record: &Record) -> Result<(), AuditError> {
        let result = self
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(record);
        match &result {
            Ok(()) => self.healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "AUDIT LOG WRITE FAILED");
            }
        }
        result
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Sink {
    fn append(&mut self, record: &Record) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(&Line {
            time: now_rfc3339(),
            seq: self.seq,
            record,
            prev: &self.prev,
        })?;
        let hash = sha256_hex(&line);
        line.push(b'\n');
        self.rotate_if_needed(line.len() as u64)?;
        match &mut self.out {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()?;
            }
            Output::File { file, size, .. } => {
                // One write of the whole line: with O_APPEND it lands in one piece.
                file.write_all(&line)?;
                if self.fsync == FsyncPolicy::Always {
                    file.sync_data()?;
                }
                *size += line.len() as u64;
            }
        }
        self.seq += 1;
        self.prev = hash;
        Ok(())
    }

    fn rotate_if_needed(&mut self, incoming: u64) -> std::io::Result<()> {
        let seq = self.seq;
        let max = self.max_bytes;
        let Output::File {
            file,
            path,
            size,
            first_seq,
        } = &mut self.out
        else {
            return Ok(());
        };
        if max == 0 || *size == 0 || *size + incoming <= max {
            return Ok(());
        }
        let rotated = PathBuf::from(format!("{}.{:012}", path.display(), first_seq));
        if rotated.exists() {
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
        *first_seq = seq;
        Ok(())
    }
}

/// Where a chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub file: String,
    pub line: usize,
    pub seq: Option<u64>,
    pub why: String,
}

/// Verifies the chain across `files` (oldest first). `Ok(n)`: n records, all intact.
pub fn verify(files: &[PathBuf]) -> std::io::Result<Result<u64, Break>> {
    let mut expect_seq = 0u64;
    let mut prev = GENESIS.to_string();
    let mut count = 0u64;
    for path in files {
        let text = std::fs::read(path)?;
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            if raw.is_empty() {
                continue;
            }
            let brk = |seq: Option<u64>, why: String| Break {
                file: path.display().to_string(),
                line: i + 1,
                seq,
                why,
            };
            let v: serde_json::Value = match serde_json::from_slice(raw) {
                Ok(v) => v,
                Err(e) => return Ok(Err(brk(None, format!("not a JSON record: {e}")))),
            };
            let seq = v["seq"].as_u64();
            if seq != Some(expect_seq) {
                return Ok(Err(brk(
                    seq,
                    format!(
                        "seq {seq:?}, expected {expect_seq} (record inserted, deleted or reordered)"
                    ),
                )));
            }
            if v["prev"].as_str() != Some(prev.as_str()) {
                return Ok(Err(brk(seq, "prev does not match the previous record (a record before it was changed, or this one was)".into())));
            }
            prev = sha256_hex(raw);
            expect_seq += 1;
            count += 1;
        }
    }
    Ok(Ok(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(dir: &Path, max: u64) -> (AuditLog, PathBuf) {
        let path = dir.join("audit.log");
        let cfg = AuditConfig {
            path: path.clone(),
            max_file_bytes: max,
            fsync: FsyncPolicy::Never,
            fail_open: false,
        };
        (AuditLog::open(&cfg).unwrap(), path)
    }

    fn tmp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("warden-audit-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
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

    #[test]
    fn chain_verifies_and_every_tampering_is_found() {
        let d = tmp("chain");
        let (log, path) = log_in(&d, 0);
        for i in 0..5 {
            log.write(&rec(i)).unwrap();
        }
        assert_eq!(verify(std::slice::from_ref(&path)).unwrap(), Ok(5));
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
        let mut last_edited = lines.clone();
        last_edited[4] = last_edited[4].replace("r4", "r9");
        // The last record has no successor, so an edit to it is not detected, and a
        // resumed log hashes the edited line and carries on. The newest record is only
        // protected once it has left the host (see docs/audit.md).
        assert!(check(&last_edited).is_ok());
    }

    #[test]
    fn reopening_continues_the_chain_and_rotation_keeps_it() {
        let d = tmp("rotate");
        let (log, path) = log_in(&d, 600);
        for i in 0..3 {
            log.write(&rec(i)).unwrap();
        }
        drop(log);
        let (log, _) = log_in(&d, 600);
        for i in 3..12 {
            log.write(&rec(i)).unwrap();
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        // audit.log sorts before audit.log.000..., so put the live file last.
        files.retain(|f| f != &path);
        assert!(files.len() >= 2, "rotated: {files:?}");
        files.push(path.clone());
        assert_eq!(verify(&files).unwrap(), Ok(12));
        // Dropping a rotated file is detected.
        files.remove(1);
        assert!(verify(&files).unwrap().is_err());
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
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static RUN: AtomicU32 = AtomicU32::new(0);

    fn fresh_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "warden-audit-prop-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
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
    fn write_log(records: &[Record], max: u64) -> (PathBuf, Vec<PathBuf>) {
        let dir = fresh_dir();
        let path = dir.join("audit.log");
        let log = AuditLog::open(&AuditConfig {
            path: path.clone(),
            max_file_bytes: max,
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
        (dir, files)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of records, with or without rotation, verifies intact.
        #[test]
        fn written_chains_verify(records in proptest::collection::vec(record(), 0..24), rotate in any::<bool>()) {
            let (dir, files) = write_log(&records, if rotate { 700 } else { 0 });
            prop_assert_eq!(verify(&files).unwrap(), Ok(records.len() as u64));
            let _ = std::fs::remove_dir_all(dir);
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
            let (dir, files) = write_log(&records, 0);
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
            prop_assert!(verify(&files).unwrap().is_err(), "mutation {} of line {} went unnoticed", kind, i + 1);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
