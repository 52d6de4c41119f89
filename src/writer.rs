//! The single writer: the only code that writes to the database during a scan.
//!
//! Receives: listing pages (with their checkpoint) from the listers and HEAD outcomes from the
//! HEAD pool, over one bounded channel. Sends on: after each commit, the objects of each page
//! that need a HEAD, back to the page's lister. Invariants: a page's rows, its deletions and its
//! checkpoint are one transaction; a HEAD outcome, its metadata rows and its change row are one
//! transaction; messages are applied in arrival order and batched into as few transactions as
//! the channel's backlog allows (HEAD outcomes wait up to `LINGER` for company, a page never
//! waits), and a batch is never abandoned: it commits or the scan fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::Mode;
use crate::error::Error;
use crate::head::{HeadFields, HeadJob, HeadOutcome, HeadResult};
use crate::keyspace::KeyRange;
use crate::stats::{Snapshot, Stats};
use crate::timefmt;

/// How many rows one transaction takes at most (a page counts one per key).
const BATCH_ROWS: usize = 4096;
/// How long a batch of HEAD outcomes waits for more before it is committed.
const LINGER: Duration = Duration::from_millis(50);

/// One object as the listing reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub etag: Option<String>,
    pub size: Option<i64>,
    pub last_modified: Option<String>,
    pub storage_class: Option<String>,
}

/// One listing page and the checkpoint that follows it.
#[derive(Debug)]
pub struct PageMsg {
    pub range_no: i64,
    /// The keys of the whole range (prefix ∩ (start_after, end]).
    pub keys: Arc<KeyRange>,
    /// Last key of the previous page of this range (None: the range's start).
    pub prev_last: Option<String>,
    pub last_key: Option<String>,
    pub entries: Vec<ListedObject>,
    pub next_token: Option<String>,
    /// The range is fully listed: stored keys after this page up to its end are gone.
    pub done: bool,
    pub reply: oneshot::Sender<Vec<HeadJob>>,
}

/// A range cut in two while it is listed: (start, end] becomes (start, at] and a new range
/// (at, end].
#[derive(Debug, Clone)]
pub struct SplitMsg {
    pub range_no: i64,
    pub at: String,
    pub new_range_no: i64,
    pub end: Option<String>,
}

#[derive(Debug)]
pub enum WriterMsg {
    Page(PageMsg),
    Head(HeadOutcome),
    Split(SplitMsg),
}

impl WriterMsg {
    fn rows(&self) -> usize {
        match self {
            WriterMsg::Page(p) => p.entries.len().max(1),
            WriterMsg::Head(_) | WriterMsg::Split(_) => 1,
        }
    }
}

/// What the writer knows of its scan.
#[derive(Debug, Clone)]
pub struct WriterCtx {
    pub scan_id: i64,
    pub bucket_id: i64,
    pub mode: Mode,
    /// New keys are `created` changes (a completed scan covered this keyspace before).
    pub record_created: bool,
    pub path: PathBuf,
}

/// Counts of one committed batch.
#[derive(Debug, Default)]
struct Tally {
    listed: i64,
    headed: i64,
    heads_ok: i64,
    skipped: i64,
    with_metadata: i64,
    gone: i64,
    failed: i64,
}

/// Runs until every sender is dropped, committing what arrives. On a database error the
/// current batch is rolled back and the error returned; earlier batches stay committed.
pub async fn run(
    conn: tokio_rusqlite::Connection,
    ctx: Arc<WriterCtx>,
    mut rx: mpsc::Receiver<WriterMsg>,
    stats: Arc<Stats>,
) -> Result<(), Error> {
    let path = ctx.path.clone();
    conn.call(move |c| {
        c.pragma_update(None, "ignore_check_constraints", true)
            .map_err(|e| Error::db(&path, e))
    })
    .await
    .map_err(|e| Error::from_async_db(&ctx.path, e))?;
    let mut flushed = stats.snapshot();
    while let Some(batch) = next_batch(&mut rx).await {
        let now = stats.snapshot();
        let requests = delta(&now, &flushed);
        flushed = now;
        let c = ctx.clone();
        let (replies, tally) = conn
            .call(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| Error::db(&c.path, e))?;
                let out =
                    apply_batch(&tx, &c, batch, &requests).map_err(|e| Error::db(&c.path, e))?;
                tx.commit().map_err(|e| Error::db(&c.path, e))?;
                Ok(out)
            })
            .await
            .map_err(|e| Error::from_async_db(&ctx.path, e))?;
        publish(&stats, &tally);
        for (reply, jobs) in replies {
            // A lister that stopped (cancelled) no longer waits: its jobs stay `head_due`.
            let _ = reply.send(jobs);
        }
    }
    Ok(())
}

