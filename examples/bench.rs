//! The scan benchmark (issue 4): figures for the README, never assertions.
//!
//! Receives: the scenarios on the command line. Sends on: one table on stdout. Each scenario
//! starts the standalone test server (`s3meta-test-server`) and runs the `s3meta` binary as
//! separate processes, so the client's CPU and peak RSS (from `--summary-json`, read from
//! /proc by s3meta itself) are the scanner's alone; the server's CPU comes from its
//! `/__admin/stats`. A second scan of the same database is a rescan (issue 5). Then the
//! single writer is driven alone, in this process, with synthetic messages (no network).
//!
//! It builds nothing: run `cargo build --release --workspace --bins` first (the README's
//! command does both). Usage:
//! `cargo run --release --example bench -- [--objects N,...] [--latency-ms L,...]
//!  [--concurrency C,...] [--writer-objects N] [--no-rescan] [--writer-only] [--quick]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use s3meta::keys::KeyOrder;
use s3meta::model::stats::Stats;
use s3meta::model::{
    HeadFields, HeadOutcome, HeadResult, ListedObject, PageMsg, Target, WriterMsg,
};
use s3meta::store::scans;
use s3meta::store::writer::{self, WriterCtx};
use tokio::sync::{mpsc, oneshot};

mod support;
use support::{Server, admin};

const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "s3meta-test";
const SECRET_KEY: &str = "s3meta-test-secret";
const REGION: &str = "us-east-1";
const MB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Parser)]
#[command(about = "Benchmark s3meta scans against the standalone test server")]
struct Args {
    /// Objects in the bucket; a list runs each (e.g. 100000,1000000 compares memory).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    objects: Vec<usize>,
    /// Server latency per request, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,20")]
    latency_ms: Vec<u64>,
    /// HEAD concurrency; default 64, and also 256 when the latency is above zero.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Objects the writer-only figure commits (0: skip it).
    #[arg(long, default_value_t = 300_000)]
    writer_objects: usize,
    /// Skip the rescan of an unchanged bucket after each first full scan.
    #[arg(long)]
    no_rescan: bool,
    /// Only the writer-only figure (no servers, no scans): for profiling the writer.
    #[arg(long)]
    writer_only: bool,
    /// A smoke run: 20,000 objects, concurrency 64, a smaller writer run.
    #[arg(long)]
    quick: bool,
    /// Where `s3meta` and `s3meta-test-server` are (default: next to this example's dir).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// What a row of the table measured. Issue 7 adds parallel-listing rescans here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A first scan: LIST every page, HEAD every object.
    Full,
    /// The same scan again on the same database, bucket unchanged: LIST only.
    Rescan,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Rescan => "rescan",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    objects: usize,
    latency_ms: u64,
    concurrency: usize,
}

/// One s3meta run's figures.
#[derive(Debug)]
struct Row {
    kind: Kind,
    sc: Scenario,
    wall: f64,
    objects: u64,
    headed: u64,
    cpu: f64,
    peak_rss: u64,
    list: u64,
    head: u64,
    db_bytes: u64,
    server_cpu: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.objects as f64 / self.wall
    }

    fn us_per_object(&self) -> f64 {
        self.cpu * 1e6 / self.objects.max(1) as f64
    }

    fn server_us_per_request(&self) -> f64 {
        self.server_cpu * 1e6 / (self.list + self.head).max(1) as f64
    }

    fn server_us_per_object(&self) -> f64 {
        self.server_cpu * 1e6 / self.objects.max(1) as f64
    }

    /// Latency-bound ceiling of a full scan: `concurrency` HEADs per round trip.
    fn ideal(&self) -> Option<f64> {
        (self.kind == Kind::Full && self.sc.latency_ms > 0)
            .then(|| self.sc.concurrency as f64 * 1000.0 / self.sc.latency_ms as f64)
    }
}

