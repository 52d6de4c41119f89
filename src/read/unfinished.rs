//! What a reader's answer does not know yet: objects in its scope that an unfinished scan has
//! listed but not read (HEADed), so their metadata is unknown (issue 18).
//!
//! Receives: the database and a scope (bucket, prefix, current objects or versions). Sends
//! on: how many objects in the scope are owed a HEAD, and the unfinished scans whose targets
//! meet the scope (the binary turns them into one line on stderr with the command that
//! finishes them). Invariant: only read; the count walks the partial `head_due` index, so it
//! costs the size of the backlog, not of the bucket.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::keys::{KeyOrder, KeyRange};
use crate::model::{ObjectState, ScanState};
use crate::store::{db, for_versions};

/// An unfinished scan whose target meets the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedScan {
    pub scan_id: i64,
    pub store: String,
    pub bucket: String,
    pub prefix: String,
    /// `running` (another process may be scanning now) or `interrupted`.
    pub state: ScanState,
    /// A `--range-json` scan: its own command line is in `s3meta plan`'s output.
    pub range: bool,
    pub versions: bool,
}

/// Objects in a scope that are not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// Objects (or versions) listed and owed a HEAD.
    pub objects: i64,
    pub scans: Vec<UnfinishedScan>,
}

/// `None` when every object in the scope has been read (or the database has no such scope).
pub fn in_scope(
    path: &Path,
    bucket: Option<&str>,
    prefix: Option<&str>,
    versions: bool,
) -> Result<Option<Unread>> {
    let conn = db::open_ro(path)?;
    read(&conn, bucket, prefix, versions).map_err(|e| Error::db(path, e))
}

pub fn read(
    conn: &Connection,
    bucket: Option<&str>,
    prefix: Option<&str>,
    versions: bool,
) -> rusqlite::Result<Option<Unread>> {
    let range = KeyRange::prefix(KeyOrder::Byte, prefix.unwrap_or(""));
    let (keys, mut params) = range.sql("o.key");
    params.push((":bucket", &bucket));
    let sql = format!(
        "SELECT count(*) FROM objects o JOIN buckets b USING (bucket_id)
         WHERE o.head_due = 1 AND o.state != {} AND (:bucket IS NULL OR b.name = :bucket){keys}",
        ObjectState::Gone.sql()
    );
    let sql = if versions { for_versions(&sql) } else { sql };
    let objects: i64 = conn.query_row(&sql, params.as_slice(), |r| r.get(0))?;
    if objects == 0 {
        return Ok(None);
    }
    let mut stmt = conn.prepare(
        "SELECT s.scan_id, b.store, b.name, s.prefix, s.state,
                s.start_after IS NOT NULL OR s.end_key IS NOT NULL
         FROM scans s JOIN buckets b USING (bucket_id)
         WHERE s.state IN ('running', 'interrupted') AND s.follow = 0 AND s.versions = ?1
           AND (?2 IS NULL OR b.name = ?2)
         ORDER BY s.scan_id",
    )?;
    let prefix = prefix.unwrap_or("");
    let scans = stmt
        .query_map(rusqlite::params![versions, bucket], |r| {
            Ok(UnfinishedScan {
                scan_id: r.get(0)?,
                store: r.get(1)?,
                bucket: r.get(2)?,
                prefix: r.get(3)?,
                state: r.get(4)?,
                range: r.get(5)?,
                versions,
            })
        })?
        .filter(|s| {
            // The scan's keys and the scope's meet when one prefix starts the other.
            s.as_ref().map_or(true, |s| {
                s.prefix.starts_with(prefix) || prefix.starts_with(&s.prefix)
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(Unread { objects, scans }))
}
