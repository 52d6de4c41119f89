//! Starting, resuming and finishing a scan: the rows of `scans` and `scan_ranges`.
//!
//! Receives: the scan's target (store, bucket, prefix, optional key range) and the user's
//! `--restart`/`--full`. Sends on: a `ScanPlan` — the scan row to continue, its mode and the
//! ranges with their checkpoints — and, at the end, the final state. Invariants: at most one
//! unfinished scan per target (an unfinished one is always resumed unless `--restart`
//! abandons it, or `--full` an unfinished rescan); a scan is `complete` only when every range is listed and no object of its
//! keyspace is still owed a HEAD. A new rescan can start cut at quantiles of the keys the
//! database already holds (`stored_quantiles`): such cuts cost no request.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::keys::{KeyOrder, KeyRange};
use crate::model::{
    HeadJob, Mode, ObjectState, RangeState, RangeStatus, ScanState, TagsMode, Target, Work, timefmt,
};
use crate::store::{db, for_versions};

/// How many ranges a new rescan starts with: one per `keys_per_range` keys the database holds
/// for the target, at most `max_ranges`, and none under two of them (the target is then listed
/// whole). Each range past the first can cost one partial page
/// more, so one per ten pages' worth of keys keeps a rescan's LIST requests within 1.1× the
/// bucket's pages (issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangePlan {
    pub max_ranges: usize,
    pub keys_per_range: u64,
}

/// The scan to run.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    pub scan_id: i64,
    pub bucket_id: i64,
    pub mode: Mode,
    pub record_created: bool,
    /// This continues an interrupted scan.
    pub resumed: bool,
    /// The unfinished scan that `--restart` abandoned.
    pub abandoned: Option<i64>,
    pub ranges: Vec<RangeState>,
    /// What the database knows of the store's listing order (see `OrderFacts`).
    pub order: OrderFacts,
    /// Which objects the scan reads the tags of, as recorded when it started (a resume keeps it).
    pub tags: Option<TagsMode>,
    /// `--trust-tag-count`, as recorded when it started.
    pub trust_tag_count: bool,
    /// A versions scan (`--all-versions`, `Target::versions`).
    pub versions: bool,
}

/// A scan's `--tags` and `--trust-tag-count`, as recorded with it.
type TagsChoice = (Option<TagsMode>, bool);

/// What a scan starts knowing about the store's listing order (schema/0002_key_order.sql).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFacts {
    /// The bucket's recorded order, once a listing or a probe has shown it.
    pub known: Option<KeyOrder>,
    /// The order this scan's ranges were cut in (`None`: uncut, or cut assuming byte order
    /// by an older release).
    pub cut_in: Option<KeyOrder>,
    /// The target held objects before this run: a page's deletion window then depends on the
    /// order where a stored key lies across one of its bounds (`stored_across`).
    pub stored: bool,
    /// A stored key of the target with `/` after the prefix, to probe the order with when
    /// it is not known.
    pub anchor: Option<String>,
}

