//! The optional request-rate cap (`--max-rps`), shared by LIST and HEAD.
//!
//! Receives: a wait before every request attempt. Sends on: the attempt, once its slot has
//! come. Invariant: slots are spaced evenly, one every `1 / rps`, whichever task asks.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

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

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_requests() {
        let r = RateLimit::new(10);
        let start = Instant::now();
        for _ in 0..11 {
            r.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
