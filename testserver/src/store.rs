//! The in-memory object store: buckets of objects kept in UTF-8 byte order of their keys.
//!
//! Receives writes from the S3 layer and from tests (`put`, `delete`, `fill`); answers
//! lookups and listing scans. Invariants: a rewrite of a key always gets a strictly later
//! `last_modified_ms` than the version it replaces (unless whole seconds are asked for, as
//! some stores keep them); objects made by `fill` keep only
//! their size, time and a seed (body, ETag and metadata are regenerated on demand), so a
//! million of them fit in about 100 MB.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::sqs::{Change, Sqs};
use crate::versions::{History, Version};

/// Content-Type S3 stores when a PUT names none.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// How a test describes an object to [`crate::State::put_object_with`]; every field is
/// optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The body; when `None` the object is `body_len` zero bytes that are not stored.
    pub body: Option<Vec<u8>>,
    /// Size when `body` is `None` (default 0).
    pub body_len: Option<u64>,
    /// ETag without quotes (quotes are stripped if given). Default: hex MD5 of `body`, or
    /// for a body given only as `body_len`, hex MD5 of the decimal length.
    pub etag: Option<String>,
    /// User metadata; names are lower-cased when stored, as S3 does.
    pub meta: Vec<(String, String)>,
    /// Default `binary/octet-stream`.
    pub content_type: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Expires`, returned verbatim (S3 keeps whatever string was sent).
    pub expires: Option<String>,
    /// Storage class; `None` is `STANDARD`.
    pub storage_class: Option<String>,
    /// Value of `x-amz-missing-meta` on HEAD/GET.
    pub missing_meta: Option<u32>,
    /// Object tags (GetObjectTagging); HEAD then sends `x-amz-tagging-count` when there are
    /// any, as AWS does.
    pub tags: Vec<(String, String)>,
    /// Further headers HEAD and GET answer with, verbatim (encryption, checksums, object
    /// lock, replication, restore, `x-amz-tagging-count: 0` …); they replace any the
    /// server would send itself.
    pub headers: Vec<(String, String)>,
}

/// Everything about an object except size, ETag and time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Details {
    /// `None`: `size` zero bytes.
    pub body: Option<Bytes>,
    /// Sorted by name, names lower-case.
    pub meta: Vec<(String, String)>,
    pub content_type: String,
    pub cache_control: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub expires: Option<String>,
    /// `None` is `STANDARD`.
    pub storage_class: Option<String>,
    pub missing_meta: Option<u32>,
    /// Sorted by key.
    pub tags: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
enum Attrs {
    /// Made by `fill`: body, ETag and details regenerated from the seed (32 bytes an
    /// object instead of about 100).
    Generated { seed: u64, with_meta: bool },
    /// ETag and details.
    Full(Box<(String, Details)>),
}

/// One stored object.
#[derive(Clone, Debug)]
pub(crate) struct Obj {
    pub size: u64,
    pub last_modified_ms: i64,
    attrs: Attrs,
}

impl Obj {
    /// Builds an object from a test's description; time is set by `Store::put`.
    pub fn from_spec(spec: ObjectSpec) -> Obj {
        let size = spec
            .body
            .as_ref()
            .map_or(spec.body_len.unwrap_or(0), |b| b.len() as u64);
        let etag = match (&spec.etag, &spec.body) {
            (Some(e), _) => e.trim_matches('"').to_owned(),
            (None, Some(body)) => md5_hex(body),
            (None, None) => md5_hex(size.to_string().as_bytes()),
        };
        let mut meta: Vec<(String, String)> = spec
            .meta
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        meta.sort();
        let details = Details {
            body: spec.body.map(Bytes::from),
            meta,
            content_type: spec
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            cache_control: spec.cache_control,
            content_encoding: spec.content_encoding,
            content_language: spec.content_language,
            content_disposition: spec.content_disposition,
            expires: spec.expires,
            storage_class: spec.storage_class,
            missing_meta: spec.missing_meta,
            tags: {
                let mut tags = spec.tags;
                tags.sort();
                tags
            },
            headers: spec.headers,
        };
        Obj::with_details(size, etag, details)
    }

    /// An object with explicit details; time is set by `Store::put`.
    pub fn with_details(size: u64, etag: String, details: Details) -> Obj {
        Obj {
            size,
            last_modified_ms: 0,
            attrs: Attrs::Full(Box::new((etag, details))),
        }
    }

    /// ETag without quotes.
    pub fn etag(&self) -> Cow<'_, str> {
        match &self.attrs {
            Attrs::Full(full) => Cow::Borrowed(&full.0),
            Attrs::Generated { seed, .. } => Cow::Owned(md5_hex(&generated_body(*seed, self.size))),
        }
    }

    pub fn storage_class(&self) -> &str {
        match &self.attrs {
            Attrs::Full(full) => full.1.storage_class.as_deref().unwrap_or("STANDARD"),
            Attrs::Generated { .. } => "STANDARD",
        }
    }

    pub fn details(&self) -> Cow<'_, Details> {
        match &self.attrs {
            Attrs::Full(full) => Cow::Borrowed(&full.1),
            Attrs::Generated { seed, with_meta } => {
                Cow::Owned(generated_details(*seed, *with_meta, self.size))
            }
        }
    }

    /// Replaces the object's tags; its ETag and Last-Modified stay, as on S3.
    pub fn set_tags(&mut self, mut tags: Vec<(String, String)>) {
        tags.sort();
        if let Attrs::Generated { .. } = self.attrs {
            let full = (self.etag().into_owned(), self.details().into_owned());
            self.attrs = Attrs::Full(Box::new(full));
        }
        if let Attrs::Full(full) = &mut self.attrs {
            full.1.tags = tags;
        }
    }

    /// The body bytes (zeros when only a length was given).
    pub fn body(&self) -> Bytes {
        match self.details().body.clone() {
            Some(b) => b,
            None => Bytes::from(vec![0; usize::try_from(self.size).unwrap_or(usize::MAX)]),
        }
    }
}

pub(crate) type Bucket = BTreeMap<Box<str>, Obj>;

/// The bucket named in an operation does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoSuchBucket;

/// Buckets by name.
pub(crate) struct Store {
    buckets: RwLock<HashMap<String, Bucket>>,
    /// Objects are stamped this long in the past (see `State::set_object_age`).
    age_ms: AtomicI64,
    whole_seconds: AtomicBool,
    /// A frozen clock (ms since the epoch), or 0 for the real one (`State::set_clock`).
    clock_ms: AtomicI64,
    /// The versions of the buckets with versioning enabled (`enable_versioning`); taken
    /// after `buckets` whenever both are.
    history: RwLock<HashMap<String, History>>,
    next_version: AtomicU64,
    /// Where writes are notified (`State::notify`), and the next event sequencer.
    sqs: Arc<Sqs>,
    next_seq: AtomicU64,
}

impl Default for Store {
    fn default() -> Store {
        Store::new(Arc::default())
    }
}

impl Store {
    pub fn new(sqs: Arc<Sqs>) -> Store {
        Store {
            sqs,
            next_seq: AtomicU64::new(0x0060_0000_0000_0000),
            buckets: RwLock::default(),
            age_ms: AtomicI64::new(DEFAULT_AGE_MS),
            whole_seconds: AtomicBool::new(false),
            clock_ms: AtomicI64::new(0),
            history: RwLock::default(),
            next_version: AtomicU64::new(1),
        }
    }

    /// Notifies a write (while the buckets' write lock is held, so sequencers follow the
    /// order of writes).
    fn notify(&self, bucket: &str, key: &str, change: Change<'_>, ms: i64) {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        self.sqs.record(bucket, key, change, seq, ms);
    }
}

/// How old objects look when written (see `State::set_object_age`).
const DEFAULT_AGE_MS: i64 = 10_000;

impl Store {
    pub fn set_age(&self, age: std::time::Duration) {
        let ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.age_ms.store(ms, Ordering::SeqCst);
    }

    pub fn set_whole_seconds(&self, on: bool) {
        self.whole_seconds.store(on, Ordering::SeqCst);
    }

    pub fn set_clock(&self, ms: Option<i64>) {
        self.clock_ms.store(ms.unwrap_or(0), Ordering::SeqCst);
    }

    /// The frozen clock, if one is set.
    pub fn frozen_clock(&self) -> Option<i64> {
        Some(self.clock_ms.load(Ordering::SeqCst)).filter(|ms| *ms != 0)
    }

    /// The Last-Modified of an object written now.
    fn stamp(&self) -> i64 {
        let now = self.frozen_clock().unwrap_or_else(now_ms);
        let ms = now - self.age_ms.load(Ordering::SeqCst);
        if self.whole_seconds.load(Ordering::SeqCst) {
            ms - ms.rem_euclid(1000)
        } else {
            ms
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.write().entry(bucket.to_owned()).or_default();
    }

    pub fn bucket_exists(&self, bucket: &str) -> bool {
        self.read().contains_key(bucket)
    }

    /// Stores `obj` (creating the bucket if needed, when `create` is set) and returns its
    /// `last_modified_ms`.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        mut obj: Obj,
        create: bool,
    ) -> Result<i64, NoSuchBucket> {
        let mut buckets = self.write();
        if create && !buckets.contains_key(bucket) {
            buckets.insert(bucket.to_owned(), Bucket::new());
        }
        let objects = buckets.get_mut(bucket).ok_or(NoSuchBucket)?;
        let mut lm = self.stamp();
        if let Some(old) = objects.get(key)
            && !self.whole_seconds.load(Ordering::SeqCst)
        {
            lm = lm.max(old.last_modified_ms + 1);
        }
        if let Some(h) = self.history_mut().get_mut(bucket) {
            let id = self.new_version_id();
            let versions = h.entry(key.into()).or_default();
            // Later than the key's delete marker too.
            if let (Some(last), false) =
                (versions.last(), self.whole_seconds.load(Ordering::SeqCst))
            {
                lm = lm.max(last.last_modified_ms + 1);
            }
            obj.last_modified_ms = lm;
            versions.push(Version {
                id,
                obj: Some(obj.clone()),
                last_modified_ms: lm,
            });
        }
        obj.last_modified_ms = lm;
        let (size, etag) = (obj.size, obj.etag().into_owned());
        objects.insert(key.into(), obj);
        self.notify(bucket, key, Change::Put { size, etag: &etag }, lm);
        Ok(lm)
    }

    fn new_version_id(&self) -> String {
        let n = self.next_version.fetch_add(1, Ordering::SeqCst);
        format!("v{n:08}.{:x}", splitmix64(n) & 0xffff_ffff)
    }

    /// Turns versioning on: objects already there become their key's `null` version.
    pub fn enable_versioning(&self, bucket: &str) {
        let buckets = self.read();
        let mut history = self.history_mut();
        let h = history.entry(bucket.to_owned()).or_default();
        for (key, obj) in buckets.get(bucket).into_iter().flatten() {
            h.entry(key.clone()).or_insert_with(|| {
                vec![Version {
                    id: "null".into(),
                    obj: Some(obj.clone()),
                    last_modified_ms: obj.last_modified_ms,
                }]
            });
        }
    }

    /// One version of a key: `Some(None)` for a delete marker. In a bucket without
    /// versioning the current object is the `null` version.
    pub fn version(&self, bucket: &str, key: &str, id: &str) -> Option<Option<Obj>> {
        match self.read_history().get(bucket) {
            Some(h) => h
                .get(key)?
                .iter()
                .find(|v| v.id == id)
                .map(|v| v.obj.clone()),
            None if id == "null" => self.get(bucket, key).ok().flatten().map(Some),
            None => None,
        }
    }

    /// Deletes one version for good (a lifecycle expiry, `DeleteObject` with `versionId`):
    /// the key's newest remaining version becomes its current state. Whether it existed.
    pub fn delete_version(&self, bucket: &str, key: &str, id: &str) -> bool {
        let mut buckets = self.write();
        let mut history = self.history_mut();
        let Some(versions) = history.get_mut(bucket).and_then(|h| h.get_mut(key)) else {
            return false;
        };
        let before = versions.len();
        versions.retain(|v| v.id != id);
        if versions.len() == before {
            return false;
        }
        let current = versions.last().and_then(|v| v.obj.clone());
        if versions.is_empty() {
            history.get_mut(bucket).map(|h| h.remove(key));
        }
        if let Some(objects) = buckets.get_mut(bucket) {
            match current {
                Some(obj) => objects.insert(key.into(), obj),
                None => objects.remove(key),
            };
        }
        true
    }

    /// The version ids of a key, newest first (empty without versioning).
    pub fn version_ids(&self, bucket: &str, key: &str) -> Vec<String> {
        self.read_history()
            .get(bucket)
            .and_then(|h| h.get(key))
            .map(|vs| vs.iter().rev().map(|v| v.id.clone()).collect())
            .unwrap_or_default()
    }

    /// A ListObjectVersions page (see `versions::page`); a bucket without versioning lists
    /// its objects as `null` versions.
    pub fn versions_page(
        &self,
        bucket: &str,
        prefix: &str,
        markers: (Option<&str>, Option<&str>),
        max_keys: usize,
        lossy_by_path: (bool, bool),
    ) -> Result<crate::versions::VersionsPage, NoSuchBucket> {
        let buckets = self.read();
        let objects = buckets.get(bucket).ok_or(NoSuchBucket)?;
        let history = self.read_history();
        let page = |h: &History| {
            crate::versions::page(h, prefix, markers.0, markers.1, max_keys, lossy_by_path)
        };
        Ok(match history.get(bucket) {
            Some(h) => page(h),
            None => {
                let h: History = objects
                    .iter()
                    .map(|(k, o)| {
                        let v = Version {
                            id: "null".into(),
                            obj: Some(o.clone()),
                            last_modified_ms: o.last_modified_ms,
                        };
                        (k.clone(), vec![v])
                    })
                    .collect();
                page(&h)
            }
        })
    }

    fn read_history(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, History>> {
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn history_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, History>> {
        self.history.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces an object's tags; whether the key exists.
    pub fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: Vec<(String, String)>,
    ) -> Result<bool, NoSuchBucket> {
        let mut buckets = self.write();
        let objects = buckets.get_mut(bucket).ok_or(NoSuchBucket)?;
        match objects.get_mut(key) {
            Some(obj) => {
                obj.set_tags(tags.clone());
                let mut history = self.history_mut();
                let latest = history
                    .get_mut(bucket)
                    .and_then(|h| h.get_mut(key))
                    .and_then(|vs| vs.last_mut())
                    .and_then(|v| v.obj.as_mut());
                if let Some(v) = latest {
                    v.set_tags(tags);
                }
                drop(history);
                self.notify(bucket, key, Change::Tagging, self.stamp());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether the key existed.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool, NoSuchBucket> {
        let mut buckets = self.write();
        let objects = buckets.get_mut(bucket).ok_or(NoSuchBucket)?;
        let existed = objects.remove(key).is_some();
        let versioned = self.history_mut().contains_key(bucket);
        let change = if versioned {
            Change::DeleteMarker
        } else {
            Change::Delete
        };
        self.notify(bucket, key, change, self.stamp());
        if let Some(h) = self.history_mut().get_mut(bucket) {
            // A delete marker becomes the key's current version, whether it had one or not.
            let lm = self.stamp();
            let id = self.new_version_id();
            let versions = h.entry(key.into()).or_default();
            let lm = versions
                .last()
                .map_or(lm, |v| lm.max(v.last_modified_ms + 1));
            versions.push(Version {
                id,
                obj: None,
                last_modified_ms: lm,
            });
        }
        Ok(existed)
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Obj>, NoSuchBucket> {
        let buckets = self.read();
        let objects = buckets.get(bucket).ok_or(NoSuchBucket)?;
        Ok(objects.get(key).cloned())
    }

    pub fn object_count(&self, bucket: &str) -> usize {
        self.read().get(bucket).map_or(0, BTreeMap::len)
    }

    /// Runs `f` on the bucket's objects under the read lock.
    pub fn with_bucket<T>(
        &self,
        bucket: &str,
        f: impl FnOnce(&Bucket) -> T,
    ) -> Result<T, NoSuchBucket> {
        self.read().get(bucket).map(f).ok_or(NoSuchBucket)
    }

    /// Adds `n` generated objects to `bucket` (created if needed); see [`fill_entries`].
    pub fn fill(&self, bucket: &str, n: usize, seed: u64) {
        // Built outside the lock and in key order, so `append` packs the tree's nodes full.
        let mut entries = fill_entries(n, seed, self.stamp());
        let mut buckets = self.write();
        let objects = buckets.entry(bucket.to_owned()).or_default();
        objects.append(&mut entries);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Bucket>> {
        self.buckets.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Bucket>> {
        self.buckets.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Objects `data/{i % 100:02}/obj-{i:08}` for `i` in `0..n`: bodies of 16–63 bytes derived
/// from `seed`, and for two of every three objects (`i % 3 != 2`) the metadata `owner`,
/// `project` and `checksum`.
fn fill_entries(n: usize, seed: u64, lm: i64) -> Bucket {
    let mut batch = Vec::with_capacity(n);
    for dir in 0..100.min(n) {
        for i in (dir..n).step_by(100) {
            let h = splitmix64(seed ^ splitmix64(i as u64));
            let size = 16 + h % 48;
            let obj = Obj {
                size,
                last_modified_ms: lm,
                attrs: Attrs::Generated {
                    seed: h,
                    with_meta: i % 3 != 2,
                },
            };
            batch.push((format!("data/{dir:02}/obj-{i:08}").into_boxed_str(), obj));
        }
    }
    // `collect` sorts (linear here: already in key order for n < 10^8) and builds the tree
    // with full nodes, where inserting one by one would leave them half empty.
    batch.into_iter().collect()
}

const OWNERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

fn generated_details(h: u64, with_meta: bool, size: u64) -> Details {
    let meta = if with_meta {
        vec![
            ("checksum".to_owned(), format!("{h:016x}")),
            ("owner".to_owned(), OWNERS[(h % 5) as usize].to_owned()),
            ("project".to_owned(), format!("proj-{:02}", (h >> 8) % 40)),
        ]
    } else {
        Vec::new()
    };
    Details {
        body: Some(generated_body(h, size)),
        meta,
        content_type: "application/octet-stream".to_owned(),
        ..Details::default()
    }
}

fn generated_body(h: u64, size: u64) -> Bytes {
    let letters = h.to_le_bytes();
    (0..size)
        .map(|j| b'a' + letters[(j % 8) as usize] % 26)
        .collect()
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Lower-case hex MD5, the ETag of a single-part upload.
pub(crate) fn md5_hex(data: &[u8]) -> String {
    let digest: [u8; 16] = Md5::digest(data).into();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_gets_a_strictly_later_time() {
        let s = Store::default();
        let spec = || Obj::from_spec(ObjectSpec::default());
        let first = s.put("b", "k", spec(), true).unwrap();
        let mut last = first;
        for _ in 0..50 {
            let next = s.put("b", "k", spec(), true).unwrap();
            assert!(next > last);
            last = next;
        }
    }

    #[test]
    fn spec_defaults_and_lowercases_names() {
        let obj = Obj::from_spec(ObjectSpec {
            body: Some(b"hello".to_vec()),
            meta: vec![("Owner".into(), "x".into())],
            ..ObjectSpec::default()
        });
        assert_eq!(obj.etag(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(obj.size, 5);
        let d = obj.details();
        assert_eq!(d.meta, vec![("owner".to_owned(), "x".to_owned())]);
        assert_eq!(d.content_type, DEFAULT_CONTENT_TYPE);
        assert_eq!(obj.storage_class(), "STANDARD");
    }

    #[test]
    fn fill_is_deterministic_and_two_thirds_have_metadata() {
        let a = fill_entries(300, 7, 0);
        let b = fill_entries(300, 7, 0);
        assert_eq!(a.len(), 300);
        let with_meta = a.values().filter(|o| !o.details().meta.is_empty()).count();
        assert_eq!(with_meta, 200);
        for ((ka, oa), (kb, ob)) in a.iter().zip(&b) {
            assert_eq!((ka, oa.etag(), oa.size), (kb, ob.etag(), ob.size));
            assert_eq!(oa.etag(), md5_hex(&oa.body()));
        }
        assert!(a.contains_key("data/07/obj-00000107"));
    }
}
