//! A range lister: pages through one key range of a scan.
//!
//! Receives: a range and its checkpoint (continuation token, last committed key). Sends on:
//! each page to the writer, which commits its rows with the new checkpoint in one transaction
//! and answers with the objects that need a HEAD; those go to the HEAD pool. Invariants: the
//! next page is requested before the current one's HEADs are queued, so listing never waits
//! for HEADs; a page is queued for HEAD only after its checkpoint is committed; a page is
//! checked and its order settled (`Lister::settle`) before it goes to the writer.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::keys::KeyRange;
use crate::model::{HeadJob, PageMsg, RangeState, WriterMsg};
use crate::s3::list::{Cursor, ListError, Lister, Page};
use crate::scan::Splits;

/// A range being listed, shared by its lister and the scan's splitter. The lister holds the
/// lock from clipping a page to handing it to the writer, and the splitter holds it from
/// checking the position to handing the split to the writer, so the writer always sees a
/// split before any page that relies on the shortened end.
#[derive(Debug)]
pub struct RangeCtl {
    pub range_no: i64,
    /// The keys of the range (prefix ∩ (start_after, end]) in the order known when they were
    /// built; shortened by a split.
    pub keys: Arc<KeyRange>,
    pub start_after: Option<String>,
    pub end: Option<String>,
    /// Last key of the latest page fetched (the next fetch lists after it).
    pub position: Option<String>,
    pub pages: u64,
    pub done: bool,
    /// `pages` when a split of this range last found nothing to split.
    pub split_tried_at: Option<u64>,
}

pub type SharedRange = Arc<tokio::sync::Mutex<RangeCtl>>;

/// The pages of one range, one request ahead of the page being committed. Dropping it
/// aborts the request in flight.
struct Prefetch {
    lister: Arc<Lister>,
    fetch: JoinHandle<Result<Page, ListError>>,
    /// Until the first page arrives: where to restart if the store rejects the saved token.
    fallback: Option<Option<String>>,
}

impl Prefetch {
    fn start(lister: Arc<Lister>, range: &RangeState) -> Prefetch {
        let start_after = range.last_key.clone().or(range.start_after.clone());
        let cursor = match &range.token {
            Some(token) => Cursor {
                token: Some(token.clone()),
                ..Cursor::default()
            },
            None => lister.after(start_after.as_deref()),
        };
        Prefetch {
            fetch: lister.clone().spawn_fetch(cursor),
            fallback: range.token.is_some().then_some(start_after),
            lister,
        }
    }

    /// Requests the page after the one just received.
    fn request(&mut self, token: String) {
        let cursor = Cursor {
            token: Some(token),
            ..Cursor::default()
        };
        self.fetch = self.lister.clone().spawn_fetch(cursor);
    }

