//! The token audit log, `<data-dir>/logs/config-audit.jsonl` (§18.1): one JSON line per model call.
//!
//! The file name and the fields `timestamp`, `model`, `tokens.input`, `tokens.output` are the ones
//! the chapter's own scripts read (`seven_day_summary.py`, `openclaw-cost-tracker.py`), and they
//! must keep working unchanged, which fixes two details of the format:
//! - `timestamp` is **local naive** time with microseconds and no offset
//!   (`2026-11-23T19:13:00.123456`): the 7-day script compares `datetime.fromisoformat(ts)` with a
//!   naive `datetime.now()` and silently skips any line where that comparison raises (as it does
//!   for an aware timestamp); the cost tracker selects the month with `ts.startswith("YYYY-MM")`.
//! - `cache` is the literal `"cache_hit"` / `"cache_miss"`, which the chapter greps for.
//!
//! Writing: [`AuditLog`] is a cheap handle over a bounded channel (`audit.buffer_lines`); a
//! recorder waits when the channel is full, so a line is never dropped. One writer thread drains
//! whatever is queued, writes it through a `BufWriter` and flushes once per batch, so a thousand
//! lines a second cost a few syscalls. The file rotates by size between lines
//! (`.jsonl` → `.jsonl.1` → … → `.jsonl.<keep_files>`), so no line is ever split across files.
//!
//! Reading: [`read_entries`] returns the entries of the rotated files, oldest first, then the
//! current file, skipping lines it cannot parse (the file is a user's file too).
//!
//! Invariant: this module knows nothing about tasks, providers or prices; the caller fills in an
//! [`AuditEntry`] (cost included) and hands it over.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, SubsecRound};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use openclaw_proto::api::TokenCounts;
use openclaw_proto::Priority;

use crate::config::AuditConfig;

/// The chapter's file name.
pub const LOG_FILE_NAME: &str = "config-audit.jsonl";

/// `status` of a successful call; anything else is an error code.
pub const STATUS_OK: &str = "ok";

/// Most messages the writer takes off the channel before it flushes.
const WRITER_BATCH_MAX: usize = 1024;

/// Size of the writer's in-memory buffer.
const WRITER_BUF_BYTES: usize = 64 * 1024;

/// `strftime` format of `timestamp`: ISO 8601, microseconds, no offset.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// `<data-dir>/logs/config-audit.jsonl`.
pub fn log_path(data_dir: &Path) -> PathBuf {
    logs_dir(data_dir).join(LOG_FILE_NAME)
}

/// `<data-dir>/logs`, the folder [`AuditLog::open`] and [`read_entries`] take.
pub fn logs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

/// The current local time as the log writes it: naive (so the chapter's scripts can compare it)
/// and truncated to microseconds (so an entry reads back equal to what was recorded).
pub fn local_now() -> NaiveDateTime {
    chrono::Local::now().naive_local().trunc_subsecs(6)
}

/// Whether the answer came from the request cache. Serialized as the chapter's literal strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheOutcome {
    #[serde(rename = "cache_hit")]
    Hit,
    #[serde(rename = "cache_miss")]
    Miss,
}

impl CacheOutcome {
    pub fn from_hit(hit: bool) -> Self {
        if hit {
            CacheOutcome::Hit
        } else {
            CacheOutcome::Miss
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "cache_hit",
            CacheOutcome::Miss => "cache_miss",
        }
    }
}

