//! The scan pipeline, wired end to end: lock → open → plan → (feeder, listers) → HEAD pool →
//! writer → finish.
//!
//! Receives: the scan's configuration, an S3 client, the database path and a cancellation
//! token (tests pass their own). Sends on: a `ScanReport`. Invariants: every stage talks over
//! a bounded channel and ends by dropping its senders; the writer is the only writer; a
//! fatal error in any stage cancels the others, lets the writer commit what it has, and
//! leaves the scan resumable.

mod feed;
pub mod follow;
mod lister;
mod ranges;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::keys::KeyOrder;
use crate::model::stats::{Snapshot, Stats};
use crate::model::{HeadJob, Mode, ScanState, TagsMode, Target, WriterMsg};
use crate::s3::client::S3;
use crate::s3::head::HeadPool;
use crate::s3::list::{FirstPage, Lister, Order, StoredAcross};
use crate::s3::rate::RateLimit;
use crate::s3::retry::Policy;
use crate::s3::wire::HeadTarget;
use crate::scan::ranges::Listing;
use crate::store::scans::{self, ScanPlan};
use crate::store::writer::{self, WriterCtx};
use crate::store::{db, lock};

/// When the range scheduler cuts a range for the free listing streams (each cut costs some
/// one-key LIST probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Splits {
    /// Only while listing is what the scan waits for: the HEAD queue is at most half full
    /// (a rescan, or HEADs faster than one stream lists). A full scan bound by its HEADs
    /// lists with one stream and sends no probes.
    #[default]
    WhenListingBound,
    /// Whenever a stream is free.
    Always,
}

/// Capacity of the writer's inbox, in messages.
pub const WRITER_QUEUE: usize = 1024;

/// A rescan starts with one key range per this many pages of stored keys (at most
/// `--list-parallelism`; a target of fewer than twice as many is listed whole): each range
/// past the first costs at most one partial page, so the rescan's LIST requests stay within
/// 1.1× the bucket's pages.
pub const PAGES_PER_EXTRA_RANGE: u64 = 10;

#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub target: Target,
    /// HEAD requests in flight at most.
    pub concurrency: usize,
    /// Keys per LIST request (1..=1000).
    pub page_size: i32,
    pub policy: Policy,
    pub restart: bool,
    pub full: bool,
    /// How long in-flight HEADs may finish after Ctrl-C.
    pub grace: Duration,
    /// Requests per second at most (`--max-rps`), LIST and HEAD together.
    pub max_rps: Option<u32>,
    /// Key ranges listed at once (`--list-parallelism`); 1 is a single listing stream.
    pub list_parallelism: usize,
    /// When a range is cut for the free listing streams (`--split-ranges`).
    pub splits: Splits,
    /// The order the target's own bounds were cut in (a `--range-json` line's `order`; lines
    /// of older releases were cut in byte order).
    pub bounds_order: Option<KeyOrder>,
    /// Which objects to read the tags of (`--tags`); `None`: none.
    pub tags: Option<TagsMode>,
    /// `--trust-tag-count`: a HEAD without `x-amz-tagging-count` means no tags.
    pub trust_tag_count: bool,
}

/// How a scan run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Complete,
    /// Complete, but some objects could not be read (exit code 3).
    CompleteWithErrors,
    /// Stopped before the end; the same command resumes it (exit code 130).
    Interrupted,
}

#[derive(Debug, Clone)]
pub struct ScanReport {
    pub scan_id: i64,
    pub mode: Mode,
    pub resumed: bool,
    pub outcome: Outcome,
    /// What this run did (not earlier runs of a resumed scan).
    pub stats: Snapshot,
    /// Objects of the keyspace in error, and still owed a HEAD, at the end.
    pub errors: i64,
    pub due: i64,
    pub elapsed: Duration,
}

