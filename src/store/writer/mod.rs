//! The single writer: the only code that writes to the database during a scan.
//!
//! Receives: listing pages (with their checkpoint) from the listers and HEAD outcomes from the
//! HEAD pool, over one bounded channel. Sends on: after each commit, the objects of each page
//! that need a HEAD, back to the page's lister. Invariants: a page's rows, its deletions and its
//! checkpoint are one transaction; a HEAD outcome, its metadata rows and its change row are one
//! transaction; messages are applied in arrival order and batched into as few transactions as
//! the channel's backlog allows (HEAD outcomes wait up to `LINGER` for company, a page never
//! waits), and a batch is never abandoned: it commits or the scan fails.

mod follow;
mod outcome;
mod page;
mod versions;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Transaction, TransactionBehavior, params};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::keys::KeyOrder;
use crate::model::stats::{Snapshot, Stats};
use crate::model::{
    ChangeKind, HeadJob, ListedObject, Mode, RangeStatus, SplitMsg, TagsMode, WriterMsg, timefmt,
};

/// How many rows one transaction takes at most (a page counts one per key).
const BATCH_ROWS: usize = 4096;
/// How long a batch of HEAD outcomes waits for more before it is committed.
const LINGER: Duration = Duration::from_millis(50);

impl WriterMsg {
    fn rows(&self) -> usize {
        match self {
            WriterMsg::Page(p) => p.entries.len().max(1),
            WriterMsg::Head(_) | WriterMsg::Split(_) | WriterMsg::Order(_) => 1,
        }
    }
}

/// What the writer knows of its scan.
#[derive(Debug)]
pub struct WriterCtx {
    pub scan_id: i64,
    pub bucket_id: i64,
    pub mode: Mode,
    /// New keys are `created` changes (a completed scan covered this keyspace before).
    pub record_created: bool,
    /// Which objects this scan reads the tags of (`--tags`); `None`: none.
    pub tags: Option<TagsMode>,
    /// A versions scan (`--all-versions`): its rows are in `versions` (`writer::versions`),
    /// and versions have no change rows.
    pub versions: bool,
    /// A `follow` session (`writer::follow`): a change row of an object is only amended by
    /// the batch that wrote it (a session spans days of events, each its own change).
    pub follow: bool,
    pub path: PathBuf,
    /// The listing order last recorded for the bucket and the scan (the writer records it
    /// with the first page that carries it).
    pub recorded_order: std::sync::Mutex<Option<KeyOrder>>,
}

impl WriterCtx {
    /// The batch time change rows must carry to be amended (`follow`); `None`: any row of
    /// the scan.
    fn batch<'a>(&self, now: &'a str) -> Option<&'a str> {
        self.follow.then_some(now)
    }
}

/// Commits what `follow` learned from one batch of events, with the session's counters
/// (`requests`: the requests sent for it; `ignored`: its events outside the target or
/// without meaning for the index; `newest`: the newest event time applied).
pub fn apply_follow(
    conn: &mut rusqlite::Connection,
    ctx: &WriterCtx,
    items: Vec<FollowItem>,
    requests: &Snapshot,
    (ignored, newest): (u64, Option<&str>),
) -> rusqlite::Result<FollowTally> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = timefmt::now();
    let order = crate::store::db::key_order(&tx, ctx.bucket_id)?;
    let mut tally = Tally::default();
    let out = follow::apply_items(&tx, ctx, items, order, &now, &mut tally)?;
    tx.prepare_cached(
        "UPDATE scans SET heads_ok = heads_ok + ?2, objects_gone = objects_gone + ?3,
             objects_failed = objects_failed + ?4, head_requests = head_requests + ?5,
             retries = retries + ?6, throttled = throttled + ?7, updated_at = ?8,
             tag_requests = tag_requests + ?9, tags_read = tags_read + ?10,
             events_applied = events_applied + ?11, events_stale = events_stale + ?12,
             events_ignored = events_ignored + ?13,
             last_event_time = max(coalesce(last_event_time, ''), coalesce(?14, ''))
         WHERE scan_id = ?1",
    )?
    .execute(params![
        ctx.scan_id,
        tally.heads_ok,
        tally.gone,
        tally.failed,
        requests.head_requests as i64,
        requests.retries as i64,
        requests.throttled as i64,
        now,
        requests.tag_requests as i64,
        tally.tags_read,
        out.applied as i64,
        out.stale as i64,
        ignored as i64,
        newest
    ])?;
    tx.commit()?;
    Ok(out)
}