/// One model call, one line of `config-audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Local naive time, e.g. `2026-11-23T19:13:00.123456` (see the module doc for why).
    #[serde(with = "local_timestamp")]
    pub timestamp: NaiveDateTime,
    /// Node that made the call.
    pub node: String,
    /// The task, or `null` for a direct `/v1` call.
    pub task_id: Option<String>,
    pub request_id: String,
    pub agent: String,
    pub source: String,
    pub priority: Priority,
    /// The gateway's (configured) model name, as priced by the cost tracker.
    pub model: String,
    /// `openai`, `anthropic` or `sim`.
    pub provider: String,
    pub tokens: TokenCounts,
    pub cost_usd: f64,
    pub latency_ms: u64,
    pub cache: CacheOutcome,
    /// A request-cache hit under the `semantic` strategy: the similarity of the cached query
    /// (1.0 for an identical one). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_score: Option<f64>,
    /// [`STATUS_OK`] or an error code (`timeout`, `rate_limited`, ...).
    pub status: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// The model this call replaced, when it is a fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
    /// Why the gateway made the call when it is not the answer itself: `summary` (a session's
    /// older messages folded into its running summary). Absent for answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// What the prompt was made of (a task's call; absent on direct `/v1` calls and on lines
    /// written before the field existed). Read by `openclaw-node tokens --breakdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<AuditPrompt>,
}

/// The components of a task's prompt (§18.1's table), counted by the gateway's token
/// estimator when the prompt was built — so their sum is near, not equal to, the provider's
/// `tokens.input` — and what the context layer kept out of it. Every field defaults to 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditPrompt {
    /// SOUL.md, AGENTS.md and the other workspace files.
    pub system: u64,
    /// MEMORY.md and the loaded memory files.
    pub memory: u64,
    /// Tool descriptions.
    pub tools: u64,
    /// The session's messages sent in full.
    pub history: u64,
    /// The session's running summary.
    pub summary: u64,
    /// The user's message.
    pub input: u64,
    /// Tokens the context layer kept out of this prompt (window, summary, compression).
    pub saved: u64,
}

impl AuditPrompt {
    /// The components of a built prompt (summary and saved are the context layer's to add).
    pub fn of(b: &openclaw_proto::api::PromptBreakdown) -> AuditPrompt {
        AuditPrompt {
            system: u64::from(b.system),
            memory: u64::from(b.memory),
            tools: u64::from(b.tools),
            history: u64::from(b.history),
            summary: 0,
            input: u64::from(b.input),
            saved: 0,
        }
    }

    /// The estimated prompt: every component but `saved`.
    pub fn total(&self) -> u64 {
        self.system + self.memory + self.tools + self.history + self.summary + self.input
    }
}

/// `timestamp` as local naive ISO 8601 with exactly six fractional digits. Reading also accepts
/// other fraction lengths and, for lines written by other tools, an RFC 3339 offset (converted to
/// local time).
mod local_timestamp {
    use chrono::{DateTime, Local, NaiveDateTime};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&ts.format(super::TIMESTAMP_FORMAT))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let raw = String::deserialize(d)?;
        NaiveDateTime::parse_from_str(&raw, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| {
                DateTime::parse_from_rfc3339(&raw).map(|t| t.with_timezone(&Local).naive_local())
            })
            .map_err(|e| serde::de::Error::custom(format!("timestamp `{raw}`: {e}")))
    }
}

/// The writer has stopped ([`AuditLog::close`] was called, or it failed to start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit log is closed")]
pub struct AuditClosed;

enum Msg {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written and flushed.
    Flush(oneshot::Sender<()>),
    /// Flush, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// Handle to the audit writer. Clone it freely; every clone feeds the same file.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Create `logs_dir` if needed, open `config-audit.jsonl` for appending and start the writer
    /// (a blocking thread from tokio's pool: file I/O stays off the async workers). Call inside a
    /// tokio runtime. The writer ends after [`close`](Self::close) or when every handle is dropped.
    pub fn open(
        logs_dir: &Path,
        cfg: &AuditConfig,
    ) -> std::io::Result<(AuditLog, tokio::task::JoinHandle<()>)> {
        let max_bytes = cfg.max_file_mb.saturating_mul(1024 * 1024);
        Self::open_with_limit(logs_dir, max_bytes, cfg.keep_files, cfg.buffer_lines)
    }

