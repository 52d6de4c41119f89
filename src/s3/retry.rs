//! Our own retry loop (the SDK's retries are off), so that every attempt is visible.
//!
//! Receives: an async attempt (one HTTP request) and the policy. Sends on: the value, or the
//! last failure with the number of attempts made. Invariants: every attempt is counted in
//! `Stats` and every retry logged at debug as "retry N of M" with its subject and status;
//! each attempt waits for a slot of its `Feedback` (the adaptive limit) and gives it back,
//! with its answer, once answered, so back-off is waited out without one; back-off is
//! exponential with full jitter (after a throttle, flat at the first step while the limit
//! says the throttling does not depend on load), and a cancelled scan stops retrying at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio_util::sync::CancellationToken;

use crate::model::Failure;
use crate::model::stats::Stats;
use crate::s3::rate::RateLimit;

/// Throttled answers (503 SlowDown, 429) may use this many times `max_attempts`.
pub const THROTTLED_BUDGET: u32 = 4;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_attempts: u32,
    /// The first back-off; it doubles with each retry, up to `cap`, and is fully jittered.
    pub base: Duration,
    pub cap: Duration,
}

impl Policy {
    /// The longest back-off between two attempts.
    pub const CAP: Duration = Duration::from_secs(20);

    /// `max_attempts` attempts, backing off from `base` up to `CAP`.
    pub fn new(max_attempts: u32, base: Duration) -> Policy {
        Policy {
            max_attempts,
            base,
            cap: Policy::CAP,
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.min(20))
            .min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// The command line's defaults: 5 attempts, backing off from 100 ms.
impl Default for Policy {
    fn default() -> Policy {
        Policy::new(5, Duration::from_millis(100))
    }
}

impl Failure {
    /// Classifies an SDK error. HEAD errors have no body, so the status decides.
    pub fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let transport = Failure::transport;
        if let Some(e) = credentials_error(err) {
            return Failure::no_credentials(e);
        }
        match err {
            SdkError::TimeoutError(_) => transport("timed out".into()),
            SdkError::DispatchFailure(d) if d.is_timeout() => transport("timed out".into()),
            SdkError::DispatchFailure(d) => Failure {
                retryable: !d.is_user(),
                ..transport(root_cause(err))
            },
            SdkError::ResponseError(_) => transport(format!(
                "connection dropped or response unreadable: {}",
                root_cause(err)
            )),
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let code = ctx.err().code().map(str::to_string);
                let message = ctx
                    .err()
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("HTTP {status}"));
                Failure::from_status(status, code, message)
            }
            _ => Failure {
                retryable: false,
                ..transport(format!("{}", DisplayErrorContext(err)))
            },
        }
    }
}

/// The credentials error behind a request that could not be signed, if that is what failed.
fn credentials_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(credentials_message(c));
        }
        cause = e.source();
    }
    None
}

/// Why no credentials could be had, in a person's words.
pub(crate) fn credentials_message(c: &CredentialsError) -> String {
    match c {
        CredentialsError::CredentialsNotLoaded(_) => {
            "none found in the environment, profiles, SSO, web identity, container or instance metadata".to_string()
        }
        other => root_cause(other),
    }
}

/// The innermost cause's message, on one line (`Connection refused (os error 111)`), instead
/// of the SDK's nested debug dump.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = last.to_string();
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches('.');
    if line.is_empty() {
        format!("{}", DisplayErrorContext(err))
    } else {
        line.to_string()
    }
}

/// What a retried operation ended with.
#[derive(Debug)]
pub enum Outcome<T> {
    Ok(T),
    Failed { failure: Failure, attempts: u32 },
    Cancelled,
}

/// How an attempt ended, as an adaptive limit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// 503 SlowDown or 429.
    Throttled,
    /// Another failure, or no answer (cancelled): says nothing about the store's load.
    Other,
}

