//! ListObjectsV2: one page from a cursor (a token, or the keys after a key), one-key probes,
//! and what the pages say about the store's key order.
//!
//! Receives: cursors from the scan's range listers (`scan::lister`), the splitter
//! (`s3::probe`) and `estimate`. Sends on: decoded pages, probe answers, and the store's order
//! as far as it is known (`order`). Invariants: every attempt goes through the one retry loop
//! and is counted; keys must arrive strictly increasing in the store's order (S3's byte order,
//! or path-component order), anything else stops the scan (`settle`); a page whose meaning
//! would differ in the two orders is held until the order is established (`settle`); a
//! StartAfter is never sent as a key a path-order store could read as a directory
//! (`KeyOrder::start_after`).

use std::sync::Arc;

use aws_sdk_s3::types::EncodingType;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::keys::{KeyOrder, KeyRange};
use crate::model::stats::Stats;
use crate::model::{Failure, ListedObject, RangeState, Target};
use crate::s3::rate::RateLimit;
use crate::s3::retry::{self, Outcome, Policy, Retrier};

mod decode;
mod order;
mod xml;

pub use decode::VersionMarker;
pub use decode::url_decode;
use decode::{decode_keys, decode_page, decode_versions};
pub use order::{Order, StoredAcross};
pub(crate) use xml::entity;

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
    /// The store's listing order, as far as it is known.
    pub order: Arc<Order>,
    /// The keys split probes answered since the splitter last took them (`Witnesses`).
    pub witnesses: Witnesses,
    /// A ranges' pages are ListObjectVersions pages (`--all-versions`); probes and `Pages`
    /// list current keys (ListObjectsV2) in any case: a cut only needs a key.
    pub versions: bool,
    /// A page fetched before the scan began (`Lister::prefetch`), served once to the request
    /// it answers instead of sending that request again.
    pub first: FirstPage,
}

/// The answer to the first request of a listing, fetched before the database was created
/// (so that a scan which cannot list creates nothing) and handed to the scan's listing.
#[derive(Debug, Default)]
pub struct FirstPage(std::sync::Mutex<Option<(Cursor, Page)>>);

impl FirstPage {
    /// The page, if it answers `cursor` (taken: it is served once).
    fn take(&self, cursor: &Cursor) -> Option<Page> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.take() {
            Some((c, page)) if c == *cursor => Some(page),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Moves the page into a new holder (for the scan's own lister).
    pub fn hand_over(&self) -> FirstPage {
        FirstPage(std::sync::Mutex::new(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).take(),
        ))
    }
}

/// Keys that probes saw, so each range cut from them knows one key it must list.
#[derive(Debug, Default)]
pub struct Witnesses(std::sync::Mutex<Vec<String>>);

impl Witnesses {
    /// At most this many are kept (a split sends a few dozen probes).
    const CAP: usize = 256;

    fn add(&self, key: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < Self::CAP {
            seen.push(key.to_string());
        }
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Where the next ListObjectsV2 request starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub token: Option<String>,
    /// Sent as is (see `KeyOrder::start_after` for what to send).
    pub start_after: Option<String>,
    /// Keys wanted; `None`: the page size.
    pub max_keys: Option<i32>,
    /// Another prefix than the lister's (order probes only).
    pub prefix: Option<String>,
}

impl Cursor {
    /// The page that follows one whose answer gave `token`.
    pub fn token(token: String) -> Cursor {
        Cursor {
            token: Some(token),
            ..Cursor::default()
        }
    }
}

/// One page as listed, keys decoded.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<ListedObject>,
    pub next_token: Option<String>,
    pub truncated: bool,
    /// Listed from a StartAfter, which may also return keys up to the one meant (see
    /// `KeyOrder::start_after`): those are dropped (`Lister::settle`).
    pub from_start_after: bool,
    /// A ListObjectVersions page that may end inside a key (its last entries, the page's
    /// NextKeyMarker): its other versions come on the next page.
    pub partial: Option<String>,
}

impl Page {
    /// The last key whose entries the page lists completely: a versions page can end inside
    /// a key (`partial`), whose other versions come on the next page.
    pub fn last_complete(&self) -> Option<&str> {
        let partial = self.partial.as_deref();
        self.entries
            .iter()
            .rev()
            .map(|o| o.key.as_str())
            .find(|k| partial != Some(*k))
    }