    /// [`open`](Self::open) with the rotation size in bytes (tests rotate after a few lines).
    /// `max_bytes == 0` never rotates; `keep_files == 0` deletes the old file on rotation;
    /// `buffer_lines` is clamped to at least 1.
    pub fn open_with_limit(
        logs_dir: &Path,
        max_bytes: u64,
        keep_files: u32,
        buffer_lines: usize,
    ) -> std::io::Result<(AuditLog, tokio::task::JoinHandle<()>)> {
        std::fs::create_dir_all(logs_dir)?;
        let sink = Sink::open(logs_dir.join(LOG_FILE_NAME), max_bytes, keep_files)?;
        let (tx, rx) = mpsc::channel(buffer_lines.max(1));
        let handle = tokio::task::spawn_blocking(move || run_writer(rx, sink));
        Ok((AuditLog { tx }, handle))
    }

    /// Queue one line. Waits while the buffer is full: lines are never dropped.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), AuditClosed> {
        let mut line = match serde_json::to_vec(&entry) {
            Ok(line) => line,
            Err(e) => {
                // Unreachable for this struct (string keys, plain values); say so loudly if not.
                tracing::error!(error = %e, "cannot encode an audit entry");
                debug_assert!(false, "audit entry failed to encode: {e}");
                return Ok(());
            }
        };
        line.push(b'\n');
        self.tx.send(Msg::Line(line)).await.map_err(|_| AuditClosed)
    }

    /// Resolves once every line recorded before this call is written and flushed to the OS.
    /// Returns at once if the writer has stopped.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Write and flush everything queued so far, then stop the writer (for every clone: later
    /// `record`s return [`AuditClosed`]).
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The writer loop: take a batch, write it, flush once, answer the flush markers.
fn run_writer(mut rx: mpsc::Receiver<Msg>, mut sink: Sink) {
    let mut batch = Vec::with_capacity(WRITER_BATCH_MAX);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < WRITER_BATCH_MAX {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        let mut waiters = Vec::new();
        let mut closing = false;
        for msg in batch.drain(..) {
            match msg {
                Msg::Line(line) => sink.write_line(&line),
                Msg::Flush(tx) => waiters.push(tx),
                Msg::Close(tx) => {
                    waiters.push(tx);
                    closing = true;
                }
            }
        }
        sink.flush();
        for w in waiters {
            let _ = w.send(());
        }
        if closing {
            // Lines queued behind the close marker are still written; later sends fail.
            rx.close();
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Line(line) => sink.write_line(&line),
                    Msg::Flush(tx) | Msg::Close(tx) => {
                        sink.flush();
                        let _ = tx.send(());
                    }
                }
            }
            sink.flush();
            return;
        }
    }
    sink.flush();
}

/// The current file, its size, and the rotation rule.
struct Sink {
    path: PathBuf,
    max_bytes: u64,
    keep_files: u32,
    /// `None` after an I/O error: the next line reopens the file.
    out: Option<BufWriter<File>>,
    size: u64,
}

impl Sink {
    fn open(path: PathBuf, max_bytes: u64, keep_files: u32) -> std::io::Result<Sink> {
        let mut sink = Sink {
            path,
            max_bytes,
            keep_files,
            out: None,
            size: 0,
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.out = Some(BufWriter::with_capacity(WRITER_BUF_BYTES, file));
        Ok(())
    }

    /// `config-audit.jsonl.<n>`.
    fn rotated(&self, n: u32) -> PathBuf {
        rotated_path(&self.path, n)
    }

    /// Shift `.N-1` → `.N` … `.jsonl` → `.1`, then start an empty file.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        if self.keep_files == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_not_found)?;
        } else {
            for n in (1..self.keep_files).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1)).or_else(ignore_not_found)?;
        }
        self.reopen()
    }

    fn write_line(&mut self, line: &[u8]) {
        if let Err(e) = self.try_write_line(line) {
            tracing::error!(path = %self.path.display(), error = %e, "audit log write failed");
            // Drop the writer; the next line tries to reopen the file.
            self.out = None;
        }
    }

    fn try_write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.out.is_none() {
            self.reopen()?;
        }
        // Rotate between lines, only when the file has something in it: a line longer than the
        // limit still goes, alone, into a fresh file.
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let Some(out) = self.out.as_mut() else {
            return Err(std::io::Error::other("audit file is not open"));
        };
        out.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.flush() {
                tracing::error!(path = %self.path.display(), error = %e, "audit log flush failed");
                self.out = None;
            }
        }
    }
}

