//! `s3meta status`: the scans recorded in a database and the objects that could not be read.
//!
//! Receives: `StatusOptions` (the database path among them) and an output. Sends on: a report (scans with their
//! target, mode, state, times, counters and checkpoint age; objects in error, capped) as a
//! table or as JSON. Invariants: the database is only read; a scan recorded as `running` is
//! shown as `interrupted` (stale) when no process holds the scan lock, which is tested through
//! a read-only descriptor by taking the lock and releasing it at once, never by waiting for
//! it; a lock that cannot be tested is "unknown", never "not held" (issue 13).

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, Row};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Mode, ObjectState, ScanState};
use crate::read::output::{DocFormat, escape_controls, thousands};
use crate::store::db;
use crate::store::lock::{self, Liveness};

#[derive(Debug, Serialize)]
pub struct Report {
    pub database: String,
    pub scans: Vec<ScanStatus>,
    /// Objects whose HEAD failed for good, by (store, bucket, key), at most `--errors`.
    pub errors: Vec<ObjectError>,
    /// How many objects are in error in all (may exceed `errors.len()`).
    pub errors_total: i64,
    /// Scans recorded but not in `scans`: older than the latest `--last` of their target (and
    /// finished).
    pub scans_hidden: u64,
}

#[derive(Debug, Serialize)]
pub struct ScanStatus {
    pub scan_id: i64,
    pub store: String,
    pub bucket: String,
    pub prefix: String,
    pub start_after: Option<String>,
    pub end_key: Option<String>,
    /// A versions scan (`--all-versions`): its counts are versions and delete markers.
    pub versions: bool,
    /// A `follow` session, not a scan: it takes the lock only to commit, so a `running` one
    /// is told by its last commit (`checkpoint_age_secs`), not by the lock.
    pub follow: bool,
    /// A follow session's events: applied, older than the index (stale), ignored; the newest
    /// applied event's time.
    pub events_applied: i64,
    pub events_stale: i64,
    pub events_ignored: i64,
    pub last_event_time: Option<String>,
    pub mode: Mode,
    /// As recorded, except that a `running` scan no process holds the lock of is `interrupted`.
    pub state: ScanState,
    /// The scan was recorded as `running` but its process is gone (killed, crashed); null when
    /// that cannot be told (see `lock_unknown`).
    pub stale: Option<bool>,
    /// Why the lock of a scan recorded as `running` could not be tested.
    pub lock_unknown: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// Seconds since the last commit (the checkpoint moves with every commit).
    pub checkpoint_age_secs: i64,
    pub objects_listed: i64,
    pub heads_ok: i64,
    pub heads_skipped: i64,
    pub objects_gone: i64,
    pub objects_failed: i64,
    pub list_requests: i64,
    pub head_requests: i64,
    pub retries: i64,
    pub throttled: i64,
    /// Which objects the scan reads the tags of (`--tags`): `all`, `skip-unchanged`, or none.
    pub tags: Option<String>,
    pub tag_requests: i64,
    /// Objects whose tags the scan read (or HEAD counted 0).
    pub tags_read: i64,
    /// Objects this scan recorded in error that still are.
    pub objects_in_error: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ObjectError {
    pub store: String,
    pub bucket: String,
    pub key: String,
    /// The version in error (`--all-versions` scans); null for a current object.
    pub version_id: Option<String>,
    pub status: Option<i64>,
    pub code: Option<String>,
    pub message: String,
    pub attempts: i64,
    pub at: String,
    pub scan_id: i64,
}

/// Runs `s3meta status`, writing to `out`.
/// What `s3meta status` is asked.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub db: std::path::PathBuf,
    pub format: DocFormat,
    /// Objects in error listed at most (the total is always given).
    pub errors: u64,
    /// The latest scans of each target shown, at most (0: all); unfinished ones always are.
    pub last: u64,
}

pub fn run(args: &StatusOptions, out: &mut dyn Write) -> Result<()> {
    let path = args.db.as_path();
    // Tested before the connection opens, and its descriptor closed after (lock.rs).
    let probe = lock::probe(path);
    let conn = db::open_ro(path)?;
    let live = || probe.liveness.clone();
    let mut report = read(&conn, path, args.errors, &live).map_err(|e| Error::db(path, e))?;
    report.keep_last(args.last);
    match args.format {
        DocFormat::Json => serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        DocFormat::Table => write_table(&report, &mut *out),
    }
    .map_err(Error::Output)
}