/// Runs (or resumes) one scan to its end, to cancellation, or to a fatal error.
pub async fn run(
    cfg: &ScanConfig,
    s3: S3,
    db_path: &Path,
    cancel: CancellationToken,
    stats: Arc<Stats>,
) -> Result<ScanReport, Error> {
    let started = Instant::now();
    // Before anything is written: a bucket s3meta cannot address is bad input, not a scan.
    let heads = s3.head_target(&cfg.target.bucket).await?;
    let mut first = FirstPage::default();
    if !db_path.exists() {
        // A scan that would create its database sends its first LIST before: a missing
        // bucket, refused credentials or a dead endpoint then leave no new file behind
        // (nothing is ever unlinked: another process may hold a file it opened, lock.rs).
        // The listing takes that page instead of asking for it again.
        first = prefetch(cfg, &s3, &cancel, &stats).await?;
    }
    let (_lock, conn, plan) = begin(cfg, db_path).await?;
    if plan.resumed && (plan.tags, plan.trust_tag_count) != (cfg.tags, cfg.trust_tag_count) {
        tracing::warn!(
            "resuming scan {}, which was started {}: it goes on so (--restart starts anew with the flags given)",
            plan.scan_id,
            match (plan.tags, plan.trust_tag_count) {
                (Some(mode), true) => format!("with --tags={mode} --trust-tag-count"),
                (Some(mode), false) => format!("with --tags={mode}"),
                (None, _) => "without --tags".to_string(),
            }
        );
    }
    match plan.abandoned {
        Some(old) if cfg.restart => {
            tracing::info!("abandoned unfinished scan {old} (--restart); its committed rows stay")
        }
        Some(old) => tracing::warn!(
            "--full: abandoned the unfinished rescan {old} (its committed rows stay) to start a full scan, which HEADs every object"
        ),
        None => {}
    }
    if plan.resumed {
        tracing::info!("resuming scan {}", plan.scan_id);
    }
    let _ = stats.scan.set((plan.scan_id, plan.mode));
    let conn = tokio_rusqlite::Connection::from(conn);
    let work = cancel.child_token();
    let order = Arc::new(order_of(cfg, &plan, &conn, db_path));
    let fatal = run_pipeline(
        cfg, s3.client, heads, db_path, &plan, &conn, &work, &stats, &order, first,
    )
    .await;
    let keys = cfg.target.keys(order.current());
    let message = fatal.as_ref().err().map(|e| e.to_string());
    let (plan2, path) = (plan.clone(), db_path.to_path_buf());
    // A new scan that failed before anything was listed (bucket missing, credentials refused)
    // was never under way: it leaves no scan row for `status` to show as interrupted.
    let never_started = fatal.is_err() && !plan.resumed && stats.snapshot().listed == 0;
    let finished = conn
        .call(move |c| {
            if never_started
                && scans::discard_unstarted(c, &plan2).map_err(|e| Error::db(&path, e))?
            {
                let state = ScanState::Interrupted;
                return Ok(scans::Finished {
                    state,
                    due: 0,
                    errors: 0,
                });
            }
            scans::finish(c, &plan2, &keys, message.as_deref()).map_err(|e| Error::db(&path, e))
        })
        .await
        .map_err(|e| Error::from_async_db(db_path, e));
    // Closed on every path, and awaited: dropping the handle would close the connection on
    // its own thread later, possibly after the lock's descriptor (lock.rs). The checkpoint
    // folds the WAL into the database file first (db.rs); a failure here loses nothing.
    let _ = conn
        .call(|c| {
            db::checkpoint_for_close(c);
            Ok::<_, Error>(())
        })
        .await;
    if let Err(e) = conn.close().await {
        tracing::warn!("closing {}: {e}", db_path.display());
    }
    // The pipeline's failure is the root cause; recording the scan's end may then fail too
    // (the same full disk or locked database): that is logged (-v), never shown in its place;
    // the scan stays unfinished, and the next run resumes it.
    let finished = match (fatal, finished) {
        (Err(cause), Err(also)) => {
            tracing::info!(
                "recording the end of scan {} failed too: {also}",
                plan.scan_id
            );
            return Err(cause);
        }
        (Err(cause), Ok(finished)) => {
            let _ = stats.head_due.set(finished.due);
            return Err(cause);
        }
        (Ok(()), finished) => finished?,
    };
    let _ = stats.head_due.set(finished.due);
    let outcome = if finished.state != ScanState::Complete {
        Outcome::Interrupted
    } else if finished.errors > 0 {
        Outcome::CompleteWithErrors
    } else {
        Outcome::Complete
    };
    Ok(ScanReport {
        scan_id: plan.scan_id,
        mode: plan.mode,
        resumed: plan.resumed,
        outcome,
        stats: stats.snapshot(),
        errors: finished.errors,
        due: finished.due,
        elapsed: started.elapsed(),
    })
}

