//! Benchmark of scans against a throttling store (issue 13): figures, never assertions.
//!
//! Receives: the scenarios on the command line. Sends on: one table on stdout. Starts the
//! standalone test server (`s3meta-test-server`) in its own process with N objects and a
//! per-request latency, then runs full scans with the `s3meta` binary, each into a fresh
//! database, with the server's HEAD throttling set through `POST /__admin/slowdown` before
//! each:
//! - `held at k`: no throttling, `--concurrency k` (the best a store of capacity k allows);
//! - `503 above k`: SlowDown whenever more than k HEADs are in flight, `--concurrency C`;
//! - `none`: no throttling, `--concurrency C` (the baseline of the random rows);
//! - `random P%`: SlowDown for a seeded random P% of HEADs, whatever the load, `-j C`.
//!
//! The scenarios run in rounds, in reverse order every other round, so that a slow spell of
//! the machine does not fall on one scenario; each row's ratio is against its baseline of
//! the same round. Per run: wall time, objects/s, the ratio, HEAD requests and 503s as the
//! server and s3meta counted them, the mean and peak of HEADs in flight at the server (its
//! busy time ÷ wall time), and s3meta's CPU seconds.
//!
//! `cargo build --release --workspace --bins && cargo run --release --example bench_throttle --
//!  [--objects N] [--latency-ms L] [--k K] [--concurrency C] [--rates 5,15,30] [--rounds R]
//!  [--bin-dir DIR] [--s3meta PATH]` (defaults 20000, 20, 16, 64, 5,15,30, 2; `--s3meta` runs
//! another build, e.g. one of `main`, against the same server).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use serde_json::Value;

mod support;
use support::{Server, admin};

const BUCKET: &str = "bench";

#[derive(Debug, Parser)]
#[command(about = "Benchmark s3meta scans against a throttling test server")]
struct Args {
    #[arg(long, default_value_t = 20_000)]
    objects: usize,
    /// Server latency per request, in milliseconds (503s are answered at once).
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// The store's capacity: `503 above k` refuses HEADs above k in flight.
    #[arg(long, default_value_t = 16)]
    k: u64,
    /// `--concurrency` of every scan but `held at k`.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Random SlowDown shares, in percent.
    #[arg(long, value_delimiter = ',', default_value = "5,15,30")]
    rates: Vec<u32>,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Where `s3meta` and `s3meta-test-server` are (default: next to this example's dir; the
    /// driver itself may be a debug build, it only starts processes).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The s3meta binary to run (default: the one in the binaries' dir).
    #[arg(long)]
    s3meta: Option<PathBuf>,
}

/// One scan's setting: the server's throttling and the client's concurrency.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    HeldAtK,
    AboveK,
    None,
    Random(u32),
}

impl Scenario {
    fn name(self, k: u64) -> String {
        match self {
            Scenario::HeldAtK => format!("held at k={k}"),
            Scenario::AboveK => format!("503 above k={k}"),
            Scenario::None => "none".into(),
            Scenario::Random(p) => format!("random {p}%"),
        }
    }