    /// The next page; `None` when the scan is cancelled.
    async fn next(&mut self) -> Result<Option<Page>, Error> {
        loop {
            // Cancel safety: the request in flight is aborted with `self`, losing only an
            // uncommitted page.
            let joined = tokio::select! {
                biased;
                _ = self.lister.cancel.cancelled() => return Ok(None),
                r = &mut self.fetch => r.map_err(|e| Error::Internal(format!("lister: {e}")))?,
            };
            match (joined, self.fallback.take()) {
                (Ok(page), _) => return Ok(Some(page)),
                (Err(ListError::TokenRejected(f)), Some(start_after)) => {
                    tracing::warn!(
                        "the store rejected the saved continuation token ({f}); resuming after the last committed key instead"
                    );
                    let cursor = self.lister.after(start_after.as_deref());
                    self.fetch = self.lister.clone().spawn_fetch(cursor);
                }
                // Cancelled during a retry's back-off: an interruption, not a failure.
                (Err(ListError::Cancelled), _) => return Ok(None),
                (Err(e), _) => return Err(self.lister.fatal(e)),
            }
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.fetch.abort();
    }
}

/// Where a range's listing stands, for the next page's commit.
struct Position {
    range_no: i64,
    prev_last: Option<String>,
}

/// Lists a range from its checkpoint to its (possibly shrinking) end. Returns `Ok(false)`
/// if cancelled first. `listed` is notified after each committed page: at once when ranges
/// are cut whenever a stream is free, else once the page's HEAD jobs are queued, so the
/// scheduler sees how full the HEAD queue is (`Splits`).
pub async fn run(
    lister: Arc<Lister>,
    range: RangeState,
    ctl: SharedRange,
    writer: mpsc::Sender<WriterMsg>,
    heads: mpsc::Sender<HeadJob>,
    (listed, splits): (Arc<Notify>, Splits),
) -> Result<bool, Error> {
    if range.done {
        return Ok(true);
    }
    let mut pages = Prefetch::start(lister.clone(), &range);
    let mut at = Position {
        range_no: range.range_no,
        prev_last: range.last_key.clone().or(range.start_after.clone()),
    };
    let mut first = true;
    let mut listed_any = range.last_key.is_some();
    loop {
        let Some(mut page) = pages.next().await? else {
            return Ok(false);
        };
        lister
            .settle(&mut page, at.prev_last.as_deref(), first)
            .await?;
        first = false;
        let (committed, last_key, done) =
            hand_over(&lister, &ctl, &mut pages, &writer, &at, page).await?;
        listed_any |= last_key.is_some();
        if done && !listed_any {
            lister.check_empty(&range).await?;
        }
        let jobs = committed.await.map_err(|_| writer_gone())?;
        if splits == Splits::Always {
            listed.notify_one();
        }
        if last_key.is_some() {
            at.prev_last = last_key;
        }
        for job in jobs {
            // Cancel safety: an unsent job stays `head_due` in the database.
            tokio::select! {
                _ = lister.cancel.cancelled() => return Ok(false),
                r = heads.send(job) => if r.is_err() { return Ok(false) },
            }
        }
        if splits == Splits::WhenListingBound {
            listed.notify_one();
        }
        if done {
            return Ok(true);
        }
    }
}

/// Clips the page at the range's current end, requests the next one, and hands the page to
/// the writer — under the range's lock, so a split is never overtaken (see `RangeCtl`).
/// Returns the commit receiver, the page's last key, and whether the range is listed.
async fn hand_over(
    lister: &Lister,
    ctl: &SharedRange,
    pages: &mut Prefetch,
    writer: &mpsc::Sender<WriterMsg>,
    at: &Position,
    mut page: Page,
) -> Result<(oneshot::Receiver<Vec<HeadJob>>, Option<String>, bool), Error> {
    let mut range_ctl = ctl.lock().await;
    // The order may have become known since the range's keys were built: its bounds were
    // cut where both orders agree, so they stand (`Order`).
    let order = lister.order.current();
    if range_ctl.keys.order != order {
        let keys = lister.range_keys(
            order,
            range_ctl.start_after.as_deref(),
            range_ctl.end.as_deref(),
        );
        range_ctl.keys = Arc::new(keys);
    }
    let next = page.clip(&range_ctl.keys)?;
    let done = next.is_none();
    if let Some(token) = next {
        pages.request(token);
    }
    if let Some(o) = page.entries.last() {
        range_ctl.position = Some(o.key.clone());
    }
    // A versions page can end inside a key; the checkpoint's key is the last complete one
    // (the range's last page lists its last key completely).
    if done {
        page.partial = None;
    }
    let last_key = page.last_complete().map(str::to_string);
    let partial = page.partial.take();
    range_ctl.pages += 1;
    range_ctl.done = done;
    let msg = PageMsg {
        order: lister.order.known(),
        range_no: at.range_no,
        keys: range_ctl.keys.clone(),
        prev_last: at.prev_last.clone(),
        last_key: last_key.clone(),
        partial,
        next_token: if done { None } else { page.next_token },
        entries: page.entries,
        done,
        reply: oneshot::channel().0,
    };
    let committed = send_page(writer, msg).await?;
    Ok((committed, last_key, done))
}

/// Hands the page to the writer; the receiver yields its HEAD jobs once committed.
async fn send_page(
    writer: &mpsc::Sender<WriterMsg>,
    mut msg: PageMsg,
) -> Result<oneshot::Receiver<Vec<HeadJob>>, Error> {
    let (reply, committed) = oneshot::channel();
    msg.reply = reply;
    writer
        .send(WriterMsg::Page(msg))
        .await
        .map_err(|_| writer_gone())?;
    Ok(committed)
}

pub(crate) fn writer_gone() -> Error {
    Error::WriterGone
}