fn ignore_not_found(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn rotated_path(current: &Path, n: u32) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Every entry in `logs_dir`: rotated files oldest first (`.N` … `.1`), then the current file.
/// Lines that are not a valid [`AuditEntry`] are skipped. A missing folder or file reads as empty.
pub fn read_entries(logs_dir: &Path) -> std::io::Result<Vec<AuditEntry>> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    let dir = match std::fs::read_dir(logs_dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let prefix = format!("{LOG_FILE_NAME}.");
    for item in dir {
        let item = item?;
        let name = item.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix(&prefix))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        rotated.push((n, item.path()));
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut entries = Vec::new();
    for (_, path) in rotated {
        read_file_into(&path, &mut entries)?;
    }
    read_file_into(&logs_dir.join(LOG_FILE_NAME), &mut entries)?;
    Ok(entries)
}

fn read_file_into(path: &Path, entries: &mut Vec<AuditEntry>) -> std::io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if let Ok(entry) = serde_json::from_slice::<AuditEntry>(&line) {
            entries.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            timestamp: local_now(),
            node: "node-1".into(),
            task_id: if i % 2 == 0 {
                Some(format!("task-{i}"))
            } else {
                None
            },
            request_id: format!("req-{i}"),
            agent: "main".into(),
            source: "api_call".into(),
            priority: Priority::Normal,
            model: "gpt-4o-mini".into(),
            provider: "sim".into(),
            tokens: TokenCounts {
                input: 100 + i as u64,
                output: 10 + i as u64,
            },
            cost_usd: 0.000_123,
            latency_ms: 42,
            cache: CacheOutcome::from_hit(i % 3 == 0),
            cache_score: None,
            status: STATUS_OK.into(),
            attempt: 1,
            fallback_from: if i % 5 == 0 {
                Some("gpt-4o".into())
            } else {
                None
            },
            prompt: (i % 2 == 0).then(|| AuditPrompt {
                system: 40,
                memory: 20,
                tools: 10,
                history: 25,
                summary: 0,
                input: 5 + i as u64,
                saved: 3,
            }),
            purpose: None,
        }
    }

    fn raw_lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn lines_are_json_with_the_chapter_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = AuditLog::open(dir.path(), &AuditConfig::default()).unwrap();
        for i in 0..6 {
            log.record(entry(i)).await.unwrap();
        }
        log.close().await;
        writer.await.unwrap();

        let lines = raw_lines(&dir.path().join(LOG_FILE_NAME));
        assert_eq!(lines.len(), 6);
        for (i, line) in lines.iter().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            let ts = v["timestamp"].as_str().unwrap();
            // 2026-11-23T19:13:00.123456: naive, six fractional digits.
            assert_eq!(ts.len(), 26, "{ts}");
            assert_eq!(&ts[10..11], "T");
            assert_eq!(&ts[19..20], ".");
            assert!(!ts.ends_with('Z') && !ts[19..].contains('+') && !ts[19..].contains('-'));
            assert!(NaiveDateTime::parse_from_str(ts, TIMESTAMP_FORMAT).is_ok());
            assert!(ts.starts_with(&chrono::Local::now().format("%Y-").to_string()));
            assert_eq!(v["tokens"]["input"].as_u64(), Some(100 + i as u64));
            assert_eq!(v["tokens"]["output"].as_u64(), Some(10 + i as u64));
            assert_eq!(v["model"], "gpt-4o-mini");
            assert_eq!(v["priority"], "normal");
            assert_eq!(v["status"], "ok");
            assert_eq!(v["attempt"], 1);
            assert_eq!(v["latency_ms"], 42);
            assert!(v["cost_usd"].is_f64());
            let cache = v["cache"].as_str().unwrap();
            assert_eq!(
                cache,
                if i % 3 == 0 {
                    "cache_hit"
                } else {
                    "cache_miss"
                }
            );
            if i % 2 == 0 {
                assert_eq!(v["task_id"], format!("task-{i}"));
            } else {
                assert!(v["task_id"].is_null(), "task_id must be present and null");
            }
            assert_eq!(v.get("fallback_from").is_some(), i % 5 == 0);
            if i % 2 == 0 {
                let p = &v["prompt"];
                assert_eq!(p["system"], 40, "{v}");
                assert_eq!(p["input"], 5 + i as u64, "{v}");
                assert_eq!(p["saved"], 3, "{v}");
            } else {
                assert!(v.get("prompt").is_none(), "no prompt, no field: {v}");
            }
            for key in ["node", "request_id", "agent", "source", "provider"] {
                assert!(v[key].is_string(), "{key}");
            }
        }
        // And they read back as entries.
        let back = read_entries(dir.path()).unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(back[3].request_id, "req-3");
        assert_eq!(back[3].tokens, entry(3).tokens);
    }

    #[test]
    fn timestamp_round_trips_and_accepts_other_shapes() {
        let ts =
            NaiveDateTime::parse_from_str("2026-11-23T19:13:00.123456", TIMESTAMP_FORMAT).unwrap();
        let mut e = entry(1);
        e.timestamp = ts;
        let line = serde_json::to_string(&e).unwrap();
        assert!(
            line.contains(r#""timestamp":"2026-11-23T19:13:00.123456""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<AuditEntry>(&line).unwrap(), e);

        // Whole seconds still print six digits.
        e.timestamp =
            NaiveDateTime::parse_from_str("2026-01-02T03:04:05", "%Y-%m-%dT%H:%M:%S").unwrap();
        assert!(serde_json::to_string(&e)
            .unwrap()
            .contains(r#""timestamp":"2026-01-02T03:04:05.000000""#));

        for other in [
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05.5",
            "2026-01-02T03:04:05Z",
        ] {
            let mut v = serde_json::to_value(&e).unwrap();
            v["timestamp"] = Value::String(other.into());
            assert!(serde_json::from_value::<AuditEntry>(v).is_ok(), "{other}");
        }
    }

    #[tokio::test]
    async fn rotation_keeps_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let n = 10_000;
        // ~300-byte lines, 64 KiB files: ~45 rotations, more than we keep, so keep enough.
        let (log, writer) = AuditLog::open_with_limit(dir.path(), 64 * 1024, 100, 256).unwrap();
        for i in 0..n {
            log.record(entry(i)).await.unwrap();
        }
        log.close().await;
        writer.await.unwrap();

        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() > 10, "expected rotations, got {files:?}");
        let mut total = 0;
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                bytes.len() as u64 <= 64 * 1024,
                "{f:?} is {} bytes",
                bytes.len()
            );
            assert!(bytes.ends_with(b"\n"), "{f:?} ends mid-line");
            for line in raw_lines(f) {
                serde_json::from_str::<AuditEntry>(&line).unwrap();
                total += 1;
            }
        }
        assert_eq!(total, n);

        // Oldest first, in order, nothing lost or duplicated.
        let back = read_entries(dir.path()).unwrap();
        let ids: Vec<String> = back.iter().map(|e| e.request_id.clone()).collect();
        let want: Vec<String> = (0..n).map(|i| format!("req-{i}")).collect();
        assert_eq!(ids, want);
    }

    #[tokio::test]
    async fn rotation_drops_only_files_beyond_keep() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = AuditLog::open_with_limit(dir.path(), 4 * 1024, 3, 16).unwrap();
        for i in 0..500 {
            log.record(entry(i)).await.unwrap();
        }
        log.close().await;
        writer.await.unwrap();
        let names: BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let want: BTreeSet<String> = [
            "config-audit.jsonl",
            "config-audit.jsonl.1",
            "config-audit.jsonl.2",
            "config-audit.jsonl.3",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(names, want);
        // The newest lines survive, still in order and contiguous.
        let back = read_entries(dir.path()).unwrap();
        let last = back.last().unwrap();
        assert_eq!(last.request_id, "req-499");
        let first: usize = back[0].request_id["req-".len()..].parse().unwrap();
        assert_eq!(back.len(), 500 - first);
    }

    #[tokio::test]
    async fn reopening_appends_and_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let (log, writer) = AuditLog::open_with_limit(dir.path(), 1 << 20, 2, 8).unwrap();
            for i in 0..10 {
                log.record(entry(round * 10 + i)).await.unwrap();
            }
            log.close().await;
            writer.await.unwrap();
        }
        assert_eq!(read_entries(dir.path()).unwrap().len(), 20);
    }

    #[tokio::test]
    async fn flush_makes_earlier_lines_visible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE_NAME);
        let (log, _writer) = AuditLog::open(dir.path(), &AuditConfig::default()).unwrap();
        for round in 1..=5 {
            for i in 0..100 {
                log.record(entry(i)).await.unwrap();
            }
            log.flush().await;
            // After flush, a separate reader sees every line, each complete.
            let lines = raw_lines(&path);
            assert_eq!(lines.len(), round * 100);
            assert!(lines
                .iter()
                .all(|l| serde_json::from_str::<AuditEntry>(l).is_ok()));
        }
        drop(log);
    }

    #[tokio::test]
    async fn close_stops_every_clone() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = AuditLog::open(dir.path(), &AuditConfig::default()).unwrap();
        let other = log.clone();
        log.record(entry(0)).await.unwrap();
        log.close().await;
        writer.await.unwrap();
        assert_eq!(other.record(entry(1)).await, Err(AuditClosed));
        other.flush().await; // returns, does not hang
        assert_eq!(read_entries(dir.path()).unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_recorders_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A tiny buffer so recorders really wait on each other; rotation on too.
        let (log, writer) = AuditLog::open_with_limit(dir.path(), 32 * 1024, 1000, 4).unwrap();
        let tasks = 50;
        let per_task = 200;
        let mut handles = Vec::new();
        for t in 0..tasks {
            let log = log.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let mut e = entry(i);
                    e.request_id = format!("t{t}-{i}");
                    log.record(e).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        log.close().await;
        writer.await.unwrap();

        let back = read_entries(dir.path()).unwrap();
        assert_eq!(back.len(), tasks * per_task);
        let ids: BTreeSet<String> = back.iter().map(|e| e.request_id.clone()).collect();
        assert_eq!(ids.len(), tasks * per_task, "duplicates");
        // Each task's own lines stay in its order.
        for t in 0..tasks {
            let seq: Vec<usize> = back
                .iter()
                .filter_map(|e| e.request_id.strip_prefix(&format!("t{t}-")))
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(seq, (0..per_task).collect::<Vec<_>>());
        }
    }

    #[test]
    fn read_entries_skips_garbage_and_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_entries(&dir.path().join("nope")).unwrap().is_empty());
        let good = serde_json::to_string(&entry(7)).unwrap();
        let body = format!("{good}\nnot json\n{{\"timestamp\":\"x\"}}\n\u{0}\u{ff}\n{good}");
        std::fs::write(dir.path().join(LOG_FILE_NAME), body).unwrap();
        std::fs::write(dir.path().join("config-audit.jsonl.x"), good.as_bytes()).unwrap();
        assert_eq!(read_entries(dir.path()).unwrap().len(), 2);
        assert_eq!(
            log_path(Path::new("/d")),
            PathBuf::from("/d/logs/config-audit.jsonl")
        );
    }
}