/// The first page of the target's listing, fetched into `first` (`Lister::prefetch`).
async fn prefetch(
    cfg: &ScanConfig,
    s3: &S3,
    cancel: &CancellationToken,
    stats: &Arc<Stats>,
) -> Result<FirstPage, Error> {
    let lister = target_lister(
        cfg,
        s3.client.clone(),
        stats,
        cancel,
        None,
        Arc::new(Order::new(None)),
    );
    lister.prefetch().await?;
    Ok(lister.first.hand_over())
}

/// The lister of the scan's target (its pages, probes and order).
fn target_lister(
    cfg: &ScanConfig,
    client: aws_sdk_s3::Client,
    stats: &Arc<Stats>,
    cancel: &CancellationToken,
    rate: Option<Arc<RateLimit>>,
    order: Arc<Order>,
) -> Lister {
    Lister {
        client,
        store: cfg.target.store.clone(),
        bucket: cfg.target.bucket.clone(),
        prefix: cfg.target.prefix.clone(),
        page_size: cfg.page_size,
        policy: cfg.policy.clone(),
        stats: stats.clone(),
        cancel: cancel.clone(),
        rate,
        order,
        witnesses: Default::default(),
        versions: cfg.target.versions,
        first: Default::default(),
    }
}

/// Takes the database's lock, opens (and migrates) it and begins or resumes the scan: on a
/// blocking thread, as the lock waits and the migrations and the IMMEDIATE transaction may
/// wait for SQLite's busy timeout. The lock is taken before the first connection and
/// released after the last is closed (lock.rs).
async fn begin(
    cfg: &ScanConfig,
    db_path: &Path,
) -> Result<(lock::DbLock, rusqlite::Connection, ScanPlan), Error> {
    let (target, path) = (cfg.target.clone(), db_path.to_path_buf());
    let (restart, full, cut_order) = (cfg.restart, cfg.full, cfg.bounds_order);
    let tags = (cfg.tags, cfg.trust_tag_count);
    tokio::task::spawn_blocking(move || {
        let lock = lock::acquire(&path)?;
        let mut conn = db::open_rw(&path)?;
        let dbe = |e| Error::db(&path, e);
        let plan = scans::begin(&mut conn, &target, restart, full, tags).map_err(dbe)?;
        if let (true, Some(order)) = (target.is_bounded(), cut_order) {
            scans::record_cut_order(&conn, plan.scan_id, order).map_err(dbe)?;
        }
        Ok((lock, conn, plan))
    })
    .await
    .map_err(|e| Error::Internal(format!("opening the database: {e}")))?
}

/// What the scan knows of the store's order at its start (see `list::Order`): the bucket's
/// recorded order, the index's stored keys to check pages' windows against, a stored key to
/// probe with, and the cuts to check against it.
fn order_of(
    cfg: &ScanConfig,
    plan: &ScanPlan,
    conn: &tokio_rusqlite::Connection,
    db_path: &Path,
) -> Order {
    let facts = &plan.order;
    let target = &cfg.target;
    let own = [&target.start_after, &target.end_key];
    let mut cuts: Vec<(KeyOrder, String)> = own
        .iter()
        .filter_map(|b| b.as_ref())
        .map(|b| (cfg.bounds_order.unwrap_or(KeyOrder::Byte), b.clone()))
        .collect();
    let cut_in = facts.cut_in.unwrap_or(KeyOrder::Byte);
    for r in &plan.ranges {
        for b in [&r.start_after, &r.end_key].into_iter().flatten() {
            if !own.contains(&&Some(b.clone())) {
                cuts.push((cut_in, b.clone()));
            }
        }
    }
    // A plan line says the order its plan established (and the listing then confirms it).
    let known = facts
        .known
        .or(cfg.bounds_order.filter(|_| target.is_bounded()));
    let stored = facts
        .stored
        .then(|| stored_across(conn, db_path, plan, &target.prefix));
    Order::for_scan(known, stored, facts.anchor.clone(), cuts)
}