fn main() -> Result<(), String> {
    let mut args = Args::parse();
    if args.quick {
        args.objects = vec![20_000];
        args.concurrency = vec![64];
        args.writer_objects = args.writer_objects.min(50_000);
    }
    let bins = Bins::find(args.bin_dir.clone())?;
    let scratch = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let mut rows = Vec::new();
    let scans = if args.writer_only {
        &[][..]
    } else {
        &args.objects[..]
    };
    for &objects in scans {
        for &latency_ms in &args.latency_ms {
            let server = Server::start(&bins.server, objects, latency_ms, BUCKET)?;
            for (i, concurrency) in concurrencies(&args, latency_ms).into_iter().enumerate() {
                let sc = Scenario {
                    objects,
                    latency_ms,
                    concurrency,
                };
                let db = scratch
                    .path()
                    .join(format!("{objects}-{latency_ms}-{i}.db"));
                rows.push(scan(&bins, &server, &db, sc, Kind::Full)?);
                if i == 0 && !args.no_rescan {
                    rows.push(scan(&bins, &server, &db, sc, Kind::Rescan)?);
                }
                remove_db(&db);
            }
        }
    }
    if !rows.is_empty() {
        print_table(&rows);
        print_limits(&rows);
    }
    if args.writer_objects > 0 {
        let w = writer_only(args.writer_objects, scratch.path())?;
        println!(
            "\nwriter alone (src/store/writer, scan batch settings, {} objects = {} rows: a listing row \
             and a HEAD result each, 2 of 3 with 3 metadata rows): {:.2} s, {} rows/s ({} objects/s), \
             {:.1} CPU µs/object, database {:.1} MB",
            thousands(w.objects as f64),
            thousands(2.0 * w.objects as f64),
            w.wall,
            thousands(2.0 * w.objects as f64 / w.wall),
            thousands(w.objects as f64 / w.wall),
            w.cpu * 1e6 / w.objects as f64,
            w.db_bytes as f64 / MB,
        );
    }
    Ok(())
}

fn concurrencies(args: &Args, latency_ms: u64) -> Vec<usize> {
    match (args.concurrency.is_empty(), latency_ms) {
        (false, _) => args.concurrency.clone(),
        (true, 0) => vec![64],
        (true, _) => vec![64, 256],
    }
}

/// The two binaries this benchmark runs.
struct Bins {
    s3meta: PathBuf,
    server: PathBuf,
}

impl Bins {
    fn find(dir: Option<PathBuf>) -> Result<Bins, String> {
        let dir = match dir {
            Some(d) => d,
            // target/release/examples/bench → target/release
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this executable: {e}"))?
                .parent()
                .and_then(Path::parent)
                .ok_or("cannot find the target directory")?
                .to_path_buf(),
        };
        let bins = Bins {
            s3meta: dir.join("s3meta"),
            server: dir.join("s3meta-test-server"),
        };
        for b in [&bins.s3meta, &bins.server] {
            if !b.exists() {
                return Err(format!(
                    "{} is missing: run `cargo build --release --workspace --bins` first",
                    b.display()
                ));
            }
        }
        if dir.ends_with("debug") {
            eprintln!("warning: debug binaries; figures are meaningless outside --release");
        }
        Ok(bins)
    }
}