/// The next batch: whatever is queued, up to `BATCH_ROWS`. A batch holding a page is committed
/// as soon as the queue is empty, since its lister waits for the commit; a batch of HEAD
/// outcomes only waits up to `LINGER` for more, because every commit has a fixed cost (WAL
/// frames, a thread hand-off) that small batches pay per row. `None` once every sender is gone.
async fn next_batch(rx: &mut mpsc::Receiver<WriterMsg>) -> Option<Vec<WriterMsg>> {
    let first = rx.recv().await?;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut rows = first.rows();
    let mut urgent = matches!(first, WriterMsg::Page(_));
    let mut batch = vec![first];
    while rows < BATCH_ROWS {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) if !urgent => {
                // Cancel safety: recv is cancel-safe; on timeout nothing was taken.
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                }
            }
            Err(_) => break,
        };
        urgent |= matches!(msg, WriterMsg::Page(_));
        rows += msg.rows();
        batch.push(msg);
    }
    Some(batch)
}

fn delta(now: &Snapshot, before: &Snapshot) -> Snapshot {
    Snapshot {
        list_requests: now.list_requests - before.list_requests,
        head_requests: now.head_requests - before.head_requests,
        retries: now.retries - before.retries,
        throttled: now.throttled - before.throttled,
        ..Snapshot::default()
    }
}

fn publish(stats: &Stats, t: &Tally) {
    let n = |v: i64| v as u64;
    Stats::add(&stats.listed, n(t.listed));
    Stats::add(&stats.headed, n(t.headed));
    Stats::add(&stats.skipped, n(t.skipped));
    Stats::add(&stats.with_metadata, n(t.with_metadata));
    Stats::add(&stats.gone, n(t.gone));
    Stats::add(&stats.failed, n(t.failed));
}

type Replies = Vec<(oneshot::Sender<Vec<HeadJob>>, Vec<HeadJob>)>;

fn apply_batch(
    tx: &Transaction,
    ctx: &WriterCtx,
    batch: Vec<WriterMsg>,
    requests: &Snapshot,
) -> rusqlite::Result<(Replies, Tally)> {
    let mut tally = Tally::default();
    let mut replies = Vec::new();
    let now = timefmt::now();
    for msg in batch {
        match msg {
            WriterMsg::Page(page) => {
                let jobs = apply_page(tx, ctx, &page, &now, &mut tally)?;
                replies.push((page.reply, jobs));
            }
            WriterMsg::Head(outcome) => apply_head(tx, ctx, outcome, &now, &mut tally)?,
            WriterMsg::Split(split) => apply_split(tx, ctx, &split)?,
        }
    }
    tx.prepare_cached(
        "UPDATE scans SET objects_listed = objects_listed + ?2, heads_ok = heads_ok + ?3,
             heads_skipped = heads_skipped + ?4, objects_gone = objects_gone + ?5,
             objects_failed = objects_failed + ?6, list_requests = list_requests + ?7,
             head_requests = head_requests + ?8, retries = retries + ?9,
             throttled = throttled + ?10, updated_at = ?11
         WHERE scan_id = ?1",
    )?
    .execute(params![
        ctx.scan_id,
        tally.listed,
        tally.heads_ok,
        tally.skipped,
        tally.gone,
        tally.failed,
        requests.list_requests as i64,
        requests.head_requests as i64,
        requests.retries as i64,
        requests.throttled as i64,
        now
    ])?;
    Ok((replies, tally))
}

/// Records a range split: both halves are in the database in one transaction, so the ranges
/// cover the keyspace exactly once at every commit.
fn apply_split(tx: &Transaction, ctx: &WriterCtx, split: &SplitMsg) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE scan_ranges SET end_key = ?3 WHERE scan_id = ?1 AND range_no = ?2")?
        .execute(params![ctx.scan_id, split.range_no, split.at])?;
    tx.prepare_cached(
        "INSERT INTO scan_ranges (scan_id, range_no, start_after, end_key, state)
         VALUES (?1, ?2, ?3, ?4, 'listing')",
    )?
    .execute(params![
        ctx.scan_id,
        split.new_range_no,
        split.at,
        split.end
    ])?;
    Ok(())
}

