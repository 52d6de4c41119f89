//! Applying one HEAD outcome: the object's HEAD fields, its metadata rows, its error, and the
//! change it amounts to — in one transaction.
//!
//! Receives: a `HeadOutcome`. Sends on: the rows of the object, its metadata, its error and
//! its change, in the writer's open transaction. Invariant: the object's previous state is read from the
//! database, not carried in the job, so a resumed scan decides exactly as an uninterrupted one.

use std::sync::LazyLock;

use rusqlite::{OptionalExtension, ToSql, Transaction, params};

use super::page::mark_gone;
use super::{Tally, WriterCtx, json_object};
use crate::model::{
    ChangeKind, ExtraHeaders, HeadFields, HeadOutcome, HeadResult, ObjectState, TagsRead,
};
use crate::store::{EXTRA_COLUMNS, table_sql};

/// Commits one HEAD outcome against the object's previous state, read from the database (not
/// carried in the job), so a resumed scan decides exactly as an uninterrupted one.
pub(super) fn apply_head(
    tx: &Transaction,
    ctx: &WriterCtx,
    outcome: HeadOutcome,
    now: &str,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let id = outcome.object_id;
    let prior: Option<(ObjectState, bool, bool)> = tx
        .prepare_cached(table_sql!(
            ctx.versions,
            "SELECT state, headed_scan IS NOT NULL, tags_scan IS NOT NULL FROM objects WHERE object_id = ?1"
        ))?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((state, had_head, had_tags)) = prior else {
        // Forgotten while its HEAD ran (cannot happen under the scan lock); nothing to update.
        return Ok(());
    };
    let mut tags = outcome.tags;
    match outcome.result {
        HeadResult::Ok(f) => {
            tally.headed += 1;
            store_metadata(tx, ctx, id, &f, had_head, now)?;
            // Tags not read now (no --tags, or the read failed): those read before stay
            // only while HEAD counts as many.
            if had_tags && !matches!(tags, Some(TagsRead::Tags(_) | TagsRead::CountedNone)) {
                forget_stale_tags(tx, ctx, id, f.tagging_count)?;
            }
            store_head(tx, ctx, id, &f, now)?;
            clear_error(tx, ctx, id, state)?;
            tally.heads_ok += 1;
            tally.with_metadata += i64::from(!f.metadata.is_empty());
        }
        HeadResult::NotHeaded => {
            tx.prepare_cached(table_sql!(
                ctx.versions,
                "UPDATE objects SET tags_due = 0 WHERE object_id = ?1"
            ))?
            .execute([id])?;
        }
        HeadResult::Gone => {
            tally.headed += 1;
            tags = None;
            if ctx.versions {
                // A version has no change rows: `gone_scan` records its end.
            } else if matches!(state, ObjectState::Ok | ObjectState::Error) {
                record_deleted_on_head(tx, ctx, id, now)?;
            } else {
                // New in this scan (or back from gone): its `created` row is void.
                tx.prepare_cached(
                    "DELETE FROM changes WHERE scan_id = ?1 AND object_id = ?2
                         AND (?3 IS NULL OR at = ?3)",
                )?
                .execute(params![ctx.scan_id, id, ctx.batch(now)])?;
            }
            mark_gone(tx, ctx, id)?;
            clear_error(tx, ctx, id, state)?;
            tally.gone += 1;
        }
        HeadResult::Failed { failure, attempts } => {
            tally.headed += 1;
            tags = None;
            tx.prepare_cached(table_sql!(
                ctx.versions,
                "UPDATE objects SET state = ?2, head_due = 0, tags_due = 0 WHERE object_id = ?1"
            ))?
            .execute(params![id, ObjectState::Error])?;
            tx.prepare_cached(table_sql!(
                ctx.versions,
                "INSERT OR REPLACE INTO object_errors (object_id, scan_id, status, code, message, attempts, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))?
            .execute(params![id, ctx.scan_id, failure.status, failure.code, failure.message, attempts, now])?;
            tally.failed += 1;
        }
    }
    if let Some(read) = tags {
        store_tags(tx, ctx, id, read, had_tags, now, tally)?;
    }
    Ok(())
}

/// A HEAD without a tags read (no `--tags`, or the read failed) of an object whose tags were
/// read before: they stay known only while HEAD counts as many (a rewrite replaces tags);
/// otherwise they are not known any more, so no stale tag answers a `tag:` filter.
fn forget_stale_tags(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    count: Option<i64>,
) -> rusqlite::Result<()> {
    let stored: i64 = tx
        .prepare_cached(table_sql!(
            ctx.versions,
            "SELECT count(*) FROM tags WHERE object_id = ?1"
        ))?
        .query_row([id], |r| r.get(0))?;
    if count == Some(stored) {
        return Ok(());
    }
    tx.prepare_cached(table_sql!(
        ctx.versions,
        "DELETE FROM tags WHERE object_id = ?1"
    ))?
    .execute([id])?;
    tx.prepare_cached(table_sql!(
        ctx.versions,
        "UPDATE objects SET tags_scan = NULL WHERE object_id = ?1"
    ))?
    .execute([id])?;
    Ok(())
}

/// Records what GetObjectTagging said (or HEAD's count of none). A change from tags read
/// before goes on this scan's change row for the object (old and new tags; its kind stays:
/// `created`, `modified`, `metadata` say more), else on a new row of kind `tags` (only the
/// tags changed). A failure keeps the tags known before and records why they could not be
/// read again.
fn store_tags(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    read: TagsRead,
    had_tags: bool,
    now: &str,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let new = match read {
        TagsRead::Tags(tags) => tags,
        TagsRead::CountedNone => Vec::new(),
        TagsRead::Failed(failure) => {
            tx.prepare_cached(table_sql!(
                ctx.versions,
                "UPDATE objects SET tags_error = ?2 WHERE object_id = ?1"
            ))?
            .execute(params![id, failure.to_string()])?;
            return Ok(());
        }
    };
    tally.tags_read += 1;
    tx.prepare_cached(table_sql!(
        ctx.versions,
        "UPDATE objects SET tags_scan = ?2, tags_error = NULL, tags_due = 0, tagging_count = ?3
         WHERE object_id = ?1"
    ))?
    .execute(params![id, ctx.scan_id, new.len() as i64])?;
    let pairs = if ctx.versions {
        &VERSION_TAG_PAIRS
    } else {
        &TAG_PAIRS
    };
    replace_pairs(tx, ctx, id, pairs, had_tags, &new, now)
}

/// A known object answered 404: this scan's change row for it (a `modified` one, if its
/// listing changed) becomes a `deleted` one whose old fields are what was known before this
/// scan — the `modified` row's old side, else the stored listing.
fn record_deleted_on_head(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    now: &str,
) -> rusqlite::Result<()> {
    let updated = tx
        .prepare_cached(
            "UPDATE changes SET kind = ?3, new_etag = NULL, new_size = NULL, new_modified = NULL,
                 old_metadata = NULL, new_metadata = NULL, old_tags = NULL, new_tags = NULL
             WHERE scan_id = ?1 AND object_id = ?2 AND kind = ?4 AND (?5 IS NULL OR at = ?5)",
        )?
        .execute(params![
            ctx.scan_id,
            id,
            ChangeKind::Deleted,
            ChangeKind::Modified,
            ctx.batch(now)
        ])?;
    if updated == 0 {
        tx.prepare_cached(
            "INSERT INTO changes (scan_id, object_id, kind, old_etag, old_size, old_modified, at)
             SELECT ?1, object_id, ?4, list_etag, list_size, list_modified, ?3
             FROM objects WHERE object_id = ?2",
        )?
        .execute(params![ctx.scan_id, id, now, ChangeKind::Deleted])?;
    }
    Ok(())
}

fn clear_error(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    state: ObjectState,
) -> rusqlite::Result<()> {
    if state == ObjectState::Error {
        tx.prepare_cached(table_sql!(
            ctx.versions,
            "DELETE FROM object_errors WHERE object_id = ?1"
        ))?
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
    // A version's id is what the listing said (HEAD asked for it): only an object's is HEAD's.
    static SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
        let extra: Vec<String> = EXTRA_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 19))
            .collect();
        let sql = |table: &str, version: &str| {
            format!(
                "UPDATE {table} SET state = ?17, head_due = 0, etag = ?2, size = ?3, last_modified = ?4,
                     content_type = ?5, cache_control = ?6, content_encoding = ?7, content_language = ?8,
                     content_disposition = ?9, expires = ?10, storage_class = ?11, {version}
                     missing_meta = ?13, headed_scan = ?14, headed_at = ?15, recheck = ?16,
                     tagging_count = ?18, tags_due = 0, {}
                 WHERE object_id = ?1",
                extra.join(", ")
            )
        };
        [sql("objects", "version_id = ?12,"), sql("versions", "")]
    });
    let state = ObjectState::Ok;
    let mut values: Vec<&dyn ToSql> = vec![
        &id,
        &f.etag,
        &f.size,
        &f.last_modified,
        &f.content_type,
        &f.cache_control,
        &f.content_encoding,
        &f.content_language,
        &f.content_disposition,
        &f.expires,
        &f.storage_class,
        &f.version_id,
        &f.missing_meta,
        &ctx.scan_id,
        &now,
        &f.recheck,
        &state,
        &f.tagging_count,
    ];
    values.extend(extra_values(&f.extra));
    tx.prepare_cached(&SQL[usize::from(ctx.versions)])?
        .execute(values.as_slice())?;
    Ok(())
}