impl Server {
    /// `(requests by op, CPU seconds)` from `GET /__admin/stats`.
    fn stats(&self) -> Result<ServerStats, String> {
        let body = admin(&self.endpoint, "GET", "/__admin/stats")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("admin stats {body:?}: {e}"))?;
        let n = |op: &str| v["requests"][op].as_u64().unwrap_or(0);
        Ok(ServerStats {
            list: n("list"),
            head: n("head"),
            cpu: v["cpu_seconds"].as_f64().unwrap_or(0.0),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct ServerStats {
    list: u64,
    head: u64,
    cpu: f64,
}

/// Runs `s3meta scan` once into `db` and measures it.
fn scan(bins: &Bins, server: &Server, db: &Path, sc: Scenario, kind: Kind) -> Result<Row, String> {
    let summary_path = db.with_extension("summary.json");
    let empty = db.with_extension("empty-aws-file");
    std::fs::write(&empty, "").map_err(|e| e.to_string())?;
    let before = server.stats()?;
    let started = Instant::now();
    let out = Command::new(&bins.s3meta)
        .args(["scan", &format!("s3://{BUCKET}")])
        .args(["--endpoint-url", &server.endpoint])
        .arg("--db")
        .arg(db)
        .args(["--concurrency", &sc.concurrency.to_string()])
        .args(["--no-progress", "-q", "--summary-json"])
        .arg(&summary_path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bins.s3meta.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let after = server.stats()?;
    if !out.status.success() {
        return Err(format!(
            "s3meta scan failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = std::fs::read_to_string(&summary_path).map_err(|e| e.to_string())?;
    let s: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let expect_mode = if kind == Kind::Full { "full" } else { "rescan" };
    if s["mode"] != expect_mode {
        return Err(format!("expected a {expect_mode} scan, got {}", s["mode"]));
    }
    let f = |p: &str| {
        s.pointer(p)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    Ok(Row {
        kind,
        sc,
        wall,
        objects: f("/objects/listed") as u64,
        headed: f("/objects/headed") as u64,
        cpu: f("/resources/cpu_user_seconds") + f("/resources/cpu_system_seconds"),
        peak_rss: f("/resources/peak_rss_bytes") as u64,
        list: after.list - before.list,
        head: after.head - before.head,
        db_bytes: db_size(db),
        server_cpu: after.cpu - before.cpu,
    })
}

/// The database with its WAL, as it sits on disk after the scan.
fn db_size(db: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum()
}

fn remove_db(db: &Path) {
    for s in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{s}", db.display()));
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<7} {:>9} {:>4} {:>5} {:>7} {:>9} {:>14} {:>7} {:>6} {:>8} {:>6} {:>9} {:>9} {:>7} {:>8}",
        "run",
        "objects",
        "ms",
        "conc",
        "wall s",
        "obj/s",
        "ideal (c/lat)",
        "CPU s",
        "µs/obj",
        "RSS MB",
        "LIST",
        "HEAD",
        "HEADed",
        "db MB",
        "srv µs/req",
    );
    for r in rows {
        let ideal = r.ideal().map_or_else(
            || "-".into(),
            |i| format!("{} {:.0}%", thousands(i), 100.0 * r.rate() / i),
        );
        println!(
            "{:<7} {:>9} {:>4} {:>5} {:>7.2} {:>9} {:>14} {:>7.2} {:>6.1} {:>8.1} {:>6} {:>9} {:>9} {:>7.1} {:>8.1}",
            r.kind.name(),
            thousands(r.sc.objects as f64),
            r.sc.latency_ms,
            r.sc.concurrency,
            r.wall,
            thousands(r.rate()),
            ideal,
            r.cpu,
            r.us_per_object(),
            r.peak_rss as f64 / MB,
            thousands(r.list as f64),
            thousands(r.head as f64),
            thousands(r.headed as f64),
            r.db_bytes as f64 / MB,
            r.server_us_per_request(),
        );
    }
}

/// What bounds each full scan on this machine, and how flat memory stays with size.
fn print_limits(rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!();
    for r in rows.iter().filter(|r| r.kind == Kind::Full) {
        let per_object = r.us_per_object() + r.server_us_per_object();
        let bound = cores * 1e6 / per_object;
        println!(
            "{} objects, {} ms, c={}: CPU bound {cores:.0} cores ÷ (client {:.0} + server {:.0} µs/object) \
             = {} obj/s; measured {} ({:.0}% of it)",
            thousands(r.sc.objects as f64),
            r.sc.latency_ms,
            r.sc.concurrency,
            r.us_per_object(),
            r.server_us_per_object(),
            thousands(bound),
            thousands(r.rate()),
            100.0 * r.rate() / bound,
        );
    }
    let full: Vec<&Row> = rows.iter().filter(|r| r.kind == Kind::Full).collect();
    for small in &full {
        for big in &full {
            if big.sc.objects > small.sc.objects
                && (big.sc.latency_ms, big.sc.concurrency)
                    == (small.sc.latency_ms, small.sc.concurrency)
            {
                println!(
                    "peak RSS, {} ms c={}: {:.1} MB at {} objects, {:.1} MB at {} ({:+.1}%)",
                    small.sc.latency_ms,
                    small.sc.concurrency,
                    small.peak_rss as f64 / MB,
                    thousands(small.sc.objects as f64),
                    big.peak_rss as f64 / MB,
                    thousands(big.sc.objects as f64),
                    100.0 * (big.peak_rss as f64 / small.peak_rss as f64 - 1.0),
                );
            }
        }
    }
}

struct WriterFigures {
    objects: usize,
    wall: f64,
    cpu: f64,
    db_bytes: u64,
}

/// Drives `writer::run` alone: pages of 1,000 listed objects, each page's HEAD outcomes sent
/// as soon as its commit answers (as the HEAD pool would), through the scan's channel and
/// batch settings, into a fresh database.
fn writer_only(objects: usize, dir: &Path) -> Result<WriterFigures, String> {
    let path = dir.join("writer-only.db");
    remove_db(&path);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let target = Target {
        store: "bench".into(),
        bucket: BUCKET.into(),
        prefix: String::new(),
        start_after: None,
        end_key: None,
        versions: false,
    };
    let mut conn = s3meta::store::db::open_rw(&path).map_err(|e| e.to_string())?;
    let plan =
        scans::begin(&mut conn, &target, false, false, (None, false)).map_err(|e| e.to_string())?;
    let ctx = Arc::new(WriterCtx {
        scan_id: plan.scan_id,
        bucket_id: plan.bucket_id,
        mode: plan.mode,
        record_created: plan.record_created,
        tags: None,
        versions: false,
        follow: false,
        path: path.clone(),
        recorded_order: Default::default(),
    });
    let range_no = plan.ranges[0].range_no;
    let keys = Arc::new(target.keys(KeyOrder::Byte));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    runtime.block_on(async move {
        let conn = tokio_rusqlite::Connection::from(conn);
        let (tx, rx) = mpsc::channel(s3meta::scan::WRITER_QUEUE);
        let writer = tokio::spawn(writer::run(conn, ctx, rx, Arc::new(Stats::default())));
        let mut heads = tokio::task::JoinSet::new();
        let pages = objects.div_ceil(1000);
        let mut prev_last = None;
        for p in 0..pages {
            let entries: Vec<ListedObject> = (p * 1000..((p + 1) * 1000).min(objects))
                .map(listed)
                .collect();
            let last_key = entries.last().map(|e| e.key.clone());
            let done = p + 1 == pages;
            let (reply, committed) = oneshot::channel();
            let msg = PageMsg {
                order: Some(KeyOrder::Byte),
                range_no,
                keys: keys.clone(),
                prev_last: prev_last.replace(last_key.clone().unwrap_or_default()),
                last_key,
                partial: None,
                entries,
                next_token: (!done).then(|| format!("token-{p}")),
                done,
                reply,
            };
            tx.send(WriterMsg::Page(msg))
                .await
                .map_err(|e| e.to_string())?;
            let jobs = committed.await.map_err(|e| e.to_string())?;
            let tx = tx.clone();
            heads.spawn(async move {
                for job in jobs {
                    let result = HeadResult::Ok(Box::new(head_fields(job.object_id as usize)));
                    let msg = WriterMsg::Head(HeadOutcome {
                        object_id: job.object_id,
                        result,
                        tags: None,
                    });
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        while heads.join_next().await.is_some() {}
        writer
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })?;
    Ok(WriterFigures {
        objects,
        wall: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu_before,
        db_bytes: db_size(&path),
    })
}

fn listed(i: usize) -> ListedObject {
    ListedObject {
        key: format!("data/obj-{i:08}"),
        etag: Some(format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15)),
        size: Some(16 + (i % 48) as i64),
        last_modified: Some("2026-11-26T15:39:21.000Z".into()),
        storage_class: Some("STANDARD".into()),
        version: None,
    }
}

/// What the test server's HEAD returns: two of three objects with three metadata names.
fn head_fields(i: usize) -> HeadFields {
    let metadata = if i % 3 == 2 {
        Vec::new()
    } else {
        vec![
            (
                "checksum".into(),
                format!("{:016x}", i as u64 * 0x2545_f491),
            ),
            ("owner".into(), format!("user{}", i % 7)),
            ("project".into(), format!("project-{}", i % 13)),
        ]
    };
    HeadFields {
        etag: Some(format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15)),
        size: Some(16 + (i % 48) as i64),
        last_modified: Some("2026-11-26T15:39:21.000Z".into()),
        content_type: Some("application/octet-stream".into()),
        storage_class: Some("STANDARD".into()),
        metadata,
        ..HeadFields::default()
    }
}

fn cpu_seconds() -> f64 {
    let r = s3meta::model::stats::resources();
    r.cpu_user_seconds + r.cpu_system_seconds
}

/// `1234567.8` → `1,234,568`.
fn thousands(n: f64) -> String {
    s3meta::read::output::thousands(n.round().max(0.0) as u64)
}
