//! `s3meta check`: whether a database is sound, read from end to end (issue 13).
//!
//! Receives: a database path, opened read-only, and progress counters to advance. Sends on: a
//! report of the problems found (the first `MAX_LISTED` as lines, all counted). Invariants: the
//! database is only read; SQLite's `PRAGMA integrity_check` reads every page (b-trees, free
//! list, indexes against their tables, NOT NULL and UNIQUE constraints); then s3meta's own
//! invariants walk the objects in bounded chunks, so memory stays flat at any size:
//! - the schema's CHECK constraints hold (the scan's writer skips them for speed, and SQLite
//!   drops CHECK constraints when it reads the schema of a read-only database, so its
//!   `integrity_check` cannot test them here: the same conditions are queried);
//! - foreign keys hold (`PRAGMA foreign_key_check`);
//! - keys, metadata names and values are UTF-8 text, as S3 sent them;
//! - in a bucket that lists in path order, every object's `path_key` is its key's (the
//!   comparisons of that order read it);
//! - an object in state `error` has its error row;
//! - an object owed a HEAD lies in the keyspace of an unfinished scan of its bucket (a
//!   complete scan owes nothing, and only an unfinished one can owe);
//! - the ranges of a scan cover its keyspace exactly once, each checkpoint inside its range;
//!   a complete scan has every range listed and a finish time, an unfinished one none.
//!
//! Scans and resumes never read the whole file (that is hours at 10⁹ rows), so damage is found
//! only where they read; this command is the whole-file answer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::error::{Error, Result};
use crate::keys::{self, KeyOrder, KeyRange};
use crate::model::ScanState;
use crate::store::db;

/// Problems listed at most (all are counted).
pub const MAX_LISTED: usize = 100;
/// Objects read per query of the invariant walk.
const CHUNK: i64 = 10_000;
/// Pages between two progress updates of `integrity_check`.
const PAGES_PER_TICK: i32 = 256;

/// What `check` does, in order: `CheckProgress::phase` is an index into this.
pub const PHASES: [&str; 3] = [
    "SQLite integrity_check",
    "foreign keys",
    "s3meta invariants",
];

/// Live progress, for a progress line: the phase, and how far it is (pages for
/// `integrity_check`, whose count then keeps growing while it checks indexes against rows;
/// objects for the invariants).
#[derive(Debug, Default)]
pub struct CheckProgress {
    pub phase: AtomicUsize,
    pub done: AtomicU64,
    pub total: AtomicU64,
}

