//! `s3meta estimate`: what a scan or a rescan would send, and what it would cost, from a
//! listing alone (no HEAD).
//!
//! Receives: a lister for the target and, when the database has the bucket, a read-only
//! connection. Sends on: counts of LIST and HEAD requests for a full scan and for a rescan
//! against the current database, priced per 1,000 requests, and what `--tags` adds. Invariant: the rescan count uses
//! the writer's own rule (`Stored::unchanged`), so the estimate and the scan never disagree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use serde::Serialize;

use crate::error::Error;
use crate::model::{ListedObject, Target};
use crate::s3::list::{Lister, Pages};
use crate::store::db;
use crate::store::writer::{stored, version_rescan_heads};

/// AWS S3 Standard request prices in USD per 1,000 requests (us-east-1, 2026).
pub const LIST_PRICE: f64 = 0.005;
pub const HEAD_PRICE: f64 = 0.0004;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Estimate {
    /// Entries listed: objects, or with `--all-versions` versions and delete markers.
    pub objects: u64,
    /// `--all-versions`: the entries are versions, listed with ListObjectVersions.
    pub all_versions: bool,
    /// Of `objects`, delete markers (never HEADed); 0 without `--all-versions`.
    pub delete_markers: u64,
    /// LIST requests of the scan: its listing's pages, and with `--all-versions` also the
    /// ListObjectsV2 pass over the current keys that checks the versions listing
    /// (`VersionsIncomplete`), at 1,000 keys a page.
    pub list_requests: u64,
    /// HEADs of a full scan (every object, or every version that is not a marker).
    pub full_heads: u64,
    /// HEADs of a rescan against the database: new, changed or never successfully HEADed
    /// objects. `None` when no completed scan covers the target (the next scan is full).
    pub rescan_heads: Option<u64>,
    pub full_cost_usd: f64,
    pub rescan_cost_usd: Option<f64>,
    /// GetObjectTagging requests `--tags` adds, at most (one per object a HEAD does not
    /// count 0 — AWS sends no count for an untagged object, which is "not known"): a full
    /// scan's, a `--tags` (all) rescan's (every object: HEADed ones, and unchanged ones read
    /// alone), a `--tags=skip-unchanged` rescan's (the HEADed ones).
    pub tags_full: u64,
    pub tags_rescan: Option<u64>,
    pub tags_rescan_skip_unchanged: Option<u64>,
    /// What `s3meta scan` would do now: `full` or `rescan`.
    pub next_scan: &'static str,
    /// The price of 1,000 HEAD (and GetObjectTagging: the same GET class) requests used.
    pub head_price: f64,
}

/// Lists the target page by page and counts.
pub async fn run(
    lister: Arc<Lister>,
    target: &Target,
    db_path: &Path,
    prices: (f64, f64),
) -> Result<Estimate, Error> {
    // The database work (opening it, a point query per listed key) runs off the async
    // threads, a page at a time.
    let (path, t) = (db_path.to_path_buf(), target.clone());
    let mut known = blocking(move || open_known(&path, &t)).await?;
    let covered = known.as_ref().is_some_and(|k| k.covered);
    let (mut objects, mut to_head, mut markers, mut current) = (0u64, 0u64, 0u64, 0u64);
    let mut pages = Pages::new(&lister, target);
    while let Some(entries) = pages.next().await? {
        objects += entries.len() as u64;
        for v in entries.iter().filter_map(|e| e.version.as_ref()) {
            markers += u64::from(v.delete_marker);
            current += u64::from(v.is_latest && !v.delete_marker);
        }
        if let Some(k) = known.take() {
            let (k, n) = blocking(move || {
                let n = k.to_head(&entries);
                n.map(|n| (k, n))
            })
            .await?;
            known = Some(k);
            to_head += n;
        }
    }
    let mut pages = pages.requests;
    if target.versions {
        pages += current.div_ceil(1000).max(1);
    }
    let full_heads = objects - markers;
    let (list_price, head_price) = prices;
    let cost = |heads: u64| (pages as f64 * list_price + heads as f64 * head_price) / 1000.0;
    Ok(Estimate {
        objects,
        all_versions: target.versions,
        delete_markers: markers,
        list_requests: pages,
        full_heads,
        rescan_heads: covered.then_some(to_head),
        full_cost_usd: cost(full_heads),
        rescan_cost_usd: covered.then(|| cost(to_head)),
        tags_full: full_heads,
        tags_rescan: covered.then_some(full_heads),
        tags_rescan_skip_unchanged: covered.then_some(to_head),
        head_price,
        next_scan: if covered { "rescan" } else { "full" },
    })
}

/// What the database knows of the target.
struct Known {
    path: PathBuf,
    conn: Connection,
    bucket_id: i64,
    /// A completed scan covers the target.
    covered: bool,
    /// The target is a versions target (`--all-versions`).
    versions: bool,
}

impl Known {
    /// How many of `entries` a rescan would HEAD (the writer's own rule).
    fn to_head(&self, entries: &[ListedObject]) -> Result<u64, Error> {
        let mut n = 0;
        let dbe = |err| Error::db(&self.path, err);
        for e in entries {
            n += u64::from(if self.versions {
                version_rescan_heads(&self.conn, self.bucket_id, e).map_err(dbe)?
            } else {
                let s = stored(&self.conn, self.bucket_id, &e.key).map_err(dbe)?;
                !s.is_some_and(|s| s.unchanged(e))
            });
        }
        Ok(n)
    }
}

/// Runs blocking database work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("the estimate's database task failed: {e}")))?
}

/// The read-only database, if it has the bucket.
fn open_known(db_path: &Path, target: &Target) -> Result<Option<Known>, Error> {
    if !db_path.exists() {
        return Ok(None);
    }
    let conn = db::open_ro(db_path)?;
    let dbe = |e| Error::db(db_path, e);
    let bucket_id = db::bucket_id(&conn, &target.store, &target.bucket).map_err(dbe)?;
    let Some(bucket_id) = bucket_id else {
        return Ok(None);
    };
    let covered = crate::store::scans::covered(&conn, bucket_id, target).map_err(dbe)?;
    Ok(Some(Known {
        path: db_path.to_path_buf(),
        conn,
        bucket_id,
        covered,
        versions: target.versions,
    }))
}
