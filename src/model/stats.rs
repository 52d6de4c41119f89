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
    /// LIST requests of a few keys (split and order probes), counted in `list_requests` too.
    pub list_probes: AtomicU64,
    pub head_requests: AtomicU64,
    /// GetObjectTagging attempts (`--tags`).
    pub tag_requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    /// Objects whose HEAD result (ok, gone or failed) has been committed.
    pub headed: AtomicU64,
    pub skipped: AtomicU64,
    pub with_metadata: AtomicU64,
    /// Objects whose tags were read (or counted 0 by HEAD), committed.
    pub tags_read: AtomicU64,
    pub gone: AtomicU64,
    pub failed: AtomicU64,
    /// LIST answers the fast path left to the SDK's parser (`src/s3/list/xml.rs`).
    pub lists_parsed_by_sdk: AtomicU64,
    /// Current HEAD concurrency limit (adaptive when throttled).
    pub concurrency: AtomicU64,
    /// The scan row this run works on, and its mode, once the scan has started.
    pub scan: std::sync::OnceLock<(i64, crate::model::Mode)>,
    /// The HEADs the scan still owes, once this run's end is recorded — also when it ends
    /// with a fatal error, so `--summary-json` tells what a resume has left to do.
    pub head_due: std::sync::OnceLock<i64>,
    /// Once listing has ended: the HEADs (and tag reads) then owed, and `headed` at that
    /// moment, so the progress line can show done/total and an ETA.
    pub after_listing: std::sync::OnceLock<(u64, u64)>,
}

/// A plain copy of the counters at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub listed: u64,
    pub list_requests: u64,
    pub head_requests: u64,
    pub tag_requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub headed: u64,
    pub skipped: u64,
    pub with_metadata: u64,
    pub tags_read: u64,
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
            tag_requests: self.tag_requests.load(Relaxed),
            retries: self.retries.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            headed: self.headed.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            with_metadata: self.with_metadata.load(Relaxed),
            tags_read: self.tags_read.load(Relaxed),
            gone: self.gone.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

/// This process's CPU time and peak memory, read from /proc (Linux); zero elsewhere.
#[derive(Debug, Default, serde::Serialize)]
pub struct Resources {
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    pub peak_rss_bytes: u64,
}

pub fn resources() -> Resources {
    let ticks = 100.0; // USER_HZ, 100 on every Linux platform s3meta targets
    let mut r = Resources::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            r.cpu_user_seconds = field(11) / ticks;
            r.cpu_system_seconds = field(12) / ticks;
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        r.peak_rss_bytes = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_resources() {
        let r = resources();
        assert!(r.peak_rss_bytes > 1_000_000, "{r:?}");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(resources().cpu_user_seconds + resources().cpu_system_seconds > 0.0);
    }
}
