//! `s3meta merge`: the last step of a scan sharded across machines (`plan` cuts the ranges,
//! `s3meta::s3::probe::plan`; `scan --range-json` scans one), combining the range databases.
//!
//! Receives: an output database and the range databases. Sends on: the updated output
//! database, and what was merged. Invariants: a merge replaces, in one
//! transaction per input, everything the output holds in each keyspace the input scanned
//! (objects with their metadata, errors and changes, and the scans), so merging the shards of
//! a plan gives the database one scan of the whole would have given (canonical dump).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Error;
use crate::keys::{KeyOrder, KeyRange};
use crate::model::{ScanState, Target};
use crate::store::lock::DbLock;
use crate::store::{EXTRA_COLUMNS, TAG_COLUMNS, db, for_versions, lock};

/// What one merge did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Merged {
    pub keyspaces: usize,
    pub objects: i64,
}

/// Merges each input database into `out` (created if missing), in order. Every input is
/// checked first, and locked so that no scan starts on it during the merge, before `out` is
/// created or changed (issue 13): a mistyped input is an error, never half a merge.
pub fn merge(out: &Path, inputs: &[&Path]) -> Result<Merged, Error> {
    // Declared before the connection, so the locks' descriptors close after it (lock.rs).
    let mut held: Vec<(DbLock, (u64, u64))> = Vec::with_capacity(inputs.len());
    let out_id = file_id(out);
    for input in inputs {
        let id = file_id(input).ok_or_else(|| Error::NoDatabase {
            path: input.to_path_buf(),
        })?;
        if out_id == Some(id) {
            return Err(Error::BadInput(format!(
                "cannot merge {} into itself",
                input.display()
            )));
        }
        if let Some((first, _)) = held.iter().find(|(_, other)| *other == id) {
            return Err(Error::BadInput(format!(
                "{} is given twice (also as {}): name each input once",
                input.display(),
                first.path.display()
            )));
        }
        held.push((check_input(input)?, id));
    }
    let _lock = lock::acquire(out)?;
    let mut conn = db::open_rw(out)?;
    let mut total = Merged::default();
    for input in inputs {
        let m = merge_one(&mut conn, input).map_err(|e| Error::db(out, e))?;
        total.keyspaces += m.keyspaces;
        total.objects += m.objects;
    }
    db::close_rw(conn, out)?;
    Ok(total)
}