/// The index's answer to whether a page's window depends on the order (`scans::stored_across`),
/// on the scan's connection.
fn stored_across(
    conn: &tokio_rusqlite::Connection,
    db_path: &Path,
    plan: &ScanPlan,
    prefix: &str,
) -> StoredAcross {
    let (conn, path) = (conn.clone(), db_path.to_path_buf());
    let (versions, bucket_id, prefix) = (plan.versions, plan.bucket_id, prefix.to_string());
    StoredAcross(Arc::new(move |bounds| {
        let (conn, path, prefix) = (conn.clone(), path.clone(), prefix.clone());
        Box::pin(async move {
            let p = path.clone();
            conn.call(move |c| {
                scans::stored_across(c, versions, bucket_id, &prefix, &bounds)
                    .map_err(|e| Error::db(&p, e))
            })
            .await
            .map_err(|e| Error::from_async_db(&path, e))
        })
    }))
}

/// Starts every stage and waits for all of them; returns the first fatal error.
#[allow(clippy::too_many_arguments)]
async fn run_pipeline(
    cfg: &ScanConfig,
    client: aws_sdk_s3::Client,
    heads: HeadTarget,
    db_path: &Path,
    plan: &ScanPlan,
    conn: &tokio_rusqlite::Connection,
    work: &CancellationToken,
    stats: &Arc<Stats>,
    order: &Arc<Order>,
    first: FirstPage,
) -> Result<(), Error> {
    let ctx = Arc::new(WriterCtx {
        scan_id: plan.scan_id,
        bucket_id: plan.bucket_id,
        mode: plan.mode,
        record_created: plan.record_created && !plan.versions,
        tags: plan.tags,
        versions: plan.versions,
        follow: false,
        path: db_path.to_path_buf(),
        recorded_order: std::sync::Mutex::new(plan.order.known),
    });
    let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
    let writer = tokio::spawn({
        let (conn, stats, work) = (conn.clone(), stats.clone(), work.clone());
        async move {
            let result = writer::run(conn, ctx, writer_rx, stats).await;
            if result.is_err() {
                // Nothing more can be committed: stop listing and HEADing at once.
                work.cancel();
            }
            result
        }
    });
    let (jobs_tx, jobs_rx) = mpsc::channel(cfg.concurrency.max(cfg.page_size as usize));
    let rate = cfg.max_rps.map(|rps| Arc::new(RateLimit::new(rps)));
    let pool = Arc::new(HeadPool {
        target: heads,
        concurrency: cfg.concurrency,
        policy: cfg.policy.clone(),
        stats: stats.clone(),
        cancel: work.clone(),
        rate: rate.clone(),
        grace: cfg.grace,
        read_tags: plan.tags.is_some(),
        tags_refused: Default::default(),
        checksum_refused: Default::default(),
        trust_tag_count: plan.trust_tag_count,
        latency: None,
    });
    let heads = tokio::spawn(pool.run(jobs_rx, writer_tx.clone()));

    let lister = Arc::new(Lister {
        first,
        ..target_lister(cfg, client, stats, work, rate, order.clone())
    });
    let produced = produce(cfg, plan, conn, db_path, lister, writer_tx, jobs_tx, work).await;
    if produced.is_err() {
        work.cancel();
    } else {
        // What is left is HEADs only: count them once, on the writer's connection (a second
        // connection's close would drop the writer's locks, lock.rs), for the progress line.
        let headed_then = stats.headed.load(Relaxed);
        let (plan, keys) = (plan.clone(), cfg.target.keys(order.current()));
        let owed = conn
            .call(move |c| Ok::<_, rusqlite::Error>(scans::due(c, &plan, &keys)))
            .await;
        if let Ok(Ok(n)) = owed {
            let _ = stats.after_listing.set((n.max(0) as u64, headed_then));
        }
    }
    let headed = heads
        .await
        .map_err(|e| Error::Internal(format!("HEAD pool: {e}")));
    let written = writer
        .await
        .map_err(|e| Error::Internal(format!("writer: {e}")))
        .and_then(|r| r);
    match produced {
        // A lister that stopped because the writer did: the writer's error says why.
        Ok(()) | Err(Error::WriterGone) => written.and(produced).and(headed),
        // Any other failure is the root cause, even when the writer then failed too
        // (committing what it had into the same full disk or locked database).
        Err(cause) => {
            if let Err(also) = written {
                tracing::info!("the writer failed too: {also}");
            }
            Err(cause)
        }
    }
}