/// Hooks for an adaptive concurrency limit: every attempt waits for a slot, and gives it back
/// with its answer as soon as it is answered, before any back-off.
pub trait Feedback: Sync {
    /// Waits until another attempt may be sent; returns a tag handed back to `done`.
    /// Cancel-safe: nothing is taken until it returns.
    fn admit(&self) -> Pin<Box<dyn Future<Output = u64> + Send + '_>> {
        Box::pin(std::future::ready(0))
    }
    /// The attempt admitted with `tag` has ended; its slot is free.
    fn done(&self, _tag: u64, _answer: Answer) {}
    /// Whether the back-off after a throttle should grow with each retry (exponentially).
    /// `false` once the limit has found the throttling independent of load: waiting longer
    /// would not make a retry likelier to pass, and the limit already holds the load.
    fn backoff_grows(&self) -> bool {
        true
    }
}

/// An admitted attempt; gives its slot back when dropped, so an attempt cut off by
/// cancellation frees it too.
struct Slot<'a> {
    feedback: &'a dyn Feedback,
    tag: u64,
    answer: Answer,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.feedback.done(self.tag, self.answer);
    }
}

impl Feedback for () {}

/// What every retried request of a scan shares.
#[derive(Debug, Clone, Copy)]
pub struct Retrier<'a> {
    pub policy: &'a Policy,
    pub stats: &'a Stats,
    pub cancel: &'a CancellationToken,
    /// `--max-rps`: every attempt waits for its slot.
    pub pace: Option<&'a RateLimit>,
}

