//! The HEAD pool: a bounded number of HeadObject requests in flight over one connection pool
//! (`wire`), and what their answers' headers say.
//!
//! Receives: `HeadJob`s (objects the writer marked `head_due`) from the lister and the resume
//! feeder. Sends on: one `HeadOutcome` per job to the writer — the object's system and custom
//! metadata, `Gone` on 404, or the failure after retries. Invariants: at most `concurrency`
//! HEADs are in flight, fewer while the store throttles (every attempt takes a slot of the
//! adaptive `Limiter`, which hears its answer); a request backing off after a throttle holds
//! no slot, so at most `IN_PROGRESS_PER_SLOT × concurrency` jobs are in progress (a
//! semaphore permit moves into each task and is released once its answer is in the writer's
//! queue: answers waiting for a busy writer count), which bounds memory; a job whose HEAD is cut off
//! by cancellation sends nothing, so its row stays `head_due` and a resume HEADs it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use aws_smithy_types::date_time::{DateTime, Format};
use http::{HeaderMap, StatusCode};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::model::stats::Stats;
use crate::model::{
    ExtraHeaders, Failure, HeadFields, HeadJob, HeadOutcome, HeadResult, TagsRead, Work, WriterMsg,
    parts_count, strip_quotes, timefmt,
};
use crate::s3::limit::Limiter;
use crate::s3::rate::RateLimit;
use crate::s3::retry::{self, Outcome, Policy, Retrier};
use crate::s3::rfc2047;
use crate::s3::tags::tags_once;
use crate::s3::wire::HeadTarget;

/// Jobs in progress per HEAD slot: in flight, waiting for a slot, backing off after a
/// throttle, or holding an answer the writer's queue has no room for yet. Against random throttling a job spends a share of its time backing off, so
/// more jobs than slots keep every slot busy (at 30% throttled, 20 ms per request and a
/// 100 ms back-off, about two jobs per slot).
pub const IN_PROGRESS_PER_SLOT: usize = 4;

/// What the pool needs besides its jobs.
#[derive(Debug)]
pub struct HeadPool {
    pub target: HeadTarget,
    pub concurrency: usize,
    pub policy: Policy,
    pub stats: Arc<Stats>,
    pub cancel: CancellationToken,
    /// `--max-rps`, shared with the listers.
    pub rate: Option<Arc<RateLimit>>,
    /// How long in-flight HEADs may run on after cancellation before they are abandoned.
    pub grace: Duration,
    /// Read tags (`--tags`): after a HEAD that does not count 0 (a missing count is not
    /// known), and for `Work::Tags` jobs.
    pub read_tags: bool,
    /// A 403 on GetObjectTagging has been reported (once per scan).
    pub tags_refused: AtomicBool,
    /// A HEAD refused with `x-amz-checksum-mode` and answered without it has been reported.
    pub checksum_refused: AtomicBool,
    /// `--trust-tag-count`: a HEAD without `x-amz-tagging-count` means no tags (AWS, MinIO,
    /// SeaweedFS and moto send it on every tagged object the caller may read), so only
    /// tagged objects cost a GetObjectTagging. Off: a missing count is not known, and read.
    pub trust_tag_count: bool,
    /// Each HEAD's time, retries included (`follow`'s `/metrics`).
    pub latency: Option<Arc<crate::model::metrics::Histogram>>,
}

