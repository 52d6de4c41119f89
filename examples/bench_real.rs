//! Benchmark against a real S3 server (issue 15): the seed's program and `s3meta scan` on the
//! same bucket, alternating, N pairs, medians and ratios. Never asserts.
//!
//! Each run is a child process measured by the kernel (`wait4`: user + system CPU, peak RSS),
//! so the two programs are measured alike. Per run it prints wall time, objects/s, CPU µs per
//! object, peak RSS, s3meta's LIST and HEAD requests (its `--summary-json`; the seed sends one
//! LIST per page and one HEAD per key by construction), and the sockets to the endpoint that
//! went into TIME_WAIT during the run (`/proc/net/tcp`: present after it, not before). The seed's objects are s3meta's
//! count of the same bucket. The first run of each pair
//! alternates, so neither program always meets a cold server.
//!
//! ```sh
//! eval "$(../shared/tools/garage-server start)"        # Garage on 127.0.0.1:3900
//! cargo build --release --bin s3meta --example bench_real
//! target/release/examples/bench_real --bucket b20k --seed PATH/seed-rust [--pairs 5]
//!     [--endpoint http://127.0.0.1:3900] [--s3meta target/release/s3meta] [-- SCAN FLAGS…]
//! ```
//! Credentials come from the `AWS_*` environment, as for both programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Args {
    endpoint: String,
    bucket: String,
    seed: PathBuf,
    s3meta: PathBuf,
    pairs: usize,
    scan_flags: Vec<String>,
}

/// What one run of one program measured.
#[derive(Clone, Copy, Default)]
struct Run {
    wall: f64,
    cpu: f64,
    peak_rss_mb: f64,
    objects: f64,
    list: f64,
    head: f64,
    time_wait: f64,
}

fn main() -> Result<(), String> {
    let args = parse()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = args
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .ok_or("--endpoint needs an explicit port, e.g. http://127.0.0.1:3900")?;
    let (mut seed, mut ours) = (Vec::new(), Vec::new());
    println!(
        "bucket {} at {}, {} pairs, s3meta flags: {:?}",
        args.bucket, args.endpoint, args.pairs, args.scan_flags
    );
    println!(
        "{:<7} {:>4} {:>7} {:>9} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9}",
        "program",
        "pair",
        "wall s",
        "obj/s",
        "CPU s",
        "µs/obj",
        "RSS MB",
        "LIST",
        "HEAD",
        "TIME_WAIT"
    );
    let mut objects = f64::NAN;
    for pair in 1..=args.pairs {
        // s3meta first in the first pair: its count of the bucket is the seed's too.
        let seed_first = pair % 2 == 0;
        for which in [seed_first, !seed_first] {
            let mut run = if which {
                run_seed(&args, port)?
            } else {
                run_s3meta(&args, port, &dir.path().join(format!("scan-{pair}.db")))?
            };
            if which {
                run.objects = objects;
            } else {
                objects = run.objects;
            }
            print_run(if which { "seed" } else { "s3meta" }, pair, &run);
            if which { &mut seed } else { &mut ours }.push(run);
        }
    }
    let (s, o) = (median(&seed), median(&ours));
    println!("\nmedians of {} pairs (s3meta ÷ seed):", args.pairs);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "  objects/s   seed {:>8.0}  s3meta {:>8.0}  {:.2}×",
        s.objects / s.wall,
        o.objects / o.wall,
        ratio(o.objects / o.wall, s.objects / s.wall)
    );
    println!(
        "  CPU µs/obj  seed {:>8.0}  s3meta {:>8.0}  {:.2}×",
        per_object(&s),
        per_object(&o),
        ratio(per_object(&o), per_object(&s))
    );
    println!(
        "  peak RSS    seed {:>6.1} MB  s3meta {:>6.1} MB",
        s.peak_rss_mb, o.peak_rss_mb
    );
    println!(
        "  TIME_WAIT   seed {:>8.0}  s3meta {:>8.0}",
        s.time_wait, o.time_wait
    );
    println!("  s3meta LIST {:.0}, HEAD {:.0}", o.list, o.head);
    Ok(())
}

fn per_object(r: &Run) -> f64 {
    r.cpu / r.objects.max(1.0) * 1e6
}