/// The (device, inode) of a file, which every path to it shares.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Locks an input, and refuses a missing, foreign or newer one, and one whose scan is running
/// or unfinished: a half-done shard would replace its range in OUT with a partial copy.
fn check_input(input: &Path) -> Result<DbLock, Error> {
    let lock = lock::acquire_existing(input)?;
    let conn = db::open_ro(input)?;
    let unfinished: Option<(i64, String, String)> = conn
        .query_row(
            &format!(
                "SELECT s.scan_id, b.name, s.prefix FROM scans s JOIN buckets b USING (bucket_id)
                 WHERE s.state IN ({}, {}) AND s.follow = 0 LIMIT 1",
                ScanState::Running.sql(),
                ScanState::Interrupted.sql()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(|e| Error::db(input, e))?;
    drop(conn);
    match unfinished {
        Some((id, bucket, prefix)) => Err(Error::BadInput(format!(
            "{} holds an unfinished scan of s3://{bucket}/{prefix} (scan {id}): run that scan again to finish it, then merge",
            input.display()
        ))),
        None => Ok(lock),
    }
}

/// A scanned keyspace of the input: its target, and the order its bounds were cut in (the
/// scan's, else the bucket's listing order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keyspace {
    target: Target,
    order: Option<KeyOrder>,
}

impl Keyspace {
    fn keys(&self) -> KeyRange {
        self.target.keys(self.order.unwrap_or(KeyOrder::Byte))
    }

    /// Every key of `other` is one of ours (a parent prefix scanned without a range).
    fn covers(&self, other: &Keyspace) -> bool {
        self == other
            || (self.target.store == other.target.store
                && self.target.bucket == other.target.bucket
                && self.target.versions == other.target.versions
                && !self.target.is_bounded()
                && other.target.prefix.starts_with(&self.target.prefix))
    }
}

/// Replaces, in one transaction, what OUT holds in the input's keyspaces: their scans (all
/// copied under new ids, mapped in `temp.scan_map`) and the objects of the outermost ones.
fn merge_one(conn: &mut Connection, input: &Path) -> rusqlite::Result<Merged> {
    // Read-only by URI: a file that vanished since it was checked is an error, never a new
    // empty database attached (and created) in its place.
    conn.execute("ATTACH DATABASE ?1 AS src", [db::read_only_uri(input)])?;
    let result = (|| {
        let tx = conn.transaction()?;
        let spaces = keyspaces(&tx)?;
        let outer: Vec<&Keyspace> = spaces
            .iter()
            .filter(|k| !spaces.iter().any(|o| o != *k && o.covers(k)))
            .collect();
        for k in &spaces {
            let out_b = bucket_id(&tx, "main", k)?;
            tx.execute(
                "DELETE FROM scans WHERE bucket_id = ?1 AND prefix = ?2 AND start_after IS ?3 AND end_key IS ?4
                   AND versions = ?5",
                params![
                    out_b,
                    k.target.prefix,
                    k.target.start_after,
                    k.target.end_key,
                    k.target.versions
                ],
            )?;
        }
        copy_scans(&tx)?;
        let mut merged = Merged {
            keyspaces: spaces.len(),
            objects: 0,
        };
        for k in outer {
            let (out_b, src_b) = (bucket_id(&tx, "main", k)?, bucket_id(&tx, "src", k)?);
            if let Some(order) = k.order {
                db::record_key_order(&tx, out_b, order)?;
            }
            let keys = k.keys();
            let (frag, mut args) = keys.sql("key");
            args.push((":b", &out_b));
            let versions = k.target.versions;
            tx.execute(
                &tables(
                    versions,
                    format!("DELETE FROM objects WHERE bucket_id = :b{frag}"),
                ),
                args.as_slice(),
            )?;
            merged.objects += copy_objects(&tx, &keys, (out_b, src_b), versions)?;
        }
        tx.commit()?;
        Ok(merged)
    })();
    conn.execute("DETACH DATABASE src", [])?;
    result
}

fn keyspaces(conn: &Connection) -> rusqlite::Result<Vec<Keyspace>> {
    let mut stmt = conn.prepare(
        "SELECT b.store, b.name, s.prefix, s.start_after, s.end_key,
                coalesce(max(s.key_order), b.key_order), s.versions
         FROM src.scans s JOIN src.buckets b USING (bucket_id)
         WHERE s.follow = 0
         GROUP BY b.store, b.name, s.prefix, s.start_after, s.end_key, s.versions",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Keyspace {
            target: Target {
                store: r.get(0)?,
                bucket: r.get(1)?,
                prefix: r.get(2)?,
                start_after: r.get(3)?,
                end_key: r.get(4)?,
                versions: r.get(6)?,
            },
            order: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// The keyspace's bucket id in OUT (created if needed), or in the input (`src`).
fn bucket_id(tx: &Connection, schema: &str, k: &Keyspace) -> rusqlite::Result<i64> {
    let t = &k.target;
    if schema == "main" {
        return db::ensure_bucket(tx, &t.store, &t.bucket);
    }
    tx.query_row(
        "SELECT bucket_id FROM src.buckets WHERE store = ?1 AND name = ?2",
        params![t.store, t.bucket],
        |r| r.get(0),
    )
}

/// Copies every scan of the input (and its ranges) under new ids, recorded in
/// `temp.scan_map`, so every reference to an input scan can be translated.
fn copy_scans(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS scan_map (old INTEGER PRIMARY KEY, new INTEGER NOT NULL);
         DELETE FROM temp.scan_map;",
    )?;
    let mut stmt = tx.prepare(
        "SELECT s.scan_id, ob.bucket_id FROM src.scans s
         JOIN src.buckets sb ON sb.bucket_id = s.bucket_id
         JOIN main.buckets ob ON ob.store = sb.store AND ob.name = sb.name
         ORDER BY s.scan_id",
    )?;
    let scans: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, out_b) in scans {
        tx.execute(
            "INSERT INTO scans (bucket_id, prefix, start_after, end_key, mode, state, record_created,
                 started_at, updated_at, finished_at, objects_listed, heads_ok, heads_skipped,
                 objects_gone, objects_failed, list_requests, head_requests, retries, throttled, last_error,
                 tags, tag_requests, tags_read, trust_tag_count, versions, follow, events_applied,
                 events_ignored, events_stale, last_event_time)
             SELECT ?1, prefix, start_after, end_key, mode, state, record_created, started_at, updated_at,
                 finished_at, objects_listed, heads_ok, heads_skipped, objects_gone, objects_failed,
                 list_requests, head_requests, retries, throttled, last_error,
                 tags, tag_requests, tags_read, trust_tag_count, versions, follow, events_applied,
                 events_ignored, events_stale, last_event_time
             FROM src.scans WHERE scan_id = ?2",
            params![out_b, id],
        )?;
        let new = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO temp.scan_map VALUES (?1, ?2)",
            params![id, new],
        )?;
        tx.execute(
            "INSERT INTO scan_ranges (scan_id, range_no, start_after, end_key, token, last_key, state, pages, keys_listed)
             SELECT ?1, range_no, start_after, end_key, token, last_key, state, pages, keys_listed
             FROM src.scan_ranges WHERE scan_id = ?2",
            params![new, id],
        )?;
    }
    Ok(())
}

