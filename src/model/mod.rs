//! The shared vocabulary: what passes between the stages of a scan, and the targets and
//! states every layer names.
//!
//! Receives: nothing; it is types (and the small pure functions on them: `strip_quotes`,
//! `timefmt`, `stats::resources`). Sends on: the messages of the pipeline — a listed object
//! (lister → writer), a HEAD job (writer → HEAD pool), a HEAD outcome (HEAD pool → writer), a
//! page or a split (lister → writer) — so no stage imports the one that receives from it.
//! Invariant: a state stored in the database is an enum here, converted to and from its
//! text in one place (`states`; the key order, `keys::KeyOrder`, likewise in `keys`), so a
//! misspelt state cannot be written.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::keys::{KeyOrder, KeyRange};

pub mod event;
pub mod metrics;
pub mod plan;
pub mod s3url;
pub mod states;
pub mod stats;
pub mod timefmt;
pub mod words;

pub use plan::RangeLine;
pub use states::{ChangeKind, Mode, ObjectState, RangeStatus, ScanState, TagsMode};

/// What a scan covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub store: String,
    pub bucket: String,
    pub prefix: String,
    /// Optional key range (start_after, end_key] within the prefix (sharded scans).
    pub start_after: Option<String>,
    pub end_key: Option<String>,
    /// Every version and delete marker (`--all-versions`, ListObjectVersions), recorded in
    /// the `versions` table; else the current versions (`objects`). The two are separate
    /// targets: neither's scans touch the other's rows.
    pub versions: bool,
}

impl Target {
    /// The keys of the target: its prefix within its range, in the store's order.
    pub fn keys(&self, order: KeyOrder) -> KeyRange {
        KeyRange::span(
            order,
            &self.prefix,
            self.start_after.as_deref(),
            self.end_key.as_deref(),
        )
    }

    /// The target has bounds of its own (a range of `s3meta plan`).
    pub fn is_bounded(&self) -> bool {
        self.start_after.is_some() || self.end_key.is_some()
    }
}

/// One key range of a scan and its listing checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeState {
    pub range_no: i64,
    pub start_after: Option<String>,
    pub end_key: Option<String>,
    pub token: Option<String>,
    pub last_key: Option<String>,
    pub done: bool,
    /// A key a split probe saw inside the range when it was cut (this run's splits only): a
    /// range that then lists nothing while the key still exists is a store misbehaving.
    pub witness: Option<String>,
}

/// One object as the listing reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub etag: Option<String>,
    pub size: Option<i64>,
    pub last_modified: Option<String>,
    pub storage_class: Option<String>,
    /// Listed by ListObjectVersions (`--all-versions`): which version this is.
    pub version: Option<ListedVersion>,
}

/// What ListObjectVersions says of a version besides the listing fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVersion {
    pub version_id: String,
    pub is_latest: bool,
    /// A delete marker (no ETag, size, content or metadata).
    pub delete_marker: bool,
}

/// One listing page and the checkpoint that follows it.
#[derive(Debug)]
pub struct PageMsg {
    /// The store's listing order, once established (recorded with the page).
    pub order: Option<KeyOrder>,
    pub range_no: i64,
    /// The keys of the whole range (prefix ∩ (start_after, end]).
    pub keys: Arc<KeyRange>,
    /// Last key of the previous page of this range (None: the range's start).
    pub prev_last: Option<String>,
    /// The page's last key — in a versions scan, its last key whose versions are all listed
    /// (the versions of a key can go on in the next page: see `partial`).
    pub last_key: Option<String>,
    /// A versions scan's page that ends inside a key: that key's versions on it (the last
    /// entries, after `last_key`) are recorded as listed by this scan, so the page that
    /// lists its other versions knows them (`writer::versions`).
    pub partial: Option<String>,
    pub entries: Vec<ListedObject>,
    pub next_token: Option<String>,
    /// The range is fully listed: stored keys after this page up to its end are gone.
    pub done: bool,
    pub reply: oneshot::Sender<Vec<HeadJob>>,
}

/// A range cut in two while it is listed: (start, end] becomes (start, at] and a new range
/// (at, end].
#[derive(Debug, Clone)]
pub struct SplitMsg {
    /// The order the cut was made in.
    pub order: KeyOrder,
    pub range_no: i64,
    pub at: String,
    pub new_range_no: i64,
    pub end: Option<String>,
}

#[derive(Debug)]
pub enum WriterMsg {
    Page(PageMsg),
    Head(HeadOutcome),
    Split(SplitMsg),
    /// The store's order, learnt after the last page (a probe at the end of a large scan,
    /// so the next rescan need not probe).
    Order(KeyOrder),
}

/// An object the writer decided to HEAD, or to read the tags of.
#[derive(Debug, Clone)]
pub struct HeadJob {
    pub object_id: i64,
    pub key: String,
    /// The version to HEAD (`versionId`), in a versions scan.
    pub version_id: Option<String>,
    pub work: Work,
}

