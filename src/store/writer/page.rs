//! Applying one listing page: the rows it lists, the stored keys it no longer lists, and the
//! range's checkpoint — all in the page's transaction.
//!
//! Receives: a `PageMsg`. Sends on: the page's objects that need a HEAD. Invariants: the
//! page's window is read in key order a bounded chunk at a time and merged with the listed
//! keys, so memory stays flat even when a window spans millions of deleted keys; the rescan
//! rule (`Stored::unchanged`) is the one `estimate` uses.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Tally, WriterCtx, record_change};
use crate::keys::{KeyOrder, KeyRange, path_key};
use crate::model::{
    ChangeKind, HeadJob, ListedObject, Mode, ObjectState, PageMsg, RangeStatus, TagsMode, Work,
};

/// Stored rows of a page's window read per query.
const WINDOW_CHUNK: i64 = 1000;

/// A stored object, as a page finds it.
pub(crate) struct Stored {
    object_id: i64,
    state: ObjectState,
    head_due: bool,
    etag: Option<String>,
    size: Option<i64>,
    modified: Option<String>,
    storage_class: Option<String>,
    /// Its last HEAD came within a second of its Last-Modified (`head::within_a_second`).
    recheck: bool,
    /// Its listing fields were written by `follow` from a HEAD (`objects.list_from_head`).
    from_head: bool,
}

/// The columns `Stored::from_row` reads, in its order.
const STORED_COLUMNS: &str = "object_id, state, head_due, list_etag, list_size, list_modified,
    list_storage_class, recheck, list_from_head";
const STORED_COLUMN_COUNT: usize = 9;

impl Stored {
    /// A row whose first columns are `STORED_COLUMNS`.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
        Ok(Stored {
            object_id: r.get(0)?,
            state: r.get(1)?,
            head_due: r.get(2)?,
            etag: r.get(3)?,
            size: r.get(4)?,
            modified: r.get(5)?,
            storage_class: r.get(6)?,
            recheck: r.get(7)?,
            from_head: r.get(8)?,
        })
    }

    /// The listing reports the same ETag, size and Last-Modified as the stored listing: the
    /// fields that change when an object is rewritten.
    /// Fields `follow` wrote from a HEAD compare at one-second precision (HEAD's
    /// Last-Modified has no milliseconds; a listing's may).
    fn same_listing(&self, e: &ListedObject) -> bool {
        let modified = if self.from_head {
            same_second(self.modified.as_deref(), e.last_modified.as_deref())
        } else {
            self.modified == e.last_modified
        };
        self.etag == e.etag && self.size == e.size && modified
    }

    /// The same storage class; for fields `follow` wrote from a HEAD (which names no class
    /// for STANDARD), STANDARD and none are one.
    fn same_class(&self, e: &ListedObject) -> bool {
        let standard = |c: &Option<String>| c.as_deref().is_none_or(|c| c == "STANDARD");
        self.storage_class == e.storage_class
            || (self.from_head && standard(&self.storage_class) && standard(&e.storage_class))
    }

    /// The rescan rule: an object whose listing is unchanged (and has an ETag) and whose last
    /// HEAD succeeded needs no new HEAD. A storage-class transition (lifecycle rules rewrite
    /// nothing else) also earns a HEAD, so the stored HEAD fields stay what a fresh scan gets,
    /// and so does an object HEADed within a second of its Last-Modified, which a same-second
    /// rewrite could have changed unseen (`head::within_a_second`).
    pub(crate) fn unchanged(&self, e: &ListedObject) -> bool {
        self.same_listing(e)
            && e.etag.is_some()
            && self.same_class(e)
            && self.state == ObjectState::Ok
            && !self.head_due
            && !self.recheck
    }

    /// The stored listing fields, as an "old" side of a change.
    fn as_listed(&self, key: &str) -> ListedObject {
        ListedObject {
            key: key.to_string(),
            etag: self.etag.clone(),
            size: self.size,
            last_modified: self.modified.clone(),
            storage_class: self.storage_class.clone(),
            version: None,
        }
    }
}

/// The stored row of one key, if any.
pub(crate) fn stored(
    conn: &Connection,
    bucket_id: i64,
    key: &str,
) -> rusqlite::Result<Option<Stored>> {
    conn.prepare_cached(&format!(
        "SELECT {STORED_COLUMNS} FROM objects WHERE bucket_id = ?1 AND key = ?2"
    ))?
    .query_row(params![bucket_id, key], Stored::from_row)
    .optional()
}