    fn baseline(self) -> Option<Scenario> {
        match self {
            Scenario::AboveK => Some(Scenario::HeldAtK),
            Scenario::Random(_) => Some(Scenario::None),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Row {
    round: usize,
    sc: Scenario,
    conc: u64,
    wall: f64,
    listed: u64,
    head: u64,
    throttled: u64,
    errors: u64,
    mean_in_flight: f64,
    peak_in_flight: u64,
    cpu: f64,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = match args.bin_dir.clone() {
        Some(d) => d,
        // target/release/examples/bench_throttle → target/release
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable: {e}"))?
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot find the target directory")?
            .to_path_buf(),
    };
    if dir.ends_with("debug") {
        eprintln!("warning: debug binaries; figures are meaningless outside --release");
    }
    let s3meta = args.s3meta.clone().unwrap_or_else(|| dir.join("s3meta"));
    let server_bin = dir.join("s3meta-test-server");
    for b in [&s3meta, &server_bin] {
        if !b.exists() {
            return Err(format!(
                "{} is missing: run `cargo build --release --workspace --bins` first",
                b.display()
            ));
        }
    }
    let scratch = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let server = Server::start(&server_bin, args.objects, args.latency_ms, BUCKET)?;
    let mut order = vec![Scenario::HeldAtK, Scenario::AboveK, Scenario::None];
    order.extend(args.rates.iter().map(|p| Scenario::Random(*p)));
    println!(
        "test server (s3meta-test-server, own process), {} objects, {} ms per request, 503s at once; \
         s3meta {}",
        args.objects,
        args.latency_ms,
        s3meta.display()
    );
    let mut rows = Vec::new();
    for round in 1..=args.rounds {
        let scenarios: Vec<Scenario> = if round % 2 == 1 {
            order.clone()
        } else {
            order.iter().rev().copied().collect()
        };
        for sc in scenarios {
            let db = scratch.path().join(format!("{round}-{}.db", rows.len()));
            let row = run(&args, &s3meta, &server, &db, round, sc)?;
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    print_table(&args, &rows);
    Ok(())
}

/// Sets the server's throttling for `sc`, scans, and reads both sides' counters.
fn run(
    args: &Args,
    s3meta: &Path,
    server: &Server,
    db: &Path,
    round: usize,
    sc: Scenario,
) -> Result<Row, String> {
    let (rule, conc) = match sc {
        Scenario::HeldAtK => (String::new(), args.k),
        Scenario::AboveK => (format!("above={}", args.k), args.concurrency),
        Scenario::None => (String::new(), args.concurrency),
        Scenario::Random(p) => (
            format!("rate={}&seed={}", f64::from(p) / 100.0, args.seed),
            args.concurrency,
        ),
    };
    admin(
        &server.endpoint,
        "POST",
        &format!("/__admin/slowdown?{rule}"),
    )?;
    admin(&server.endpoint, "POST", "/__admin/reset")?;
    let summary_path = db.with_extension("summary.json");
    let empty = db.with_extension("empty-aws-file");
    std::fs::write(&empty, "").map_err(|e| e.to_string())?;
    let started = Instant::now();
    let out = Command::new(s3meta)
        .args(["scan", &format!("s3://{BUCKET}")])
        .args(["--endpoint-url", &server.endpoint])
        .arg("--db")
        .arg(db)
        .args(["--concurrency", &conc.to_string()])
        .args(["--no-progress", "-q", "--summary-json"])
        .arg(&summary_path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "s3meta-test")
        .env("AWS_SECRET_ACCESS_KEY", "s3meta-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", s3meta.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let stats: Value = serde_json::from_str(&admin(&server.endpoint, "GET", "/__admin/stats")?)
        .map_err(|e| format!("admin stats: {e}"))?;
    // 0: complete; 3: complete with objects in error (they are counted below).
    if !matches!(out.status.code(), Some(0 | 3)) {
        return Err(format!(
            "s3meta scan failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = std::fs::read_to_string(&summary_path).map_err(|e| e.to_string())?;
    let s: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let f = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(Row {
        round,
        sc,
        conc,
        wall,
        listed: f(&s, "/objects/listed") as u64,
        head: f(&stats, "/requests/head") as u64,
        throttled: f(&s, "/throttled") as u64,
        errors: f(&s, "/objects/errored") as u64,
        mean_in_flight: f(&stats, "/busy_seconds/head") / wall,
        peak_in_flight: f(&stats, "/peak_in_flight/head") as u64,
        cpu: f(&s, "/resources/cpu_user_seconds") + f(&s, "/resources/cpu_system_seconds"),
    })
}

fn print_table(args: &Args, rows: &[Row]) {
    println!(
        "{:>5} {:<16} {:>4} {:>8} {:>8} {:>12} {:>8} {:>8} {:>6} {:>10} {:>6} {:>7}",
        "round",
        "throttling",
        "-j",
        "wall s",
        "obj/s",
        "vs baseline",
        "HEADs",
        "503s",
        "errors",
        "in flight",
        "peak",
        "CPU s"
    );
    for r in rows {
        let rate = r.listed as f64 / r.wall;
        let ratio = r.sc.baseline().and_then(|b| {
            let base = rows.iter().find(|o| o.round == r.round && o.sc == b)?;
            Some(format!(
                "{:.0}% of {}",
                100.0 * base.wall / r.wall,
                match b {
                    Scenario::HeldAtK => "held",
                    _ => "none",
                }
            ))
        });
        println!(
            "{:>5} {:<16} {:>4} {:>8.2} {:>8.0} {:>12} {:>8} {:>8} {:>6} {:>10.1} {:>6} {:>7.2}",
            r.round,
            r.sc.name(args.k),
            r.conc,
            r.wall,
            rate,
            ratio.unwrap_or_else(|| "-".into()),
            r.head,
            r.throttled,
            r.errors,
            r.mean_in_flight,
            r.peak_in_flight,
            r.cpu
        );
    }
}
