//! [`State`]: the server's data and knobs, shared by the S3 layer, the HTTP front end and
//! the tests that drive them.
//!
//! Every method takes `&self` (interior mutability), so a test holding an `Arc<State>` can
//! seed objects, inject faults and read counters while requests are being served, and a
//! restarted server given the same `Arc` serves the same data.
//! Invariant: tokens carry the epoch they were issued in; `rotate_tokens` bumps it, so
//! every earlier token is refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::control::{Control, Fault, Gate, Op};
use crate::store::{Obj, ObjectSpec, Store};

/// The server's objects, counters and injected faults.
pub struct State {
    pub(crate) store: Store,
    /// The SQS queue the store's writes notify (see `notify`).
    pub(crate) sqs: Arc<crate::sqs::Sqs>,
    pub(crate) control: Control,
    listing_etags: AtomicBool,
    path_order: AtomicBool,
    /// See `set_lossy_version_pages`.
    lossy_version_pages: AtomicBool,
    token_epoch: AtomicU64,
    signatures: Mutex<BTreeMap<Signature, u64>>,
    pub(crate) uploads: crate::multipart::Uploads,
}

/// How a request was signed, as [`State::signatures`] counts them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signature {
    /// No `Authorization` header.
    Unsigned,
    /// Signed; the `x-amz-security-token` it carried, if any.
    Signed { session_token: Option<String> },
}

impl State {
    /// An empty server state: no buckets, no faults, listings with ETags.
    pub fn new() -> Arc<State> {
        let sqs = Arc::new(crate::sqs::Sqs::default());
        Arc::new(State {
            store: Store::new(sqs.clone()),
            sqs,
            control: Control::new(),
            listing_etags: AtomicBool::new(true),
            path_order: AtomicBool::new(false),
            lossy_version_pages: AtomicBool::new(false),
            token_epoch: AtomicU64::new(0),
            signatures: Mutex::new(BTreeMap::new()),
            uploads: crate::multipart::Uploads::default(),
        })
    }

    /// Creates `bucket` if it does not exist.
    pub fn create_bucket(&self, bucket: &str) {
        self.store.create_bucket(bucket);
    }

