//! The adaptive HEAD concurrency limit.
//!
//! Receives: a request for a slot before every HEAD attempt (first tries and retries alike),
//! and each attempt's answer when it gives its slot back. Sends on: slots, at most `limit` at
//! a time. Invariants: 1 ≤ limit ≤ `--concurrency`; an attempt holds a slot only while it is
//! at the store (a throttled request waits out its back-off without one, so the limit is the
//! number of requests the store sees); the limit moves once per window, never on a single
//! answer.
//!
//! # How the limit moves
//!
//! Two kinds of stores answer 503 SlowDown. One refuses work above a capacity (AWS while a
//! prefix scales, a small cluster): it must be run near that capacity, which a lower limit
//! finds. The other refuses a share of requests whatever the load (a flaky proxy, a gateway
//! shedding at random): a lower limit only loses throughput, and retrying is the answer.
//! They differ in one observable way, which the limiter tests: *whether throttling eases
//! when the load drops*.
//!
//! - A **window** is the first `max(limit, 32)` attempts sent under the current limit, judged
//!   once all of them have ended, on their successes and throttles (other failures say
//!   nothing about load). Only attempts sent under a limit judge it, so the late answers of a
//!   burst cut once, not once each; and waiting for the slowest keeps the rate honest, as 503s
//!   come back sooner than successes. A window is judged early once its throttles alone make
//!   it a cut whatever the rest answer (counting them as successes), so a store over capacity
//!   gets a few 503s per crossing, not a round trip of them.
//! - A window is **throttled** when at least two of its attempts were and its throttle rate is
//!   above the *background* rate by more than chance (a one-sided two-proportion z-test at
//!   3σ; with no background learned yet, two throttles suffice), or when half or more were
//!   (a store refusing most requests is backed off whatever the cause).
//! - A clean window raises the limit by one (additive increase: probing for capacity) and is
//!   added to the background.
//! - A throttled window cuts the limit to 0.7× (multiplicative decrease, bounded: one cut per
//!   window, never below 1) and makes the next window a **trial** of the cut.
//! - A trial whose throttle rate did not fall (not below the cut window's by 1σ and under one
//!   half; after a cut window judged early, as many throttles in the whole trial and not above
//!   a learned background) shows that the throttling does not depend on load: the cut is
//!   **undone** and the windows join the background (the cut window only if judged whole), so
//!   that rate is tolerated from then on and those requests are simply retried. A trial whose
//!   rate fell confirms the cut and is judged as a window of its own (cut again, or grow).
//!
//! Against a store that throttles above k in flight the limit descends to k, then saw-tooths
//! between about 0.7·k and k + 1: each crossing throttles a window (two 503s suffice once
//! the background is known to be clean), each cut's trial is clean. Against random throttling
//! the first throttled window's cut is undone by its trial, after which windows at the
//! background rate are clean and the limit stays at `--concurrency`; a chance excess (3σ)
//! costs one trial window at 0.7× and the climb back. The background is a decayed tally
//! (halved past 4,096 answers), so it follows a store whose behaviour changes.
//!
//! While the throttling is all background, a throttled request is retried after the first
//! back-off step again rather than a doubled one (`Feedback::backoff_grows`): the limit
//! already holds the load, and with 30% refused at random a few objects of thousands draw
//! six or more 503s in a row, whose doubled waits were a scan's tail.
//!
//! Why not correlate throttles with the in-flight level directly: once the pool is
//! saturated every attempt is sent at the same level, the limit, so the only variation in
//! load is the one the limiter makes; the trial is that experiment, made once per cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::model::stats::Stats;
use crate::s3::retry::{Answer, Feedback};

/// Fewest answers that close a window (more when the limit is higher: one per slot).
const MIN_WINDOW: u64 = 32;
/// The multiplicative decrease.
const CUT: f64 = 0.7;
/// Standard errors by which a window's throttle rate must exceed the background to cut.
const Z_CUT: f64 = 3.0;
/// Standard errors by which a trial's rate must fall below its cut window's to confirm the
/// cut. Low on purpose: wrongly undoing a needed cut teaches load-caused throttling as
/// background, while wrongly keeping a cut of random throttling only costs the climb back.
const Z_TRIAL: f64 = 1.0;
/// A window with this share throttled always cuts and is never background.
const MOST: f64 = 0.5;
/// The background tally is halved once it holds more answers than this.
const MEMORY: u64 = 4096;

/// Answers and throttles among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    answered: u64,
    throttled: u64,
}

impl Tally {
    fn rate(self) -> f64 {
        self.throttled as f64 / self.answered.max(1) as f64
    }

    fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.throttled += other.throttled;
    }
}

/// Whether `a`'s throttle rate exceeds `b`'s by more than `z` standard errors (one-sided
/// two-proportion z-test, pooled variance).
fn exceeds(a: Tally, b: Tally, z: f64) -> bool {
    if a.answered == 0 || b.answered == 0 {
        return false;
    }
    let (na, nb) = (a.answered as f64, b.answered as f64);
    let pooled = (a.throttled + b.throttled) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    a.rate() - b.rate() > z * se
}

/// What closing a window did to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Grew,
    /// Clean, already at the maximum.
    Held,
    Cut,
    /// A trial showed the throttling does not ease with less load.
    Undone,
}

/// A cut under test: the limit before it and the window that caused it (judged whole, or
/// early with a lower bound of its rate).
#[derive(Debug, Clone, Copy)]
struct Trial {
    before: f64,
    cut_window: Tally,
    cut_complete: bool,
}

/// The tag of an attempt sent after its window was full: its answer judges nothing.
const UNJUDGED: u64 = u64::MAX;

/// The decisions, apart from slots and waiting (see the module doc).
#[derive(Debug)]
struct Adaptive {
    max: f64,
    limit: f64,
    /// Bumped when a window closes; an answer counts only in the window it was sent in.
    epoch: u64,
    /// Attempts of this window sent, and ended (answered, failed otherwise, or dropped).
    sent: u64,
    ended: u64,
    window: Tally,
    background: Tally,
    trial: Option<Trial>,
    /// The last window was throttled (the limit is coming down).
    cutting: bool,
}

/// A background throttle rate above this makes throttled retries wait without growing.
const RANDOM_BACKGROUND: f64 = 0.01;

impl Adaptive {
    fn new(max: usize) -> Adaptive {
        let max = max.max(1) as f64;
        Adaptive {
            max,
            limit: max,
            epoch: 0,
            sent: 0,
            ended: 0,
            window: Tally::default(),
            background: Tally::default(),
            trial: None,
            cutting: false,
        }
    }

    /// Whether throttling is, as far as the limit knows, independent of load: nothing is
    /// being cut, and the background itself holds throttles.
    fn background_only(&self) -> bool {
        !self.cutting && self.trial.is_none() && self.background.rate() > RANDOM_BACKGROUND
    }

    /// The slots the limit allows now.
    fn slots(&self) -> usize {
        self.limit as usize
    }

    fn window_size(&self) -> u64 {
        (self.slots() as u64).max(MIN_WINDOW)
    }

    /// Tags an attempt being sent: the first `window_size` of a window belong to it.
    fn send(&mut self) -> u64 {
        if self.sent < self.window_size() {
            self.sent += 1;
            self.epoch
        } else {
            UNJUDGED
        }
    }

    /// An attempt tagged `tag` ended; returns the move if that closed its window. A window
    /// closes when every attempt sent in it has ended, not at its first answers (503s come
    /// back sooner than successes, and the first answers would overstate the throttle rate),
    /// or as soon as its throttles alone make it a cut.
    fn record(&mut self, tag: u64, answer: Answer) -> Option<(Move, Tally)> {
        if tag != self.epoch {
            return None;
        }
        self.ended += 1;
        match answer {
            Answer::Ok => self.window.answered += 1,
            Answer::Throttled => {
                self.window.answered += 1;
                self.window.throttled += 1;
            }
            Answer::Other => {}
        }
        let size = self.window_size();
        let complete = self.ended >= size;
        let w = if complete {
            std::mem::take(&mut self.window)
        } else {
            // Judged early when the verdict is already a cut whatever the rest answer (as if
            // all of them succeeded), so an overloaded store is not sent a round trip's worth
            // of requests it will refuse; the verdict is the one the whole window would get.
            let so_far = Tally {
                answered: size,
                throttled: self.window.throttled,
            };
            let certain = self.window.throttled * 2 >= size
                || (self.trial.is_none() && self.throttled(so_far));
            if !certain {
                return None;
            }
            self.window = Tally::default();
            so_far
        };
        (self.epoch, self.sent, self.ended) = (self.epoch + 1, 0, 0);
        let m = if w.answered == 0 {
            Move::Held
        } else {
            self.close(w, complete)
        };
        self.cutting = m == Move::Cut;
        Some((m, w))
    }