/// Counts of one committed batch.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub listed: i64,
    pub headed: i64,
    pub heads_ok: i64,
    pub skipped: i64,
    pub with_metadata: i64,
    pub tags_read: i64,
    pub gone: i64,
    pub failed: i64,
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
            .and_then(|()| c.execute_batch(versions::LISTED_TABLE))
            .map_err(|e| Error::db(&path, e))
    })
    .await
    .map_err(|e| Error::from_async_db(&ctx.path, e))?;
    // The stats are this run's: every request they count belongs in the scan row.
    let mut flushed = Snapshot::default();
    while let Some(batch) = next_batch(&mut rx).await {
        let now = stats.snapshot();
        let requests = delta(&now, &flushed);
        flushed = now;
        let (replies, tally) = commit(&conn, &ctx, batch, requests).await?;
        publish(&stats, &tally);
        for (reply, jobs) in replies {
            // A lister that stopped (cancelled) no longer waits: its jobs stay `head_due`.
            let _ = reply.send(jobs);
        }
    }
    // Attempts made after the last commit (say, a LIST failing for good) count too.
    let requests = delta(&stats.snapshot(), &flushed);
    if requests != Snapshot::default() {
        commit(&conn, &ctx, Vec::new(), requests).await?;
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

/// Applies one batch in one transaction on the writer's connection.
async fn commit(
    conn: &tokio_rusqlite::Connection,
    ctx: &Arc<WriterCtx>,
    batch: Vec<WriterMsg>,
    requests: Snapshot,
) -> Result<(Replies, Tally), Error> {
    let c = ctx.clone();
    conn.call(move |conn| {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::db(&c.path, e))?;
        let out = apply_batch(&tx, &c, batch, &requests).map_err(|e| Error::db(&c.path, e))?;
        tx.commit().map_err(|e| Error::db(&c.path, e))?;
        Ok(out)
    })
    .await
    .map_err(|e| Error::from_async_db(&ctx.path, e))
}

fn delta(now: &Snapshot, before: &Snapshot) -> Snapshot {
    Snapshot {
        list_requests: now.list_requests - before.list_requests,
        head_requests: now.head_requests - before.head_requests,
        tag_requests: now.tag_requests - before.tag_requests,
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
    Stats::add(&stats.tags_read, n(t.tags_read));
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
                if let Some(order) = page.order {
                    record_order(tx, ctx, order)?;
                }
                let jobs = if ctx.versions {
                    versions::apply_page(tx, ctx, &page, &mut tally)?
                } else {
                    page::apply_page(tx, ctx, &page, &now, &mut tally)?
                };
                replies.push((page.reply, jobs));
            }
            WriterMsg::Head(outcome) => outcome::apply_head(tx, ctx, outcome, &now, &mut tally)?,
            WriterMsg::Split(split) => apply_split(tx, ctx, &split)?,
            WriterMsg::Order(order) => record_order(tx, ctx, order)?,
        }
    }
    tx.prepare_cached(
        "UPDATE scans SET objects_listed = objects_listed + ?2, heads_ok = heads_ok + ?3,
             heads_skipped = heads_skipped + ?4, objects_gone = objects_gone + ?5,
             objects_failed = objects_failed + ?6, list_requests = list_requests + ?7,
             head_requests = head_requests + ?8, retries = retries + ?9,
             throttled = throttled + ?10, updated_at = ?11, tag_requests = tag_requests + ?12,
             tags_read = tags_read + ?13
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
        now,
        requests.tag_requests as i64,
        tally.tags_read
    ])?;
    Ok((replies, tally))
}

/// Records a range split: both halves are in the database in one transaction, so the ranges
/// cover the keyspace exactly once at every commit.
fn apply_split(tx: &Transaction, ctx: &WriterCtx, split: &SplitMsg) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE scans SET key_order = ?2 WHERE scan_id = ?1 AND key_order IS NOT ?2",
    )?
    .execute(params![ctx.scan_id, split.order])?;
    tx.prepare_cached("UPDATE scan_ranges SET end_key = ?3 WHERE scan_id = ?1 AND range_no = ?2")?
        .execute(params![ctx.scan_id, split.range_no, split.at])?;
    tx.prepare_cached(
        "INSERT INTO scan_ranges (scan_id, range_no, start_after, end_key, state)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        ctx.scan_id,
        split.new_range_no,
        split.at,
        split.end,
        RangeStatus::Listing
    ])?;
    Ok(())
}

/// Records the store's listing order for the bucket and the scan (once per change): the
/// scan's ranges are read in it from now on (see `list::Order`).
fn record_order(tx: &Transaction, ctx: &WriterCtx, order: KeyOrder) -> rusqlite::Result<()> {
    let mut recorded = ctx.recorded_order.lock().unwrap_or_else(|e| e.into_inner());
    if *recorded == Some(order) {
        return Ok(());
    }
    crate::store::db::record_key_order(tx, ctx.bucket_id, order)?;
    tx.prepare_cached(
        "UPDATE scans SET key_order = ?2 WHERE scan_id = ?1 AND key_order IS NOT ?2",
    )?
    .execute(params![ctx.scan_id, order])?;
    *recorded = Some(order);
    Ok(())
}

pub use follow::{FollowItem, FollowTally, is_stale, stored_sequencer};
pub(crate) use page::stored;
pub(crate) use versions::rescan_heads as version_rescan_heads;

fn record_change(
    tx: &Transaction,
    ctx: &WriterCtx,
    object_id: i64,
    kind: ChangeKind,
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

/// Metadata as a JSON object with names in sorted order.
pub fn json_object(pairs: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}
