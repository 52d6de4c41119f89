//! The lister: pages through ListObjectsV2 for one key range of a scan.
//!
//! Receives: a range and its checkpoint (continuation token, last committed key). Sends on:
//! each page to the writer, which commits its rows with the new checkpoint in one transaction
//! and answers with the objects that need a HEAD; those go to the HEAD pool. Invariants: the
//! next page is requested before the current one's HEADs are queued, so listing never waits
//! for HEADs; a page is queued for HEAD only after its checkpoint is committed; keys must
//! arrive in strictly increasing byte order, or the per-page deletion logic would be wrong, so
//! anything else stops the scan.

use std::sync::Arc;

use aws_sdk_s3::types::EncodingType;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::RangeState;
use crate::error::Error;
use crate::head::HeadJob;
use crate::keyspace::KeyRange;
use crate::limit::RateLimit;
use crate::retry::{self, Failure, Outcome, Policy, Retrier};
use crate::stats::Stats;
use crate::writer::{ListedObject, PageMsg, WriterMsg};

mod decode;
mod xml;

use decode::{decode_keys, decode_page};
pub use decode::{strip_quotes, url_decode};

/// What every range of one scan lists with.
#[derive(Debug)]
pub struct Lister {
    pub client: aws_sdk_s3::Client,
    pub store: String,
    pub bucket: String,
    pub prefix: String,
    pub page_size: i32,
    pub policy: Policy,
    pub stats: Arc<Stats>,
    pub cancel: CancellationToken,
    /// `--max-rps`, shared with the HEAD pool.
    pub rate: Option<Arc<RateLimit>>,
}

/// Where the next ListObjectsV2 request starts.
#[derive(Debug, Clone)]
struct Cursor {
    token: Option<String>,
    start_after: Option<String>,
    /// Keys wanted; `None`: the page size.
    max_keys: Option<i32>,
}

/// One page as listed, keys decoded.
#[derive(Debug)]
struct Page {
    entries: Vec<ListedObject>,
    next_token: Option<String>,
    truncated: bool,
}