/// Where a new rescan of a target starts cut: at quantiles of the keys it held at the last
/// scan, one range per whole `PAGES_PER_EXTRA_RANGE` pages of them, at most
/// `--list-parallelism` (issue 15: no probe, at most one partial page per extra range). Only
/// in the store's order, so the cuts are compared as the store lists: a scan of 20 pages or
/// more has recorded it (`Order::resolve_after_listing`); otherwise the rescan learns it
/// first (two probes), and only if it is to be cut.
async fn planned_cuts(
    cfg: &ScanConfig,
    plan: &ScanPlan,
    conn: &tokio_rusqlite::Connection,
    db_path: &Path,
    lister: &Lister,
) -> Result<Option<(KeyOrder, Vec<scans::StoredCut>)>, Error> {
    // A versions rescan starts whole (its stored rows are versions, not keys), and the
    // splitter cuts it as a full scan's.
    let fresh =
        plan.mode == Mode::Rescan && !plan.resumed && plan.ranges.len() == 1 && !plan.versions;
    if !fresh || cfg.target.is_bounded() {
        return Ok(None);
    }
    let range_plan = scans::RangePlan {
        max_ranges: cfg.list_parallelism,
        keys_per_range: cfg.page_size.max(1) as u64 * PAGES_PER_EXTRA_RANGE,
    };
    let quantiles = |order: KeyOrder| {
        let (bucket_id, prefix, path) = (
            plan.bucket_id,
            cfg.target.prefix.clone(),
            db_path.to_path_buf(),
        );
        async move {
            conn.call(move |c| {
                scans::stored_quantiles(c, bucket_id, &prefix, order, range_plan)
                    .map_err(|e| Error::db(&path, e))
            })
            .await
            .map_err(|e| Error::from_async_db(db_path, e))
        }
    };
    if let Some(order) = lister.order.known() {
        let cuts = quantiles(order).await?;
        return Ok((!cuts.is_empty()).then_some((order, cuts)));
    }
    // Cut only in the store's order: learn it first, if the target is large enough to be
    // cut at all (the count does not depend on the order).
    let byte = quantiles(KeyOrder::Byte).await?;
    if byte.is_empty() {
        return Ok(None);
    }
    lister.order.resolve_anchor(lister).await?;
    match lister.order.known() {
        Some(KeyOrder::Byte) => Ok(Some((KeyOrder::Byte, byte))),
        Some(order) => Ok(Some((order, quantiles(order).await?))),
        None => Ok(None),
    }
}