/// Commits one page: new and changed objects become `head_due`, stored keys of the page's
/// window that the listing lacks become `gone`, and the range's checkpoint moves on. The
/// page's keys (in increasing order, checked by the lister) are merged with the window's
/// stored rows read in key order a chunk at a time: one pass, flat memory.
pub(super) fn apply_page(
    tx: &Transaction,
    ctx: &WriterCtx,
    page: &PageMsg,
    now: &str,
    tally: &mut Tally,
) -> rusqlite::Result<Vec<HeadJob>> {
    let order = page.keys.order;
    let mut rows = page_window(page).map(|w| WindowRows::new(ctx.bucket_id, w));
    let mut next = advance(tx, &mut rows)?;
    let mut jobs = Vec::new();
    for e in &page.entries {
        // Stored keys before this one are no longer listed.
        while let Some((k, s)) = next.take_if(|(k, _)| order.lt(k, &e.key)) {
            tally.gone += unlisted(tx, ctx, &k, &s, now)?;
            next = advance(tx, &mut rows)?;
        }
        let found = next.take_if(|(k, _)| *k == e.key).map(|(_, s)| s);
        if found.is_some() {
            next = advance(tx, &mut rows)?;
        }
        if let Some((object_id, work)) = apply_listed(tx, ctx, e, found, (now, order), tally)? {
            jobs.push(HeadJob {
                object_id,
                key: e.key.clone(),
                version_id: None,
                work,
            });
        }
    }
    while let Some((k, s)) = next.take() {
        tally.gone += unlisted(tx, ctx, &k, &s, now)?;
        next = advance(tx, &mut rows)?;
    }
    record_checkpoint(tx, ctx, page)?;
    tally.listed += page.entries.len() as i64;
    Ok(jobs)
}

/// Moves the page's range checkpoint on: the token of the next page, the last key listed,
/// whether the range is done.
pub(super) fn record_checkpoint(
    tx: &Transaction,
    ctx: &WriterCtx,
    page: &PageMsg,
) -> rusqlite::Result<()> {
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
        if page.done {
            RangeStatus::Done
        } else {
            RangeStatus::Listing
        },
        page.entries.len() as i64
    ])?;
    Ok(())
}

/// Records one listed object against its stored row; returns its id and the work it needs
/// (a HEAD, or with `--tags=all` the tags of an unchanged object).
fn apply_listed(
    tx: &Transaction,
    ctx: &WriterCtx,
    e: &ListedObject,
    found: Option<Stored>,
    (now, order): (&str, KeyOrder),
    tally: &mut Tally,
) -> rusqlite::Result<Option<(i64, Work)>> {
    let s = match found {
        None => {
            let object_id = insert_listed(tx, ctx, e, order)?;
            if ctx.record_created {
                record_change(tx, ctx, object_id, ChangeKind::Created, None, Some(e), now)?;
            }
            return Ok(Some((object_id, Work::Head)));
        }
        Some(s) if ctx.mode == Mode::Rescan && s.unchanged(e) => {
            tally.skipped += 1;
            if s.from_head {
                // What `follow` wrote from a HEAD gives way to the listing's own fields.
                relist_quietly(tx, ctx, s.object_id, e)?;
            }
            // Tags change without touching the listing: `--tags=all` reads them anyway.
            if ctx.tags == Some(TagsMode::All) {
                tx.prepare_cached("UPDATE objects SET tags_due = ?2 WHERE object_id = ?1")?
                    .execute([s.object_id, ctx.scan_id])?;
                return Ok(Some((s.object_id, Work::Tags)));
            }
            return Ok(None);
        }
        Some(s) => s,
    };
    relist(tx, ctx, s.object_id, e)?;
    if s.state == ObjectState::Gone {
        forget_earlier_life(tx, s.object_id)?;
        if ctx.record_created {
            record_change(
                tx,
                ctx,
                s.object_id,
                ChangeKind::Created,
                None,
                Some(e),
                now,
            )?;
        }
    } else if !s.same_listing(e) {
        let old = s.as_listed(&e.key);
        record_change(
            tx,
            ctx,
            s.object_id,
            ChangeKind::Modified,
            Some(&old),
            Some(e),
            now,
        )?;
    }
    Ok(Some((s.object_id, Work::Head)))
}

/// A stored key the listing no longer has: gone, unless it already was. Returns 1 if marked.
fn unlisted(
    tx: &Transaction,
    ctx: &WriterCtx,
    key: &str,
    s: &Stored,
    now: &str,
) -> rusqlite::Result<i64> {
    if s.state == ObjectState::Gone {
        return Ok(0);
    }
    mark_gone(tx, ctx, s.object_id)?;
    record_change(
        tx,
        ctx,
        s.object_id,
        ChangeKind::Deleted,
        Some(&s.as_listed(key)),
        None,
        now,
    )?;
    Ok(1)
}

/// The stored rows of a page's window in key order, read `WINDOW_CHUNK` at a time. Rows the
/// page inserts are never read back: a chunk is fetched as soon as the previous one is used
/// up, before any listed key beyond it is inserted.
struct WindowRows {
    bucket_id: i64,
    window: KeyRange,
    buf: std::collections::VecDeque<(String, Stored)>,
    after: Option<String>,
    exhausted: bool,
}

impl WindowRows {
    fn new(bucket_id: i64, window: KeyRange) -> WindowRows {
        WindowRows {
            bucket_id,
            window,
            buf: Default::default(),
            after: None,
            exhausted: false,
        }
    }

    fn next(&mut self, tx: &Transaction) -> rusqlite::Result<Option<(String, Stored)>> {
        if self.buf.is_empty() && !self.exhausted {
            self.fetch(tx)?;
        }
        Ok(self.buf.pop_front())
    }