impl CheckProgress {
    fn start(&self, phase: usize, total: u64) {
        self.done.store(0, Relaxed);
        self.total.store(total, Relaxed);
        self.phase.store(phase, Relaxed);
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub pages: u64,
    pub objects: u64,
    pub scans: u64,
    /// The first `MAX_LISTED` problems, one line each.
    pub problems: Vec<String>,
    pub problems_total: u64,
}

impl CheckReport {
    fn problem(&mut self, text: String) {
        self.problems_total += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }
}

/// Checks the database at `path`, advancing `progress` as it goes.
pub fn run(path: &Path, progress: &Arc<CheckProgress>) -> Result<CheckReport> {
    let conn = db::open_ro(path)?;
    let dbe = |e| Error::db(path, e);
    let mut report = CheckReport {
        pages: conn
            .pragma_query_value(None, "page_count", |r| r.get::<_, i64>(0))
            .map_err(dbe)? as u64,
        ..CheckReport::default()
    };
    // One read transaction: every phase sees the same database, even while a scan writes.
    conn.execute_batch("BEGIN").map_err(dbe)?;
    integrity(&conn, &mut report, progress).map_err(dbe)?;
    if let Err(e) = invariants(&conn, &mut report, progress) {
        // Damage may stop the walk: it is then the answer, not a failure of the check.
        if !is_damage(&e) && report.problems_total == 0 {
            return Err(dbe(e));
        }
        report.problem(format!("s3meta's invariants: not all checked ({e})"));
    }
    // A read transaction: ending it loses nothing (after damage SQLite may refuse to).
    let _ = conn.execute_batch("COMMIT");
    Ok(report)
}

fn invariants(
    conn: &Connection,
    report: &mut CheckReport,
    progress: &CheckProgress,
) -> rusqlite::Result<()> {
    progress.start(1, 0);
    foreign_keys(conn, report)?;
    constraints(conn, report)?;
    let max_id: i64 =
        conn.query_row("SELECT coalesce(max(object_id), 0) FROM objects", [], |r| {
            r.get(0)
        })?;
    progress.start(2, max_id as u64);
    objects(conn, report, progress)?;
    owed_heads(conn, report)?;
    scans(conn, report)
}

fn integrity(
    conn: &Connection,
    report: &mut CheckReport,
    progress: &Arc<CheckProgress>,
) -> rusqlite::Result<()> {
    progress.start(0, report.pages);
    let p = progress.clone();
    // SQLite calls this every PAGES_PER_TICK b-tree pages it checks, then every as many
    // virtual-machine steps while it matches indexes to rows.
    conn.progress_handler(
        PAGES_PER_TICK,
        Some(move || {
            p.done.fetch_add(PAGES_PER_TICK as u64, Relaxed);
            false
        }),
    )?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let mut rows = stmt.query([])?;
    // SQLite reports most damage as rows, but a page it cannot read may end the statement
    // with an error instead: that too is a finding.
    loop {
        match rows.next() {
            Ok(Some(r)) => {
                let text: String = r.get(0)?;
                // One row may hold several lines, under a "*** in database main ***" header.
                for line in text.lines().filter(|l| *l != "ok" && !l.starts_with("***")) {
                    report.problem(format!("integrity_check: {line}"));
                }
            }
            Ok(None) => break,
            Err(e) if is_damage(&e) => {
                report.problem(format!("integrity_check: stopped: {e}"));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    drop(rows);
    conn.progress_handler(0, None::<fn() -> bool>)?;
    Ok(())
}

/// SQLite found the file damaged (rather than, say, out of memory or busy).
fn is_damage(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase))
}

fn foreign_keys(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (table, rowid, parent): (String, Option<i64>, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?);
        report.problem(format!(
            "foreign key: {table} row {} refers to a missing {parent} row",
            rowid.map_or("?".into(), |id| id.to_string())
        ));
    }
    Ok(())
}

/// A value as a problem line shows it: text quoted, the rest as SQLite would print it.
fn shown(v: &rusqlite::types::Value) -> String {
    use rusqlite::types::Value::*;
    match v {
        Null => "NULL".into(),
        Integer(i) => i.to_string(),
        Real(f) => f.to_string(),
        Text(t) => format!("'{t}'"),
        Blob(b) => format!("a {}-byte blob", b.len()),
    }
}

/// The schema's CHECK constraints on the tables other than `objects` (walked in `objects`).
fn constraints(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    for (what, sql) in [
        (
            "scans with a mode or state the schema does not allow",
            "SELECT count(*), min(scan_id) FROM scans WHERE mode NOT IN ('full', 'rescan')
               OR state NOT IN ('running', 'interrupted', 'complete', 'abandoned')",
        ),
        (
            "buckets with a key order the schema does not allow",
            "SELECT count(*), min(bucket_id) FROM buckets WHERE key_order NOT IN ('byte', 'path')",
        ),
        (
            "scans with a key order the schema does not allow",
            "SELECT count(*), min(scan_id) FROM scans WHERE key_order NOT IN ('byte', 'path')",
        ),
        (
            "scan ranges with a state the schema does not allow",
            "SELECT count(*), min(scan_id) FROM scan_ranges WHERE state NOT IN ('listing', 'done')",
        ),
        (
            "changes with a kind the schema does not allow",
            "SELECT count(*), min(change_id) FROM changes
             WHERE kind NOT IN ('created', 'modified', 'metadata', 'tags', 'deleted')",
        ),
        (
            "scans with a tags choice the schema does not allow",
            "SELECT count(*), min(scan_id) FROM scans WHERE tags NOT IN ('all', 'skip-unchanged')",
        ),
        (
            "objects owing a tags read to a scan that is not unfinished",
            "SELECT count(*), min(object_id) FROM objects INDEXED BY objects_tags_due
             WHERE tags_due != 0 AND tags_due NOT IN
                 (SELECT scan_id FROM scans WHERE state IN ('running', 'interrupted'))",
        ),
    ] {
        let (n, first): (i64, Option<i64>) =
            conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if n > 0 {
            report.problem(format!(
                "{n} {what} (CHECK; the first has id {})",
                first.unwrap_or(0)
            ));
        }
    }
    Ok(())
}

/// Whether a column value is UTF-8 text.
fn is_text(v: ValueRef<'_>) -> bool {
    matches!(v, ValueRef::Text(t) if std::str::from_utf8(t).is_ok())
}

/// Walks the objects by id, a chunk at a time, with their metadata.
fn objects(
    conn: &Connection,
    report: &mut CheckReport,
    progress: &CheckProgress,
) -> rusqlite::Result<()> {
    let mut objects = conn.prepare(
        "SELECT o.object_id, o.key, o.state = 'error' AND e.object_id IS NULL,
                o.state NOT IN ('pending', 'ok', 'error', 'gone') OR o.head_due NOT IN (0, 1),
                o.state, o.head_due, b.key_order IS 'path', o.path_key
         FROM objects o LEFT JOIN object_errors e USING (object_id)
              LEFT JOIN buckets b USING (bucket_id)
         WHERE o.object_id > ?1 ORDER BY o.object_id LIMIT ?2",
    )?;
    let mut metadata = conn.prepare(
        "SELECT object_id, name, value FROM metadata WHERE object_id > ?1 AND object_id <= ?2",
    )?;
    let mut after = 0i64;
    loop {
        let mut rows = objects.query([after, CHUNK])?;
        let mut n = 0;
        let first = after;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            (after, n) = (id, n + 1);
            let key = r.get_ref(1)?;
            if !is_text(key) {
                report.problem(format!("object {id}: its key is not UTF-8 text"));
            } else if r.get::<_, bool>(6)? {
                // Path-order comparisons (ranges, deletion windows) read `path_key`: an object
                // whose `path_key` is not its key's would fall outside them.
                let want = keys::path_key(key.as_str()?);
                if r.get_ref(7)?.as_blob_or_null()? != Some(want.as_slice()) {
                    report.problem(format!(
                        "object {id}: its path_key is not its key's (its bucket lists in path order)"
                    ));
                }
            }
            if r.get::<_, bool>(2)? {
                report.problem(format!(
                    "object {id}: in state error without its object_errors row"
                ));
            }
            if r.get::<_, bool>(3)? {
                let (state, due): (rusqlite::types::Value, rusqlite::types::Value) =
                    (r.get(4)?, r.get(5)?);
                report.problem(format!(
                    "object {id}: state {} and head_due {} break the schema's CHECK",
                    shown(&state),
                    shown(&due)
                ));
            }
        }
        report.objects += n;
        let mut rows = metadata.query([first, after])?;
        while let Some(r) = rows.next()? {
            if !is_text(r.get_ref(1)?) || !is_text(r.get_ref(2)?) {
                let id: i64 = r.get(0)?;
                report.problem(format!(
                    "object {id}: a metadata name or value is not UTF-8 text"
                ));
            }
        }
        progress.done.store(after as u64, Relaxed);
        if n < CHUNK as u64 {
            return Ok(());
        }
    }
}