/// A versions scan's check of the store: every current object ListObjectsV2 lists has a
/// version in the index (issue 16 §3: SeaweedFS 4.48 loses keys, and with them all their
/// versions, when it pages ListObjectVersions — through any client). One more pass of
/// ListObjectsV2 pages (a thousand keys each, a fraction of the versions listing's).
async fn versions_cover_current(
    cfg: &ScanConfig,
    plan: &ScanPlan,
    conn: &tokio_rusqlite::Connection,
    db_path: &Path,
    lister: &Lister,
) -> Result<(), Error> {
    // Membership only, in whatever order the pages come (SeaweedFS 4.48 lists a versioned
    // bucket's objects in neither order), from the first page to the last, through the
    // target's keys.
    let keys = cfg.target.keys(lister.order.current());
    let (mut missing, mut first) = (0, None);
    let mut cursor = Some(crate::s3::list::Cursor::default());
    while let Some(at) = cursor.take() {
        let page = lister.fetch_current(at).await?;
        if page.truncated {
            match page.next_token {
                Some(token) => cursor = Some(crate::s3::list::Cursor::token(token)),
                None => {
                    return Err(Error::BadListing(
                        "a truncated page without a continuation token".into(),
                    ));
                }
            }
        }
        let keys: Vec<(String, Option<String>)> = page
            .entries
            .into_iter()
            .filter(|o| keys.contains(&o.key))
            .map(|o| (o.key, o.last_modified))
            .collect();
        let (scan_id, bucket_id, path) = (plan.scan_id, plan.bucket_id, db_path.to_path_buf());
        let lost = conn
            .call(move |c| {
                scans::unrecorded_current(c, scan_id, bucket_id, &keys)
                    .map_err(|e| Error::db(&path, e))
            })
            .await
            .map_err(|e| Error::from_async_db(db_path, e))?;
        missing += lost.len();
        if first.is_none() {
            first = lost.into_iter().next();
        }
    }
    match first {
        None => Ok(()),
        Some(first) => Err(Error::VersionsIncomplete {
            bucket: cfg.target.bucket.clone(),
            store: cfg.target.store.clone(),
            missing,
            first,
        }),
    }
}

/// Feeds the HEADs a resumed scan still owes, then lists every unfinished range.
#[allow(clippy::too_many_arguments)]
async fn produce(
    cfg: &ScanConfig,
    plan: &ScanPlan,
    conn: &tokio_rusqlite::Connection,
    db_path: &Path,
    lister: Arc<Lister>,
    writer_tx: mpsc::Sender<WriterMsg>,
    jobs_tx: mpsc::Sender<HeadJob>,
    work: &CancellationToken,
) -> Result<(), Error> {
    // The order first where ranges have bounds: the owed HEADs are found by key ranges, and
    // the cuts are checked. An unbounded target learns it only if a page needs it (`settle`)
    // or its rescan is cut (`planned_cuts`).
    lister.order.check_cuts(&lister)?;
    if lister.order.bounded {
        lister.order.resolve_anchor(&lister).await?;
    }
    // A new rescan starts cut where the stored keys say; otherwise parallel listing starts
    // from the scan's ranges as they are, and `Listing` splits large ones within its budget.
    let ranges = match planned_cuts(cfg, plan, conn, db_path, &lister).await? {
        Some(cuts) => ranges::start_cut(plan, cuts, &writer_tx).await?,
        None => plan.ranges.clone(),
    };
    let owed = feed::Owed {
        conn: conn.clone(),
        db_path: db_path.to_path_buf(),
        bucket_id: plan.bucket_id,
        versions: plan.versions,
        scan_id: plan.scan_id,
        keys: cfg.target.keys(lister.order.current()),
        jobs: jobs_tx.clone(),
        cancel: work.clone(),
    };
    let listing = Listing {
        lister,
        parallelism: cfg.list_parallelism,
        splits: cfg.splits,
        gradual: plan.mode == Mode::Full,
        writer: writer_tx,
        heads: jobs_tx,
        cancel: work.clone(),
    };
    let (lister, writer) = (listing.lister.clone(), listing.writer.clone());
    // The HEADs a resumed scan owes and the next pages go on together (issue 14): listing
    // never waits for HEADs, the owed ones included. Both send into the one bounded queue.
    tokio::try_join!(owed.feed(&ranges), listing.run(ranges.clone()))?;
    if plan.versions && !work.is_cancelled() {
        versions_cover_current(cfg, plan, conn, db_path, &lister).await?;
    }
    // A large target whose listing did not show the order: learn it now, so its next rescan
    // does not have to (issue 15: LIST requests of a rescan within 1.1× the pages). Optional:
    // a failure here costs the next rescan its probes, never this scan.
    let stats = &lister.stats;
    let pages = stats.list_requests.load(Relaxed) - stats.list_probes.load(Relaxed);
    if work.is_cancelled() {
        return Ok(());
    }
    match lister.order.resolve_after_listing(&lister, pages).await {
        Ok(Some(order)) => writer
            .send(WriterMsg::Order(order))
            .await
            .map_err(|_| Error::WriterGone)?,
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "the store's key order is still not known (the next rescan probes for it): {e}"
        ),
    }
    Ok(())
}
