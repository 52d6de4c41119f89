//! Applying what `follow` learned from a batch of events: per key, a HEAD made after the
//! events arrived, in one transaction with the key's newest sequencer and the session's
//! counters.
//!
//! Receives: `FollowItem`s (a key, the newest sequencer of its events, what HEAD said).
//! Sends on: the rows of those objects, their metadata, tags and errors, and change rows of
//! the kinds rescans write (`created`, `modified`, `metadata`, `tags`, `deleted`). Invariants:
//! an event no newer than the key's stored sequencer changes nothing (it is stale); the
//! listing fields of a row `follow` writes come from HEAD (`list_from_head`), which the next
//! listing compares at one-second precision; a session's change rows for an object are only
//! merged within one batch (`WriterCtx::follow`), so a day of events keeps each change.

use std::cmp::Ordering;

use rusqlite::{OptionalExtension, Transaction, params};

use super::outcome::apply_head;
use super::page::forget_earlier_life;
use super::{Tally, WriterCtx, record_change};
use crate::keys::{KeyOrder, path_key};
use crate::model::event::sequencer_cmp;
use crate::model::{
    ChangeKind, HeadFields, HeadOutcome, HeadResult, ListedObject, ObjectState, TagsRead,
};

/// One key of a batch and what HEAD said of it.
#[derive(Debug)]
pub struct FollowItem {
    pub key: String,
    /// The newest sequencer among the key's events of the batch, if the store sends them.
    pub sequencer: Option<String>,
    pub result: HeadResult,
    pub tags: Option<TagsRead>,
    /// The events of the batch this item stands for.
    pub events: u64,
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FollowTally {
    pub applied: u64,
    pub stale: u64,
    pub changed: u64,
}

/// Whether `seq` is no newer than the key's stored sequencer.
pub fn is_stale(stored: Option<&str>, seq: Option<&str>) -> bool {
    matches!((stored, seq), (Some(s), Some(e)) if sequencer_cmp(e, s) != Ordering::Greater)
}

/// The key's stored sequencer, if it has a row.
pub fn stored_sequencer(
    conn: &rusqlite::Connection,
    bucket_id: i64,
    key: &str,
) -> rusqlite::Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT event_sequencer FROM objects WHERE bucket_id = ?1 AND key = ?2")?
        .query_row(params![bucket_id, key], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

struct Row {
    object_id: i64,
    state: ObjectState,
    sequencer: Option<String>,
    listed: ListedObject,
}

pub(super) fn apply_items(
    tx: &Transaction,
    ctx: &WriterCtx,
    items: Vec<FollowItem>,
    order: Option<KeyOrder>,
    now: &str,
    tally: &mut Tally,
) -> rusqlite::Result<FollowTally> {
    let mut out = FollowTally::default();
    for item in items {
        let row = row(tx, ctx.bucket_id, &item.key)?;
        if let Some(r) = &row
            && is_stale(r.sequencer.as_deref(), item.sequencer.as_deref())
        {
            out.stale += item.events;
            continue;
        }
        out.applied += item.events;
        let object_id = match (&item.result, row) {
            // Deleted since, and never known: nothing to record (not even the sequencer).
            (HeadResult::Gone | HeadResult::NotHeaded, None) => continue,
            (HeadResult::Gone | HeadResult::NotHeaded, Some(r)) if r.state == ObjectState::Gone => {
                r.object_id
            }
            (HeadResult::Gone | HeadResult::NotHeaded, Some(r)) => {
                apply_head(tx, ctx, outcome(r.object_id, item.result, None), now, tally)?;
                r.object_id
            }
            (HeadResult::Ok(f), found) => {
                let id = upsert(tx, ctx, &item.key, Some(f), found, order, now)?;
                apply_head(tx, ctx, outcome(id, item.result, item.tags), now, tally)?;
                id
            }
            (HeadResult::Failed { .. }, found) => {
                let id = upsert(tx, ctx, &item.key, None, found, order, now)?;
                apply_head(tx, ctx, outcome(id, item.result, None), now, tally)?;
                id
            }
        };
        if item.sequencer.is_some() {
            tx.prepare_cached("UPDATE objects SET event_sequencer = ?2 WHERE object_id = ?1")?
                .execute(params![object_id, item.sequencer])?;
        }
        out.changed += changes_of(tx, ctx.scan_id, object_id, now)?;
    }
    Ok(out)
}

fn outcome(object_id: i64, result: HeadResult, tags: Option<TagsRead>) -> HeadOutcome {
    HeadOutcome {
        object_id,
        result,
        tags,
    }
}

/// The change rows this batch wrote for the object (a key comes once per batch).
fn changes_of(tx: &Transaction, scan_id: i64, object_id: i64, now: &str) -> rusqlite::Result<u64> {
    tx.prepare_cached(
        "SELECT count(*) FROM changes WHERE object_id = ?1 AND scan_id = ?2 AND at = ?3",
    )?
    .query_row(params![object_id, scan_id, now], |r| r.get::<_, i64>(0))
    .map(|n| n as u64)
}

fn row(tx: &Transaction, bucket_id: i64, key: &str) -> rusqlite::Result<Option<Row>> {
    tx.prepare_cached(
        "SELECT object_id, state, event_sequencer, list_etag, list_size, list_modified,
             list_storage_class
         FROM objects WHERE bucket_id = ?1 AND key = ?2",
    )?
    .query_row(params![bucket_id, key], |r| {
        Ok(Row {
            object_id: r.get(0)?,
            state: r.get(1)?,
            sequencer: r.get(2)?,
            listed: ListedObject {
                key: key.to_string(),
                etag: r.get(3)?,
                size: r.get(4)?,
                last_modified: r.get(5)?,
                storage_class: r.get(6)?,
                version: None,
            },
        })
    })
    .optional()
}

/// The listing fields HEAD stands in for: a listing names STANDARD where HEAD names none.
fn as_listed(key: &str, f: &HeadFields) -> ListedObject {
    ListedObject {
        key: key.to_string(),
        etag: f.etag.clone(),
        size: f.size,
        last_modified: f.last_modified.clone(),
        storage_class: Some(f.storage_class.clone().unwrap_or_else(|| "STANDARD".into())),
        version: None,
    }
}

/// Same object by its listing: ETag, size, and Last-Modified to the second.
fn same(a: &ListedObject, b: &ListedObject) -> bool {
    let second = |t: &Option<String>| t.as_deref().and_then(|t| t.get(..19)).map(str::to_string);
    a.etag == b.etag && a.size == b.size && second(&a.last_modified) == second(&b.last_modified)
}

/// The object's row before its HEAD outcome is applied: inserted (a `created` change), back
/// from gone (a new life, `created`), or rewritten since (`modified`); its listing fields
/// from HEAD. `f` is `None` when the HEAD failed: a new key is then recorded in error, for
/// the next rescan to read.
fn upsert(
    tx: &Transaction,
    ctx: &WriterCtx,
    key: &str,
    f: Option<&HeadFields>,
    found: Option<Row>,
    order: Option<KeyOrder>,
    now: &str,
) -> rusqlite::Result<i64> {
    let new = f.map(|f| as_listed(key, f));
    let Some(r) = found else {
        let path = (order == Some(KeyOrder::Path)).then(|| path_key(key));
        let l = new.as_ref();
        tx.prepare_cached(
            "INSERT INTO objects (bucket_id, key, state, head_due, list_etag, list_size,
                 list_modified, list_storage_class, list_from_head, path_key)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, 1, ?8)",
        )?
        .execute(params![
            ctx.bucket_id,
            key,
            ObjectState::Pending,
            l.and_then(|l| l.etag.clone()),
            l.and_then(|l| l.size),
            l.and_then(|l| l.last_modified.clone()),
            l.and_then(|l| l.storage_class.clone()),
            path
        ])?;
        let id = tx.last_insert_rowid();
        if ctx.record_created {
            record_change(tx, ctx, id, ChangeKind::Created, None, new.as_ref(), now)?;
        }
        return Ok(id);
    };
    let Some(new) = new else {
        return Ok(r.object_id);
    };
    if r.state == ObjectState::Gone {
        forget_earlier_life(tx, r.object_id)?;
        tx.prepare_cached("UPDATE objects SET state = ?2, gone_scan = NULL WHERE object_id = ?1")?
            .execute(params![r.object_id, ObjectState::Pending])?;
        if ctx.record_created {
            record_change(
                tx,
                ctx,
                r.object_id,
                ChangeKind::Created,
                None,
                Some(&new),
                now,
            )?;
        }
    } else if same(&r.listed, &new) {
        return Ok(r.object_id);
    } else if r.listed.etag.is_some() || r.listed.size.is_some() {
        record_change(
            tx,
            ctx,
            r.object_id,
            ChangeKind::Modified,
            Some(&r.listed),
            Some(&new),
            now,
        )?;
    }
    tx.prepare_cached(
        "UPDATE objects SET list_etag = ?2, list_size = ?3, list_modified = ?4,
             list_storage_class = ?5, list_from_head = 1
         WHERE object_id = ?1",
    )?
    .execute(params![
        r.object_id,
        new.etag,
        new.size,
        new.last_modified,
        new.storage_class
    ])?;
    Ok(r.object_id)
}