/// Resumes the target's unfinished scan, or starts a new one, in one transaction. `full` with
/// an unfinished *rescan* abandons it and starts a full scan, as `restart` does: the rescan
/// has already skipped the HEADs of the objects it found unchanged, so resuming it could not
/// HEAD every object (issue 13).
pub fn begin(
    conn: &mut Connection,
    target: &Target,
    restart: bool,
    full: bool,
    (tags, trust_tag_count): TagsChoice,
) -> rusqlite::Result<ScanPlan> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let bucket_id = crate::store::db::ensure_bucket(&tx, &target.store, &target.bucket)?;
    let now = timefmt::now();
    let unfinished: Option<(i64, Mode, bool, TagsChoice)> = tx
        .query_row(
            &format!(
                "SELECT scan_id, mode, record_created, tags, trust_tag_count FROM scans
                 WHERE bucket_id = ?1 AND prefix = ?2 AND start_after IS ?3 AND end_key IS ?4
                   AND versions = ?5 AND state IN ({}, {}) AND follow = 0
                 ORDER BY scan_id DESC LIMIT 1",
                ScanState::Running.sql(),
                ScanState::Interrupted.sql()
            ),
            params![
                bucket_id,
                target.prefix,
                target.start_after,
                target.end_key,
                target.versions
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, (r.get(3)?, r.get(4)?))),
        )
        .optional()?;
    let mut abandoned = None;
    let plan = match unfinished {
        Some((scan_id, mode, record_created, recorded_tags))
            if !(restart || full && mode == Mode::Rescan) =>
        {
            tx.execute(
                "UPDATE scans SET state = ?3, updated_at = ?2 WHERE scan_id = ?1",
                params![scan_id, now, ScanState::Running],
            )?;
            let ranges = load_ranges(&tx, scan_id)?;
            ScanPlan {
                scan_id,
                bucket_id,
                mode,
                record_created,
                resumed: true,
                abandoned,
                ranges,
                order: OrderFacts::default(),
                tags: recorded_tags.0,
                trust_tag_count: recorded_tags.1,
                versions: target.versions,
            }
        }
        other => {
            if let Some((scan_id, ..)) = other {
                tx.execute(
                    "UPDATE scans SET state = ?3, finished_at = ?2, updated_at = ?2 WHERE scan_id = ?1",
                    params![scan_id, now, ScanState::Abandoned],
                )?;
                // The tag reads it owed are owed by nobody now (the new scan owes its own).
                tx.execute(
                    &tables(
                        target.versions,
                        "UPDATE objects INDEXED BY objects_tags_due SET tags_due = 0
                         WHERE bucket_id = ?1 AND tags_due = ?2 AND tags_due != 0",
                    ),
                    params![bucket_id, scan_id],
                )?;
                abandoned = Some(scan_id);
            }
            ScanPlan {
                abandoned,
                ..start(&tx, bucket_id, target, full, (tags, trust_tag_count), &now)?
            }
        }
    };
    let plan = ScanPlan {
        order: order_facts(&tx, bucket_id, plan.scan_id, target)?,
        ..plan
    };
    tx.commit()?;
    Ok(plan)
}

/// Records the order a bounded target's bounds were cut in (a plan line's), unless the scan
/// has one already: `merge` reads the shard's keyspace in it.
pub fn record_cut_order(conn: &Connection, scan_id: i64, order: KeyOrder) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE scans SET key_order = ?2 WHERE scan_id = ?1 AND key_order IS NULL",
        params![scan_id, order],
    )?;
    Ok(())
}

/// The order facts of a scan about to run (see `OrderFacts`).
fn order_facts(
    tx: &Connection,
    bucket_id: i64,
    scan_id: i64,
    target: &Target,
) -> rusqlite::Result<OrderFacts> {
    let known = db::key_order(tx, bucket_id)?;
    let cut_in: Option<KeyOrder> = tx.query_row(
        "SELECT key_order FROM scans WHERE scan_id = ?1",
        [scan_id],
        |r| r.get(0),
    )?;
    let prefix = KeyRange::prefix(KeyOrder::Byte, &target.prefix);
    let (frag, mut args) = prefix.sql("key");
    args.push((":b", &bucket_id));
    let stored: bool = tx.query_row(
        &tables(
            target.versions,
            &format!("SELECT EXISTS (SELECT 1 FROM objects WHERE bucket_id = :b{frag})"),
        ),
        args.as_slice(),
        |r| r.get(0),
    )?;
    // Only needed while the order is unknown; it walks the prefix's keys until one has a
    // `/` after the prefix (at once in a hierarchical keyspace, all of them in a flat one).
    let anchor = if known.is_none() && stored {
        let start = target.prefix.len() as i64 + 1;
        args.push((":start", &start));
        tx.query_row(
            &tables(
                target.versions,
                &format!(
                    "SELECT key FROM objects WHERE bucket_id = :b{frag}
                       AND instr(substr(key, :start), '/') > 0 LIMIT 1"
                ),
            ),
            args.as_slice(),
            |r| r.get(0),
        )
        .optional()?
    } else {
        None
    };
    Ok(OrderFacts {
        known,
        cut_in,
        stored,
        anchor,
    })
}

