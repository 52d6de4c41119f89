//! `s3meta forget`: removing a prefix's rows, and pruning old change records.
//!
//! Receives: a target (store, bucket, prefix) and/or a cut-off time. Sends on: counts of what
//! was removed. Invariants: the scans within the prefix go first, in one transaction, so an
//! interrupted forget never leaves a completed scan of the prefix describing objects that are
//! gone; objects then go in bounded transactions, each taking its metadata, errors and
//! changes with it (foreign-key cascades), so the database is consistent after every commit.
//! A completed scan of a parent prefix stays: the next scan of the prefix is then a rescan
//! that finds the forgotten objects again as `created`. Keys are selected by comparison,
//! never LIKE/GLOB.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::error::Error;
use crate::model::s3url::S3Url;
use crate::model::timefmt;
use crate::store::{db, lock};

use crate::keys::{KeyOrder, KeyRange};

/// Objects deleted per transaction, so the WAL stays small on huge prefixes.
const CHUNK: i64 = 10_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forgotten {
    pub scans: i64,
    pub objects: i64,
}

/// What `s3meta forget` is asked.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub db: PathBuf,
    /// `s3://BUCKET[/PREFIX]`: its objects, metadata, errors, changes and scans go.
    pub url: Option<String>,
    /// Change records older than this time (UTC, as the user wrote it) go.
    pub prune_changes_before: Option<String>,
    pub vacuum: bool,
}

/// What a forget did, one line each for a person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetReport {
    pub done: Vec<String>,
}

/// Runs `s3meta forget`. `store` is the store id the connection flags name
/// (`client::store_of`, as `scan` resolves it), needed when a bucket is given.
pub fn run(args: &ForgetOptions, store: Option<&str>) -> Result<ForgetReport, Error> {
    let path = args.db.as_path();
    if args.url.is_none() && args.prune_changes_before.is_none() {
        return Err(Error::BadInput(
            "nothing to forget: give s3://BUCKET[/PREFIX] and/or --prune-changes-before TIME"
                .into(),
        ));
    }
    let before = match &args.prune_changes_before {
        Some(t) => Some(timefmt::parse_user_time(t).ok_or_else(|| {
            Error::BadInput(format!("--prune-changes-before {t:?}: expected a date like 2026-01-31 or 2026-01-31T12:00:00Z"))
        })?),
        None => None,
    };
    let url = args.url.as_deref().map(S3Url::parse).transpose()?;
    if !path.exists() {
        return Err(Error::NoDatabase {
            path: path.to_path_buf(),
        });
    }
    // Declared before the connection, so its descriptor closes after it (lock.rs).
    let _lock = lock::acquire(path)?;
    let mut conn = db::open_rw(path)?;
    let mut report = ForgetReport::default();
    if let Some(url) = url {
        let store = store.ok_or_else(|| Error::Internal("forget: no store resolved".into()))?;
        let dbe = |e| Error::db(path, e);
        let Some(f) = forget_prefix(&mut conn, store, &url.bucket, &url.prefix).map_err(dbe)?
        else {
            return Err(no_such_bucket(&conn, path, store, &url)?);
        };
        report.done.push(format!(
            "forgot {url} at {store}: {} objects, {} scans",
            f.objects, f.scans
        ));
    }
    if let Some(before) = before {
        let n = prune_changes(&conn, &before).map_err(|e| Error::db(path, e))?;
        report
            .done
            .push(format!("pruned {n} change records older than {before}"));
    }
    if args.vacuum {
        conn.execute_batch("VACUUM")
            .map_err(|e| Error::db(path, e))?;
        report.done.push("vacuumed".into());
    }
    db::close_rw(conn, path)?;
    Ok(report)
}

fn no_such_bucket(
    conn: &Connection,
    path: &Path,
    store: &str,
    url: &S3Url,
) -> Result<Error, Error> {
    let others = stores_with_bucket(conn, &url.bucket).map_err(|e| Error::db(path, e))?;
    Ok(Error::BadInput(if others.is_empty() {
        format!(
            "{} holds no bucket `{}` at {store}: nothing to forget",
            path.display(),
            url.bucket
        )
    } else {
        format!(
            "{} holds bucket `{}` only at {}: pass that --endpoint-url",
            path.display(),
            url.bucket,
            others.join(", ")
        )
    }))
}

/// Removes every object of `store`/`bucket` under `prefix`, and the scans within the prefix.
/// Returns `None` when the database has no such bucket at that store.
pub fn forget_prefix(
    conn: &mut Connection,
    store: &str,
    bucket: &str,
    prefix: &str,
) -> rusqlite::Result<Option<Forgotten>> {
    let bucket_id = db::bucket_id(conn, store, bucket)?;
    let Some(bucket_id) = bucket_id else {
        return Ok(None);
    };
    let mut out = Forgotten::default();
    let keys = KeyRange::prefix(KeyOrder::Byte, prefix);
    {
        let tx = conn.transaction()?;
        let (frag, mut args) = keys.sql("prefix");
        args.push((":b", &bucket_id));
        out.scans = tx.execute(
            &format!("DELETE FROM scans WHERE bucket_id = :b{frag}"),
            args.as_slice(),
        )? as i64;
        tx.commit()?;
    }
    let (frag, mut args) = keys.sql("key");
    args.push((":b", &bucket_id));
    args.push((":n", &CHUNK));
    let sql = format!(
        "DELETE FROM objects WHERE object_id IN
           (SELECT object_id FROM objects WHERE bucket_id = :b{frag} LIMIT :n)"
    );
    // The current objects, then the versions of `--all-versions` scans (with their rows).
    for sql in [sql.clone(), crate::store::for_versions(&sql)] {
        loop {
            let n = conn.execute(&sql, args.as_slice())? as i64;
            out.objects += n;
            if n < CHUNK {
                break;
            }
        }
    }
    conn.execute(
        "DELETE FROM buckets WHERE bucket_id = ?1
           AND NOT EXISTS (SELECT 1 FROM objects WHERE bucket_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM versions WHERE bucket_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM scans WHERE bucket_id = ?1)",
        [bucket_id],
    )?;
    Ok(Some(out))
}

/// Deletes change records older than `before` (canonical time text), in bounded
/// transactions. Returns how many.
pub fn prune_changes(conn: &Connection, before: &str) -> rusqlite::Result<i64> {
    let mut total = 0;
    loop {
        let n = conn.execute(
            "DELETE FROM changes WHERE change_id IN
               (SELECT change_id FROM changes WHERE at < ?1 LIMIT ?2)",
            params![before, CHUNK],
        )? as i64;
        total += n;
        if n < CHUNK {
            return Ok(total);
        }
    }
}

/// The stores that hold a bucket of this name (for a helpful error).
pub fn stores_with_bucket(conn: &Connection, bucket: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT store FROM buckets WHERE name = ?1 ORDER BY store")?;
    let rows = stmt.query_map([bucket], |r| r.get(0))?;
    rows.collect()
}