/// What a job asks of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// HEAD (`head_due`), then the tags when the scan reads them and HEAD does not count 0.
    Head,
    /// The tags alone (`tags_due`): the listing shows the object unchanged.
    Tags,
}

/// What HEAD (and GetObjectTagging) said of one object.
#[derive(Debug)]
pub struct HeadOutcome {
    pub object_id: i64,
    pub result: HeadResult,
    /// The tags read, when the job read them.
    pub tags: Option<TagsRead>,
}

#[derive(Debug)]
pub enum HeadResult {
    Ok(Box<HeadFields>),
    /// A `Work::Tags` job: no HEAD was sent.
    NotHeaded,
    /// 404: deleted between LIST and HEAD (or GetObjectTagging).
    Gone,
    Failed {
        failure: Failure,
        attempts: u32,
    },
}

/// What GetObjectTagging said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagsRead {
    /// The tags, sorted by key.
    Tags(Vec<(String, String)>),
    /// HEAD counted none (`x-amz-tagging-count: 0`): nothing was sent.
    CountedNone,
    /// Refused or failing after retries; the object itself stays as HEAD found it.
    Failed(Failure),
}

/// The fields of a successful HEAD, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadFields {
    pub etag: Option<String>,
    pub size: Option<i64>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub expires: Option<String>,
    pub storage_class: Option<String>,
    pub version_id: Option<String>,
    pub missing_meta: Option<i32>,
    /// Encryption, checksum, object lock, replication, archive and redirect headers.
    pub extra: ExtraHeaders,
    /// `x-amz-tagging-count`; `None` when HEAD sent none (not known, never 0).
    pub tagging_count: Option<i64>,
    /// HEADed within a second of its Last-Modified: the next rescan HEADs it again
    /// (`within_a_second`).
    pub recheck: bool,
    /// Custom metadata, names lower-case, values RFC 2047-decoded, sorted by name.
    pub metadata: Vec<(String, String)>,
}

/// What HEAD says beyond the content headers (issue 16 §4), each as the store sent it (the
/// retain-until date in RFC 3339, `timefmt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraHeaders {
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub sse_bucket_key: Option<bool>,
    pub sse_customer_algorithm: Option<String>,
    /// `CRC32`, `CRC32C`, `CRC64NVME`, `SHA1`, `SHA256`, …: which `x-amz-checksum-*` came
    /// (`s3::head::CHECKSUMS`).
    pub checksum_algorithm: Option<String>,
    pub checksum: Option<String>,
    pub checksum_type: Option<String>,
    pub lock_mode: Option<String>,
    pub lock_retain_until: Option<String>,
    pub legal_hold: Option<String>,
    pub replication_status: Option<String>,
    pub restore: Option<String>,
    pub archive_status: Option<String>,
    pub website_redirect: Option<String>,
    /// The N of a multipart ETag `…-N`.
    pub parts_count: Option<i64>,
}

/// The part count of a multipart upload's ETag (`"9b2cf535f27731c974343645a3985328-12"` → 12);
/// `None` for a single-part ETag.
pub fn parts_count(etag: &str) -> Option<i64> {
    let (_, n) = etag.trim_matches('"').rsplit_once('-')?;
    n.parse().ok().filter(|n| *n > 0)
}

/// ETags are stored without their quotes (`"abc"` → `abc`).
pub fn strip_quotes(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// One failed request attempt, as the stages and the database see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The S3 error code (`SlowDown`, `AccessDenied`); HEAD error responses have none.
    pub code: Option<String>,
    pub message: String,
    pub retryable: bool,
    /// 503 SlowDown or 429: the store asks us to slow down.
    pub throttled: bool,
    /// The request could not be signed: no (or broken) credentials.
    pub credentials: bool,
    /// The answer's header section is over the everyday pool's bound (`wire::NARROW_HEADERS`):
    /// ask again through the wide one.
    pub wider: bool,
}

impl Failure {
    /// A request that failed before any response: retried, as connections drop and time out.
    pub fn transport(message: String) -> Failure {
        Failure {
            status: None,
            code: None,
            message,
            retryable: true,
            throttled: false,
            credentials: false,
            wider: false,
        }
    }

    /// A request that could not be signed: no (or broken) credentials; never retried.
    pub fn no_credentials(why: String) -> Failure {
        Failure {
            retryable: false,
            credentials: true,
            ..Failure::transport(format!("no usable AWS credentials: {why}"))
        }
    }

    pub fn from_status(status: u16, code: Option<String>, message: String) -> Failure {
        let throttled = status == 429
            || status == 503
            || matches!(
                code.as_deref(),
                Some("SlowDown" | "Throttling" | "ThrottlingException")
            );
        let retryable = throttled
            || matches!(status, 408 | 500 | 502 | 504)
            || code.as_deref() == Some("RequestTimeout");
        Failure {
            status: Some(status),
            code,
            message,
            retryable,
            throttled,
            credentials: false,
            wider: false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.status, &self.code) {
            (Some(s), Some(c)) => write!(f, "HTTP {s} {c}: {}", self.message),
            (Some(s), None) => write!(f, "HTTP {s}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}