/// Inserts a new scan of the target with one range over its whole keyspace: a rescan when a
/// completed scan covers the target (unless `full`), else a full scan.
fn start(
    tx: &Connection,
    bucket_id: i64,
    target: &Target,
    full: bool,
    (tags, trust_tag_count): TagsChoice,
    now: &str,
) -> rusqlite::Result<ScanPlan> {
    let covered = covered(tx, bucket_id, target)?;
    let mode = if covered && !full {
        Mode::Rescan
    } else {
        Mode::Full
    };
    tx.execute(
        "INSERT INTO scans (bucket_id, prefix, start_after, end_key, mode, state, record_created, started_at, updated_at, tags, trust_tag_count, versions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?8, ?6, ?7, ?7, ?9, ?10, ?11)",
        params![bucket_id, target.prefix, target.start_after, target.end_key, mode, covered, now, ScanState::Running, tags, trust_tag_count, target.versions],
    )?;
    let scan_id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO scan_ranges (scan_id, range_no, start_after, end_key, state) VALUES (?1, 0, ?2, ?3, ?4)",
        params![scan_id, target.start_after, target.end_key, RangeStatus::Listing],
    )?;
    Ok(ScanPlan {
        scan_id,
        bucket_id,
        mode,
        record_created: covered,
        resumed: false,
        abandoned: None,
        ranges: load_ranges(tx, scan_id)?,
        order: OrderFacts::default(),
        tags,
        trust_tag_count,
        versions: target.versions,
    })
}

/// A cut of a target at a stored key, and the stored key after it (the new range's witness:
/// a key the range should list, see `Lister::check_empty`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCut {
    pub at: String,
    pub next: String,
}

/// Bound positions a stored key is compared at before the answer is "maybe" (a probe for
/// the order, two LISTs, costs less than thousands of index seeks).
const MAX_ACROSS_POSITIONS: usize = 64;

/// Whether a stored (not gone) key of the target lies on one side of one of `bounds` in S3's
/// byte order and on the other in path-component order. The two orders differ on a pair of
/// keys exactly where, after their common head, one has `/` and the other a byte below it;
/// so for each position of a bound holding `/`, the keys that share its head and continue
/// below `/`, and for each position holding a byte below `/`, the keys that share its head
/// and continue with `/` — one index seek each (bounded: `MAX_ACROSS_POSITIONS`).
pub fn stored_across(
    conn: &Connection,
    versions: bool,
    bucket_id: i64,
    prefix: &str,
    bounds: &[String],
) -> rusqlite::Result<bool> {
    // Keys sharing `head` that continue below `/`: (head, head + "/"); keys under `head/`:
    // [head + "/", head + "0") ('0' follows '/').
    let exists = |cmp: &str| {
        tables(
            versions,
            &format!(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE bucket_id = ?1 AND key {cmp} ?2
                   AND key < ?3 AND state != {})",
                ObjectState::Gone.sql()
            ),
        )
    };
    let (below, under) = (exists(">"), exists(">="));
    let mut seeks = 0;
    for bound in bounds {
        for (at, &b) in bound.as_bytes().iter().enumerate().skip(prefix.len()) {
            // `/` and the bytes below it are ASCII: `head` ends on a character boundary.
            let head = &bound[..at];
            let (sql, low, high) = match b {
                b'/' => (&below, head.to_string(), format!("{head}/")),
                b if b < b'/' => (&under, format!("{head}/"), format!("{head}0")),
                _ => continue,
            };
            seeks += 1;
            if seeks > MAX_ACROSS_POSITIONS {
                return Ok(true);
            }
            let mut stmt = conn.prepare_cached(sql)?;
            if stmt.query_row(params![bucket_id, low, high], |r| r.get::<_, bool>(0))? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Increasing stored keys of the target's prefix that cut it into `plan`'s number of ranges
/// of about as many stored keys each, compared in `order`: one pass over the target's index
/// entries. Deleted objects (`gone`) are not counted: the store no longer lists them.
pub fn stored_quantiles(
    conn: &Connection,
    bucket_id: i64,
    prefix: &str,
    order: KeyOrder,
    plan: RangePlan,
) -> rusqlite::Result<Vec<StoredCut>> {
    if plan.max_ranges <= 1 {
        return Ok(Vec::new());
    }
    let keys = KeyRange::prefix(order, prefix);
    let (frag, mut args) = keys.sql("key");
    args.push((":b", &bucket_id));
    let live = format!(
        "FROM objects WHERE bucket_id = :b AND state != {}{frag}",
        ObjectState::Gone.sql()
    );
    let stored: i64 = conn.query_row(&format!("SELECT count(*) {live}"), args.as_slice(), |r| {
        r.get(0)
    })?;
    // A target under two `keys_per_range` is listed whole: a second stream would save little
    // (well under a second of round trips), and cutting needs the store's order, which only
    // a scan of 20 pages or more records (`Order::resolve_after_listing`).
    let per = plan.keys_per_range.max(1);
    let ranges = match stored as u64 / per {
        0 | 1 => 1,
        n => n + 1,
    };
    let ranges = ranges.min(plan.max_ranges as u64) as i64;
    if ranges <= 1 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT key {live} ORDER BY {}",
        order.column("key")
    ))?;
    let mut rows = stmt.query(args.as_slice())?;
    let (mut cuts, mut at, mut seen) = (Vec::new(), None::<String>, 0i64);
    while let Some(row) = rows.next()? {
        seen += 1;
        let key: String = row.get(0)?;
        if let Some(at) = at.take() {
            cuts.push(StoredCut {
                at,
                next: key.clone(),
            });
            if cuts.len() as i64 == ranges - 1 {
                break;
            }
        }
        // The last key of the i-th of `ranges` equal shares.
        if seen == (cuts.len() as i64 + 1) * stored / ranges {
            at = Some(key);
        }
    }
    Ok(cuts)
}

