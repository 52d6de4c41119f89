//! The resume feeder: the HEADs an interrupted scan still owes.
//!
//! Receives: the scan's ranges with their committed checkpoints. Sends on: a `HeadJob` for
//! every object of those ranges marked `head_due` (then `tags_due`: a `--tags=all` rescan's
//! tag reads) up to the checkpoint (the whole range once it is listed: later keys are listed
//! again), in key order, a chunk at a time, into the HEAD pool's bounded queue. Invariant: it
//! runs beside the listers, never ahead of them, so a backlog of owed HEADs does not hold
//! listing back; an unsent job stays owed in the database.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::keys::KeyRange;
use crate::model::{HeadJob, RangeState, Work};
use crate::s3::list::VersionMarker;
use crate::store::scans;

/// How many owed HEADs the feeder reads per query.
const FEED_CHUNK: i64 = 1000;

/// Where the owed HEADs are, and where they go.
pub(super) struct Owed {
    pub conn: tokio_rusqlite::Connection,
    pub db_path: PathBuf,
    pub bucket_id: i64,
    /// A versions scan: the owed HEADs are of versions.
    pub versions: bool,
    /// The scan whose owed tag reads are fed.
    pub scan_id: i64,
    /// The scan's keyspace, in the store's order.
    pub keys: KeyRange,
    pub jobs: mpsc::Sender<HeadJob>,
    pub cancel: CancellationToken,
}

impl Owed {
    /// Queues the owed HEADs of every range, up to its checkpoint.
    pub async fn feed(self, ranges: &[RangeState]) -> Result<(), Error> {
        let order = self.keys.order;
        for range in ranges {
            // A versions range's checkpoint can be inside a key (`PageMsg::partial`): the
            // versions of that key it committed are owed too; its listing goes on after them.
            let inside = match (&range.token, self.versions) {
                (Some(token), true) => VersionMarker::decode(token).map(|m| m.key),
                _ => None,
            };
            let upto = if range.done {
                range.end_key.as_ref()
            } else {
                inside.as_ref().or(range.last_key.as_ref())
            };
            if !range.done && upto.is_none() {
                continue;
            }
            let keys = self.keys.intersect(&KeyRange::between(
                order,
                range.start_after.as_deref(),
                upto.map(String::as_str),
            ));
            for work in [Work::Head, Work::Tags] {
                if !self.feed_range(&keys, work).await? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Queues, in key order and a chunk at a time, the objects of `keys` still owed `work`;
    /// `false` once the scan is cancelled (or the pool gone).
    async fn feed_range(&self, keys: &KeyRange, work: Work) -> Result<bool, Error> {
        let mut after: Option<(String, i64)> = None;
        loop {
            let (k, a, path) = (keys.clone(), after.clone(), self.db_path.clone());
            let (bucket_id, scan_id, versions) = (self.bucket_id, self.scan_id, self.versions);
            let chunk = self
                .conn
                .call(move |c| {
                    let a = a.as_ref().map(|(k, id)| (k.as_str(), *id));
                    scans::due_work(c, versions, bucket_id, scan_id, &k, work, a, FEED_CHUNK)
                        .map_err(|e| Error::db(&path, e))
                })
                .await
                .map_err(|e| Error::from_async_db(&self.db_path, e))?;
            let Some(last) = chunk.last() else {
                return Ok(true);
            };
            after = Some((last.key.clone(), last.object_id));
            for job in chunk {
                // Cancel safety: an unsent job stays `head_due` in the database.
                tokio::select! {
                    _ = self.cancel.cancelled() => return Ok(false),
                    r = self.jobs.send(job) => if r.is_err() { return Ok(false) },
                }
            }
        }
    }
}
