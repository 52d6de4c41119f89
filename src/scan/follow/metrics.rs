//! `follow`'s `/metrics`: what the follower has applied, how far behind it is, how long its
//! HEADs take, and how deep the queue is — in the Prometheus text exposition format.
//!
//! Receives: the follower's report after each commit, the queue depth (SQS) and the HEAD
//! latency histogram. Sends on: the exposition text, on request. Invariant: the shared state
//! is a copy updated after a commit, so a scrape never waits for a batch and never sees a
//! count that was not committed.

use std::sync::{Arc, Mutex};

use crate::model::Target;
use crate::model::metrics::{Exposition, Histogram, MetricType};
use crate::scan::follow::FollowReport;

/// What a scrape reads.
#[derive(Debug, Default, Clone)]
pub struct Live {
    pub report: FollowReport,
    /// Approximate messages in the SQS queue (`None`: webhook, or not read yet).
    pub queue_depth: Option<u64>,
    /// Webhook requests waiting for a commit.
    pub waiting: Option<u64>,
}

/// The follower's metrics, shared with the server that answers `/metrics`.
#[derive(Debug, Clone)]
pub struct FollowMetrics {
    pub target: Target,
    pub live: Arc<Mutex<Live>>,
    pub latency: Arc<Histogram>,
}

impl FollowMetrics {
    pub fn update(&self, f: impl FnOnce(&mut Live)) {
        if let Ok(mut live) = self.live.lock() {
            f(&mut live);
        }
    }

    /// The exposition text now.
    pub fn render(&self) -> String {
        let live = self.live.lock().map(|l| l.clone()).unwrap_or_default();
        let t = &self.target;
        let labels = [
            ("store", t.store.as_str()),
            ("bucket", t.bucket.as_str()),
            ("prefix", t.prefix.as_str()),
        ];
        let r = &live.report;
        let mut e = Exposition::new();
        let counters: [(&str, &str, u64); 6] = [
            (
                "s3meta_follow_events_applied_total",
                "Events applied to the index (committed).",
                r.events_applied,
            ),
            (
                "s3meta_follow_events_stale_total",
                "Events older than what the index holds (changed nothing).",
                r.events_stale,
            ),
            (
                "s3meta_follow_events_ignored_total",
                "Events outside the target, test events, kinds that mean nothing to the index.",
                r.events_ignored,
            ),
            (
                "s3meta_follow_messages_total",
                "Messages (SQS messages or webhook POSTs) received.",
                r.messages,
            ),
            (
                "s3meta_follow_malformed_messages_total",
                "Messages that are not S3 events.",
                r.malformed,
            ),
            (
                "s3meta_follow_head_failures_total",
                "Objects whose HEAD failed for good (recorded in error).",
                r.failed,
            ),
        ];
        for (name, help, v) in counters {
            e.family(name, help, MetricType::Counter)
                .sample(name, &labels, v as f64);
        }
        let name = "s3meta_follow_lag_seconds";
        e.family(
            name,
            "Seconds between the newest applied event's time and its commit.",
            MetricType::Gauge,
        );
        e.sample(name, &labels, live.report.lag_secs.unwrap_or(f64::NAN));
        // One family, whichever source follows: the queue's own count, or the webhook's.
        let depth = live
            .queue_depth
            .map(|d| ("Approximate messages waiting in the SQS queue.", d))
            .or(live
                .waiting
                .map(|w| ("Webhook requests waiting for a commit.", w)));
        if let Some((help, depth)) = depth {
            let name = "s3meta_follow_queue_depth";
            e.family(name, help, MetricType::Gauge)
                .sample(name, &labels, depth as f64);
        }
        e.histogram(
            "s3meta_follow_head_duration_seconds",
            "Time of each HEAD the follower sent, retries included.",
            &labels,
            &self.latency.snapshot(),
        );
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_family_once() {
        let m = FollowMetrics {
            target: Target {
                store: "aws".into(),
                bucket: "b".into(),
                prefix: "p/".into(),
                start_after: None,
                end_key: None,
                versions: false,
            },
            live: Default::default(),
            latency: Arc::new(Histogram::new(&[0.1])),
        };
        m.update(|l| {
            l.report.events_applied = 7;
            l.queue_depth = Some(3);
        });
        let text = m.render();
        let l = r#"store="aws",bucket="b",prefix="p/""#;
        assert!(
            text.contains(&format!("s3meta_follow_events_applied_total{{{l}}} 7\n")),
            "{text}"
        );
        assert!(text.contains(&format!("s3meta_follow_queue_depth{{{l}}} 3\n")));
        assert!(text.contains(&format!("s3meta_follow_lag_seconds{{{l}}} NaN\n")));
        assert!(text.contains("# TYPE s3meta_follow_head_duration_seconds histogram\n"));
        assert_eq!(text.matches("# TYPE s3meta_follow_queue_depth").count(), 1);
    }
}