/// Whether a completed scan covers the target: same bucket, a prefix of its prefix, and either
/// unbounded or exactly its key range. A new scan of a covered target is a rescan.
pub fn covered(conn: &Connection, bucket_id: i64, target: &Target) -> rusqlite::Result<bool> {
    conn.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM scans
                 WHERE bucket_id = ?1 AND state = {} AND versions = ?5 AND follow = 0
                   AND substr(?2, 1, length(prefix)) = prefix
                   AND ((start_after IS NULL AND end_key IS NULL)
                        OR (prefix = ?2 AND start_after IS ?3 AND end_key IS ?4)))",
            ScanState::Complete.sql()
        ),
        params![
            bucket_id,
            target.prefix,
            target.start_after,
            target.end_key,
            target.versions
        ],
        |r| r.get(0),
    )
}

/// `sql` (written for `objects` and its tables) for a scan's table set (`store::for_versions`).
fn tables(versions: bool, sql: &str) -> String {
    if versions {
        for_versions(sql)
    } else {
        sql.to_string()
    }
}

fn load_ranges(conn: &Connection, scan_id: i64) -> rusqlite::Result<Vec<RangeState>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT range_no, start_after, end_key, token, last_key, state = {}
         FROM scan_ranges WHERE scan_id = ?1 ORDER BY range_no",
        RangeStatus::Done.sql()
    ))?;
    let rows = stmt.query_map([scan_id], |r| {
        Ok(RangeState {
            range_no: r.get(0)?,
            start_after: r.get(1)?,
            end_key: r.get(2)?,
            token: r.get(3)?,
            last_key: r.get(4)?,
            done: r.get(5)?,
            witness: None,
        })
    })?;
    rows.collect()
}

/// Up to `limit` objects of `keys` owed `work` (a HEAD, or a tags read), after `after` (the
/// key and id of the last one fed), in key order. The resume feeder pages through these with
/// keyset pagination (the partial indexes make it cheap). In a versions scan one key can be
/// owed many versions, so the page goes on after the (key, id) pair, not the key.
#[allow(clippy::too_many_arguments)]
pub fn due_work(
    conn: &Connection,
    versions: bool,
    bucket_id: i64,
    scan_id: i64,
    keys: &KeyRange,
    work: Work,
    after: Option<(&str, i64)>,
    limit: i64,
) -> rusqlite::Result<Vec<HeadJob>> {
    let window = match after {
        Some((k, _)) if !versions => keys.after(k),
        _ => keys.clone(),
    };
    let column = keys.order.column("key");
    let (mut frag, mut args) = window.sql("key");
    let (after_key, after_id) = match after {
        Some((k, id)) if versions => (Some(keys.order.sql_value(k)), id),
        _ => (None, 0),
    };
    if let Some(k) = &after_key {
        frag.push_str(&format!(" AND ({column}, object_id) > (:ak, :aid)"));
        args.push((":ak", k));
        args.push((":aid", &after_id));
    }
    let version = if versions { "version_id" } else { "NULL" };
    let sql = format!(
        "SELECT object_id, key, {version} FROM objects INDEXED BY {}
         WHERE bucket_id = :b AND {}{frag} ORDER BY {column}, object_id LIMIT :n",
        due_index(work, keys.order),
        due_test(work),
    );
    args.push((":b", &bucket_id));
    if work == Work::Tags {
        args.push((":scan", &scan_id));
    }
    args.push((":n", &limit));
    let mut stmt = conn.prepare_cached(&tables(versions, &sql))?;
    let rows = stmt.query_map(args.as_slice(), |r| {
        Ok(HeadJob {
            object_id: r.get(0)?,
            key: r.get(1)?,
            version_id: r.get(2)?,
            work,
        })
    })?;
    rows.collect()
}

