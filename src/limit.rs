//! The adaptive concurrency limit (AIMD) and the optional request-rate cap.
//!
//! Receives: a permit request before each HEAD, and the outcome of every attempt. Sends on:
//! permits, at most `limit` at a time. Invariants: the limit never exceeds `--concurrency`
//! and never falls below 1; it is halved at most once per "window" — a throttled response only
//! cuts the limit if its request was issued under the current limit (its epoch), so one burst
//! of SlowDowns halves once instead of collapsing to 1 — and grows by one per `limit`
//! successes (about one per round trip). The rate cap spaces requests evenly.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::retry::Feedback;
use crate::stats::Stats;

#[derive(Debug)]
struct Window {
    limit: f64,
    in_flight: usize,
    epoch: u64,
}

/// Shared by every HEAD of a scan.
#[derive(Debug)]
pub struct Limiter {
    max: usize,
    window: Mutex<Window>,
    freed: Notify,
    /// Where the current limit is published, for the progress line and tests.
    stats: Arc<Stats>,
}

/// One unit of concurrency; released on drop.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    epoch: AtomicU64,
    /// Throttled since admitted: the next retry must be admitted again under the new limit.
    throttled: AtomicBool,
}

impl Limiter {
    pub fn new(max: usize, stats: Arc<Stats>) -> Arc<Limiter> {
        let max = max.max(1);
        stats.concurrency.store(max as u64, Relaxed);
        Arc::new(Limiter {
            max,
            window: Mutex::new(Window {
                limit: max as f64,
                in_flight: 0,
                epoch: 0,
            }),
            freed: Notify::new(),
            stats,
        })
    }

    /// The current limit.
    pub fn current(&self) -> u64 {
        self.stats.concurrency.load(Relaxed)
    }

    /// Waits until fewer than `limit` permits are out. Cancel-safe: a permit is only created
    /// when returned.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        let epoch = self.admit().await;
        Permit {
            limiter: self.clone(),
            epoch: AtomicU64::new(epoch),
            throttled: AtomicBool::new(false),
        }
    }

    /// Waits for a free slot and takes it; returns the epoch it was taken in.
    async fn admit(&self) -> u64 {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut w = self.window.lock().expect("limiter lock");
                if (w.in_flight as f64) < w.limit.floor() {
                    w.in_flight += 1;
                    return w.epoch;
                }
            }
            notified.await;
        }
    }

    fn release(&self) {
        self.window.lock().expect("limiter lock").in_flight -= 1;
        self.freed.notify_one();
    }

    fn on_success(&self) {
        let mut w = self.window.lock().expect("limiter lock");
        if w.limit < self.max as f64 {
            let grown = (w.limit + 1.0 / w.limit).min(self.max as f64);
            let more = grown.floor() > w.limit.floor();
            w.limit = grown;
            self.stats.concurrency.store(grown as u64, Relaxed);
            if more {
                self.freed.notify_one();
            }
        }
    }

    /// Halves the limit if the throttled request was issued under the current one; returns the
    /// epoch further attempts of that request belong to.
    fn on_throttle(&self, epoch: u64) -> u64 {
        let mut w = self.window.lock().expect("limiter lock");
        if epoch == w.epoch {
            w.limit = (w.limit / 2.0).max(1.0);
            w.epoch += 1;
            self.stats.concurrency.store(w.limit as u64, Relaxed);
            tracing::info!(
                "throttled by the store: HEAD concurrency lowered to {}",
                w.limit as usize
            );
        }
        w.epoch
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

impl Feedback for Permit {
    fn on_success(&self) {
        self.limiter.on_success();
    }

    fn on_throttle(&self) {
        self.limiter.on_throttle(self.epoch.load(Relaxed));
        self.throttled.store(true, Relaxed);
    }

    /// A throttled request gives its slot back and queues for one under the lowered limit, so
    /// retries never keep more requests in flight than the limit allows.
    fn before_retry(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        if !self.throttled.swap(false, Relaxed) {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            let guard = Readmission {
                permit: self,
                done: false,
            };
            guard.permit.limiter.release();
            let epoch = guard.permit.limiter.admit().await;
            guard.permit.epoch.store(epoch, Relaxed);
            let mut guard = guard;
            guard.done = true;
        })
    }
}

/// Keeps the slot count right if a readmission is cancelled midway: the permit's drop releases
/// one slot, so a cancelled wait must take one back first.
struct Readmission<'a> {
    permit: &'a Permit,
    done: bool,
}

impl Drop for Readmission<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.permit
                .limiter
                .window
                .lock()
                .expect("limiter lock")
                .in_flight += 1;
        }
    }
}

/// Spaces requests at most `rps` per second (`--max-rps`).
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub fn new(rps: u32) -> RateLimit {
        RateLimit {
            interval: Duration::from_secs(1) / rps.max(1),
            next: Mutex::new(None),
        }
    }

    /// Waits for this request's slot. Cancel-safe: a dropped wait only wastes its slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().expect("rate lock");
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_burst_of_throttles_halves_once_and_success_grows_back() {
        let l = Limiter::new(64, Arc::default());
        let permits: Vec<Permit> = futures_join(&l, 64).await;
        for p in &permits {
            p.on_throttle();
        }
        assert_eq!(l.current(), 32, "one window, one cut");
        drop(permits);
        let p = l.acquire().await;
        p.on_throttle();
        assert_eq!(l.current(), 16);
        for _ in 0..17 {
            p.on_success();
        }
        assert_eq!(l.current(), 17, "about one more per window of successes");
        for _ in 0..10_000 {
            p.on_success();
        }
        assert_eq!(l.current(), 64, "never above the maximum");
    }

    #[tokio::test]
    async fn never_hands_out_more_than_the_limit() {
        let l = Limiter::new(4, Arc::default());
        let held = futures_join(&l, 4).await;
        let more = tokio::time::timeout(Duration::from_millis(20), l.acquire()).await;
        assert!(more.is_err(), "a fifth permit must wait");
        drop(held);
        let _ = tokio::time::timeout(Duration::from_secs(5), l.acquire())
            .await
            .expect("freed");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_requests() {
        let r = RateLimit::new(10);
        let start = Instant::now();
        for _ in 0..11 {
            r.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    async fn futures_join(l: &Arc<Limiter>, n: usize) -> Vec<Permit> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(l.acquire().await);
        }
        v
    }
}