    /// Drops the keys past the range's end; returns the token of the next page, or `None`
    /// once the range is fully listed. A truncated page without a token cannot be followed.
    pub fn clip(&mut self, keys: &KeyRange) -> Result<Option<String>, Error> {
        // Keys are in order, so the first key outside the range ends it.
        let inside = self
            .entries
            .iter()
            .take_while(|o| keys.contains(&o.key))
            .count();
        if inside < self.entries.len() {
            self.entries.truncate(inside);
            return Ok(None);
        }
        if !self.truncated {
            return Ok(None);
        }
        match &self.next_token {
            Some(token) => Ok(Some(token.clone())),
            None => Err(Error::BadListing(
                "a truncated page without a continuation token".into(),
            )),
        }
    }
}

/// One pass over a target's keys, page after page, for the readers that list outside a scan
/// (`estimate`): the steps of a scan's range lister (`scan::lister`) without its prefetch,
/// splits and writer — StartAfter lowered where the order needs it, the page settled
/// (`Lister::settle`) and clipped at the range's end in the store's order.
pub struct Pages<'a> {
    lister: &'a Lister,
    target: Target,
    next: Option<Cursor>,
    prev: Option<String>,
    first: bool,
    /// Pages listed so far.
    pub requests: u64,
}

impl<'a> Pages<'a> {
    pub fn new(lister: &'a Lister, target: &Target) -> Pages<'a> {
        Pages {
            lister,
            target: target.clone(),
            next: Some(lister.after(target.start_after.as_deref())),
            prev: target.start_after.clone(),
            first: true,
            requests: 0,
        }
    }

    /// The next page's keys inside the target; `None` once it is listed.
    pub async fn next(&mut self) -> Result<Option<Vec<ListedObject>>, Error> {
        let Some(cursor) = self.next.take() else {
            return Ok(None);
        };
        let lister = self.lister;
        let mut page = lister
            .fetch_page(cursor)
            .await
            .map_err(|e| lister.fatal(e))?;
        self.requests += 1;
        lister
            .settle(&mut page, self.prev.as_deref(), self.first)
            .await?;
        self.first = false;
        // Settling may have learned the order: the target's keys are taken in it.
        let next = page.clip(&self.target.keys(lister.order.current()))?;
        self.next = next.map(|token| Cursor {
            token: Some(token),
            ..Cursor::default()
        });
        // A versions page can end inside a key: the next page lists it again.
        if let Some(last) = page.last_complete() {
            self.prev = Some(last.to_string());
        }
        Ok(Some(page.entries))
    }
}

impl Lister {
    /// Drops what a StartAfter listed up to the key meant, checks the page's order (learning
    /// the store's from it), and establishes the order before a page that needs it commits
    /// (`Order::page_needs_order`: the target has bounds, or a stored key lies on different
    /// sides of the page's bounds in the two orders) — unless the page is the whole range,
    /// whose window is everything.
    pub async fn settle(
        &self,
        page: &mut Page,
        prev: Option<&str>,
        first: bool,
    ) -> Result<(), Error> {
        if page.from_start_after
            && let Some(p) = prev
        {
            let order = self.order.current();
            let below = page
                .entries
                .iter()
                .take_while(|o| !order.lt(p, &o.key))
                .count();
            page.entries.drain(..below);
        }
        // A versions page lists a key once per version: each key counts once.
        let mut last = None;
        let keys = page.entries.iter().map(|o| o.key.as_str()).filter(|k| {
            let new = last != Some(*k);
            last = Some(*k);
            new
        });
        self.order.observe(self, prev, keys)?;
        if self.order.known().is_some() {
            return Ok(());
        }
        let from = self.prefix.len();
        let listed = page
            .entries
            .iter()
            .find(|o| order::directory_of(&o.key, from).is_some());
        if let Some(o) = listed {
            self.order.remember(&o.key);
        }
        if first && !page.truncated && (prev.is_none() || self.order.bounded) {
            return Ok(()); // the whole range: its window is everything
        }
        // The window's end is the last complete key (a versions page can end inside a key,
        // `Page::partial`); the last listed one is checked too.
        let last = page.entries.last().map(|o| o.key.as_str());
        let ends = [last, page.last_complete()].map(|k| k.filter(|_| page.truncated));
        if !self
            .order
            .page_needs_order(&self.prefix, [prev, ends[0], ends[1]])
            .await?
        {
            return Ok(());
        }
        // Around a key with `/`: one this page lists (it exists), else the key before the
        // page, one listed earlier, or a stored one (each may be gone: two probes).
        if let Some(o) = listed {
            return self.order.resolve(self, &o.key, true).await;
        }
        let earlier = prev
            .filter(|p| order::directory_of(p, from).is_some())
            .map(str::to_string);
        for key in [earlier, self.order.take_seen()].into_iter().flatten() {
            self.order.resolve(self, &key, false).await?;
            if self.order.known().is_some() {
                return Ok(());
            }
        }
        self.order.resolve_anchor(self).await
    }