/// `sql`, written for the objects' tables, for a keyspace's (`store::for_versions`).
fn tables(versions: bool, sql: String) -> String {
    if versions { for_versions(&sql) } else { sql }
}

/// Copies the keyspace's objects, then their metadata, errors and changes, matched by key —
/// or, for a versions keyspace, its versions with their metadata, tags and errors, matched by
/// key and version id (versions have no changes).
fn copy_objects(
    tx: &Connection,
    keys: &KeyRange,
    (out_b, src_b): (i64, i64),
    versions: bool,
) -> rusqlite::Result<i64> {
    let (frag, mut args) = keys.sql("s.key");
    args.push((":out", &out_b));
    args.push((":src", &src_b));
    let map = |col: &str| format!("(SELECT new FROM temp.scan_map WHERE old = s.{col})");
    let own: &[&str] = if versions {
        &["is_latest", "delete_marker"]
    } else {
        &[]
    };
    let extra: Vec<&str> = EXTRA_COLUMNS
        .iter()
        .chain(&TAG_COLUMNS)
        .chain(own)
        .copied()
        .collect();
    let sql = |s: String| tables(versions, s);
    let n = tx.execute(
        &sql(format!(
            "INSERT INTO objects (bucket_id, key, state, head_due, list_etag, list_size, list_modified,
                 list_storage_class, etag, size, last_modified, content_type, cache_control,
                 content_encoding, content_language, content_disposition, expires, storage_class,
                 version_id, missing_meta, listed_scan, headed_scan, headed_at, gone_scan, recheck,
                 path_key, tags_due, tags_scan, {})
             SELECT :out, s.key, s.state, s.head_due, s.list_etag, s.list_size, s.list_modified,
                 s.list_storage_class, s.etag, s.size, s.last_modified, s.content_type, s.cache_control,
                 s.content_encoding, s.content_language, s.content_disposition, s.expires, s.storage_class,
                 s.version_id, s.missing_meta, {}, {}, s.headed_at, {}, s.recheck, s.path_key,
                 coalesce((SELECT new FROM temp.scan_map WHERE old = s.tags_due), 0), {}, s.{}
             FROM src.objects s WHERE s.bucket_id = :src{frag}",
            extra.join(", "),
            map("listed_scan"),
            map("headed_scan"),
            map("gone_scan"),
            map("tags_scan"),
            extra.join(", s.")
        )),
        args.as_slice(),
    )? as i64;
    let same_version = if versions {
        " AND o.version_id = s.version_id"
    } else {
        ""
    };
    let join = format!(
        "FROM src.objects s JOIN main.objects o ON o.bucket_id = :out AND o.key = s.key{same_version}
         WHERE s.bucket_id = :src{frag}"
    );
    tx.execute(
        &sql(format!("INSERT INTO metadata (object_id, name, value) SELECT o.object_id, m.name, m.value {join_m}",
            join_m = join.replace("FROM src.objects s", "FROM src.metadata m JOIN src.objects s USING (object_id)"))),
        args.as_slice(),
    )?;
    tx.execute(
        &sql(format!(
            "INSERT INTO tags (object_id, key, value) SELECT o.object_id, t.key, t.value {}",
            join.replace(
                "FROM src.objects s",
                "FROM src.tags t JOIN src.objects s USING (object_id)"
            )
        )),
        args.as_slice(),
    )?;
    tx.execute(
        &sql(format!(
            "INSERT INTO object_errors (object_id, scan_id, status, code, message, attempts, at)
             SELECT o.object_id, coalesce((SELECT new FROM temp.scan_map WHERE old = e.scan_id), 0),
                 e.status, e.code, e.message, e.attempts, e.at {}",
            join.replace(
                "FROM src.objects s",
                "FROM src.object_errors e JOIN src.objects s USING (object_id)"
            )
        )),
        args.as_slice(),
    )?;
    if versions {
        return Ok(n);
    }
    tx.execute(
        &format!(
            "INSERT INTO changes (scan_id, object_id, kind, old_etag, old_size, old_modified, new_etag,
                 new_size, new_modified, old_metadata, new_metadata, at, old_tags, new_tags)
             SELECT coalesce((SELECT new FROM temp.scan_map WHERE old = c.scan_id), 0), o.object_id,
                 c.kind, c.old_etag, c.old_size, c.old_modified, c.new_etag, c.new_size, c.new_modified,
                 c.old_metadata, c.new_metadata, c.at, c.old_tags, c.new_tags {} ORDER BY c.change_id",
            join.replace("FROM src.objects s", "FROM src.changes c JOIN src.objects s USING (object_id)")
        ),
        args.as_slice(),
    )?;
    Ok(n)
}