/// The values of `EXTRA_COLUMNS`, in their order.
pub(crate) fn extra_values(x: &ExtraHeaders) -> [&dyn ToSql; 15] {
    [
        &x.sse,
        &x.sse_kms_key_id,
        &x.sse_bucket_key,
        &x.sse_customer_algorithm,
        &x.checksum_algorithm,
        &x.checksum,
        &x.checksum_type,
        &x.lock_mode,
        &x.lock_retain_until,
        &x.legal_hold,
        &x.replication_status,
        &x.restore,
        &x.archive_status,
        &x.website_redirect,
        &x.parts_count,
    ]
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
    let pairs = if ctx.versions {
        &VERSION_METADATA_PAIRS
    } else {
        &METADATA_PAIRS
    };
    replace_pairs(tx, ctx, id, pairs, had_head, &f.metadata, now)
}

/// The statements of one kind of (name, value) pairs of an object: its metadata or its tags.
struct PairSql {
    select: &'static str,
    delete: &'static str,
    insert: &'static str,
    /// The new pairs on this scan's `created` row for the object.
    on_created: &'static str,
    /// The old and new pairs on this scan's change row for the object, which turns from
    /// `modified` into `modified_becomes`.
    on_change: &'static str,
    /// A change row of the pairs' own kind, when the scan has none for the object.
    new_change: &'static str,
    kind: ChangeKind,
    /// A metadata change makes a `modified` row a `metadata` one; a tags change leaves it
    /// `modified` (the rewrite says more than the tags).
    modified_becomes: ChangeKind,
}

