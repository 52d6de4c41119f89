//! The Prometheus text exposition format (version 0.0.4), for `scan --metrics-file` (the
//! node_exporter textfile collector reads it) and `follow`'s `/metrics`.
//!
//! Receives: metric families — a name, help text, a type, and samples with labels. Sends on:
//! their text. Invariants: each family is written once, `# HELP` then `# TYPE` then its
//! samples; label values escape `\`, `"` and newlines, help text `\` and newlines, as the
//! format requires; values are written as Go's `strconv.FormatFloat` would read them back
//! (`+Inf`, `NaN`, integers without a fraction).

use std::fmt::Write;

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// A text exposition being built, family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut Self {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample of the family just started (`name` may carry a histogram's `_bucket`,
    /// `_sum` or `_count` suffix).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&format_value(value));
        self.text.push('\n');
        self
    }

    /// A histogram family: cumulative `_bucket` samples (`le` bounds, then `+Inf`), `_sum`
    /// and `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) -> &mut Self {
        self.family(name, help, MetricType::Histogram);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            let le = format_value(*bound);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64)
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A histogram's counts per bucket (not cumulative), with its sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending.
    pub bounds: Vec<f64>,
    /// Observations in (previous bound, bound]; those above the last bound are only in `count`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// A histogram shared between threads: fixed buckets, atomically updated.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<std::sync::atomic::AtomicU64>,
    sum_micros: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

/// Latency buckets in seconds, 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: bounds.iter().map(|_| Default::default()).collect(),
            sum_micros: Default::default(),
            count: Default::default(),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        HistogramSnapshot {
            bounds: self.bounds.clone(),
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
            count: self.count.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_escapes_follow_the_format() {
        let mut e = Exposition::new();
        e.family("s3meta_x", "A help\nline with \\.", MetricType::Gauge)
            .sample("s3meta_x", &[("bucket", "a\"b\\c\nd"), ("prefix", "")], 3.0)
            .sample("s3meta_x", &[], 0.5);
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(std::time::Duration::from_millis(50));
        h.observe(std::time::Duration::from_millis(500));
        h.observe(std::time::Duration::from_secs(5));
        e.histogram(
            "s3meta_h_seconds",
            "Latency.",
            &[("op", "head")],
            &h.snapshot(),
        );
        assert_eq!(
            e.finish(),
            "# HELP s3meta_x A help\\nline with \\\\.\n\
             # TYPE s3meta_x gauge\n\
             s3meta_x{bucket=\"a\\\"b\\\\c\\nd\",prefix=\"\"} 3\n\
             s3meta_x 0.5\n\
             # HELP s3meta_h_seconds Latency.\n\
             # TYPE s3meta_h_seconds histogram\n\
             s3meta_h_seconds_bucket{op=\"head\",le=\"0.1\"} 1\n\
             s3meta_h_seconds_bucket{op=\"head\",le=\"1\"} 2\n\
             s3meta_h_seconds_bucket{op=\"head\",le=\"+Inf\"} 3\n\
             s3meta_h_seconds_sum{op=\"head\"} 5.55\n\
             s3meta_h_seconds_count{op=\"head\"} 3\n"
        );
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1.7e9), "1700000000");
    }
}