/// A range being listed, shared by its lister and the scan's splitter. The lister holds the
/// lock from clipping a page to handing it to the writer, and the splitter holds it from
/// checking the position to handing the split to the writer, so the writer always sees a
/// split before any page that relies on the shortened end.
#[derive(Debug)]
pub struct RangeCtl {
    pub range_no: i64,
    /// The keys of the range (scope ∩ (start_after, end]); shortened by a split.
    pub keys: Arc<KeyRange>,
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
        let cursor = Cursor {
            token: range.token.clone(),
            start_after: start_after.clone(),
            max_keys: None,
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
            start_after: None,
            max_keys: None,
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
                    let cursor = Cursor {
                        token: None,
                        start_after,
                        max_keys: None,
                    };
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

impl Lister {
    /// Lists a range from its checkpoint to its (possibly shrinking) end. Returns `Ok(false)`
    /// if cancelled first. `listed` is notified after each committed page.
    pub async fn run(
        self: Arc<Self>,
        range: RangeState,
        ctl: SharedRange,
        writer: mpsc::Sender<WriterMsg>,
        heads: mpsc::Sender<HeadJob>,
        listed: Arc<Notify>,
    ) -> Result<bool, Error> {
        if range.done {
            return Ok(true);
        }
        let mut pages = Prefetch::start(self.clone(), &range);
        let mut at = Position {
            range_no: range.range_no,
            prev_last: range.last_key.clone().or(range.start_after.clone()),
        };
        loop {
            let Some(page) = pages.next().await? else {
                return Ok(false);
            };
            self.check_order(&page, at.prev_last.as_deref())?;
            let (committed, last_key, done) =
                self.hand_over(&ctl, &mut pages, &writer, &at, page).await?;
            let jobs = committed.await.map_err(|_| writer_gone())?;
            listed.notify_one();
            if last_key.is_some() {
                at.prev_last = last_key;
            }
            for job in jobs {
                // Cancel safety: an unsent job stays `head_due` in the database.
                tokio::select! {
                    _ = self.cancel.cancelled() => return Ok(false),
                    r = heads.send(job) => if r.is_err() { return Ok(false) },
                }
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
        &self,
        ctl: &SharedRange,
        pages: &mut Prefetch,
        writer: &mpsc::Sender<WriterMsg>,
        at: &Position,
        mut page: Page,
    ) -> Result<(oneshot::Receiver<Vec<HeadJob>>, Option<String>, bool), Error> {
        let mut range_ctl = ctl.lock().await;
        let done = clip(&mut page, &range_ctl.keys);
        if !done {
            let Some(token) = page.next_token.clone() else {
                return Err(Error::Internal(
                    "the store said the listing is truncated but gave no continuation token".into(),
                ));
            };
            pages.request(token);
        }
        let last_key = page.entries.last().map(|o| o.key.clone());
        if let Some(k) = &last_key {
            range_ctl.position = Some(k.clone());
        }
        range_ctl.pages += 1;
        range_ctl.done = done;
        let msg = PageMsg {
            range_no: at.range_no,
            keys: range_ctl.keys.clone(),
            prev_last: at.prev_last.clone(),
            last_key: last_key.clone(),
            next_token: if done { None } else { page.next_token },
            entries: page.entries,
            done,
            reply: oneshot::channel().0,
        };
        let committed = self.send_page(writer, msg).await?;
        Ok((committed, last_key, done))
    }

    /// Hands the page to the writer; the receiver yields its HEAD jobs once committed.
    async fn send_page(
        &self,
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

    fn check_order(&self, page: &Page, prev_last: Option<&str>) -> Result<(), Error> {
        let mut prev = prev_last;
        for o in &page.entries {
            if prev.is_some_and(|p| o.key.as_str() <= p) {
                return Err(Error::Internal(format!(
                    "the store listed {:?} after {:?}: s3meta needs listings in UTF-8 byte order, as S3 sends them",
                    o.key,
                    prev.unwrap_or_default()
                )));
            }
            prev = Some(&o.key);
        }
        Ok(())
    }

    /// Lists one page outside a scan (estimates, range planning): its keys and the token of
    /// the next page (`None` at the end).
    pub async fn list_page(
        &self,
        token: Option<String>,
        start_after: Option<String>,
    ) -> Result<(Vec<ListedObject>, Option<String>), Error> {
        let cursor = Cursor {
            token,
            start_after,
            max_keys: None,
        };
        match self.fetch(cursor).await {
            Ok(p) => Ok((p.entries, if p.truncated { p.next_token } else { None })),
            Err(e) => Err(self.fatal(e)),
        }
    }

    /// The first key after `start_after` (a probe: one LIST of one key), if any.
    pub async fn first_after(&self, start_after: Option<&str>) -> Result<Option<String>, Error> {
        let cursor = Cursor {
            token: None,
            start_after: start_after.map(str::to_string),
            max_keys: Some(1),
        };
        match self.fetch(cursor).await {
            Ok(p) => Ok(p.entries.into_iter().next().map(|o| o.key)),
            Err(e) => Err(self.fatal(e)),
        }
    }

    fn spawn_fetch(self: Arc<Self>, cursor: Cursor) -> JoinHandle<Result<Page, ListError>> {
        tokio::spawn(async move { self.fetch(cursor).await })
    }

    async fn fetch(&self, cursor: Cursor) -> Result<Page, ListError> {
        let subject = format!("LIST s3://{}/{}", self.bucket, self.prefix);
        let outcome = retry::run(
            self.retrier(),
            &self.stats.list_requests,
            &subject,
            &(),
            || async {
                let mut req = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .max_keys(cursor.max_keys.unwrap_or(self.page_size))
                    .encoding_type(EncodingType::Url);
                if !self.prefix.is_empty() {
                    req = req.prefix(&self.prefix);
                }
                if let Some(t) = &cursor.token {
                    req = req.continuation_token(t);
                } else if let Some(s) = &cursor.start_after {
                    req = req.start_after(s);
                }
                let fast = xml::Skim::default();
                let taken = fast.slot();
                let out = req
                    .customize()
                    .interceptor(fast)
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk(&e))?;
                let taken = taken.lock().unwrap_or_else(|e| e.into_inner()).take();
                Ok((out, taken))
            },
        )
        .await;
        match outcome {
            Outcome::Ok((_, Some(raw))) => decode_keys(raw).map_err(ListError::Decode),
            Outcome::Ok((out, None)) => {
                tracing::debug!("the LIST fast path declined a page; the SDK parsed it");
                Stats::add(&self.stats.lists_parsed_by_sdk, 1);
                decode_page(out).map_err(ListError::Decode)
            }
            Outcome::Cancelled => Err(ListError::Cancelled),
            Outcome::Failed { failure, .. }
                if cursor.token.is_some() && failure.status == Some(400) =>
            {
                Err(ListError::TokenRejected(failure))
            }
            Outcome::Failed { failure, attempts } => Err(ListError::Failed { failure, attempts }),
        }
    }

    fn retrier(&self) -> Retrier<'_> {
        Retrier {
            policy: &self.policy,
            stats: &self.stats,
            cancel: &self.cancel,
            pace: self.rate.as_deref(),
        }
    }

    fn fatal(&self, e: ListError) -> Error {
        let (failure, attempts) = match e {
            ListError::Failed { failure, attempts } => (failure, attempts),
            ListError::TokenRejected(failure) => (failure, 1),
            ListError::Decode(msg) => return Error::Internal(msg),
            ListError::Cancelled => return Error::Interrupted,
        };
        let (bucket, prefix, store) =
            (self.bucket.clone(), self.prefix.clone(), self.store.clone());
        if failure.is_credentials() {
            return Error::NoCredentials(failure.message);
        }
        match failure.status {
            Some(404) => Error::NoSuchBucket { bucket, store },
            Some(status @ (401 | 403)) => Error::ListDenied {
                bucket,
                prefix,
                store,
                status,
            },
            Some(301 | 307) => Error::ListFailed {
                bucket,
                prefix,
                store,
                attempts,
                detail: "the bucket is in another region: pass --region".into(),
            },
            None => Error::ListFailed {
                bucket,
                prefix,
                store,
                attempts,
                detail: format!(
                    "cannot reach the store ({failure}): check --endpoint-url and the network"
                ),
            },
            Some(_) => Error::ListFailed {
                bucket,
                prefix,
                store,
                attempts,
                detail: failure.to_string(),
            },
        }
    }
}

pub(crate) fn writer_gone() -> Error {
    Error::Internal("the database writer stopped".into())
}

/// Drops the keys past the range's end; returns whether the range is fully listed.
fn clip(page: &mut Page, keys: &KeyRange) -> bool {
    // Keys are in order, so the first key outside the range ends it.
    let inside = page
        .entries
        .iter()
        .take_while(|o| keys.contains(&o.key))
        .count();
    if inside < page.entries.len() {
        page.entries.truncate(inside);
        return true;
    }
    !page.truncated
}

#[derive(Debug)]
enum ListError {
    Failed { failure: Failure, attempts: u32 },
    TokenRejected(Failure),
    Decode(String),
    Cancelled,
}