    /// Establishes the store's order from the first page or, when it does not show it, a
    /// probe around one of its keys (for `plan`, whose cuts must be made in that order).
    pub async fn establish_order(&self) -> Result<(), Error> {
        if self.order.known().is_some() {
            return Ok(());
        }
        let page = self
            .fetch(Cursor::default())
            .await
            .map_err(|e| self.fatal(e))?;
        let keys = page.entries.iter().map(|o| o.key.as_str());
        self.order.observe(self, None, keys)?;
        let from = self.prefix.len();
        match page
            .entries
            .iter()
            .find(|o| order::directory_of(&o.key, from).is_some())
        {
            Some(o) if self.order.known().is_none() => self.order.resolve(self, &o.key, true).await,
            _ => Ok(()),
        }
    }

    /// Establishes the order with a probe around `key` (a listed key), if it is unknown and
    /// `key` has a `/` after the prefix — before cutting ranges, so the cuts are made in it.
    pub async fn learn_order_around(&self, key: &str) -> Result<(), Error> {
        if self.order.known().is_some() || order::directory_of(key, self.prefix.len()).is_none() {
            return Ok(());
        }
        self.order.resolve(self, key, true).await
    }

    /// The keys of a range (start_after, end] of the lister's prefix, in `order`.
    pub fn range_keys(
        &self,
        order: KeyOrder,
        start_after: Option<&str>,
        end: Option<&str>,
    ) -> KeyRange {
        KeyRange::span(order, &self.prefix, start_after, end)
    }

    /// A range cut where a probe saw a key, that listed nothing while the key still exists:
    /// the store answered the range's StartAfter unlike S3 or SeaweedFS (keys would be lost).
    pub async fn check_empty(&self, range: &RangeState) -> Result<(), Error> {
        let Some(witness) = &range.witness else {
            return Ok(());
        };
        let still = self.first_after_raw(None, Some(witness)).await?;
        if still.as_deref() != Some(witness.as_str()) {
            return Ok(()); // deleted meanwhile
        }
        Err(self.order_error(format!(
            "the key range after {:?} listed nothing, yet it holds {witness:?}: the store's StartAfter skips keys",
            range.start_after.as_deref().unwrap_or_default()
        )))
    }

    fn order_error(&self, detail: String) -> Error {
        Error::ListingOrder {
            bucket: self.bucket.clone(),
            store: self.store.clone(),
            detail,
        }
    }

    /// The cursor listing the keys after `key` (from the start with `None`). A StartAfter
    /// lowered below the key answers the key itself first: one key more is asked for, so
    /// pages keep their size.
    pub fn after(&self, key: Option<&str>) -> Cursor {
        let sent = key.map(|k| KeyOrder::start_after(self.order.known(), k));
        let lowered = sent.as_deref() != key;
        Cursor {
            start_after: sent.filter(|s| !s.is_empty()),
            max_keys: lowered.then(|| (self.page_size + 1).min(1000)),
            ..Cursor::default()
        }
    }