/// A scan's bucket, state and keyspace, in the order its ranges were cut in.
struct ScanRow {
    id: i64,
    bucket_id: i64,
    state: String,
    finished: bool,
    start_after: Option<String>,
    end_key: Option<String>,
    order: KeyOrder,
    keys: KeyRange,
}

fn scan_rows(conn: &Connection) -> rusqlite::Result<Vec<ScanRow>> {
    // The scan's order, else its bucket's, else byte order (as `merge` reads them).
    let mut stmt = conn.prepare(
        "SELECT s.scan_id, s.bucket_id, s.state, s.finished_at IS NOT NULL, s.prefix,
                s.start_after, s.end_key, coalesce(s.key_order, b.key_order)
         FROM scans s JOIN buckets b USING (bucket_id) WHERE s.follow = 0 ORDER BY s.scan_id",
    )?;
    let rows = stmt.query_map([], |r| {
        let (prefix, start_after, end_key): (String, Option<String>, Option<String>) =
            (r.get(4)?, r.get(5)?, r.get(6)?);
        let order = r.get::<_, Option<KeyOrder>>(7)?.unwrap_or(KeyOrder::Byte);
        Ok(ScanRow {
            id: r.get(0)?,
            bucket_id: r.get(1)?,
            state: r.get(2)?,
            finished: r.get(3)?,
            keys: KeyRange::span(order, &prefix, start_after.as_deref(), end_key.as_deref()),
            order,
            start_after,
            end_key,
        })
    })?;
    rows.collect()
}

/// The state as stored text: `check` reads what is there, even a value no enum knows.
fn unfinished(state: &str) -> bool {
    matches!(
        ScanState::parse(state),
        Some(ScanState::Running | ScanState::Interrupted)
    )
}

