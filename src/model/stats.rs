//! Live counters of one scan run, shared by the lister, the HEAD workers, the writer and the
//! progress line.
//!
//! Receives: increments from every stage (each HTTP attempt is counted where it is made).
//! Sends on: snapshots for the progress bar, the summary and the scan row. Invariant: counters
//! only grow; they are relaxed atomics because nothing is synchronized through them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub listed: AtomicU64,
    pub list_requests: AtomicU64,
    pub head_requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    /// Objects whose HEAD result (ok, gone or failed) has been committed.
    pub headed: AtomicU64,
    pub skipped: AtomicU64,
    pub with_metadata: AtomicU64,
    pub gone: AtomicU64,
    pub failed: AtomicU64,
    /// LIST answers the fast path left to the SDK's parser (`src/lister/xml.rs`).
    pub lists_parsed_by_sdk: AtomicU64,
    /// Current HEAD concurrency limit (adaptive when throttled).
    pub concurrency: AtomicU64,
    /// The scan row this run works on, and its mode, once the scan has started.
    pub scan: std::sync::OnceLock<(i64, crate::model::Mode)>,
    /// The HEADs the scan still owes, once this run's end is recorded — also when it ends
    /// with a fatal error, so `--summary-json` tells what a resume has left to do.
    pub head_due: std::sync::OnceLock<i64>,
}

/// A plain copy of the counters at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub listed: u64,
    pub list_requests: u64,
    pub head_requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub headed: u64,
    pub skipped: u64,
    pub with_metadata: u64,
    pub gone: u64,
    pub failed: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            listed: self.listed.load(Relaxed),
            list_requests: self.list_requests.load(Relaxed),
            head_requests: self.head_requests.load(Relaxed),
            retries: self.retries.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            headed: self.headed.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            with_metadata: self.with_metadata.load(Relaxed),
            gone: self.gone.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}