impl Report {
    /// Keeps the latest `n` scans of each target (0: all), and every unfinished one.
    pub fn keep_last(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let mut seen = std::collections::HashMap::new();
        let mut keep = vec![false; self.scans.len()];
        for (i, s) in self.scans.iter().enumerate().rev() {
            let target = (
                &s.store,
                &s.bucket,
                &s.prefix,
                &s.start_after,
                &s.end_key,
                s.versions,
                s.follow,
            );
            let shown = seen.entry(target).or_insert(0u64);
            let unfinished = matches!(s.state, ScanState::Running | ScanState::Interrupted);
            if *shown < n || unfinished {
                keep[i] = true;
                *shown += 1;
            }
        }
        let before = self.scans.len();
        let mut keep = keep.into_iter();
        self.scans.retain(|_| keep.next().unwrap_or(true));
        self.scans_hidden += (before - self.scans.len()) as u64;
    }
}

/// Reads the report; `live` says whether a scan process holds the lock (asked only when a
/// scan is recorded as running).
pub fn read(
    conn: &Connection,
    path: &Path,
    max_errors: u64,
    live: &dyn Fn() -> Liveness,
) -> rusqlite::Result<Report> {
    let error = ObjectState::Error.sql();
    let mut stmt = conn.prepare(&format!(
        "SELECT s.scan_id, b.store, b.name, s.prefix, s.start_after, s.end_key, s.mode, s.state,
                s.started_at, s.updated_at, s.finished_at,
                CAST(round((julianday('now') - julianday(s.updated_at)) * 86400) AS INTEGER),
                s.objects_listed, s.heads_ok, s.heads_skipped, s.objects_gone, s.objects_failed,
                s.list_requests, s.head_requests, s.retries, s.throttled,
                CASE WHEN s.versions THEN
                    (SELECT count(*) FROM version_errors e CROSS JOIN versions o USING (object_id)
                      WHERE e.scan_id = s.scan_id AND o.state = {error})
                ELSE
                    (SELECT count(*) FROM object_errors e CROSS JOIN objects o USING (object_id)
                      WHERE e.scan_id = s.scan_id AND o.state = {error})
                END,
                s.last_error, s.tags, s.tag_requests, s.tags_read, s.versions, s.follow,
                s.events_applied, s.events_stale, s.events_ignored, s.last_event_time
         FROM scans s JOIN buckets b USING (bucket_id) ORDER BY s.scan_id",
    ))?;
    let mut scans = stmt
        .query_map([], scan_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let probed = |s: &ScanStatus| s.state == ScanState::Running && !s.follow;
    if scans.iter().any(probed) {
        let liveness = live();
        for s in scans.iter_mut().filter(|s| probed(s)) {
            match &liveness {
                Liveness::Held => s.stale = Some(false),
                Liveness::Free => {
                    s.state = ScanState::Interrupted;
                    s.stale = Some(true);
                }
                Liveness::Unknown(why) => {
                    s.stale = None;
                    s.lock_unknown = Some(why.clone());
                }
            }
        }
    }
    // CROSS JOIN keeps object_errors (one row per object in error, usually a few) the outer
    // loop; the planner would otherwise walk every object.
    let errors_total = conn.query_row(
        &format!(
            "SELECT (SELECT count(*) FROM object_errors CROSS JOIN objects USING (object_id) WHERE state = {error})
                  + (SELECT count(*) FROM version_errors CROSS JOIN versions USING (object_id) WHERE state = {error})"
        ),
        [],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(&format!(
        "SELECT * FROM (
             SELECT b.store, b.name, o.key, NULL AS version_id, e.status, e.code, e.message,
                    e.attempts, e.at, e.scan_id
             FROM object_errors e CROSS JOIN objects o USING (object_id) JOIN buckets b USING (bucket_id)
             WHERE o.state = {error}
             UNION ALL
             SELECT b.store, b.name, o.key, o.version_id, e.status, e.code, e.message,
                    e.attempts, e.at, e.scan_id
             FROM version_errors e CROSS JOIN versions o USING (object_id) JOIN buckets b USING (bucket_id)
             WHERE o.state = {error})
         ORDER BY 1, 2, 3, 4 LIMIT ?1",
    ))?;
    let errors = stmt
        .query_map([max_errors as i64], error_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Report {
        database: path.display().to_string(),
        scans,
        errors,
        errors_total,
        scans_hidden: 0,
    })
}

fn scan_row(r: &Row<'_>) -> rusqlite::Result<ScanStatus> {
    Ok(ScanStatus {
        scan_id: r.get(0)?,
        store: r.get(1)?,
        bucket: r.get(2)?,
        prefix: r.get(3)?,
        start_after: r.get(4)?,
        end_key: r.get(5)?,
        mode: r.get(6)?,
        state: r.get(7)?,
        stale: Some(false),
        lock_unknown: None,
        started_at: r.get(8)?,
        updated_at: r.get(9)?,
        finished_at: r.get(10)?,
        checkpoint_age_secs: r.get::<_, Option<i64>>(11)?.unwrap_or(0),
        objects_listed: r.get(12)?,
        heads_ok: r.get(13)?,
        heads_skipped: r.get(14)?,
        objects_gone: r.get(15)?,
        objects_failed: r.get(16)?,
        list_requests: r.get(17)?,
        head_requests: r.get(18)?,
        retries: r.get(19)?,
        throttled: r.get(20)?,
        objects_in_error: r.get(21)?,
        last_error: r.get(22)?,
        tags: r.get(23)?,
        tag_requests: r.get(24)?,
        tags_read: r.get(25)?,
        versions: r.get(26)?,
        follow: r.get(27)?,
        events_applied: r.get(28)?,
        events_stale: r.get(29)?,
        events_ignored: r.get(30)?,
        last_event_time: r.get(31)?,
    })
}

fn error_row(r: &Row<'_>) -> rusqlite::Result<ObjectError> {
    Ok(ObjectError {
        store: r.get(0)?,
        bucket: r.get(1)?,
        key: r.get(2)?,
        version_id: r.get(3)?,
        status: r.get(4)?,
        code: r.get(5)?,
        message: r.get(6)?,
        attempts: r.get(7)?,
        at: r.get(8)?,
        scan_id: r.get(9)?,
    })
}

fn write_table(r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    if r.scans.is_empty() {
        writeln!(out, "{}: no scans yet", r.database)?;
    }
    if r.scans_hidden > 0 {
        writeln!(
            out,
            "{} not shown (older than the latest of their target; --last 0 shows every scan)",
            crate::model::words::count_as(r.scans_hidden, "older scan", "older scans")
        )?;
    }
    for s in &r.scans {
        write_scan(s, out)?;
    }
    if r.errors_total == 0 {
        return writeln!(out, "no objects in error");
    }
    writeln!(
        out,
        "objects in error: {}",
        thousands(r.errors_total as u64)
    )?;
    for e in &r.errors {
        let status = e.status.map_or("-".to_string(), |s| s.to_string());
        let version = e.version_id.as_deref().map_or(String::new(), |v| {
            format!(" (version {})", escape_controls(v))
        });
        writeln!(
            out,
            "  s3://{}/{}{version}  {status} {}  {}",
            e.bucket,
            escape_controls(&e.key),
            e.code.as_deref().unwrap_or("-"),
            escape_controls(&e.message),
        )?;
    }
    let more = r.errors_total - r.errors.len() as i64;
    if more > 0 {
        writeln!(
            out,
            "  … and {} more: s3meta query --where @error",
            thousands(more as u64)
        )?;
    }
    Ok(())
}

fn write_scan(s: &ScanStatus, out: &mut dyn Write) -> std::io::Result<()> {
    let range = match (&s.start_after, &s.end_key) {
        (None, None) => String::new(),
        (a, e) => format!(
            " keys ({}, {}]",
            a.as_deref().unwrap_or("…"),
            e.as_deref().unwrap_or("…")
        ),
    };
    let state = match (&s.stale, &s.lock_unknown) {
        (Some(true), _) => "interrupted (stale: recorded as running, but no s3meta process holds the lock; run the same scan to resume)".to_string(),
        (_, Some(why)) => format!(
            "running, or interrupted: unknown ({why}); run status as a user who can read the database to tell"
        ),
        _ => s.state.to_string(),
    };
    let n = |v: i64| thousands(v as u64);
    writeln!(
        out,
        "scan {}  s3://{}/{}{range}  at {}",
        s.scan_id, s.bucket, s.prefix, s.store
    )?;
    let what = if s.versions { ", every version" } else { "" };
    if s.follow {
        let state = match s.state {
            ScanState::Running => format!(
                "running, or stopped without ending (last commit {} ago)",
                age(s.checkpoint_age_secs)
            ),
            other => other.to_string(),
        };
        writeln!(out, "  follow session, {state}")?;
        let newest = s
            .last_event_time
            .as_deref()
            .filter(|t| !t.is_empty())
            .map_or(String::new(), |t| format!(" · newest event {t}"));
        writeln!(
            out,
            "  events: {} applied · {} stale · {} ignored{newest}",
            n(s.events_applied),
            n(s.events_stale),
            n(s.events_ignored)
        )?;
        writeln!(
            out,
            "  HEAD ok {} · gone {} · failed {} (in error now {}) · {} HEAD requests",
            n(s.heads_ok),
            n(s.objects_gone),
            n(s.objects_failed),
            n(s.objects_in_error),
            n(s.head_requests)
        )?;
        if let Some(e) = &s.last_error {
            writeln!(out, "  last error: {}", escape_controls(e))?;
        }
        return Ok(());
    }
    writeln!(out, "  {} scan{what}, {state}", s.mode)?;
    let finished = s
        .finished_at
        .as_deref()
        .map_or(String::new(), |f| format!(", finished {f}"));
    writeln!(
        out,
        "  started {}, updated {}{finished}",
        s.started_at, s.updated_at
    )?;
    if !matches!(s.state, ScanState::Complete | ScanState::Abandoned) {
        writeln!(out, "  last checkpoint {} ago", age(s.checkpoint_age_secs))?;
    }
    writeln!(
        out,
        "  listed {} · HEAD ok {} · skipped {} · gone {} · failed {} (in error now {})",
        n(s.objects_listed),
        n(s.heads_ok),
        n(s.heads_skipped),
        n(s.objects_gone),
        n(s.objects_failed),
        n(s.objects_in_error),
    )?;
    writeln!(
        out,
        "  requests: {} LIST, {} HEAD · retries {} · throttled {}",
        n(s.list_requests),
        n(s.head_requests),
        n(s.retries),
        n(s.throttled),
    )?;
    if let Some(mode) = &s.tags {
        writeln!(
            out,
            "  tags ({mode}): {} read, {} GetObjectTagging",
            n(s.tags_read),
            n(s.tag_requests),
        )?;
    }
    if let Some(e) = &s.last_error {
        writeln!(out, "  last error: {}", escape_controls(e))?;
    }
    Ok(())
}

/// `75` → `1m 15s`.
fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a lock that cannot be tested leaves a running scan running, "unknown".
    #[test]
    fn an_untestable_lock_is_unknown_never_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = db::open_rw(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO buckets (store, name) VALUES ('aws', 'b');
             INSERT INTO scans (bucket_id, prefix, mode, state, record_created, started_at, updated_at)
             VALUES (1, '', 'full', 'running', 0, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();
        let unknown = || Liveness::Unknown("cannot test the lock: ENOLCK".into());
        let r = read(&conn, &path, 5, &unknown).unwrap();
        let s = &r.scans[0];
        assert_eq!((s.state.as_str(), s.stale), ("running", None));
        let mut text = Vec::new();
        write_table(&r, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("unknown (cannot test the lock: ENOLCK)"),
            "{text}"
        );
        let r = read(&conn, &path, 5, &|| Liveness::Free).unwrap();
        assert_eq!(
            (r.scans[0].state.as_str(), r.scans[0].stale),
            ("interrupted", Some(true))
        );
        let r = read(&conn, &path, 5, &|| Liveness::Held).unwrap();
        assert_eq!(
            (r.scans[0].state.as_str(), r.scans[0].stale),
            ("running", Some(false))
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(75), "1m 15s");
        assert_eq!(age(7300), "2h 1m");
        assert_eq!(age(90000), "1d 1h");
    }
}