    /// The first key after `key` in the store's order (a probe: a LIST of one key), if any.
    /// While the order is unknown, a key with `/` after the prefix is also used to establish
    /// it (callers that compared keys meanwhile check `order.known()` again).
    pub async fn first_after(&self, key: Option<&str>) -> Result<Option<String>, Error> {
        let mut after = key.map(str::to_string);
        // A StartAfter below the key (see `KeyOrder::start_after`) answers the key itself
        // first, so two keys are asked for; more only with keys that start with the lowered
        // StartAfter (hostile ones): skip those, a few probes at most.
        for _ in 0..4 {
            let cursor = self.after(after.as_deref());
            let lowered = cursor.start_after.as_deref() != after.as_deref();
            let cursor = Cursor {
                max_keys: Some(if lowered { 2 } else { 1 }),
                ..cursor
            };
            Stats::add(&self.stats.list_probes, 1);
            let page = self.fetch(cursor).await.map_err(|e| self.fatal(e))?;
            let order = self.order.current();
            let mut listed: Vec<String> = page.entries.into_iter().map(|o| o.key).collect();
            let Some(at) = listed
                .iter()
                .position(|k| key.is_none_or(|key| order.lt(key, k)))
            else {
                match listed.pop() {
                    Some(last) if page.truncated => {
                        after = Some(last);
                        continue;
                    }
                    _ => return Ok(None),
                }
            };
            let found = listed.swap_remove(at);
            if self.order.known().is_none()
                && order::directory_of(&found, self.prefix.len()).is_some()
            {
                self.order.resolve(self, &found, true).await?;
            }
            self.witnesses.add(&found);
            return Ok(Some(found));
        }
        Err(self.order_error(format!("probes after {key:?} keep answering keys up to it")))
    }

    /// The first key after the literal StartAfter `start_after` under `prefix` (default:
    /// the lister's), for probes whose StartAfter semantics are the point.
    async fn first_after_raw(
        &self,
        start_after: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let cursor = Cursor {
            start_after: start_after.map(str::to_string),
            max_keys: Some(1),
            prefix: prefix.map(str::to_string),
            ..Cursor::default()
        };
        Stats::add(&self.stats.list_probes, 1);
        let page = self.fetch(cursor).await.map_err(|e| self.fatal(e))?;
        Ok(page.entries.into_iter().next().map(|o| o.key))
    }

    /// Sends the first request of the listing now and keeps its answer for the listing to
    /// take (`FirstPage`): the store answers, the bucket exists, the credentials may list it —
    /// else the listing's own error, after its retries.
    pub async fn prefetch(&self) -> Result<(), Error> {
        let cursor = Cursor::default();
        let page = self
            .fetch_page(cursor.clone())
            .await
            .map_err(|e| self.fatal(e))?;
        *self.first.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((cursor, page));
        Ok(())
    }

    /// One ListObjectsV2 page as the store sent it, its order not checked (a versions scan's
    /// check that every current key was recorded needs only membership).
    pub async fn fetch_current(&self, cursor: Cursor) -> Result<Page, Error> {
        self.fetch(cursor).await.map_err(|e| self.fatal(e))
    }

    /// A range's next page: ListObjectsV2, or ListObjectVersions in a versions scan.
    pub fn spawn_fetch(self: Arc<Self>, cursor: Cursor) -> JoinHandle<Result<Page, ListError>> {
        tokio::spawn(async move { self.fetch_page(cursor).await })
    }

    /// The next page of the target's listing: ListObjectsV2, or ListObjectVersions in a
    /// versions scan.
    async fn fetch_page(&self, cursor: Cursor) -> Result<Page, ListError> {
        if let Some(page) = self.first.take(&cursor) {
            return Ok(page);
        }
        if self.versions {
            self.fetch_versions(cursor).await
        } else {
            self.fetch(cursor).await
        }
    }