const METADATA_PAIRS: PairSql = PairSql {
    select: "SELECT name, value FROM metadata WHERE object_id = ?1 ORDER BY name",
    delete: "DELETE FROM metadata WHERE object_id = ?1",
    insert: "INSERT OR REPLACE INTO metadata (object_id, name, value) VALUES (?1, ?2, ?3)",
    on_created: "UPDATE changes SET new_metadata = ?3
                 WHERE scan_id = ?1 AND object_id = ?2 AND kind = ?4 AND (?5 IS NULL OR at = ?5)",
    on_change: "UPDATE changes SET kind = CASE kind WHEN ?5 THEN ?6 ELSE kind END,
                    old_metadata = ?3, new_metadata = ?4
                WHERE scan_id = ?1 AND object_id = ?2 AND (?7 IS NULL OR at = ?7)",
    new_change: "INSERT INTO changes (scan_id, object_id, kind, old_etag, old_size, old_modified,
                     new_etag, new_size, new_modified, old_metadata, new_metadata, at)
                 SELECT ?1, object_id, ?6, list_etag, list_size, list_modified,
                     list_etag, list_size, list_modified, ?3, ?4, ?5
                 FROM objects WHERE object_id = ?2",
    kind: ChangeKind::Metadata,
    modified_becomes: ChangeKind::Metadata,
};

