//! The HEAD pool: a bounded number of HeadObject requests in flight over one shared client.
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

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::head_object::{HeadObjectError, HeadObjectOutput};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::date_time::{DateTime, Format};
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

/// Stands in for a whitespace-only key while the SDK builds the request (see `send_head`).
const BLANK_KEY_PLACEHOLDER: &str = "s3meta-blank-key-placeholder";

/// Jobs in progress per HEAD slot: in flight, waiting for a slot, or backing off after a
/// throttle. Against random throttling a job spends a share of its time backing off, so
/// more jobs than slots keep every slot busy (at 30% throttled, 20 ms per request and a
/// 100 ms back-off, about two jobs per slot).
pub(crate) const IN_PROGRESS_PER_SLOT: usize = 4;

/// What the pool needs besides its jobs.
#[derive(Debug)]
pub struct HeadPool {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
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

    /// One HeadObject request, and the answer's `Date` header. aws-sdk-s3 refuses to build one
    /// for a key made only of whitespace (a valid S3 key: it takes a blank required field for
    /// a missing one), so such a key is sent as a placeholder whose path is rewritten before
    /// signing.
    async fn send_head(
        &self,
        key: &str,
    ) -> Result<(HeadObjectOutput, Option<String>), SdkError<HeadObjectError, HttpResponse>> {
        let date = ServerDate::default();
        let seen = date.0.clone();
        let req = self.client.head_object().bucket(&self.bucket);
        let out = if !key.trim().is_empty() {
            req.key(key).customize().interceptor(date).send().await
        } else {
            self.send_blank(req, key, date).await
        }?;
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok((out, seen))
    }

    async fn send_blank(
        &self,
        req: aws_sdk_s3::operation::head_object::builders::HeadObjectFluentBuilder,
        key: &str,
        date: ServerDate,
    ) -> Result<HeadObjectOutput, SdkError<HeadObjectError, HttpResponse>> {
        let escaped: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        req.key(BLANK_KEY_PLACEHOLDER)
            .customize()
            .interceptor(date)
            .mutate_request(move |http| {
                let uri = http.uri().to_string();
                let needle = format!("/{BLANK_KEY_PLACEHOLDER}");
                if let Some(at) = uri.rfind(&needle) {
                    let rewritten =
                        format!("{}/{escaped}{}", &uri[..at], &uri[at + needle.len()..]);
                    let _ = http.set_uri(rewritten);
                }
            })
            .send()
            .await
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
            || async {
                match self.send_head(&job.key).await {
                    Ok(answer) => Ok(Some(answer)),
                    Err(e) => {
                        let failure = Failure::from_sdk(&e);
                        if failure.status == Some(404) {
                            Ok(None)
                        } else {
                            Err(failure)
                        }
                    }
                }
            },
        )
        .await;
        match outcome {
            Outcome::Ok(Some((out, date))) => {
                Some(HeadResult::Ok(Box::new(fields(out, date.as_deref()))))
            }
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

/// Copies the `Date` header of a HEAD answer out of the response (the SDK's output has none).
#[derive(Debug, Default)]
struct ServerDate(Arc<std::sync::Mutex<Option<String>>>);

impl Intercept for ServerDate {
    fn name(&self) -> &'static str {
        "s3meta-server-date"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context.response().headers().get("date").map(str::to_string);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = date;
        Ok(())
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

fn fields(out: HeadObjectOutput, date: Option<&str>) -> HeadFields {
    let mut metadata: Vec<(String, String)> = out
        .metadata()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                rfc2047::decode(value).into_owned(),
            )
        })
        .collect();
    metadata.sort_unstable();
    let s = |v: Option<&str>| v.map(str::to_string);
    HeadFields {
        etag: out.e_tag().map(strip_quotes),
        size: out.content_length(),
        last_modified: out.last_modified().map(timefmt::from_smithy),
        content_type: s(out.content_type()),
        cache_control: s(out.cache_control()),
        content_encoding: s(out.content_encoding()),
        content_language: s(out.content_language()),
        content_disposition: s(out.content_disposition()),
        expires: s(out.expires_string()),
        storage_class: out.storage_class().map(|c| c.as_str().to_string()),
        version_id: s(out.version_id()),
        missing_meta: out.missing_meta(),
        recheck: within_a_second(out.last_modified(), date),
        metadata,
    }
}