    /// One ListObjectVersions page from a cursor: its token a `VersionMarker`, its StartAfter
    /// a key marker. Parsed by the fast path only (`xml::parse_versions`): the SDK's output
    /// loses the order of versions and delete markers, so a body that path declines stops the
    /// scan with what to report, never a page read wrong.
    async fn fetch_versions(&self, cursor: Cursor) -> Result<Page, ListError> {
        let marker = match &cursor.token {
            Some(t) => Some(VersionMarker::decode(t).ok_or_else(|| {
                ListError::TokenRejected(Failure::transport(format!(
                    "the saved ListObjectVersions position {t:?} cannot be read"
                )))
            })?),
            None => None,
        };
        let subject = format!("LIST versions s3://{}/{}", self.bucket, self.prefix);
        let outcome = retry::run(
            self.retrier(),
            &self.stats.list_requests,
            &subject,
            &(),
            || async {
                let mut req = self
                    .client
                    .list_object_versions()
                    .bucket(&self.bucket)
                    .max_keys(cursor.max_keys.unwrap_or(self.page_size))
                    .encoding_type(EncodingType::Url);
                if !self.prefix.is_empty() {
                    req = req.prefix(&self.prefix);
                }
                if let Some(m) = &marker {
                    req = req
                        .key_marker(&m.key)
                        .set_version_id_marker(m.version_id.clone());
                } else if let Some(s) = &cursor.start_after {
                    req = req.key_marker(s);
                }
                let fast = xml::Skim::versions();
                let taken = fast.slot();
                req.customize()
                    .interceptor(fast)
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk(&e))?;
                let taken = taken.lock().unwrap_or_else(|e| e.into_inner()).take();
                Ok(taken)
            },
        )
        .await;
        let from_start_after = marker.is_none() && cursor.start_after.is_some();
        let page = match outcome {
            Outcome::Ok(Some(raw)) => decode_versions(raw).map_err(ListError::Decode),
            Outcome::Ok(None) => Err(ListError::Decode(
                "the store's ListObjectVersions answer holds XML s3meta's reader does not take (CDATA, comments or elements inside a field, an unknown entity, a version without VersionId); please report it with the store's name and version".into(),
            )),
            Outcome::Cancelled => Err(ListError::Cancelled),
            Outcome::Failed { failure, .. } if marker.is_some() && failure.status == Some(400) => {
                Err(ListError::TokenRejected(failure))
            }
            Outcome::Failed { failure, attempts } => Err(ListError::Failed { failure, attempts }),
        };
        let mut page = page?;
        page.from_start_after = from_start_after;
        self.interleave(&mut page);
        Ok(page)
    }

    /// Puts a versions page in listing order: some stores (moto) send a page's versions and
    /// its delete markers as two lists, each in order; AWS interleaves them. A page already in
    /// order is left as it is. Then keeps `partial` only if the page ends with that key.
    fn interleave(&self, page: &mut Page) {
        let order = self.order.current();
        let cmp = |a: &ListedObject, b: &ListedObject| {
            if order.lt(&a.key, &b.key) {
                std::cmp::Ordering::Less
            } else if order.lt(&b.key, &a.key) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        };
        // While the order is not known, a page in path order is left as it came (sorting it
        // in byte order would teach the wrong order): only one in neither order is sorted.
        let in_order = |o: KeyOrder| page.entries.windows(2).all(|w| !o.lt(&w[1].key, &w[0].key));
        let path_ordered = self.order.known().is_none() && in_order(KeyOrder::Path);
        if !path_ordered && page.entries.windows(2).any(|w| cmp(&w[0], &w[1]).is_gt()) {
            // Stable: each key's entries keep the order they came in.
            page.entries.sort_by(cmp);
        }
        let last = page.entries.last().map(|o| o.key.as_str());
        if page.partial.as_deref() != last {
            page.partial = None;
        }
    }

    async fn fetch(&self, cursor: Cursor) -> Result<Page, ListError> {
        let prefix = cursor.prefix.as_deref().unwrap_or(&self.prefix);
        let subject = format!("LIST s3://{}/{prefix}", self.bucket);
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
                if !prefix.is_empty() {
                    req = req.prefix(prefix);
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
        let from_start_after = cursor.token.is_none() && cursor.start_after.is_some();
        let page = match outcome {
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
        };
        page.map(|p| Page {
            from_start_after,
            ..p
        })
    }

    fn retrier(&self) -> Retrier<'_> {
        Retrier {
            policy: &self.policy,
            stats: &self.stats,
            cancel: &self.cancel,
            pace: self.rate.as_deref(),
        }
    }

    pub fn fatal(&self, e: ListError) -> Error {
        let (failure, attempts) = match e {
            ListError::Failed { failure, attempts } => (failure, attempts),
            ListError::TokenRejected(failure) => (failure, 1),
            ListError::Decode(msg) => return Error::BadListing(msg),
            ListError::Cancelled => return Error::Interrupted,
        };
        let (bucket, prefix, store) =
            (self.bucket.clone(), self.prefix.clone(), self.store.clone());
        if failure.credentials {
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

/// Why a LIST request failed; `Lister::fatal` makes the person-readable error.
#[derive(Debug)]
pub enum ListError {
    Failed { failure: Failure, attempts: u32 },
    TokenRejected(Failure),
    Decode(String),
    Cancelled,
}