/// Every object owed a HEAD lies in an unfinished scan's keyspace of its bucket.
fn owed_heads(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    let scans = scan_rows(conn)?;
    let mut buckets = conn.prepare("SELECT bucket_id, store, name FROM buckets")?;
    let buckets: Vec<(i64, String, String)> = buckets
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut owed = conn.prepare(
        "SELECT key FROM objects INDEXED BY objects_head_due
         WHERE bucket_id = ?1 AND head_due = 1 AND key > ?2 ORDER BY key LIMIT ?3",
    )?;
    for (bucket_id, store, name) in buckets {
        let open: Vec<&KeyRange> = scans
            .iter()
            .filter(|s| s.bucket_id == bucket_id && unfinished(&s.state))
            .map(|s| &s.keys)
            .collect();
        let (mut after, mut outside) = (String::new(), 0u64);
        let mut example = None;
        loop {
            let keys: Vec<String> = owed
                .query_map(rusqlite::params![bucket_id, after, CHUNK], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for key in &keys {
                if !open.iter().any(|k| k.contains(key)) {
                    outside += 1;
                    example.get_or_insert_with(|| key.clone());
                }
            }
            match keys.last() {
                Some(last) if keys.len() as i64 == CHUNK => after = last.clone(),
                _ => break,
            }
        }
        if let Some(key) = example {
            report.problem(format!(
                "s3://{name} at {store}: {outside} object(s) owed a HEAD outside every unfinished scan (e.g. {key:?})"
            ));
        }
    }
    Ok(())
}

/// The ranges of every scan tile its keyspace; finish times and range states fit the state.
fn scans(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    let mut ranges = conn.prepare(
        "SELECT range_no, start_after, end_key, last_key, state = 'done' FROM scan_ranges
         WHERE scan_id = ?1",
    )?;
    for s in scan_rows(conn)? {
        report.scans += 1;
        type Range = (i64, Option<String>, Option<String>, Option<String>, bool);
        let mut rows: Vec<Range> = ranges
            .query_map([s.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        // In the scan's order, the unbounded start first (SQL would sort in byte order).
        rows.sort_by(|a, b| match (&a.1, &b.1) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => s.order.cmp(x, y),
        });
        let mut bad = |what: String| report.problem(format!("scan {}: {what}", s.id));
        let mut expected = s.start_after.clone();
        for (no, start_after, end_key, last_key, _) in &rows {
            if *start_after != expected {
                bad(format!(
                    "range {no} starts after {start_after:?}, not {expected:?}: the ranges do not cover the keyspace once"
                ));
            }
            if let Some(k) = last_key
                && !KeyRange::between(s.order, start_after.as_deref(), end_key.as_deref())
                    .contains(k)
            {
                bad(format!(
                    "range {no}: its checkpoint {k:?} is outside the range"
                ));
            }
            expected = end_key.clone();
        }
        if rows.is_empty() || expected != s.end_key {
            bad(format!(
                "the ranges end at {expected:?}, not at the scan's end {:?}",
                s.end_key
            ));
        }
        let complete = ScanState::parse(&s.state) == Some(ScanState::Complete);
        match s.state.as_str() {
            _ if complete && rows.iter().any(|r| !r.4) => {
                bad("complete with a range not listed".into())
            }
            _ if complete && !s.finished => bad("complete without a finish time".into()),
            st if unfinished(st) && s.finished => bad(format!("{st} with a finish time")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The progress line moves while `integrity_check` reads the pages.
    #[test]
    fn integrity_check_reports_progress_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let conn = db::open_rw(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO buckets (store, name) VALUES ('aws', 'b');
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
             INSERT INTO objects (bucket_id, key, state) SELECT 1, printf('key-%08d', i), 'pending' FROM n;",
        )
        .unwrap();
        db::close_rw(conn, &path).unwrap();
        let progress = Arc::new(CheckProgress::default());
        let conn = db::open_ro(&path).unwrap();
        let mut report = CheckReport {
            pages: conn
                .pragma_query_value(None, "page_count", |r| r.get::<_, i64>(0))
                .unwrap() as u64,
            ..CheckReport::default()
        };
        assert!(report.pages > 2 * PAGES_PER_TICK as u64, "{}", report.pages);
        integrity(&conn, &mut report, &progress).unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!(progress.total.load(Relaxed), report.pages);
        assert!(
            progress.done.load(Relaxed) >= report.pages,
            "every page counted"
        );
    }
}