const TAG_PAIRS: PairSql = PairSql {
    select: "SELECT key, value FROM tags WHERE object_id = ?1 ORDER BY key",
    delete: "DELETE FROM tags WHERE object_id = ?1",
    insert: "INSERT OR REPLACE INTO tags (object_id, key, value) VALUES (?1, ?2, ?3)",
    on_created: "UPDATE changes SET new_tags = ?3
                 WHERE scan_id = ?1 AND object_id = ?2 AND kind = ?4 AND (?5 IS NULL OR at = ?5)",
    on_change: "UPDATE changes SET kind = CASE kind WHEN ?5 THEN ?6 ELSE kind END,
                    old_tags = ?3, new_tags = ?4
                WHERE scan_id = ?1 AND object_id = ?2 AND (?7 IS NULL OR at = ?7)",
    new_change: "INSERT INTO changes (scan_id, object_id, kind, old_etag, old_size, old_modified,
                     new_etag, new_size, new_modified, old_tags, new_tags, at)
                 SELECT ?1, object_id, ?6, list_etag, list_size, list_modified,
                     list_etag, list_size, list_modified, ?3, ?4, ?5
                 FROM objects WHERE object_id = ?2",
    kind: ChangeKind::Tags,
    modified_becomes: ChangeKind::Modified,
};

/// A version's metadata: a version never changes, so it has no change rows (a HEAD again
/// after an error replaces what is stored).
const VERSION_METADATA_PAIRS: PairSql = PairSql {
    select: "",
    delete: "DELETE FROM version_metadata WHERE object_id = ?1",
    insert: "INSERT OR REPLACE INTO version_metadata (object_id, name, value) VALUES (?1, ?2, ?3)",
    on_created: "",
    on_change: "",
    new_change: "",
    kind: ChangeKind::Metadata,
    modified_becomes: ChangeKind::Metadata,
};

/// A version's tags (`VERSION_METADATA_PAIRS`).
const VERSION_TAG_PAIRS: PairSql = PairSql {
    select: "",
    delete: "DELETE FROM version_tags WHERE object_id = ?1",
    insert: "INSERT OR REPLACE INTO version_tags (object_id, key, value) VALUES (?1, ?2, ?3)",
    on_created: "",
    on_change: "",
    new_change: "",
    kind: ChangeKind::Tags,
    modified_becomes: ChangeKind::Modified,
};

/// Replaces the object's pairs with `new`. When it had pairs read before (`had`) and they
/// differ, the old and new go on this scan's change row for the object, or on a new row of
/// the pairs' kind; when it had none and the scan records new objects, the new pairs go on
/// its `created` row. (Objects never read have no rows: nothing to read or delete first.)
fn replace_pairs(
    tx: &Transaction,
    ctx: &WriterCtx,
    id: i64,
    sql: &PairSql,
    had: bool,
    new: &[(String, String)],
    now: &str,
) -> rusqlite::Result<()> {
    if had && ctx.versions {
        tx.prepare_cached(sql.delete)?.execute([id])?;
    } else if had {
        let old: Vec<(String, String)> = tx
            .prepare_cached(sql.select)?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if old == new {
            return Ok(());
        }
        let (old, new) = (json_object(&old), json_object(new));
        let updated = tx.prepare_cached(sql.on_change)?.execute(params![
            ctx.scan_id,
            id,
            old,
            new,
            ChangeKind::Modified,
            sql.modified_becomes,
            ctx.batch(now)
        ])?;
        if updated == 0 {
            tx.prepare_cached(sql.new_change)?.execute(params![
                ctx.scan_id,
                id,
                old,
                new,
                now,
                sql.kind
            ])?;
        }
        tx.prepare_cached(sql.delete)?.execute([id])?;
    } else if ctx.record_created {
        tx.prepare_cached(sql.on_created)?.execute(params![
            ctx.scan_id,
            id,
            json_object(new),
            ChangeKind::Created,
            ctx.batch(now)
        ])?;
    }
    let mut insert = tx.prepare_cached(sql.insert)?;
    for (name, value) in new {
        insert.execute(params![id, name, value])?;
    }
    Ok(())
}