/// The test of objects owed `work` by the scan `:scan` (a HEAD is owed to whichever scan
/// lists the object next; a tags read to the scan that marked it).
fn due_test(work: Work) -> &'static str {
    match work {
        Work::Head => "head_due = 1",
        // `!= 0` as well: what lets SQLite use the partial index (`:scan` could be 0).
        Work::Tags => "tags_due = :scan AND tags_due != 0",
    }
}

/// The partial index of the objects owed `work`, in key order `order`.
fn due_index(work: Work, order: KeyOrder) -> &'static str {
    match (work, order) {
        (Work::Head, KeyOrder::Byte) => "objects_head_due",
        (Work::Head, KeyOrder::Path) => "objects_head_due_by_path_key",
        (Work::Tags, KeyOrder::Byte) => "objects_tags_due",
        (Work::Tags, KeyOrder::Path) => "objects_tags_due_by_path_key",
    }
}

/// Of current keys ListObjectsV2 listed (with their Last-Modified), those a versions scan has
/// no version of (a live one, not a delete marker), unless written after the scan began (its
/// listing may have passed them before): what the store's ListObjectVersions skipped.
pub fn unrecorded_current(
    conn: &Connection,
    scan_id: i64,
    bucket_id: i64,
    keys: &[(String, Option<String>)],
) -> rusqlite::Result<Vec<String>> {
    let started: String = conn.query_row(
        "SELECT started_at FROM scans WHERE scan_id = ?1",
        [scan_id],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket_id = ?1 AND key = ?2
             AND NOT delete_marker AND state != {})",
        ObjectState::Gone.sql()
    ))?;
    let mut missing = Vec::new();
    for (key, modified) in keys {
        if modified.as_deref().is_some_and(|m| m >= started.as_str()) {
            continue;
        }
        if !stmt.query_row(params![bucket_id, key], |r| r.get::<_, bool>(0))? {
            missing.push(key.clone());
        }
    }
    Ok(missing)
}

/// How a run of the scan ended, as `finish` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub state: ScanState,
    /// Objects of the keyspace still owed a HEAD or a tags read.
    pub due: i64,
    /// Objects of the keyspace whose HEAD failed (state `error`).
    pub errors: i64,
}

/// The objects of the keyspace still owed a HEAD or a tags read (committed state).
pub fn due(conn: &Connection, plan: &ScanPlan, keys: &KeyRange) -> rusqlite::Result<i64> {
    let (frag, mut args) = keys.sql("o.key");
    args.push((":b", &plan.bucket_id));
    let mut due = 0;
    for work in [Work::Head, Work::Tags] {
        let mut args = args.clone();
        if work == Work::Tags {
            args.push((":scan", &plan.scan_id));
        }
        due += conn.query_row(
            &tables(
                plan.versions,
                &format!(
                    "SELECT count(*) FROM objects o INDEXED BY {} WHERE o.bucket_id = :b AND o.{}{frag}",
                    due_index(work, keys.order),
                    due_test(work),
                ),
            ),
            args.as_slice(),
            |r| r.get::<_, i64>(0),
        )?;
    }
    Ok(due)
}

/// Records the end of this run: `complete` if everything is listed and HEADed, else
/// `interrupted` (resumable), with the fatal error if there was one.
pub fn finish(
    conn: &mut Connection,
    plan: &ScanPlan,
    keys: &KeyRange,
    last_error: Option<&str>,
) -> rusqlite::Result<Finished> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let listed: bool = tx.query_row(
        &format!(
            "SELECT NOT EXISTS (SELECT 1 FROM scan_ranges WHERE scan_id = ?1 AND state != {})",
            RangeStatus::Done.sql()
        ),
        [plan.scan_id],
        |r| r.get(0),
    )?;
    let due = due(&tx, plan, keys)?;
    let (frag, mut args) = keys.sql("o.key");
    args.push((":b", &plan.bucket_id));
    // CROSS JOIN: object_errors stays the outer loop (one row per object in error, usually a
    // few; the planner chose to walk every object of the bucket instead).
    let errors: i64 = tx.query_row(
        &tables(
            plan.versions,
            &format!(
                "SELECT count(*) FROM object_errors e CROSS JOIN objects o USING (object_id)
                 WHERE o.bucket_id = :b AND o.state = {}{frag}",
                ObjectState::Error.sql()
            ),
        ),
        args.as_slice(),
        |r| r.get(0),
    )?;
    let complete = listed && due == 0 && last_error.is_none();
    let state = if complete {
        ScanState::Complete
    } else {
        ScanState::Interrupted
    };
    let now = timefmt::now();
    let finished_at = complete.then_some(&now);
    tx.execute(
        "UPDATE scans SET state = ?2, updated_at = ?3, finished_at = ?5, last_error = ?4
         WHERE scan_id = ?1",
        params![plan.scan_id, state, now, last_error, finished_at],
    )?;
    tx.commit()?;
    Ok(Finished { state, due, errors })
}