    fn fetch(&mut self, tx: &Transaction) -> rusqlite::Result<()> {
        let chunk = match &self.after {
            Some(k) => self.window.after(k),
            None => self.window.clone(),
        };
        let (frag, mut args) = chunk.sql("key");
        args.push((":b", &self.bucket_id));
        args.push((":n", &WINDOW_CHUNK));
        let sql = format!(
            "SELECT {STORED_COLUMNS}, key FROM objects WHERE bucket_id = :b{frag} ORDER BY {} LIMIT :n",
            chunk.order.column("key")
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(args.as_slice(), |r| {
            Ok((
                r.get::<_, String>(STORED_COLUMN_COUNT)?,
                Stored::from_row(r)?,
            ))
        })?;
        for row in rows {
            self.buf.push_back(row?);
        }
        self.exhausted = (self.buf.len() as i64) < WINDOW_CHUNK;
        self.after = self.buf.back().map(|(k, _)| k.clone());
        Ok(())
    }
}

fn advance(
    tx: &Transaction,
    rows: &mut Option<WindowRows>,
) -> rusqlite::Result<Option<(String, Stored)>> {
    match rows {
        Some(r) => r.next(tx),
        None => Ok(None),
    }
}

/// The keys a page speaks for: (previous page's last key, this page's last key], or up to the
/// range's end for the last page. `None` for an empty page in mid-listing.
pub(crate) fn page_window(page: &PageMsg) -> Option<KeyRange> {
    let after_prev = match &page.prev_last {
        Some(k) => page.keys.after(k),
        None => (*page.keys).clone(),
    };
    if page.done {
        return Some(after_prev);
    }
    let last = page.last_key.as_deref()?;
    Some(after_prev.up_to(last))
}

/// Marks an object deleted by this scan.
pub(super) fn mark_gone(tx: &Transaction, ctx: &WriterCtx, object_id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(crate::store::table_sql!(
        ctx.versions,
        "UPDATE objects SET state = ?3, head_due = 0, tags_due = 0, gone_scan = ?2 WHERE object_id = ?1"
    ))?
    .execute(params![object_id, ctx.scan_id, ObjectState::Gone])?;
    Ok(())
}

/// A deleted key listed again starts a new life (issue 14): what HEAD said of the earlier one —
/// its metadata and tag rows, and that it was HEADed at all — is not carried over, so its `created`
/// change has no old metadata and the new metadata, as any new key's.
pub(super) fn forget_earlier_life(tx: &Transaction, object_id: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM metadata WHERE object_id = ?1")?
        .execute([object_id])?;
    tx.prepare_cached("DELETE FROM tags WHERE object_id = ?1")?
        .execute([object_id])?;
    tx.prepare_cached(
        "UPDATE objects SET headed_scan = NULL, tags_scan = NULL, tags_error = NULL WHERE object_id = ?1",
    )?
    .execute([object_id])?;
    Ok(())
}

/// Records a stored object's listing, unchanged but for what a HEAD could not say (the
/// Last-Modified's milliseconds, a storage class named STANDARD): no HEAD, no change.
fn relist_quietly(
    tx: &Transaction,
    ctx: &WriterCtx,
    object_id: i64,
    e: &ListedObject,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE objects SET list_etag = ?2, list_size = ?3, list_modified = ?4,
             list_storage_class = ?5, listed_scan = ?6, list_from_head = 0
         WHERE object_id = ?1",
    )?
    .execute(params![
        object_id,
        e.etag,
        e.size,
        e.last_modified,
        e.storage_class,
        ctx.scan_id
    ])?;
    Ok(())
}

/// Whether two RFC 3339 times (`timefmt`) name the same second.
fn same_second(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.get(..19).is_some_and(|a| Some(a) == b.get(..19)),
        (a, b) => a == b,
    }
}

/// Records a stored object's new listing and owes it a HEAD.
fn relist(
    tx: &Transaction,
    ctx: &WriterCtx,
    object_id: i64,
    e: &ListedObject,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE objects SET head_due = 1, list_etag = ?2, list_size = ?3,
             list_modified = ?4, list_storage_class = ?5, listed_scan = ?6, list_from_head = 0
         WHERE object_id = ?1",
    )?
    .execute(params![
        object_id,
        e.etag,
        e.size,
        e.last_modified,
        e.storage_class,
        ctx.scan_id
    ])?;
    Ok(())
}

fn insert_listed(
    tx: &Transaction,
    ctx: &WriterCtx,
    e: &ListedObject,
    order: KeyOrder,
) -> rusqlite::Result<i64> {
    let path_key = (order == KeyOrder::Path).then(|| path_key(&e.key));
    tx.prepare_cached(
        "INSERT INTO objects (bucket_id, key, state, head_due, list_etag, list_size,
             list_modified, list_storage_class, listed_scan, path_key)
         VALUES (?1, ?2, ?9, 1, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        ctx.bucket_id,
        e.key,
        e.etag,
        e.size,
        e.last_modified,
        e.storage_class,
        ctx.scan_id,
        path_key,
        ObjectState::Pending
    ])?;
    Ok(tx.last_insert_rowid())
}