/// Runs `attempt` until it succeeds, fails permanently, runs out of attempts, or `cancel` fires.
/// Each attempt is counted in `requests`.
pub async fn run<T, F, Fut>(
    r: Retrier<'_>,
    requests: &AtomicU64,
    subject: &(dyn std::fmt::Display + Sync),
    feedback: &dyn Feedback,
    mut attempt: F,
) -> Outcome<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let Retrier {
        policy,
        stats,
        cancel,
        pace,
    } = r;
    // Throttled and other failed attempts are budgeted apart: a throttling store asks for
    // patience, not for giving up, and once the concurrency is lowered a few requests absorb
    // every SlowDown, so those get `THROTTLED_BUDGET` times as many attempts.
    let (mut attempts, mut throttles) = (0u32, 0u32);
    loop {
        if cancel.is_cancelled() {
            return Outcome::Cancelled;
        }
        attempts += 1;
        // Cancel safety: admission takes nothing until it returns.
        let mut slot = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            tag = feedback.admit() => Slot { feedback, tag, answer: Answer::Other },
        };
        if let Some(rate) = pace {
            // Cancel safety: a dropped wait only wastes its slot.
            tokio::select! {
                _ = cancel.cancelled() => return Outcome::Cancelled,
                _ = rate.wait() => {}
            }
        }
        Stats::add(requests, 1);
        let failure = match attempt().await {
            Ok(v) => {
                slot.answer = Answer::Ok;
                return Outcome::Ok(v);
            }
            Err(f) => f,
        };
        if failure.throttled {
            slot.answer = Answer::Throttled;
        }
        // The slot is free during the back-off: a request waiting is not at the store.
        drop(slot);
        let (used, budget) = if failure.throttled {
            Stats::add(&stats.throttled, 1);
            throttles += 1;
            (
                throttles,
                policy.max_attempts.saturating_mul(THROTTLED_BUDGET),
            )
        } else {
            (attempts - throttles, policy.max_attempts)
        };
        if !failure.retryable || used >= budget {
            return Outcome::Failed { failure, attempts };
        }
        Stats::add(&stats.retries, 1);
        tracing::debug!("retry {used} of {} for {subject}: {failure}", budget - 1);
        let step = if failure.throttled && !feedback.backoff_grows() {
            0
        } else {
            attempts - 1
        };
        // Cancel safety: the sleep holds nothing.
        tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            _ = tokio::time::sleep(policy.backoff(step)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrier<'a>(
        policy: &'a Policy,
        stats: &'a Stats,
        cancel: &'a CancellationToken,
    ) -> Retrier<'a> {
        Retrier {
            policy,
            stats,
            cancel,
            pace: None,
        }
    }

    fn policy(max_attempts: u32) -> Policy {
        Policy {
            max_attempts,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_failures_and_counts_every_attempt() {
        let (stats, cancel) = (Stats::default(), CancellationToken::new());
        let mut calls = 0;
        let out = run(
            retrier(&policy(5), &stats, &cancel),
            &stats.head_requests,
            &"k",
            &(),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Failure::from_status(
                            503,
                            Some("SlowDown".into()),
                            "slow".into(),
                        ))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert!(matches!(out, Outcome::Ok(3)));
        let s = stats.snapshot();
        assert_eq!((s.head_requests, s.retries, s.throttled), (3, 2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_permanent_failures_and_at_max_attempts() {
        let (stats, cancel) = (Stats::default(), CancellationToken::new());
        let out: Outcome<()> = run(
            retrier(&policy(5), &stats, &cancel),
            &stats.head_requests,
            &"k",
            &(),
            || async { Err(Failure::from_status(403, None, "HTTP 403".into())) },
        )
        .await;
        assert!(matches!(out, Outcome::Failed { attempts: 1, .. }));
        let out: Outcome<()> = run(
            retrier(&policy(4), &stats, &cancel),
            &stats.head_requests,
            &"k",
            &(),
            || async { Err(Failure::from_status(500, None, "HTTP 500".into())) },
        )
        .await;
        assert!(matches!(out, Outcome::Failed { attempts: 4, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_and_other_failures_have_separate_budgets() {
        let (stats, cancel) = (Stats::default(), CancellationToken::new());
        let answers = |script: Vec<u16>| {
            let script = std::sync::Mutex::new(script.into_iter());
            move || {
                let next = script.lock().unwrap().next();
                async move {
                    match next {
                        Some(status) => {
                            Err(Failure::from_status(status, None, format!("HTTP {status}")))
                        }
                        None => Ok(()),
                    }
                }
            }
        };
        // 12 SlowDowns fit in 4 × 5; the request then succeeds.
        let out = run(
            retrier(&policy(5), &stats, &cancel),
            &stats.head_requests,
            &"k",
            &(),
            answers(vec![503; 12]),
        )
        .await;
        assert!(matches!(out, Outcome::Ok(())));
        // SlowDowns do not use up the budget of other failures: 4 × 503 then 5 × 500 fails at the 5th 500.
        let mut script = vec![503; 4];
        script.extend([500; 6]);
        let out = run(
            retrier(&policy(5), &stats, &cancel),
            &stats.head_requests,
            &"k",
            &(),
            answers(script),
        )
        .await;
        assert!(
            matches!(out, Outcome::Failed { attempts: 9, .. }),
            "{out:?}"
        );
    }

    /// Issue 13: with 30% of 503s at random, a few objects out of thousands drew six or more
    /// in a row and waited 100 ms × 2⁶ and more, which made the scan's tail.
    #[tokio::test(start_paused = true)]
    async fn throttles_the_limit_finds_random_back_off_without_growing() {
        struct Random;
        impl Feedback for Random {
            fn backoff_grows(&self) -> bool {
                false
            }
        }
        let (stats, cancel) = (Stats::default(), CancellationToken::new());
        let slow = || async { Err::<(), _>(Failure::from_status(503, None, "HTTP 503".into())) };
        let started = tokio::time::Instant::now();
        let out = run(
            retrier(&policy(5), &stats, &cancel),
            &stats.head_requests,
            &"k",
            &Random,
            slow,
        )
        .await;
        assert!(matches!(out, Outcome::Failed { attempts: 20, .. }));
        // 19 back-offs, each at most the first one (100 ms).
        assert!(started.elapsed() <= Duration::from_millis(1900));
        let started = tokio::time::Instant::now();
        let _ = run(
            retrier(&policy(5), &stats, &cancel),
            &stats.head_requests,
            &"k",
            &(),
            slow,
        )
        .await;
        assert!(
            started.elapsed() > Duration::from_secs(10),
            "growing: up to 20 s each"
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = policy(10);
        for retry in 0..30 {
            assert!(p.backoff(retry) <= Duration::from_secs(20));
        }
    }
}