/// A stored object in a page's key window.
pub(crate) struct Stored {
    object_id: i64,
    state: String,
    head_due: bool,
    etag: Option<String>,
    size: Option<i64>,
    modified: Option<String>,
}

impl Stored {
    /// The listing reports the same ETag, size and Last-Modified as the stored listing.
    fn same_listing(&self, e: &ListedObject) -> bool {
        self.etag == e.etag && self.size == e.size && self.modified == e.last_modified
    }

    /// The rescan rule: an object whose listing is unchanged (and has an ETag) and whose last
    /// HEAD succeeded needs no new HEAD.
    pub(crate) fn unchanged(&self, e: &ListedObject) -> bool {
        self.same_listing(e) && e.etag.is_some() && self.state == "ok" && !self.head_due
    }
}

/// Commits one page: new and changed objects become `head_due`, stored keys of the page's
/// window that the listing lacks become `gone`, and the range's checkpoint moves on.
fn apply_page(
    tx: &Transaction,
    ctx: &WriterCtx,
    page: &PageMsg,
    now: &str,
    tally: &mut Tally,
) -> rusqlite::Result<Vec<HeadJob>> {
    let window = page_window(page);
    let mut stored = match &window {
        Some(w) => stored_in(tx, ctx.bucket_id, w)?,
        None => HashMap::new(),
    };
    let mut jobs = Vec::new();
    for e in &page.entries {
        match stored.remove(&e.key) {
            None => {
                let object_id = insert_listed(tx, ctx, e)?;
                if ctx.record_created {
                    record_change(tx, ctx, object_id, "created", None, Some(e), now)?;
                }
                jobs.push(HeadJob {
                    object_id,
                    key: e.key.clone(),
                });
            }
            Some(s) => {
                let same = s.same_listing(e);
                if ctx.mode == Mode::Rescan && s.unchanged(e) {
                    tally.skipped += 1;
                    continue;
                }
                tx.prepare_cached(
                    "UPDATE objects SET head_due = 1, list_etag = ?2, list_size = ?3,
                         list_modified = ?4, list_storage_class = ?5, listed_scan = ?6
                     WHERE object_id = ?1",
                )?
                .execute(params![
                    s.object_id,
                    e.etag,
                    e.size,
                    e.last_modified,
                    e.storage_class,
                    ctx.scan_id
                ])?;
                if s.state == "gone" {
                    if ctx.record_created {
                        record_change(tx, ctx, s.object_id, "created", None, Some(e), now)?;
                    }
                } else if !same {
                    let old = ListedObject {
                        key: e.key.clone(),
                        etag: s.etag.clone(),
                        size: s.size,
                        last_modified: s.modified.clone(),
                        storage_class: None,
                    };
                    record_change(tx, ctx, s.object_id, "modified", Some(&old), Some(e), now)?;
                }
                jobs.push(HeadJob {
                    object_id: s.object_id,
                    key: e.key.clone(),
                });
            }
        }
    }
    for (key, s) in stored {
        if s.state != "gone" {
            mark_deleted(tx, ctx, &key, &s, now)?;
            tally.gone += 1;
        }
    }
    tx.prepare_cached(
        "UPDATE scan_ranges SET token = ?3, last_key = COALESCE(?4, last_key), state = ?5,
             pages = pages + 1, keys_listed = keys_listed + ?6
         WHERE scan_id = ?1 AND range_no = ?2",
    )?
    .execute(params![
        ctx.scan_id,
        page.range_no,
        page.next_token,
        page.last_key,
        if page.done { "done" } else { "listing" },
        page.entries.len() as i64
    ])?;
    tally.listed += page.entries.len() as i64;
    Ok(jobs)
}

/// The keys a page speaks for: (previous page's last key, this page's last key], or up to the
/// range's end for the last page. `None` for an empty page in mid-listing.
fn page_window(page: &PageMsg) -> Option<KeyRange> {
    let after_prev = match &page.prev_last {
        Some(k) => page.keys.intersect(&KeyRange::between(Some(k), None)),
        None => (*page.keys).clone(),
    };
    if page.done {
        return Some(after_prev);
    }
    let last = page.last_key.as_deref()?;
    Some(after_prev.intersect(&KeyRange::between(None, Some(last))))
}

