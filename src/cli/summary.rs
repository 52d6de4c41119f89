//! The `--summary-json` document: one JSON object describing how a scan run ended, written
//! also after an interrupt or a fatal error, for cron jobs and log collectors.
//!
//! Receives: the target, the run's outcome (report or error) and its live counters. Sends on:
//! JSON to a file or stdout. Invariant: field names are stable (documented in the README);
//! new fields may be added, none renamed or removed.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use s3meta::model::stats::{Resources, Snapshot, resources};
use s3meta::model::{Mode, Target};
use s3meta::scan::{Outcome, ScanReport};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub store: String,
    pub bucket: String,
    pub prefix: String,
    /// The key range of a `--range-json` scan; null otherwise.
    pub start_after: Option<String>,
    pub end: Option<String>,
    pub scan_id: Option<i64>,
    pub mode: Option<Mode>,
    pub resumed: bool,
    /// `complete`, `complete_with_errors`, `interrupted` or `failed`.
    pub state: &'static str,
    pub exit_code: u8,
    pub error: Option<String>,
    pub objects: Objects,
    pub requests: Requests,
    pub retries: u64,
    pub throttled: u64,
    pub duration_seconds: f64,
    pub objects_per_second: f64,
    pub resources: Resources,
}

#[derive(Debug, Serialize)]
pub struct Objects {
    pub listed: u64,
    pub headed: u64,
    pub skipped: u64,
    pub with_metadata: u64,
    /// Objects whose tags were read (`--tags`).
    pub tags_read: u64,
    pub deleted: u64,
    pub errored: u64,
    /// Still owed a HEAD when the run ended (non-zero after an interrupt or a failure); null
    /// when the scan never started.
    pub head_due: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Requests {
    pub list: u64,
    pub head: u64,
    /// GetObjectTagging (`--tags`).
    pub tags: u64,
    pub total: u64,
}

impl Summary {
    pub fn new(
        target: Option<&Target>,
        result: Result<&ScanReport, &str>,
        exit_code: u8,
        stats: &Snapshot,
        scan: Option<(i64, Mode)>,
        head_due: Option<i64>,
        elapsed: Duration,
    ) -> Summary {
        let (report, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let state = match report.map(|r| r.outcome) {
            Some(Outcome::Complete) => "complete",
            Some(Outcome::CompleteWithErrors) => "complete_with_errors",
            Some(Outcome::Interrupted) => "interrupted",
            None => "failed",
        };
        let secs = elapsed.as_secs_f64();
        Summary {
            store: target.map(|t| t.store.clone()).unwrap_or_default(),
            bucket: target.map(|t| t.bucket.clone()).unwrap_or_default(),
            prefix: target.map(|t| t.prefix.clone()).unwrap_or_default(),
            start_after: target.and_then(|t| t.start_after.clone()),
            end: target.and_then(|t| t.end_key.clone()),
            scan_id: report.map(|r| r.scan_id).or(scan.map(|s| s.0)),
            mode: report.map(|r| r.mode).or(scan.map(|s| s.1)),
            resumed: report.is_some_and(|r| r.resumed),
            state,
            exit_code,
            error,
            objects: Objects {
                listed: stats.listed,
                headed: stats.headed,
                skipped: stats.skipped,
                with_metadata: stats.with_metadata,
                tags_read: stats.tags_read,
                deleted: stats.gone,
                errored: stats.failed,
                head_due: report.map(|r| r.due).or(head_due),
            },
            requests: Requests {
                list: stats.list_requests,
                head: stats.head_requests,
                tags: stats.tag_requests,
                total: stats.list_requests + stats.head_requests + stats.tag_requests,
            },
            retries: stats.retries,
            throttled: stats.throttled,
            duration_seconds: secs,
            objects_per_second: if secs > 0.0 {
                stats.listed.max(stats.headed) as f64 / secs
            } else {
                0.0
            },
            resources: resources(),
        }
    }

    /// Fails at once if `dest` cannot be written, so that no scan runs for a summary that
    /// would be lost at its end. A file created to find out is removed again.
    pub fn check_writable(dest: &Path) -> std::io::Result<()> {
        if dest == Path::new("-") {
            return Ok(());
        }
        match std::fs::OpenOptions::new().write(true).open(dest) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dest)?;
                std::fs::remove_file(dest)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the document to `dest`, or to stdout when it is `-`.
    pub fn write(&self, dest: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("summary serializes");
        text.push('\n');
        if dest == Path::new("-") {
            std::io::stdout().lock().write_all(text.as_bytes())
        } else {
            std::fs::write(dest, text)
        }
    }
}