fn print_run(name: &str, pair: usize, r: &Run) {
    let dash = |v: f64| {
        if v.is_nan() {
            "–".to_string()
        } else {
            format!("{v:.0}")
        }
    };
    println!(
        "{name:<7} {pair:>4} {:>7.2} {:>9.0} {:>8.2} {:>8.0} {:>7.1} {:>7} {:>8} {:>9.0}",
        r.wall,
        r.objects / r.wall,
        r.cpu,
        per_object(r),
        r.peak_rss_mb,
        dash(r.list),
        dash(r.head),
        r.time_wait
    );
}

/// The median of each field (wall, CPU and RSS chosen independently).
fn median(runs: &[Run]) -> Run {
    let m = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Run {
        wall: m(|r| r.wall),
        cpu: m(|r| r.cpu),
        peak_rss_mb: m(|r| r.peak_rss_mb),
        objects: m(|r| r.objects),
        list: m(|r| r.list),
        head: m(|r| r.head),
        time_wait: m(|r| r.time_wait),
    }
}

fn run_seed(args: &Args, port: u16) -> Result<Run, String> {
    let before = time_wait(port);
    let started = Instant::now();
    // Its output (a line per metadata entry) is not needed; the objects are s3meta's count
    // of the same, unchanged bucket.
    let child = Command::new(&args.seed)
        .args([&args.endpoint, &args.bucket])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.seed.display()))?;
    let usage = wait(child.id())?;
    let wall = started.elapsed().as_secs_f64();
    Ok(Run {
        wall,
        objects: f64::NAN,
        list: f64::NAN,
        head: f64::NAN,
        time_wait: time_wait(port).difference(&before).count() as f64,
        ..usage
    })
}

fn run_s3meta(args: &Args, port: u16, db: &Path) -> Result<Run, String> {
    let summary = db.with_extension("json");
    let before = time_wait(port);
    let started = Instant::now();
    let child = Command::new(&args.s3meta)
        .args(["scan", &format!("s3://{}", args.bucket)])
        .args(["--endpoint-url", &args.endpoint, "--no-progress", "-q"])
        .arg("--db")
        .arg(db)
        .arg("--summary-json")
        .arg(&summary)
        .args(&args.scan_flags)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.s3meta.display()))?;
    let usage = wait(child.id())?;
    let wall = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&summary).map_err(|e| format!("s3meta failed: {e}"))?;
    let s: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let f = |p: &str| s.pointer(p).and_then(serde_json::Value::as_f64);
    Ok(Run {
        wall,
        objects: f("/objects/listed").unwrap_or(0.0),
        list: f("/requests/list").unwrap_or(f64::NAN),
        head: f("/requests/head").unwrap_or(f64::NAN),
        time_wait: time_wait(port).difference(&before).count() as f64,
        ..usage
    })
}

/// Reaps the child and returns its CPU time and peak RSS, as the kernel counted them.
fn wait(pid: u32) -> Result<Run, String> {
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills; the pid is our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    if r < 0 {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("the program failed (wait status {status})"));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Run {
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        ..Run::default()
    })
}

/// The sockets (local address) in TIME_WAIT to `port`, IPv4 and IPv6: a run's are those
/// present after it and not before (the earlier runs' expire meanwhile).
fn time_wait(port: u16) -> std::collections::HashSet<String> {
    let remote = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let hit = f.len() > 3 && f[3] == "06" && f[2].ends_with(&remote);
                    hit.then(|| f[1].to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        endpoint: "http://127.0.0.1:3900".into(),
        bucket: String::new(),
        seed: PathBuf::new(),
        s3meta: std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("s3meta")))
            .unwrap_or_else(|| PathBuf::from("target/release/s3meta")),
        pairs: 5,
        scan_flags: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--" {
            args.scan_flags = it.by_ref().collect();
            break;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoint" => args.endpoint = value,
            "--bucket" => args.bucket = value,
            "--seed" => args.seed = value.into(),
            "--s3meta" => args.s3meta = value.into(),
            "--pairs" => args.pairs = value.parse().map_err(|_| "--pairs N")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.bucket.is_empty() || args.seed.as_os_str().is_empty() {
        return Err("usage: bench_real --bucket B --seed PATH [--pairs N] [--endpoint URL] [--s3meta PATH] [-- SCAN FLAGS]".into());
    }
    Ok(args)
}
