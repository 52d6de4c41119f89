//! The metrics of a scan run, for `scan --metrics-file` (the node_exporter textfile
//! collector): what the run did, how it ended, and when the target last completed a scan.
//!
//! Receives: the target, the run's counters, its duration and exit code, and the database.
//! Sends on: the Prometheus text exposition (`model::metrics`). Invariants: every series is
//! labelled by store, bucket and prefix, so files of several targets never collide; the last
//! success is read from the database (read-only), so it survives runs, and a run that could
//! not open the database still reports everything else.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::Target;
use crate::model::metrics::{Exposition, MetricType};
use crate::model::stats::Snapshot;
use crate::store::db;

/// How one scan run ended.
#[derive(Debug, Clone)]
pub struct ScanRun<'a> {
    pub target: &'a Target,
    pub stats: Snapshot,
    pub duration: Duration,
    pub exit_code: u8,
    /// When the run ended, seconds since the epoch.
    pub ended_at: f64,
}

/// The time (seconds since the epoch) the latest complete scan of `target` finished.
pub fn last_success(db_path: &Path, target: &Target) -> Result<Option<f64>> {
    let conn = db::open_ro(db_path)?;
    conn.query_row(
        "SELECT (julianday(max(s.finished_at)) - 2440587.5) * 86400.0
         FROM scans s JOIN buckets b USING (bucket_id)
         WHERE b.store = ?1 AND b.name = ?2 AND s.prefix = ?3 AND s.state = 'complete'
           AND s.follow = 0 AND s.versions = ?4
           AND s.start_after IS ?5 AND s.end_key IS ?6",
        rusqlite::params![
            target.store,
            target.bucket,
            target.prefix,
            target.versions,
            target.start_after,
            target.end_key
        ],
        |r| r.get::<_, Option<f64>>(0),
    )
    .map(|t| t.map(|t| (t * 1000.0).round() / 1000.0))
    .map_err(|e| Error::db(db_path, e))
}

/// The exposition of one run; `last_success` as `last_success` read it.
pub fn scan_exposition(run: &ScanRun<'_>, last_success: Option<f64>) -> String {
    let t = run.target;
    let labels = [
        ("store", t.store.as_str()),
        ("bucket", t.bucket.as_str()),
        ("prefix", t.prefix.as_str()),
    ];
    let s = &run.stats;
    let mut e = Exposition::new();
    let gauges: [(&str, &str, f64); 9] = [
        (
            "s3meta_scan_objects_listed",
            "Objects listed by the last scan run.",
            s.listed as f64,
        ),
        (
            "s3meta_scan_objects_headed",
            "Objects HEADed (result committed) by the last scan run.",
            s.headed as f64,
        ),
        (
            "s3meta_scan_objects_skipped",
            "Unchanged objects a rescan did not HEAD, in the last run.",
            s.skipped as f64,
        ),
        (
            "s3meta_scan_objects_errored",
            "Objects recorded in error by the last scan run.",
            s.failed as f64,
        ),
        (
            "s3meta_scan_objects_deleted",
            "Objects recorded as gone by the last scan run.",
            s.gone as f64,
        ),
        (
            "s3meta_scan_retries",
            "Retried requests of the last scan run.",
            s.retries as f64,
        ),
        (
            "s3meta_scan_throttled",
            "Throttled answers (503 SlowDown, 429) in the last scan run.",
            s.throttled as f64,
        ),
        (
            "s3meta_scan_duration_seconds",
            "Wall time of the last scan run.",
            run.duration.as_secs_f64(),
        ),
        (
            "s3meta_scan_exit_code",
            "Exit code of the last scan run: 0 ok, 1 failed, 3 some objects unreadable, 130 interrupted.",
            f64::from(run.exit_code),
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, help, MetricType::Gauge)
            .sample(name, &labels, v);
    }
    let name = "s3meta_scan_requests";
    e.family(
        name,
        "Requests (attempts) of the last scan run, by operation.",
        MetricType::Gauge,
    );
    for (op, n) in [
        ("list", s.list_requests),
        ("head", s.head_requests),
        ("get_object_tagging", s.tag_requests),
    ] {
        let mut l = labels.to_vec();
        l.push(("operation", op));
        e.sample(name, &l, n as f64);
    }
    let name = "s3meta_scan_last_run_timestamp_seconds";
    e.family(
        name,
        "When the last scan run ended, however it ended.",
        MetricType::Gauge,
    )
    .sample(name, &labels, run.ended_at);
    if let Some(at) = last_success {
        let name = "s3meta_scan_last_success_timestamp_seconds";
        e.family(
            name,
            "When the latest complete scan of the target finished (from the database).",
            MetricType::Gauge,
        )
        .sample(name, &labels, at);
    }
    e.finish()
}

/// The file name of a target's metrics in a directory: one file per target, so targets
/// written to one textfile directory never overwrite each other.
pub fn file_name(target: &Target) -> String {
    // FNV-1a over every field that tells targets apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let fields = [
        target.store.as_str(),
        &target.bucket,
        &target.prefix,
        target.start_after.as_deref().unwrap_or("\u{0}"),
        target.end_key.as_deref().unwrap_or("\u{0}"),
        if target.versions { "v" } else { "c" },
    ];
    for f in fields {
        for b in f.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let bucket: String = target
        .bucket
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("s3meta_scan_{bucket}_{h:016x}.prom")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(prefix: &str) -> Target {
        Target {
            store: "http://127.0.0.1:9000".into(),
            bucket: "archive".into(),
            prefix: prefix.into(),
            start_after: None,
            end_key: None,
            versions: false,
        }
    }

    #[test]
    fn targets_get_their_own_files() {
        assert_ne!(file_name(&target("a/")), file_name(&target("b/")));
        assert_eq!(file_name(&target("a/")), file_name(&target("a/")));
        assert!(file_name(&target("")).starts_with("s3meta_scan_archive_"));
    }

    #[test]
    fn exposition_labels_every_series() {
        let t = target("logs/\"x\"");
        let run = ScanRun {
            target: &t,
            stats: Snapshot {
                listed: 5,
                ..Snapshot::default()
            },
            duration: Duration::from_millis(1500),
            exit_code: 130,
            ended_at: 1_700_000_000.0,
        };
        let text = scan_exposition(&run, Some(1_699_000_000.5));
        let l = r#"store="http://127.0.0.1:9000",bucket="archive",prefix="logs/\"x\"""#;
        assert!(
            text.contains(&format!("s3meta_scan_objects_listed{{{l}}} 5\n")),
            "{text}"
        );
        assert!(text.contains(&format!("s3meta_scan_exit_code{{{l}}} 130\n")));
        assert!(text.contains(&format!("s3meta_scan_duration_seconds{{{l}}} 1.5\n")));
        assert!(text.contains(&format!(
            "s3meta_scan_requests{{{l},operation=\"list\"}} 0\n"
        )));
        assert!(text.contains(&format!(
            "s3meta_scan_last_success_timestamp_seconds{{{l}}} 1699000000.5\n"
        )));
        assert!(!scan_exposition(&run, None).contains("last_success"));
    }
}
