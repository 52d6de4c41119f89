//! The progress line and the final summary, both on stderr.
//!
//! Receives: the live `Stats`. Sends on: an indicatif spinner redrawn a few times a second
//! when stderr is a terminal, and one summary line at the end. Invariant: drawing reads
//! counters only; it never blocks or slows a pipeline stage.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use s3meta::model::Mode;
use s3meta::model::stats::{Snapshot, Stats};
use s3meta::scan::{Outcome, ScanReport};
use s3meta::store::check::{CheckProgress, PHASES};

/// The bar being drawn, if any: log lines are written around it (see `LogWriter`).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A `tracing` writer for stderr that hides the progress line while a log line is written,
/// so logs and the bar never interleave.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().map(|b| b.clone()).unwrap_or(None);
        match bar {
            Some(bar) => bar
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => std::io::stderr().write_all(buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// A running progress line; `finish` clears it.
pub struct Progress {
    bar: Option<(ProgressBar, JoinHandle<()>)>,
}

impl Progress {
    /// The progress line of a scan.
    pub fn start(stats: Arc<Stats>, enabled: bool) -> Progress {
        Progress::drawing(enabled, move |elapsed| {
            let concurrency = stats.concurrency.load(Relaxed);
            let after = stats.after_listing.get().copied();
            line(&stats.snapshot(), elapsed, concurrency, after)
        })
    }

    /// The progress line of `s3meta check`.
    pub fn start_check(p: Arc<CheckProgress>, enabled: bool) -> Progress {
        Progress::drawing(enabled, move |_| check_line(&p))
    }

    /// A line redrawn 4 times a second from what `message` makes of the elapsed time.
    fn drawing(enabled: bool, message: impl Fn(Duration) -> String + Send + 'static) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        let (b, started) = (bar.clone(), Instant::now());
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                b.set_message(message(started.elapsed()));
                b.tick();
            }
        });
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some(bar.clone());
        }
        Progress {
            bar: Some((bar, ticker)),
        }
    }

    pub fn finish(self) {
        if let Some((bar, ticker)) = self.bar {
            if let Ok(mut active) = ACTIVE.lock() {
                *active = None;
            }
            ticker.abort();
            bar.finish_and_clear();
        }
    }
}

fn line(s: &Snapshot, elapsed: Duration, concurrency: u64, after: Option<(u64, u64)>) -> String {
    let heads_rate = thousands(rate(s.headed, elapsed));
    let mut text = match after {
        // Listing is over: how far the HEADs are, and when they will be done.
        Some((owed, headed_then)) => {
            let done = s.headed.saturating_sub(headed_then).min(owed);
            let left = owed - done;
            let eta = match rate(s.headed, elapsed) {
                0 => "-".to_string(),
                r => clock(Duration::from_secs(left / r)),
            };
            format!(
                "listing done ({} listed) · HEAD {} of {} left · {heads_rate} HEAD/s · ETA {eta} · errors {}",
                thousands(s.listed),
                thousands(left),
                thousands(owed),
                thousands(s.failed),
            )
        }
        None => format!(
            "listed {} ({} /s) · HEAD {} ({heads_rate} /s) · skipped {} · errors {}",
            thousands(s.listed),
            thousands(rate(s.listed, elapsed)),
            thousands(s.headed),
            thousands(s.skipped),
            thousands(s.failed),
        ),
    };
    if s.throttled > 0 {
        text.push_str(&format!(
            " · throttled {} (concurrency {concurrency})",
            thousands(s.throttled)
        ));
    }
    text
}

/// `1h02m`, `4m05s`, `12s`.
fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

fn check_line(p: &CheckProgress) -> String {
    let phase = p.phase.load(Relaxed);
    let (done, total) = (p.done.load(Relaxed), p.total.load(Relaxed));
    let name = PHASES.get(phase).copied().unwrap_or("checking");
    match phase {
        0 if done > total => format!(
            "{name}: {} pages read, matching indexes to rows",
            thousands(total)
        ),
        0 => format!("{name}: page {} of {}", thousands(done), thousands(total)),
        2 if total > 0 => format!(
            "{name}: object {} of {} ({}%)",
            thousands(done),
            thousands(total),
            done * 100 / total
        ),
        _ => name.to_string(),
    }
}

fn rate(n: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs) as u64
    } else {
        0
    }
}

pub use s3meta::read::output::thousands;

/// The one-line summary printed at the end of a scan unless `-q`.
pub fn summary(target: &str, r: &ScanReport) -> String {
    let s = &r.stats;
    let verb = match r.outcome {
        Outcome::Complete => "scanned",
        Outcome::CompleteWithErrors => "scanned (with errors)",
        Outcome::Interrupted => "interrupted",
    };
    let c = s3meta::model::words::count;
    let tags = match s.tag_requests + s.tags_read {
        0 => String::new(),
        _ => format!(
            ", tags of {} read ({} GetObjectTagging)",
            c(s.tags_read, "object"),
            thousands(s.tag_requests)
        ),
    };
    let run = match r.mode {
        Mode::Full => format!("full scan {}", r.scan_id),
        Mode::Rescan => format!("rescan {}", r.scan_id),
    };
    format!(
        "{verb} {target} ({run}{}): {} listed, {} ({} with custom metadata){tags}, {} skipped unchanged, {} gone, {}, {:.1} s, {} objects/s",
        if r.resumed { ", resumed" } else { "" },
        c(s.listed, "object"),
        c(s.headed, "HEAD"),
        thousands(s.with_metadata),
        thousands(s.skipped),
        thousands(s.gone),
        c(r.errors as u64, "error"),
        r.elapsed.as_secs_f64(),
        thousands(rate(s.listed.max(s.headed), r.elapsed)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: while listing, both rates; once listing ends, what is left and when.
    #[test]
    fn the_line_says_where_the_scan_is() {
        let s = Snapshot {
            listed: 10_000,
            headed: 4_000,
            ..Snapshot::default()
        };
        let listing = line(&s, Duration::from_secs(10), 64, None);
        assert!(listing.contains("listed 10,000 (1,000 /s)"), "{listing}");
        assert!(listing.contains("HEAD 4,000 (400 /s)"), "{listing}");
        let after = line(&s, Duration::from_secs(10), 64, Some((8_000, 2_000)));
        assert!(after.contains("HEAD 6,000 of 8,000 left"), "{after}");
        assert!(
            after.contains("400 HEAD/s") && after.contains("ETA 15s"),
            "{after}"
        );
        assert_eq!(clock(Duration::from_secs(3725)), "1h02m");
        assert_eq!(clock(Duration::from_secs(245)), "4m05s");
    }
}