    /// Judges window `w`; `complete` if every attempt of it ended (else its rate is a lower
    /// bound: the rest were counted as successes).
    fn close(&mut self, w: Tally, complete: bool) -> Move {
        if let Some(trial) = self.trial.take()
            && w.rate() < MOST
            && self.did_not_ease(trial, w)
        {
            if trial.cut_complete && trial.cut_window.rate() < MOST {
                self.learn(trial.cut_window);
            }
            self.learn(w);
            self.limit = trial.before;
            return Move::Undone;
        }
        if self.throttled(w) {
            self.trial = Some(Trial {
                before: self.limit,
                cut_window: w,
                cut_complete: complete,
            });
            self.limit = (self.limit * CUT).max(1.0);
            return Move::Cut;
        }
        self.learn(w);
        if self.limit < self.max {
            self.limit = (self.limit + 1.0).min(self.max);
            Move::Grew
        } else {
            Move::Held
        }
    }

    /// Whether trial window `w` throttled as much as the window that caused its cut did.
    fn did_not_ease(&self, trial: Trial, w: Tally) -> bool {
        if trial.cut_complete {
            return !exceeds(trial.cut_window, w, Z_TRIAL);
        }
        // The cut window was judged at its throttles so far, so its rate is only a lower bound:
        // the trial did not ease if a whole window of it throttled as often, unless a learned
        // background shows the lower limit still overloaded (then it is cut again, and the
        // next trial compares two whole windows).
        w.throttled >= trial.cut_window.throttled
            && (self.background.answered < MIN_WINDOW || !exceeds(w, self.background, Z_CUT))
    }

    fn throttled(&self, w: Tally) -> bool {
        w.throttled >= 2
            && (w.rate() >= MOST
                || self.background.answered < MIN_WINDOW
                || exceeds(w, self.background, Z_CUT))
    }

    fn learn(&mut self, w: Tally) {
        self.background.add(w);
        if self.background.answered > MEMORY {
            self.background.answered /= 2;
            self.background.throttled /= 2;
        }
    }
}

#[derive(Debug)]
struct Inner {
    adaptive: Adaptive,
    in_flight: usize,
}

/// Shared by every HEAD of a scan.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Inner>,
    freed: Notify,
    /// Where the current limit is published, for the progress line and tests.
    stats: Arc<Stats>,
}

impl Limiter {
    pub fn new(max: usize, stats: Arc<Stats>) -> Limiter {
        let adaptive = Adaptive::new(max);
        stats.concurrency.store(adaptive.slots() as u64, Relaxed);
        Limiter {
            inner: Mutex::new(Inner {
                adaptive,
                in_flight: 0,
            }),
            freed: Notify::new(),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("limiter lock")
    }

    /// Waits for a free slot and takes it; returns the attempt's tag (its window). Cancel-safe:
    /// the slot is only taken in the poll that returns it.
    async fn admit(&self) -> u64 {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.in_flight < inner.adaptive.slots() {
                    inner.in_flight += 1;
                    return inner.adaptive.send();
                }
            }
            notified.await;
        }
    }

    fn release(&self, tag: u64, answer: Answer) {
        let closed = {
            let mut inner = self.lock();
            inner.in_flight -= 1;
            let closed = inner.adaptive.record(tag, answer);
            closed.map(|(m, w)| (m, w, inner.adaptive.slots()))
        };
        self.freed.notify_one();
        if let Some((m, window, slots)) = closed {
            self.stats.concurrency.store(slots as u64, Relaxed);
            self.report(m, window, slots);
        }
    }

    fn report(&self, m: Move, window: Tally, slots: usize) {
        let pct = 100.0 * window.rate();
        match m {
            Move::Grew | Move::Undone => {
                // Several slots may have opened at once.
                self.freed.notify_waiters();
                if m == Move::Undone {
                    tracing::info!(
                        "throttling did not ease with fewer HEADs in flight ({pct:.0}% of {} \
                         requests): taken as the store's background rate, retried; HEAD \
                         concurrency back to {slots}",
                        window.answered
                    );
                }
            }
            Move::Cut => tracing::info!(
                "throttled by the store ({pct:.0}% of {} requests): HEAD concurrency lowered \
                 to {slots}",
                window.answered
            ),
            Move::Held => {}
        }
    }
}

impl Feedback for Limiter {
    fn admit(&self) -> Pin<Box<dyn Future<Output = u64> + Send + '_>> {
        Box::pin(Limiter::admit(self))
    }

    fn done(&self, tag: u64, answer: Answer) {
        self.release(tag, answer);
    }

    fn backoff_grows(&self) -> bool {
        !self.lock().adaptive.background_only()
    }
}

#[cfg(test)]
mod tests;