pub(crate) fn stored_in(
    tx: &rusqlite::Connection,
    bucket_id: i64,
    window: &KeyRange,
) -> rusqlite::Result<HashMap<String, Stored>> {
    let (frag, mut args) = window.sql("key");
    let sql = format!(
        "SELECT object_id, key, state, head_due, list_etag, list_size, list_modified
         FROM objects WHERE bucket_id = :b{frag}"
    );
    args.push((":b", &bucket_id));
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(args.as_slice(), |r| {
        Ok((
            r.get::<_, String>(1)?,
            Stored {
                object_id: r.get(0)?,
                state: r.get(2)?,
                head_due: r.get(3)?,
                etag: r.get(4)?,
                size: r.get(5)?,
                modified: r.get(6)?,
            },
        ))
    })?;
    rows.collect()
}

fn insert_listed(tx: &Transaction, ctx: &WriterCtx, e: &ListedObject) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO objects (bucket_id, key, state, head_due, list_etag, list_size,
             list_modified, list_storage_class, listed_scan)
         VALUES (?1, ?2, 'pending', 1, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        ctx.bucket_id,
        e.key,
        e.etag,
        e.size,
        e.last_modified,
        e.storage_class,
        ctx.scan_id
    ])?;
    Ok(tx.last_insert_rowid())
}

fn mark_deleted(
    tx: &Transaction,
    ctx: &WriterCtx,
    key: &str,
    s: &Stored,
    now: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE objects SET state = 'gone', head_due = 0, gone_scan = ?2 WHERE object_id = ?1",
    )?
    .execute(params![s.object_id, ctx.scan_id])?;
    let old = ListedObject {
        key: key.to_string(),
        etag: s.etag.clone(),
        size: s.size,
        last_modified: s.modified.clone(),
        storage_class: None,
    };
    record_change(tx, ctx, s.object_id, "deleted", Some(&old), None, now)
}

fn record_change(
    tx: &Transaction,
    ctx: &WriterCtx,
    object_id: i64,
    kind: &str,
    old: Option<&ListedObject>,
    new: Option<&ListedObject>,
    now: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO changes (scan_id, object_id, kind, old_etag, old_size, old_modified,
             new_etag, new_size, new_modified, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        ctx.scan_id,
        object_id,
        kind,
        old.and_then(|o| o.etag.as_deref()),
        old.and_then(|o| o.size),
        old.and_then(|o| o.last_modified.as_deref()),
        new.and_then(|o| o.etag.as_deref()),
        new.and_then(|o| o.size),
        new.and_then(|o| o.last_modified.as_deref()),
        now
    ])?;
    Ok(())
}

/// Commits one HEAD outcome against the object's previous state, read from the database (not
/// carried in the job), so a resumed scan decides exactly as an uninterrupted one.
fn apply_head(
    tx: &Transaction,
    ctx: &WriterCtx,
    outcome: HeadOutcome,
    now: &str,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let id = outcome.object_id;
    let prior: Option<(String, bool)> = tx
        .prepare_cached("SELECT state, headed_scan IS NOT NULL FROM objects WHERE object_id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((state, had_head)) = prior else {
        // Forgotten while its HEAD ran (cannot happen under the scan lock); nothing to update.
        return Ok(());
    };
    tally.headed += 1;
    match outcome.result {
        HeadResult::Ok(f) => {
            store_metadata(tx, ctx, id, &f, had_head, now)?;
            store_head(tx, ctx, id, &f, now)?;
            clear_error(tx, id, &state)?;
            tally.heads_ok += 1;
            tally.with_metadata += i64::from(!f.metadata.is_empty());
        }
        HeadResult::Gone => {
            // Whatever this scan noted of the object is superseded by its deletion.
            tx.prepare_cached("DELETE FROM changes WHERE scan_id = ?1 AND object_id = ?2")?
                .execute(params![ctx.scan_id, id])?;
            if state == "ok" || state == "error" {
                tx.prepare_cached(
                    "INSERT INTO changes (scan_id, object_id, kind, old_etag, old_size, old_modified, at)
                     SELECT ?1, object_id, 'deleted', list_etag, list_size, list_modified, ?3
                     FROM objects WHERE object_id = ?2",
                )?
                .execute(params![ctx.scan_id, id, now])?;
            }
            tx.prepare_cached("UPDATE objects SET state = 'gone', head_due = 0, gone_scan = ?2 WHERE object_id = ?1")?
                .execute(params![id, ctx.scan_id])?;
            clear_error(tx, id, &state)?;
            tally.gone += 1;
        }
        HeadResult::Failed { failure, attempts } => {
            tx.prepare_cached(
                "UPDATE objects SET state = 'error', head_due = 0 WHERE object_id = ?1",
            )?
            .execute([id])?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO object_errors (object_id, scan_id, status, code, message, attempts, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![id, ctx.scan_id, failure.status, failure.code, failure.message, attempts, now])?;
            tally.failed += 1;
        }
    }
    Ok(())
}