    /// Stores an object (creating the bucket if needed) with `body` and user metadata
    /// `meta`; returns its ETag (hex MD5, no quotes).
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        meta: &[(&str, &str)],
    ) -> String {
        let spec = ObjectSpec {
            body: Some(body.to_vec()),
            meta: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..ObjectSpec::default()
        };
        self.put_object_with(bucket, key, spec)
    }

    /// Stores an object described field by field (creating the bucket if needed); returns
    /// its ETag (no quotes).
    pub fn put_object_with(&self, bucket: &str, key: &str, spec: ObjectSpec) -> String {
        let obj = Obj::from_spec(spec);
        let etag = obj.etag().into_owned();
        // Cannot fail: `create` is set.
        let _ = self.store.put(bucket, key, obj, true);
        etag
    }

    /// Replaces an object's tags (PutObjectTagging: ETag and Last-Modified stay); whether
    /// the object exists.
    pub fn set_tags(&self, bucket: &str, key: &str, tags: &[(&str, &str)]) -> bool {
        let tags = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.store.set_tags(bucket, key, tags).unwrap_or(false)
    }

    /// Turns versioning on for `bucket`: from now on a put adds a version and a delete a
    /// delete marker; the objects already there are their key's `null` version.
    pub fn enable_versioning(&self, bucket: &str) {
        self.store.enable_versioning(bucket);
    }

    /// Deletes one version of a key for good (a lifecycle expiry); the key's newest remaining
    /// version becomes current. Whether it existed.
    pub fn delete_version(&self, bucket: &str, key: &str, version_id: &str) -> bool {
        self.store.delete_version(bucket, key, version_id)
    }

    /// `true`: every continued ListObjectVersions page skips the first key it would list
    /// (all its versions), as SeaweedFS 4.48 loses keys when it pages versions.
    pub fn set_lossy_version_pages(&self, on: bool) {
        self.lossy_version_pages.store(on, Ordering::SeqCst);
    }

    pub(crate) fn lossy_version_pages(&self) -> bool {
        self.lossy_version_pages.load(Ordering::SeqCst)
    }

    /// A key's version ids, newest first (empty in a bucket without versioning).
    pub fn version_ids(&self, bucket: &str, key: &str) -> Vec<String> {
        self.store.version_ids(bucket, key)
    }

    /// S3 event notifications of `bucket`'s writes (put, copy, delete, tagging — over HTTP
    /// and through these methods alike) to the server's SQS queue: `Some(true)` with a
    /// per-key `sequencer` as AWS sends, `Some(false)` without one (as moto), `None` off.
    pub fn notify(&self, bucket: &str, sequencer: Option<bool>) {
        self.sqs.set_notify(bucket, sequencer);
    }

    /// Adds a message with this body to the queue as it is (malformed ones, duplicates).
    pub fn sqs_send_raw(&self, body: &str) {
        self.sqs.send_raw(body.to_string());
    }

    /// Every message body the queue was ever sent, in order.
    pub fn sqs_sent(&self) -> Vec<String> {
        self.sqs.sent()
    }

    /// Messages in the queue not deleted yet, visible or not.
    pub fn sqs_len(&self) -> usize {
        self.sqs.len()
    }

    /// How long a received message stays invisible (default 30 s).
    pub fn sqs_set_visibility(&self, d: Duration) {
        self.sqs.set_visibility(d);
    }

    /// Every received, undeleted message becomes visible now (its visibility timeout over).
    pub fn sqs_expire_visibility(&self) {
        self.sqs.expire_visibility();
    }

    /// Removes an object; whether it existed.
    pub fn delete_object(&self, bucket: &str, key: &str) -> bool {
        self.store.delete(bucket, key).unwrap_or(false)
    }

    /// Adds `n` deterministic objects `data/{i % 100:02}/obj-{i:08}` (bucket created if
    /// needed): bodies of 16–63 bytes derived from `seed`; two of every three objects carry
    /// the metadata `owner`, `project` and `checksum`. A million take a few seconds and
    /// about 100 MB.
    pub fn fill(&self, bucket: &str, n: usize, seed: u64) {
        self.store.fill(bucket, n, seed);
    }

    /// Multipart uploads: (in progress, completed, aborted).
    pub fn multipart_counts(&self) -> (usize, u64, u64) {
        self.uploads.counts()
    }

    /// An object's body and ETag (`None` if it does not exist).
    pub fn object_body(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, String)> {
        let obj = self.store.get(bucket, key).ok()??;
        Some((obj.body().to_vec(), obj.etag().into_owned()))
    }

    /// The keys of `bucket`, in order.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.store
            .with_bucket(bucket, |objects| {
                objects.keys().map(|k| k.to_string()).collect()
            })
            .unwrap_or_default()
    }

    /// Number of objects in `bucket` (0 if it does not exist).
    pub fn object_count(&self, bucket: &str) -> usize {
        self.store.object_count(bucket)
    }

    /// `false`: listing entries carry no ETag (like s3s-fs). Default `true`.
    pub fn set_listing_etags(&self, on: bool) {
        self.listing_etags.store(on, Ordering::SeqCst);
    }

    pub(crate) fn listing_etags(&self) -> bool {
        self.listing_etags.load(Ordering::SeqCst)
    }

    /// `true`: list as SeaweedFS does — keys in path-component order (`/` before every other
    /// character: `a, a/b, a!x, a.c, a0`), and StartAfter=S skipping the keys under `S/`
    /// unless S ends with `/` (see `listing::list_page_by_path`); ListObjectVersions pages
    /// list their keys in path order too. Default `false` (S3).
    pub fn set_path_order(&self, on: bool) {
        self.path_order.store(on, Ordering::SeqCst);
    }

    pub(crate) fn path_order(&self) -> bool {
        self.path_order.load(Ordering::SeqCst)
    }

    /// How long ago objects written from now on were last modified (default 10 s), so that a
    /// scan right after a write sees them as the stores' clocks would a while later: a HEAD
    /// within a second of an object's Last-Modified makes s3meta HEAD it again next time.
    /// `Duration::ZERO` reproduces a scan in the second of the write.
    pub fn set_object_age(&self, age: Duration) {
        self.store.set_age(age);
    }

    /// Freezes the server's clock at `at` (`None`: the real clock again): objects written are
    /// stamped from it (less their age), and every answer's `Date` header says it.
    pub fn set_clock(&self, at: Option<std::time::SystemTime>) {
        let ms = at.map(|t| {
            let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX).max(1)
        });
        self.store.set_clock(ms);
    }

    pub(crate) fn frozen_clock(&self) -> Option<std::time::SystemTime> {
        let ms = self.store.frozen_clock()?;
        Some(std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).ok()?))
    }

    /// `true`: Last-Modified has whole seconds (listings too, as many stores do), and a
    /// rewrite in the same second keeps it (default `false`: milliseconds, always later).
    pub fn set_whole_seconds(&self, on: bool) {
        self.store.set_whole_seconds(on);
    }

    /// Requests of `op` that have arrived (including ones answered by a fault).
    pub fn requests(&self, op: Op) -> u64 {
        self.control.requests(op)
    }

    /// Requests of every op that have arrived (admin requests are not counted).
    pub fn total_requests(&self) -> u64 {
        self.control.total()
    }

    /// Requests of `op` arrived and not yet answered (or abandoned).
    pub fn in_flight(&self, op: Op) -> u64 {
        self.control.in_flight(op)
    }

    /// Most requests of `op` in flight at once since start or `reset_counters`.
    pub fn peak_in_flight(&self, op: Op) -> u64 {
        self.control.peak_in_flight(op)
    }

    /// Seconds requests of `op` spent in flight since start or `reset_counters`, summed over
    /// requests (∫ in_flight dt; a request is added when it leaves).
    pub fn busy_seconds(&self, op: Op) -> f64 {
        self.control.busy_seconds(op)
    }

    /// Mean number of `op` requests in flight since start or `reset_counters` (Little's law:
    /// busy seconds ÷ seconds elapsed).
    pub fn mean_in_flight(&self, op: Op) -> f64 {
        self.control.busy_seconds(op) / self.control.counted_seconds().max(1e-6)
    }

    /// Zeroes request counts and busy times; peaks restart from what is in flight now.
    pub fn reset_counters(&self) {
        self.control.reset_counters();
        self.signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// S3 requests since start or `reset_counters`, by how they were signed (s3s checks the
    /// signature; this says what it covered).
    pub fn signatures(&self) -> BTreeMap<Signature, u64> {
        self.signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn note_signature(&self, headers: &http::HeaderMap) {
        let signature = if headers.contains_key(http::header::AUTHORIZATION) {
            Signature::Signed {
                session_token: headers
                    .get("x-amz-security-token")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            }
        } else {
            Signature::Unsigned
        };
        *self
            .signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(signature)
            .or_default() += 1;
    }

    /// Resolves once `n` requests of `op` (of any op when `None`) have arrived.
    pub async fn wait_for_requests(&self, op: Option<Op>, n: u64) {
        self.control
            .wait_until(|| match op {
                Some(op) => self.requests(op) >= n,
                None => self.total_requests() >= n,
            })
            .await;
    }

    /// Adds a fault after the existing ones (the first match wins).
    pub fn add_fault(&self, fault: Fault) {
        self.control.add_fault(fault);
    }

    /// Removes every fault, hold, latency and slowdown rule.
    pub fn clear_faults(&self) {
        self.control.clear();
    }

    /// Adds `d` to every request of `op` (of every op when `None`; both add up).
    pub fn set_latency(&self, op: Option<Op>, d: Duration) {
        self.control.set_latency(op, d);
    }

    /// Answers 503 SlowDown whenever more than `k` requests of `op` are in flight, counting
    /// the new one; `None` turns it off.
    pub fn slowdown_above_in_flight(&self, op: Op, k: Option<u64>) {
        self.control.set_slowdown_above(op, k);
    }

    /// Answers 503 SlowDown to a pseudo-random `rate` (0.0–1.0) of `op` requests, whatever
    /// the load, as a flaky proxy does: the n-th request after this call is refused iff a hash
    /// of (`seed`, n) falls below `rate`, so a seed refuses the same arrivals on every run.
    /// `None` turns it off. Requests refused by `slowdown_above_in_flight` do not draw.
    pub fn slowdown_at_random(&self, op: Op, rate: Option<f64>, seed: u64) {
        self.control.set_random_slowdown(op, rate, seed);
    }

    /// Holds every request of `op` unanswered until `until` opens, then lets them all go
    /// (and later ones pass while it stays open).
    pub fn hold(&self, op: Op, until: Gate) {
        self.control.hold(op, until);
    }

    /// Removes the hold on `op`, releasing its held requests now.
    pub fn release(&self, op: Op) {
        self.control.release(op);
    }

    /// Makes every continuation token issued so far invalid (400 InvalidArgument).
    pub fn rotate_tokens(&self) {
        self.token_epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn token_epoch(&self) -> u64 {
        self.token_epoch.load(Ordering::SeqCst)
    }
}
