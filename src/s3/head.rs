//! The HEAD pool: a bounded number of HeadObject requests in flight over one connection pool
//! (`wire`), and what their answers' headers say.
//!
//! Receives: `HeadJob`s (objects the writer marked `head_due`) from the lister and the resume
//! feeder. Sends on: one `HeadOutcome` per job to the writer — the object's system and custom
//! metadata, `Gone` on 404, or the failure after retries. Invariants: at most `concurrency`
//! HEADs are in flight, fewer while the store throttles (every attempt takes a slot of the
//! adaptive `Limiter`, which hears its answer); a request backing off after a throttle holds
//! no slot, so at most `IN_PROGRESS_PER_SLOT × concurrency` jobs are in progress (a
//! semaphore permit moves into each task), which bounds memory; a job whose HEAD is cut off
//! by cancellation sends nothing, so its row stays `head_due` and a resume HEADs it again.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_types::date_time::{DateTime, Format};
use http::{HeaderMap, StatusCode};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::model::stats::Stats;
use crate::model::{
    Failure, HeadFields, HeadJob, HeadOutcome, HeadResult, WriterMsg, strip_quotes, timefmt,
};
use crate::s3::limit::Limiter;
use crate::s3::rate::RateLimit;
use crate::s3::retry::{self, Outcome, Policy, Retrier};
use crate::s3::rfc2047;
use crate::s3::wire::HeadTarget;

/// Jobs in progress per HEAD slot: in flight, waiting for a slot, or backing off after a
/// throttle. Against random throttling a job spends a share of its time backing off, so
/// more jobs than slots keep every slot busy (at 30% throttled, 20 ms per request and a
/// 100 ms back-off, about two jobs per slot).
pub(crate) const IN_PROGRESS_PER_SLOT: usize = 4;

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
                let outcome = pool.head(&job, &limiter).await;
                drop(permit);
                if let Some(result) = outcome {
                    let msg = WriterMsg::Head(HeadOutcome {
                        object_id: job.object_id,
                        result,
                    });
                    let _ = results.send(msg).await;
                }
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

    /// HEADs one object with retries; `None` when cancelled before an answer.
    async fn head(&self, job: &HeadJob, limiter: &Limiter) -> Option<HeadResult> {
        let subject = format!("HEAD {:?}", job.key);
        let outcome = retry::run(
            Retrier {
                policy: &self.policy,
                stats: &self.stats,
                cancel: &self.cancel,
                pace: self.rate.as_deref(),
            },
            &self.stats.head_requests,
            &subject,
            limiter,
            || head_once(&self.target, &job.key),
        )
        .await;
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
    let answer = target.head(key).await?;
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
    HeadFields {
        etag: one("etag").as_deref().map(strip_quotes),
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
        recheck: within_a_second(last_modified.as_ref(), date.as_deref()),
        metadata,
    }
}