/// Removes the row of a scan that began in this run and failed before listing anything
/// (nothing was written under it), and its bucket's row when nothing else names the bucket.
/// Returns false, changing nothing, when something was written under the scan after all.
pub fn discard_unstarted(conn: &mut Connection, plan: &ScanPlan) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let listed: i64 = tx.query_row(
        "SELECT objects_listed + heads_ok + objects_gone FROM scans WHERE scan_id = ?1",
        [plan.scan_id],
        |r| r.get(0),
    )?;
    let changes: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM changes WHERE scan_id = ?1)",
        [plan.scan_id],
        |r| r.get(0),
    )?;
    if listed > 0 || changes {
        return Ok(false);
    }
    tx.execute("DELETE FROM scan_ranges WHERE scan_id = ?1", [plan.scan_id])?;
    tx.execute("DELETE FROM scans WHERE scan_id = ?1", [plan.scan_id])?;
    tx.execute(
        "DELETE FROM buckets WHERE bucket_id = ?1
           AND NOT EXISTS (SELECT 1 FROM scans WHERE bucket_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM objects WHERE bucket_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM versions WHERE bucket_id = ?1)",
        [plan.bucket_id],
    )?;
    tx.commit()?;
    Ok(true)
}

/// A `follow` session: the scans row its change rows name.
#[derive(Debug, Clone)]
pub struct FollowSession {
    pub scan_id: i64,
    pub bucket_id: i64,
    /// A completed scan covers the target: new keys are `created` changes.
    pub record_created: bool,
}

/// Starts a `follow` session of `target` (a scans row with `follow = 1`, state `running`).
pub fn begin_follow(
    conn: &mut Connection,
    target: &Target,
    tags: Option<TagsMode>,
) -> rusqlite::Result<FollowSession> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let bucket_id = crate::store::db::ensure_bucket(&tx, &target.store, &target.bucket)?;
    let record_created = covered(&tx, bucket_id, target)?;
    let now = timefmt::now();
    tx.execute(
        "INSERT INTO scans (bucket_id, prefix, mode, state, record_created, started_at, updated_at,
             tags, follow)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, 1)",
        params![
            bucket_id,
            target.prefix,
            Mode::Rescan,
            ScanState::Running,
            record_created,
            now,
            tags
        ],
    )?;
    let scan_id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(FollowSession {
        scan_id,
        bucket_id,
        record_created,
    })
}

/// Ends a `follow` session (`complete`: it stopped when asked, every applied event committed).
pub fn end_follow(
    conn: &Connection,
    scan_id: i64,
    last_error: Option<&str>,
) -> rusqlite::Result<()> {
    let now = timefmt::now();
    conn.execute(
        "UPDATE scans SET state = ?2, updated_at = ?3, finished_at = ?3, last_error = ?4
         WHERE scan_id = ?1 AND follow = 1",
        params![scan_id, ScanState::Complete, now, last_error],
    )?;
    Ok(())
}

/// What the scans of a bucket have written, as a value that changes whenever a scan commits
/// (its newest scan and last update): `follow` compares it before its HEADs and at its commit,
/// and HEADs again what a scan may have overtaken.
pub fn scans_fingerprint(conn: &Connection, bucket_id: i64) -> rusqlite::Result<(i64, String)> {
    conn.query_row(
        "SELECT coalesce(max(scan_id), 0), coalesce(max(updated_at), '') FROM scans
         WHERE bucket_id = ?1 AND follow = 0",
        [bucket_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}