fn clear_error(tx: &Transaction, id: i64, state: &str) -> rusqlite::Result<()> {
    if state == "error" {
        tx.prepare_cached("DELETE FROM object_errors WHERE object_id = ?1")?
            .execute([id])?;
    }
    Ok(())
}

fn store_head(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    f: &HeadFields,
    now: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE objects SET state = 'ok', head_due = 0, etag = ?2, size = ?3, last_modified = ?4,
             content_type = ?5, cache_control = ?6, content_encoding = ?7, content_language = ?8,
             content_disposition = ?9, expires = ?10, storage_class = ?11, version_id = ?12,
             missing_meta = ?13, headed_scan = ?14, headed_at = ?15
         WHERE object_id = ?1",
    )?
    .execute(params![
        id,
        f.etag,
        f.size,
        f.last_modified,
        f.content_type,
        f.cache_control,
        f.content_encoding,
        f.content_language,
        f.content_disposition,
        f.expires,
        f.storage_class,
        f.version_id,
        f.missing_meta,
        ctx.scan_id,
        now
    ])?;
    Ok(())
}

/// Replaces the object's metadata rows; when it had metadata from an earlier HEAD and it
/// differs, records the old and new values on this scan's change row for the object.
fn store_metadata(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    f: &HeadFields,
    had_head: bool,
    now: &str,
) -> rusqlite::Result<()> {
    if had_head {
        let old: Vec<(String, String)> = tx
            .prepare_cached("SELECT name, value FROM metadata WHERE object_id = ?1 ORDER BY name")?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if old == f.metadata {
            return Ok(());
        }
        record_metadata_change(tx, ctx, id, &old, &f.metadata, now)?;
        tx.prepare_cached("DELETE FROM metadata WHERE object_id = ?1")?
            .execute([id])?;
    } else if ctx.record_created {
        tx.prepare_cached(
            "UPDATE changes SET new_metadata = ?3 WHERE scan_id = ?1 AND object_id = ?2 AND kind = 'created'",
        )?
        .execute(params![ctx.scan_id, id, json_object(&f.metadata)])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO metadata (object_id, name, value) VALUES (?1, ?2, ?3)",
    )?;
    for (name, value) in &f.metadata {
        insert.execute(params![id, name, value])?;
    }
    Ok(())
}

fn record_metadata_change(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    old: &[(String, String)],
    new: &[(String, String)],
    now: &str,
) -> rusqlite::Result<()> {
    let (old, new) = (json_object(old), json_object(new));
    let updated = tx
        .prepare_cached(
            "UPDATE changes SET kind = CASE kind WHEN 'modified' THEN 'metadata' ELSE kind END,
                 old_metadata = ?3, new_metadata = ?4
             WHERE scan_id = ?1 AND object_id = ?2",
        )?
        .execute(params![ctx.scan_id, id, old, new])?;
    if updated == 0 {
        tx.prepare_cached(
            "INSERT INTO changes (scan_id, object_id, kind, old_etag, old_size, old_modified,
                 new_etag, new_size, new_modified, old_metadata, new_metadata, at)
             SELECT ?1, object_id, 'metadata', list_etag, list_size, list_modified,
                 list_etag, list_size, list_modified, ?3, ?4, ?5
             FROM objects WHERE object_id = ?2",
        )?
        .execute(params![ctx.scan_id, id, old, new, now])?;
    }
    Ok(())
}

/// Metadata as a JSON object with names in sorted order.
pub fn json_object(pairs: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}
