//! `s3meta estimate`: what a scan or a rescan would send, and what it would cost, from a
//! listing alone (no HEAD).
//!
//! Receives: a lister for the target and, when the database has the bucket, a read-only
//! connection. Sends on: counts of LIST and HEAD requests for a full scan and for a rescan
//! against the current database, priced per 1,000 requests. Invariant: the rescan count uses
//! the writer's own rule (`Stored::unchanged`), so the estimate and the scan never disagree.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use serde::Serialize;

use crate::error::Error;
use crate::model::Target;
use crate::s3::list::Lister;
use crate::store::db;
use crate::store::writer::stored;

/// AWS S3 Standard request prices in USD per 1,000 requests (us-east-1, 2026).
pub const LIST_PRICE: f64 = 0.005;
pub const HEAD_PRICE: f64 = 0.0004;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Estimate {
    pub objects: u64,
    pub list_requests: u64,
    /// HEADs of a full scan (every object).
    pub full_heads: u64,
    /// HEADs of a rescan against the database: new, changed or never successfully HEADed
    /// objects. `None` when no completed scan covers the target (the next scan is full).
    pub rescan_heads: Option<u64>,
    pub full_cost_usd: f64,
    pub rescan_cost_usd: Option<f64>,
    /// What `s3meta scan` would do now: `full` or `rescan`.
    pub next_scan: &'static str,
}

/// Lists the target page by page and counts.
pub async fn run(
    lister: Arc<Lister>,
    target: &Target,
    db_path: &Path,
    prices: (f64, f64),
) -> Result<Estimate, Error> {
    let known = open_known(db_path, target)?;
    let keys = target.keys(lister.order.current());
    let (mut objects, mut pages, mut to_head) = (0u64, 0u64, 0u64);
    let mut token: Option<String> = None;
    loop {
        let start_after = if pages == 0 {
            target.start_after.clone()
        } else {
            None
        };
        let (entries, next) = lister.list_page(token.take(), start_after).await?;
        pages += 1;
        let listed = entries.len();
        let inside: Vec<_> = entries
            .into_iter()
            .take_while(|e| keys.contains(&e.key))
            .collect();
        objects += inside.len() as u64;
        if let Some((conn, bucket_id, _)) = &known {
            for e in &inside {
                let s = stored(conn, *bucket_id, &e.key).map_err(|err| Error::db(db_path, err))?;
                to_head += u64::from(!s.is_some_and(|s| s.unchanged(e)));
            }
        }
        // Past the end of the range, or the end of the listing.
        if inside.len() < listed || next.is_none() {
            break;
        }
        token = next;
    }
    let (list_price, head_price) = prices;
    let cost = |heads: u64| (pages as f64 * list_price + heads as f64 * head_price) / 1000.0;
    let covered = known.as_ref().is_some_and(|k| k.2);
    Ok(Estimate {
        objects,
        list_requests: pages,
        full_heads: objects,
        rescan_heads: covered.then_some(to_head),
        full_cost_usd: cost(objects),
        rescan_cost_usd: covered.then(|| cost(to_head)),
        next_scan: if covered { "rescan" } else { "full" },
    })
}

/// The read-only database, the bucket's id and whether a completed scan covers the target.
fn open_known(db_path: &Path, target: &Target) -> Result<Option<(Connection, i64, bool)>, Error> {
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
    Ok(Some((conn, bucket_id, covered)))
}
