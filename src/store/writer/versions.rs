//! Applying one ListObjectVersions page of a versions scan (`--all-versions`): the versions
//! and delete markers it lists, the stored versions of its keys it no longer lists, and the
//! range's checkpoint — all in the page's transaction.
//!
//! Receives: a `PageMsg` whose entries carry a `ListedVersion`. Sends on: the versions that
//! need a HEAD (new ones; markers never). Invariants: versions are immutable, so a version
//! already HEADed is never HEADed again by a rescan (only a full scan HEADs every version);
//! a stored version of a key whose versions the page lists completely (its window) and that
//! no page of this scan listed is gone. The versions of a key can span pages: those of the
//! key a page ends inside (`PageMsg::partial`) are marked listed by this scan in the page's
//! transaction, so the page that completes the key — after a resume too — knows them.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::page::{page_window, record_checkpoint};
use super::{Tally, WriterCtx};
use crate::keys::{KeyOrder, path_key};
use crate::model::{
    HeadJob, ListedObject, ListedVersion, Mode, ObjectState, PageMsg, TagsMode, Work,
};

/// The per-connection table of the versions a page lists that were not written (unchanged):
/// the window's sweep leaves them be. Emptied after every page.
pub(super) const LISTED_TABLE: &str = "CREATE TEMP TABLE IF NOT EXISTS listed_versions (
    key TEXT NOT NULL, version_id TEXT NOT NULL, PRIMARY KEY (key, version_id)) WITHOUT ROWID";

/// A stored version, as a page finds it.
struct Stored {
    object_id: i64,
    state: ObjectState,
    head_due: bool,
    is_latest: bool,
    listing: (Option<String>, Option<i64>, Option<String>, Option<String>),
}

pub(super) fn apply_page(
    tx: &Transaction,
    ctx: &WriterCtx,
    page: &PageMsg,
    tally: &mut Tally,
) -> rusqlite::Result<Vec<HeadJob>> {
    let order = page.keys.order;
    let mut jobs = Vec::new();
    for e in &page.entries {
        let Some(v) = &e.version else {
            continue;
        };
        // The key the page ends inside: its versions are marked, not just remembered.
        let partial = page.partial.as_deref() == Some(e.key.as_str());
        match stored(tx, ctx.bucket_id, &e.key, &v.version_id)? {
            None => {
                let id = insert(tx, ctx, e, v, order)?;
                if !v.delete_marker {
                    jobs.push(job(id, e, v, Work::Head));
                }
            }
            Some(s) => {
                let same = s.same_listing(e);
                let head = s.needs_head(e, v, ctx.mode);
                if head || partial || !same || s.is_latest != v.is_latest {
                    relist(tx, ctx, s.object_id, e, v, head)?;
                } else {
                    tally.skipped += 1;
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO temp.listed_versions (key, version_id) VALUES (?1, ?2)",
                    )?
                    .execute(params![e.key, v.version_id])?;
                }
                if head {
                    jobs.push(job(s.object_id, e, v, Work::Head));
                } else if !v.delete_marker && ctx.tags == Some(TagsMode::All) {
                    // A version's tags can change (PutObjectTagging with versionId) while
                    // the version does not: `--tags=all` reads them anyway.
                    tx.prepare_cached("UPDATE versions SET tags_due = ?2 WHERE object_id = ?1")?
                        .execute([s.object_id, ctx.scan_id])?;
                    jobs.push(job(s.object_id, e, v, Work::Tags));
                }
            }
        }
    }
    if let Some(window) = page_window(page) {
        let (frag, mut args) = window.sql("key");
        args.push((":b", &ctx.bucket_id));
        args.push((":scan", &ctx.scan_id));
        let gone = ObjectState::Gone;
        args.push((":gone", &gone));
        tally.gone += tx
            .prepare_cached(&format!(
                "UPDATE versions SET state = :gone, head_due = 0, tags_due = 0, gone_scan = :scan
                 WHERE bucket_id = :b{frag} AND state != :gone AND listed_scan IS NOT :scan
                   AND NOT EXISTS (SELECT 1 FROM temp.listed_versions l
                                   WHERE l.key = versions.key AND l.version_id = versions.version_id)"
            ))?
            .execute(args.as_slice())? as i64;
    }
    tx.prepare_cached("DELETE FROM temp.listed_versions")?
        .execute([])?;
    record_checkpoint(tx, ctx, page)?;
    tally.listed += page.entries.len() as i64;
    Ok(jobs)
}

