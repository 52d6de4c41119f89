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
            line(&stats.snapshot(), elapsed, concurrency)
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

fn line(s: &Snapshot, elapsed: Duration, concurrency: u64) -> String {
    let mut text = format!(
        "listed {} · HEAD {} · skipped {} · errors {} · {} obj/s",
        thousands(s.listed),
        thousands(s.headed),
        thousands(s.skipped),
        thousands(s.failed),
        thousands(rate(s.listed, elapsed)),
    );
    if s.throttled > 0 {
        text.push_str(&format!(
            " · throttled {} (concurrency {concurrency})",
            thousands(s.throttled)
        ));
    }
    text
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
    let tags = match s.tag_requests + s.tags_read {
        0 => String::new(),
        _ => format!(
            ", tags of {} read ({} GetObjectTagging)",
            thousands(s.tags_read),
            thousands(s.tag_requests)
        ),
    };
    format!(
        "{verb} {target} ({} scan {}{}): {} objects listed, {} HEADs ({} with custom metadata){tags}, {} skipped unchanged, {} gone, {} errors, {:.1}s, {} objects/s",
        r.mode.as_str(),
        r.scan_id,
        if r.resumed { ", resumed" } else { "" },
        thousands(s.listed),
        thousands(s.headed),
        thousands(s.with_metadata),
        thousands(s.skipped),
        thousands(s.gone),
        thousands(r.errors as u64),
        r.elapsed.as_secs_f64(),
        thousands(rate(s.listed.max(s.headed), r.elapsed)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