impl HeadPool {
    /// Runs until `jobs` closes (all HEADs done) or the scan is cancelled.
    pub async fn run(
        self: Arc<Self>,
        mut jobs: mpsc::Receiver<HeadJob>,
        results: mpsc::Sender<WriterMsg>,
    ) {
        let limiter = Arc::new(Limiter::new(self.concurrency, self.stats.clone()));
        let in_progress = Arc::new(Semaphore::new(
            self.concurrency.max(1).saturating_mul(IN_PROGRESS_PER_SLOT),
        ));
        let mut tasks = JoinSet::new();
        loop {
            // Cancel safety: acquire_owned and recv are both cancel-safe; a job received is
            // always spawned.
            let permit = tokio::select! {
                _ = self.cancel.cancelled() => break,
                p = in_progress.clone().acquire_owned() => p.expect("never closed"),
            };
            let job = tokio::select! {
                _ = self.cancel.cancelled() => break,
                j = jobs.recv() => match j { Some(j) => j, None => break },
            };
            let (pool, results, limiter) = (self.clone(), results.clone(), limiter.clone());
            tasks.spawn(async move {
                let outcome = pool.work(&job, &limiter).await;
                if let Some((result, tags)) = outcome {
                    let msg = WriterMsg::Head(HeadOutcome {
                        object_id: job.object_id,
                        result,
                        tags,
                    });
                    let _ = results.send(msg).await;
                }
                // Only now: an answer waiting for the writer holds its HEAD's metadata (a
                // few KB). Released before the send, a scan whose 16 listing streams outran
                // the writer held ≈ 70 MB of them above its usual 36 MB (peak 111 MB at a
                // million objects, test server).
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        drop(jobs);
        self.drain(tasks).await;
    }

    /// Waits for in-flight HEADs; after cancellation only for the grace period.
    async fn drain(&self, mut tasks: JoinSet<()>) {
        let all = async { while tasks.join_next().await.is_some() {} };
        if self.cancel.is_cancelled() {
            if tokio::time::timeout(self.grace, all).await.is_err() {
                tracing::warn!(
                    "abandoning HEADs still running after the grace period; a resume repeats them"
                );
            }
        } else {
            all.await;
        }
    }

    /// Does one job: HEAD and (with `--tags`) the tags, or the tags alone; `None` when
    /// cancelled before the answers.
    async fn work(
        &self,
        job: &HeadJob,
        limiter: &Limiter,
    ) -> Option<(HeadResult, Option<TagsRead>)> {
        match job.work {
            Work::Head => {
                let result = self.head(job, limiter).await?;
                let HeadResult::Ok(f) = &result else {
                    return Some((result, None));
                };
                let tags = match f.tagging_count {
                    // HEAD's count of 0 is free knowledge, with or without --tags.
                    Some(0) => Some(TagsRead::CountedNone),
                    _ if !self.read_tags => None,
                    None if self.trust_tag_count => Some(TagsRead::CountedNone),
                    _ => Some(self.read_tags(job, limiter).await?),
                };
                Some((result, tags))
            }
            // Owed by a scan that no longer reads tags: nothing to ask (the owed mark is cleared).
            Work::Tags if !self.read_tags => Some((HeadResult::NotHeaded, None)),
            Work::Tags => Some((
                HeadResult::NotHeaded,
                Some(self.read_tags(job, limiter).await?),
            )),
        }
    }

    /// GetObjectTagging with retries: the object's tags, or why they could not be read;
    /// `None` when cancelled. A 404 is a failure to read them, never a deletion: the listing
    /// tells that (the object was just listed, or HEADed), not a store's answer to `?tagging`.
    /// A 403 is reported once per scan: the credentials may lack `s3:GetObjectTagging`, and
    /// each object records it.
    async fn read_tags(&self, job: &HeadJob, limiter: &Limiter) -> Option<TagsRead> {
        let subject = format!("GetObjectTagging {:?}", job.key);
        let outcome = self
            .attempts(&self.stats.tag_requests, &subject, limiter, |wide| {
                tags_once(&self.target, (&job.key, job.version_id.as_deref()), wide)
            })
            .await;
        Some(match outcome {
            Outcome::Ok(Some(tags)) => TagsRead::Tags(tags),
            Outcome::Ok(None) => TagsRead::Failed(Failure::from_status(
                404,
                Some("NoSuchKey".into()),
                "GetObjectTagging answered 404 for a listed object".into(),
            )),
            Outcome::Failed { failure, attempts } => {
                if failure.status == Some(403) && !self.tags_refused.swap(true, Relaxed) {
                    tracing::warn!(
                        "GetObjectTagging refused ({failure}): the credentials may lack s3:GetObjectTagging; such objects keep their other fields and record the refusal (tags_error)"
                    );
                }
                tracing::info!(
                    "GetObjectTagging {:?} failed after {attempts} attempt(s): {failure}",
                    job.key
                );
                TagsRead::Failed(failure)
            }
            Outcome::Cancelled => return None,
        })
    }

    /// Runs `attempt` with retries through the everyday pool, then, if the answer was over its
    /// bound (`Failure::wider`), through the wide one: every attempt counted in `requests`.
    async fn attempts<T, F, Fut>(
        &self,
        requests: &AtomicU64,
        subject: &str,
        limiter: &Limiter,
        attempt: F,
    ) -> Outcome<T>
    where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let retrier = || Retrier {
            policy: &self.policy,
            stats: &self.stats,
            cancel: &self.cancel,
            pace: self.rate.as_deref(),
        };
        let outcome = retry::run(retrier(), requests, &subject, limiter, || attempt(false)).await;
        match outcome {
            Outcome::Failed { failure, attempts } if failure.wider => {
                let again = retry::run(retrier(), requests, &subject, limiter, || attempt(true));
                with_earlier_attempts(again.await, attempts)
            }
            _ => outcome,
        }
    }

    /// HEADs one object with retries; `None` when cancelled before an answer.
    async fn head(&self, job: &HeadJob, limiter: &Limiter) -> Option<HeadResult> {
        let started = std::time::Instant::now();
        let result = self.head_untimed(job, limiter).await;
        if let (Some(h), Some(_)) = (&self.latency, &result) {
            h.observe(started.elapsed());
        }
        result
    }

    async fn head_untimed(&self, job: &HeadJob, limiter: &Limiter) -> Option<HeadResult> {
        let subject = format!("HEAD {:?}", job.key);
        let requests = &self.stats.head_requests;
        let mut outcome = self
            .attempts(requests, &subject, limiter, |wide| async move {
                read_head(
                    self.target
                        .head((&job.key, job.version_id.as_deref()), true, wide)
                        .await?,
                )
            })
            .await;
        // A 403 asking for the checksum may be the checksum's (AWS wants kms:Decrypt for it on
        // a KMS-encrypted object): ask once more without. Every such object is asked so, the
        // same in every run (a resume decides as an uninterrupted scan); a plain refusal costs
        // the one extra request.
        if let Outcome::Failed { failure, attempts } = &outcome
            && failure.status == Some(403)
        {
            let earlier = *attempts;
            let again = self
                .attempts(requests, &subject, limiter, |wide| async move {
                    read_head(
                        self.target
                            .head((&job.key, job.version_id.as_deref()), false, wide)
                            .await?,
                    )
                })
                .await;
            if matches!(again, Outcome::Ok(_)) && !self.checksum_refused.swap(true, Relaxed) {
                tracing::warn!(
                    "HEAD {:?} was refused asking for its checksum and answered without (KMS-encrypted objects need kms:Decrypt for it): such objects are stored without their checksum, at two HEADs each",
                    job.key
                );
            }
            outcome = with_earlier_attempts(again, earlier);
        }
        match outcome {
            Outcome::Ok(Some(fields)) => Some(HeadResult::Ok(Box::new(fields))),
            Outcome::Ok(None) => Some(HeadResult::Gone),
            Outcome::Failed { failure, attempts } => {
                tracing::info!(
                    "HEAD {:?} failed after {attempts} attempt(s): {failure}",
                    job.key
                );
                Some(HeadResult::Failed { failure, attempts })
            }
            Outcome::Cancelled => None,
        }
    }
}

/// A failed outcome counts the attempts of an earlier round for the same object too.
fn with_earlier_attempts<T>(outcome: Outcome<T>, earlier: u32) -> Outcome<T> {
    match outcome {
        Outcome::Failed { failure, attempts } => Outcome::Failed {
            failure,
            attempts: attempts + earlier,
        },
        other => other,
    }
}

/// Whether a rewrite of the object could still come unseen: its HEAD was answered (by the
/// store's clock, `Date`) within a second of its Last-Modified, which has whole seconds — a
/// rewrite of the same body later in that second keeps ETag, size and Last-Modified, so the
/// listing cannot show it (issue 12). Without a `Date`, nothing can be said: `false`.
pub fn within_a_second(last_modified: Option<&DateTime>, date: Option<&str>) -> bool {
    let (Some(lm), Some(date)) = (last_modified, date) else {
        return false;
    };
    match DateTime::from_str(date, Format::HttpDate) {
        Ok(now) => now.secs() - lm.secs() <= 1,
        Err(_) => false,
    }
}

/// One HEAD attempt: the object's fields, `None` when it is gone (404), or the failure.
pub async fn head_once(target: &HeadTarget, key: &str) -> Result<Option<HeadFields>, Failure> {
    read_head(target.head((key, None), true, false).await?)
}

/// What one HEAD answer says.
fn read_head(answer: crate::s3::wire::Answer) -> Result<Option<HeadFields>, Failure> {
    match answer.status {
        StatusCode::OK => Ok(Some(fields(&answer.headers))),
        StatusCode::NOT_FOUND => Ok(None),
        status => Err(status_failure(status, &answer.headers)),
    }
}

/// A HEAD error answer has no body, so no S3 error code: the status decides, and a
/// redirect names the region the bucket is in (`x-amz-bucket-region`).
fn status_failure(status: StatusCode, headers: &HeaderMap) -> Failure {
    let region = headers
        .get("x-amz-bucket-region")
        .and_then(|v| v.to_str().ok());
    let message = match region {
        Some(r) if status.is_redirection() || status == StatusCode::BAD_REQUEST => {
            format!("the bucket is in region {r}: pass --region {r}")
        }
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    Failure::from_status(status.as_u16(), None, message)
}

/// A header's value as text: UTF-8 as sent (stores send non-ASCII metadata raw, or RFC
/// 2047-encoded), a byte that is not UTF-8 replaced rather than the object lost.
fn text(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// The checksum headers HEAD answers with under `x-amz-checksum-mode: ENABLED` (at most one:
/// an object has one checksum algorithm), and the algorithm each names.
pub const CHECKSUMS: [(&str, &str); 10] = [
    ("x-amz-checksum-crc32", "CRC32"),
    ("x-amz-checksum-crc32c", "CRC32C"),
    ("x-amz-checksum-crc64nvme", "CRC64NVME"),
    ("x-amz-checksum-sha1", "SHA1"),
    ("x-amz-checksum-sha256", "SHA256"),
    ("x-amz-checksum-sha512", "SHA512"),
    ("x-amz-checksum-md5", "MD5"),
    ("x-amz-checksum-xxhash64", "XXHASH64"),
    ("x-amz-checksum-xxhash3", "XXHASH3"),
    ("x-amz-checksum-xxhash128", "XXHASH128"),
];

/// The fields s3meta records from a HEAD answer's headers. A header sent twice is one
/// value, joined with `,` as HTTP combines them (S3 joins repeated metadata the same way).
fn fields(headers: &HeaderMap) -> HeadFields {
    let one = |name: &str| {
        let mut values = headers.get_all(name).iter();
        let first = text(values.next()?);
        Some(values.fold(first, |mut all, v| {
            all.push(',');
            all.push_str(&text(v));
            all
        }))
    };
    let mut metadata: Vec<(String, String)> = headers
        .keys()
        .filter_map(|name| {
            let meta = name.as_str().strip_prefix("x-amz-meta-")?;
            let value = one(name.as_str())?;
            Some((meta.to_string(), rfc2047::decode(&value).into_owned()))
        })
        .collect();
    metadata.sort_unstable();
    let last_modified =
        one("last-modified").and_then(|v| DateTime::from_str(v.trim(), Format::HttpDate).ok());
    let date = one("date");
    let etag = one("etag");
    let (checksum_algorithm, checksum) = CHECKSUMS
        .iter()
        .find_map(|(header, algorithm)| Some((Some(algorithm.to_string()), Some(one(header)?))))
        .unwrap_or_default();
    let extra = ExtraHeaders {
        sse: one("x-amz-server-side-encryption"),
        sse_kms_key_id: one("x-amz-server-side-encryption-aws-kms-key-id"),
        sse_bucket_key: one("x-amz-server-side-encryption-bucket-key-enabled")
            .and_then(|v| v.trim().to_ascii_lowercase().parse().ok()),
        sse_customer_algorithm: one("x-amz-server-side-encryption-customer-algorithm"),
        checksum_algorithm,
        checksum,
        checksum_type: one("x-amz-checksum-type"),
        lock_mode: one("x-amz-object-lock-mode"),
        lock_retain_until: one("x-amz-object-lock-retain-until-date").map(|v| {
            DateTime::from_str(v.trim(), Format::DateTime)
                .map(|t| timefmt::from_smithy(&t))
                .unwrap_or(v)
        }),
        legal_hold: one("x-amz-object-lock-legal-hold"),
        replication_status: one("x-amz-replication-status"),
        restore: one("x-amz-restore"),
        archive_status: one("x-amz-archive-status"),
        website_redirect: one("x-amz-website-redirect-location"),
        parts_count: etag.as_deref().and_then(parts_count),
    };
    HeadFields {
        etag: etag.as_deref().map(strip_quotes),
        size: one("content-length").and_then(|v| v.trim().parse().ok()),
        last_modified: last_modified.as_ref().map(timefmt::from_smithy),
        content_type: one("content-type"),
        cache_control: one("cache-control"),
        content_encoding: one("content-encoding"),
        content_language: one("content-language"),
        content_disposition: one("content-disposition"),
        expires: one("expires"),
        storage_class: one("x-amz-storage-class"),
        version_id: one("x-amz-version-id"),
        missing_meta: one("x-amz-missing-meta").and_then(|v| v.trim().parse().ok()),
        extra,
        tagging_count: one("x-amz-tagging-count").and_then(|v| v.trim().parse().ok()),
        recheck: within_a_second(last_modified.as_ref(), date.as_deref()),
        metadata,
    }
}