fn job(object_id: i64, e: &ListedObject, v: &ListedVersion, work: Work) -> HeadJob {
    HeadJob {
        object_id,
        key: e.key.clone(),
        version_id: Some(v.version_id.clone()),
        work,
    }
}

impl Stored {
    fn same_listing(&self, e: &ListedObject) -> bool {
        let (etag, size, modified, class) = &self.listing;
        (etag, size, modified, class) == (&e.etag, &e.size, &e.last_modified, &e.storage_class)
    }

    /// Immutable: HEADed once, unless a full scan asks again, the HEAD is still owed or
    /// failed, or a lifecycle transition changed its storage class. Markers are never HEADed.
    fn needs_head(&self, e: &ListedObject, v: &ListedVersion, mode: Mode) -> bool {
        !v.delete_marker
            && (mode == Mode::Full
                || self.head_due
                || !self.same_listing(e)
                || !matches!(self.state, ObjectState::Ok))
    }
}

/// Whether a rescan would HEAD this listed version (the writer's own rule, for `estimate`):
/// a version never seen, or one `Stored::needs_head` says. A delete marker never.
pub(crate) fn rescan_heads(
    conn: &Connection,
    bucket_id: i64,
    e: &ListedObject,
) -> rusqlite::Result<bool> {
    let Some(v) = &e.version else {
        return Ok(false);
    };
    Ok(match stored(conn, bucket_id, &e.key, &v.version_id)? {
        None => !v.delete_marker,
        Some(s) => s.needs_head(e, v, Mode::Rescan),
    })
}

fn stored(
    tx: &Connection,
    bucket_id: i64,
    key: &str,
    version_id: &str,
) -> rusqlite::Result<Option<Stored>> {
    tx.prepare_cached(
        "SELECT object_id, state, head_due, is_latest, list_etag, list_size, list_modified,
             list_storage_class
         FROM versions WHERE bucket_id = ?1 AND key = ?2 AND version_id = ?3",
    )?
    .query_row(params![bucket_id, key, version_id], |r| {
        Ok(Stored {
            object_id: r.get(0)?,
            state: r.get(1)?,
            head_due: r.get(2)?,
            is_latest: r.get(3)?,
            listing: (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?),
        })
    })
    .optional()
}

/// A new version (state `pending`, owed a HEAD) or delete marker (`ok`: nothing to read).
fn insert(
    tx: &Transaction,
    ctx: &WriterCtx,
    e: &ListedObject,
    v: &ListedVersion,
    order: KeyOrder,
) -> rusqlite::Result<i64> {
    let path_key = (order == KeyOrder::Path).then(|| path_key(&e.key));
    let state = if v.delete_marker {
        ObjectState::Ok
    } else {
        ObjectState::Pending
    };
    tx.prepare_cached(
        "INSERT INTO versions (bucket_id, key, version_id, is_latest, delete_marker, state,
             head_due, list_etag, list_size, list_modified, list_storage_class, listed_scan, path_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        ctx.bucket_id,
        e.key,
        v.version_id,
        v.is_latest,
        v.delete_marker,
        state,
        !v.delete_marker,
        e.etag,
        e.size,
        e.last_modified,
        e.storage_class,
        ctx.scan_id,
        path_key
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Records a stored version's listing as this scan saw it; `head` owes it a HEAD. A version
/// found gone by an earlier scan and listed again (a store that lists it once more) is back.
fn relist(
    tx: &Transaction,
    ctx: &WriterCtx,
    object_id: i64,
    e: &ListedObject,
    v: &ListedVersion,
    head: bool,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE versions SET is_latest = ?2, list_etag = ?3, list_size = ?4, list_modified = ?5,
             list_storage_class = ?6, listed_scan = ?7, head_due = ?8 OR head_due,
             state = CASE WHEN state = ?9 THEN ?10 ELSE state END,
             gone_scan = CASE WHEN state = ?9 THEN NULL ELSE gone_scan END
         WHERE object_id = ?1",
    )?
    .execute(params![
        object_id,
        v.is_latest,
        e.etag,
        e.size,
        e.last_modified,
        e.storage_class,
        ctx.scan_id,
        head,
        ObjectState::Gone,
        if v.delete_marker {
            ObjectState::Ok
        } else {
            ObjectState::Pending
        }
    ])?;
    Ok(())
}
